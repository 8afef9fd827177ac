"""The official pymilvus client against a real ``canopy standalone`` process.

Every acknowledged write must be in object storage after flush, and survive a restart: the test
reads the Parquet segments and delete logs back with pyarrow (the read path is a later
milestone) and recomputes which rows are visible.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient
from standalone_process import StandaloneProcess, read_visible_rows

DIM = 8


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[StandaloneProcess]:
    with StandaloneProcess(tmp_path / "data") as proc:
        yield proc


def _schema(client: MilvusClient):  # type: ignore[no-untyped-def]
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("title", DataType.VARCHAR, max_length=64)
    schema.add_field("meta", DataType.JSON)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    return schema


def _rows(ids: range, rng: np.random.Generator, tag: str) -> list[dict]:
    return [
        {"id": i, "title": f"{tag}{i}", "meta": {"i": i}, "vec": rng.random(DIM).tolist(), "x": i}
        for i in ids
    ]


def _visible_rows(data_dir: Path, collection_id: int) -> dict[int, str]:
    """pk -> title of the rows visible after every insert and delete in object storage."""
    rows = read_visible_rows(f"file://{data_dir.resolve()}/objects", collection_id, ["id", "title"])
    return {pk: row["title"] for pk, row in rows.items()}


def test_pymilvus_write_flow_is_durable_across_restart(standalone: StandaloneProcess) -> None:
    rng = np.random.default_rng(7)
    client = MilvusClient(uri=standalone.uri)
    client.create_collection("docs", schema=_schema(client), consistency_level="Strong")
    assert client.list_collections() == ["docs"]
    desc = client.describe_collection("docs")
    assert [f["field_id"] for f in desc["fields"]] == [100, 101, 102, 103]
    assert desc["consistency_level"] == 0  # Strong, as requested
    collection_id = desc["collection_id"]
    assert client.has_collection("docs") and not client.has_collection("nope")

    assert client.insert("docs", _rows(range(0, 600), rng, "a"))["insert_count"] == 600
    assert client.insert("docs", _rows(range(600, 1000), rng, "a"))["insert_count"] == 400
    assert client.upsert("docs", _rows(range(0, 10), rng, "b"))["upsert_count"] == 10
    assert client.delete("docs", ids=[1, 2, 3])["delete_count"] == 3
    client.create_partition("docs", "p1")
    assert sorted(client.list_partitions("docs")) == ["_default", "p1"]
    client.flush("docs")
    client.close()

    expected = {i: ("b" if i < 10 else "a") + str(i) for i in range(1000) if i not in (1, 2, 3)}
    assert _visible_rows(standalone.data_dir, collection_id) == expected

    assert standalone.stop() == 0  # clean SIGTERM shutdown
    standalone.start()  # the same data directory
    client = MilvusClient(uri=standalone.uri)
    assert client.describe_collection("docs")["collection_id"] == collection_id
    assert client.insert("docs", _rows(range(1000, 1100), rng, "c"))["insert_count"] == 100
    client.flush("docs")
    expected.update({i: f"c{i}" for i in range(1000, 1100)})
    assert _visible_rows(standalone.data_dir, collection_id) == expected
    client.drop_collection("docs")
    assert client.list_collections() == []
    client.close()


def test_acknowledged_rows_survive_sigkill(standalone: StandaloneProcess) -> None:
    rng = np.random.default_rng(8)
    client = MilvusClient(uri=standalone.uri)
    client.create_collection("crash", schema=_schema(client))
    collection_id = client.describe_collection("crash")["collection_id"]
    for start in range(0, 500, 100):
        client.insert("crash", _rows(range(start, start + 100), rng, "k"))
    client.close()
    standalone.stop(signal.SIGKILL)  # no flush, no clean shutdown: rows live only in the WAL
    standalone.start()
    client = MilvusClient(uri=standalone.uri)
    client.flush("crash")  # replayed from the WAL, then written as segments
    client.close()
    assert _visible_rows(standalone.data_dir, collection_id) == {i: f"k{i}" for i in range(500)}


def test_invalid_requests_get_milvus_errors(standalone: StandaloneProcess) -> None:
    from pymilvus.exceptions import MilvusException

    client = MilvusClient(uri=standalone.uri)
    client.create_collection("v", schema=_schema(client))
    bad = {"id": 1, "title": "t", "meta": {}, "vec": [0.0] * (DIM + 1)}
    with pytest.raises(MilvusException):
        client.insert("v", [bad])
    with pytest.raises(MilvusException) as info:
        client.insert("missing", [bad])
    assert info.value.code == 100
    too_long = {"id": 1, "title": "x" * 65, "meta": {}, "vec": [0.0] * DIM}
    with pytest.raises(MilvusException):
        client.insert("v", [too_long])
    assert os.path.isdir(standalone.data_dir / "objects")
    client.close()

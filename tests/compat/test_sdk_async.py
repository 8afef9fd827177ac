"""``sdk.AsyncClient`` against a real ``canopy standalone``: 100 concurrent searches and 100
concurrent inserts on one client give correct results, and Session consistency lets a read see
the client's own write without naming a level."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from standalone_process import StandaloneProcess

import sdk

DIM = 8
BASE = 200  # rows present before the concurrent phase
OPS = 100  # concurrent inserts, and as many concurrent searches


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneProcess]:
    with StandaloneProcess(tmp_path_factory.mktemp("sdk-async") / "data") as proc:
        yield proc


def _vec(i: int) -> list[float]:
    """Vector i is far from every other one: its nearest neighbour is itself (L2 0)."""
    return [float(i)] * DIM


async def test_concurrent_searches_and_inserts(standalone: StandaloneProcess) -> None:
    async with sdk.AsyncClient(standalone.uri) as client:
        schema = client.create_schema()
        schema.add_field("id", sdk.DataType.INT64, is_primary=True)
        schema.add_field("vec", sdk.DataType.FLOAT_VECTOR, dim=DIM)
        index = client.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="L2")
        await client.create_collection(
            "conc", schema=schema, index_params=index, consistency_level="Strong"
        )
        await client.insert("conc", [{"id": i, "vec": _vec(i)} for i in range(BASE)])

        async def insert(batch: int) -> dict:
            ids = range(1000 + batch * 10, 1000 + batch * 10 + 10)
            return await client.insert(
                "conc", {"id": np.array(ids), "vec": np.array([_vec(i) for i in ids])}
            )

        async def search(i: int) -> list:
            return await client.search("conc", [_vec(i)], limit=1)

        tasks = [insert(b) for b in range(OPS)] + [search(i) for i in range(OPS)]
        results = await asyncio.gather(*tasks)

        for b, res in enumerate(results[:OPS]):
            assert res["insert_count"] == 10
            assert res["ids"] == list(range(1000 + b * 10, 1000 + b * 10 + 10))
        for i, res in enumerate(results[OPS:]):
            assert res[0][0]["id"] == i and res[0][0]["distance"] == pytest.approx(0.0)

        rows = await client.query("conc", "id >= 1000", output_fields=["id"], limit=OPS * 10)
        assert sorted(r["id"] for r in rows) == list(range(1000, 1000 + OPS * 10))
        await client.drop_collection("conc")


async def test_session_read_sees_own_write(standalone: StandaloneProcess) -> None:
    async with sdk.AsyncClient(standalone.uri) as client:
        await client.create_collection("sess", dimension=DIM, consistency_level="Session")
        assert client.last_write_timestamp == 0
        out = await client.insert("sess", [{"id": 7, "vector": _vec(7)}])
        assert out["insert_count"] == 1 and client.last_write_timestamp > 0
        # no level named: the collection's Session level with this client's last write
        assert await client.query("sess", "id == 7", output_fields=["id"]) == [{"id": 7}]
        hits = await client.search("sess", [_vec(7)], limit=1, consistency_level="Session")
        assert hits[0][0]["id"] == 7
        ts = client.last_write_timestamp
        await client.delete("sess", ids=[7])
        assert client.last_write_timestamp > ts
        assert await client.get("sess", ids=[7]) == []
        await client.drop_collection("sess")

"""The same scenario through pymilvus' ``MilvusClient`` and through ``sdk.Client`` against one
real ``canopy standalone``: described schemas, counts, query, get and search results must match
(same ids, distances within 1e-5).

The scenario covers an explicit schema (INT64 pk, VARCHAR, JSON, ARRAY, FLOAT_VECTOR, dynamic
field), partitions, insert/upsert, delete by ids and by filter, get, query with
limit/offset/output_fields, count(*), search with filter/output_fields/offset/several vectors,
indexes (create/list/describe/drop), load/release/get_load_state, rename, a second database
(use_database) and drops; quick setup last. Each client runs it in its own database so the two
runs cannot see each other's data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient
from standalone_process import StandaloneProcess

import sdk

DIM = 8
N = 300


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneProcess]:
    with StandaloneProcess(tmp_path_factory.mktemp("sdk-parity") / "data") as proc:
        yield proc


def _rows(ids: range, seed: int, tag: str) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "id": i,
            "vec": rng.random(DIM, dtype=np.float32).tolist(),
            "title": f"{tag}{i}",
            "meta": {"i": i, "even": i % 2 == 0},
            "tags": [i % 3, i % 5],
            "color": ["red", "green", "blue"][i % 3],  # dynamic
        }
        for i in ids
    ]


def plain(value: Any) -> Any:
    """Results as plain Python (pymilvus returns list/dict subclasses and enums)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "SerializeToString"):
        return value.SerializeToString()
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def _describe(desc: dict[str, Any]) -> dict[str, Any]:
    out = plain(desc)
    for key in ("collection_id", "created_timestamp", "update_timestamp"):
        out.pop(key, None)
    return out


def scenario(client: Any, schema_ns: Any, db: str) -> dict[str, Any]:
    """Run the scenario; return what the client answered (nothing asserted here)."""
    obs: dict[str, Any] = {}
    client.create_database(db)
    client.use_database(db)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", schema_ns.INT64, is_primary=True)
    schema.add_field("vec", schema_ns.FLOAT_VECTOR, dim=DIM)
    schema.add_field("title", schema_ns.VARCHAR, max_length=64)
    schema.add_field("meta", schema_ns.JSON)
    schema.add_field("tags", schema_ns.ARRAY, element_type=schema_ns.INT64, max_capacity=8)
    client.create_collection("docs", schema=schema, consistency_level="Strong")
    obs["has"] = [client.has_collection("docs"), client.has_collection("nope")]
    obs["list"] = client.list_collections()
    obs["describe"] = _describe(client.describe_collection("docs"))

    client.create_partition("docs", "p1")
    obs["partitions"] = sorted(client.list_partitions("docs"))
    obs["has_partition"] = [client.has_partition("docs", "p1"), client.has_partition("docs", "x")]
    obs["insert"] = plain(client.insert("docs", _rows(range(0, 200), 1, "a")))
    obs["insert_p1"] = plain(
        client.insert("docs", _rows(range(200, N), 2, "p"), partition_name="p1")
    )
    obs["upsert"] = plain(client.upsert("docs", _rows(range(0, 10), 3, "u")))
    obs["delete_ids"] = plain(client.delete("docs", ids=[11, 12, 13]))
    client.flush("docs")

    index_params = client.prepare_index_params()
    index_params.add_index("vec", index_type="FLAT", metric_type="L2", index_name="vec_idx")
    client.create_index("docs", index_params)
    obs["indexes"] = client.list_indexes("docs")
    desc_index = plain(client.describe_index("docs", "vec_idx"))
    obs["describe_index"] = {k: desc_index[k] for k in ("index_type", "metric_type", "field_name")}
    client.load_collection("docs")
    obs["load_state"] = str(client.get_load_state("docs")["state"])

    obs["count"] = plain(client.query("docs", "", output_fields=["count(*)"]))
    obs["delete_filter"] = plain(client.delete("docs", filter="id >= 290"))
    obs["count2"] = plain(client.query("docs", "", output_fields=["count(*)"]))
    obs["query"] = plain(
        client.query("docs", "id < 20", output_fields=["id", "title", "meta", "tags", "color"])
    )
    obs["query_star"] = plain(client.query("docs", "id in [1, 5, 250]", output_fields=["*"]))
    obs["query_page"] = plain(
        client.query("docs", "id > 50", output_fields=["id"], limit=5, offset=10)
    )
    obs["query_json"] = plain(
        client.query("docs", 'meta["even"] == true and id < 30', output_fields=["id"])
    )
    obs["query_array"] = plain(
        client.query("docs", "array_contains(tags, 4) and id < 40", output_fields=["tags"])
    )
    obs["query_dynamic"] = plain(client.query("docs", 'color == "red" and id < 30'))
    obs["get"] = plain(client.get("docs", ids=[0, 3, 11, 250], output_fields=["title", "color"]))
    obs["query_partition"] = plain(
        client.query("docs", "id < 220", output_fields=["id"], partition_names=["p1"])
    )

    q = np.random.default_rng(9).random((3, DIM), dtype=np.float32).tolist()
    obs["search"] = plain(client.search("docs", q, limit=5, search_params={"metric_type": "L2"}))
    obs["search_filtered"] = plain(
        client.search(
            "docs",
            q[:2],
            filter='id > 100 and title like "a%"',
            limit=4,
            output_fields=["title", "meta", "color"],
            offset=2,
        )
    )
    obs["search_partition"] = plain(
        client.search("docs", q[:1], limit=3, partition_names=["p1"], output_fields=["*"])
    )

    client.release_collection("docs")
    obs["released"] = str(client.get_load_state("docs")["state"])
    client.drop_index("docs", "vec_idx")
    obs["indexes_after_drop"] = client.list_indexes("docs")
    client.rename_collection("docs", "docs2")
    obs["after_rename"] = sorted(client.list_collections())
    client.drop_collection("docs2")
    obs["after_drop"] = client.list_collections()

    client.create_collection("quick", dimension=DIM)
    rows = [{"id": i, "vector": [float(i)] * DIM} for i in range(10)]
    obs["quick_insert"] = plain(client.insert("quick", rows))
    obs["quick_describe"] = _describe(client.describe_collection("quick"))
    obs["quick_query"] = plain(
        client.query("quick", "id < 3", output_fields=["id"], consistency_level="Strong")
    )
    client.drop_collection("quick")
    client.use_database("default")
    client.drop_database(db)
    obs["databases"] = db not in client.list_databases()
    return obs


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ; floats (distances, vectors) may differ by 1e-5."""
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-5
        return [] if ok else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {str(a)[:200]} != {str(b)[:200]}"]


def test_sdk_matches_pymilvus(standalone: StandaloneProcess) -> None:
    theirs = MilvusClient(uri=standalone.uri)
    try:
        expected = scenario(theirs, DataType, "pym")
    finally:
        theirs.close()
    with sdk.Client(standalone.uri) as ours:
        got = scenario(ours, sdk.DataType, "sdk")

    assert expected["count"] == [{"count(*)": N - 3}]
    assert len(expected["search"]) == 3 and len(expected["search"][0]) == 5
    assert expected["search_filtered"][0][0]["entity"]["color"] in ("red", "green", "blue")
    assert expected["after_drop"] == [] and expected["databases"] is True
    assert got.keys() == expected.keys()
    diffs = [d for key in expected for d in differences(got[key], expected[key], key)]
    assert not diffs, "\n".join(diffs[:30])


def test_sdk_errors_are_typed(standalone: StandaloneProcess) -> None:
    with sdk.Client(standalone.uri) as client:
        with pytest.raises(sdk.CollectionNotFound) as err:
            client.describe_collection("missing")
        assert err.value.code == 100 and "collection not found" in err.value.message
        with pytest.raises(sdk.DatabaseNotFound):
            client.use_database("no_such_db")
        assert client._db_name == "default"
        client.create_collection("e", dimension=4)
        with pytest.raises(sdk.InvalidArgument):  # refused before sending: wrong dim
            client.insert("e", [{"id": 1, "vector": [0.0] * 5}])
        with pytest.raises(sdk.InvalidArgument):  # refused by the server: bad filter
            client.query("e", "id <<< 3")
        client.release_collection("e")
        with pytest.raises(sdk.CollectionNotLoaded):
            client.search("e", [[0.0] * 4])
        with pytest.raises(sdk.Timeout):
            client.flush("e", timeout=1e-6)
        client.drop_collection("e")

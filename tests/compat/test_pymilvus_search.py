"""The official pymilvus client searching and querying a real ``canopy standalone`` process.

Growing rows live in the streaming node's memory until their segment is flushed; until query
nodes exist, the streaming node owning a vchannel also serves its flushed (sealed) segments
(``test_flushed_rows_are_still_served``). Results are checked against numpy exact search over
the same rows.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient, MilvusException
from standalone_process import StandaloneProcess

pytestmark = [pytest.mark.compat, pytest.mark.timeout(300)]

DIM = 16


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneProcess]:
    with StandaloneProcess(tmp_path_factory.mktemp("search") / "data") as proc:
        yield proc


@pytest.fixture
def client(standalone: StandaloneProcess) -> Iterator[MilvusClient]:
    c = MilvusClient(uri=standalone.uri)
    try:
        yield c
    finally:
        for name in c.list_collections():
            c.drop_collection(name)
        c.close()


def exact(base: np.ndarray, queries: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(order, scores) of every base row per query, best first, as Milvus reports scores."""
    if metric == "L2":
        scores = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1, kind="stable")
    else:
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        scores = q @ b.T
        order = np.argsort(-scores, axis=1, kind="stable")
    return order, np.take_along_axis(scores, order, axis=1)


def rows(base: np.ndarray, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": start + i,
            "vector": base[i].tolist(),
            "color": ["red", "green", "blue"][(start + i) % 3],
            "n": start + i,
        }
        for i in range(len(base))
    ]


@pytest.mark.parametrize("metric", ["L2", "COSINE"])
def test_search_equals_numpy(client: MilvusClient, metric: str) -> None:
    rng = np.random.default_rng(11)
    base = rng.random((3000, DIM), dtype=np.float32)
    client.create_collection("vecs", dimension=DIM, metric_type=metric)
    for start in range(0, len(base), 1000):
        client.insert("vecs", rows(base[start : start + 1000], start))
    queries = rng.random((3, DIM), dtype=np.float32)
    order, scores = exact(base, queries, metric)

    one = client.search("vecs", queries[:1].tolist(), limit=10, output_fields=["color", "n"])
    assert [h["id"] for h in one[0]] == order[0, :10].tolist()
    assert [h["distance"] for h in one[0]] == pytest.approx(scores[0, :10].tolist(), rel=1e-4)
    for hit in one[0]:
        assert hit["entity"] == {"color": ["red", "green", "blue"][hit["id"] % 3], "n": hit["id"]}

    three = client.search("vecs", queries.tolist(), limit=5, output_fields=["vector"])
    assert [[h["id"] for h in q] for q in three] == order[:, :5].tolist()
    got_vec = np.array(three[2][0]["entity"]["vector"], np.float32)
    assert np.array_equal(got_vec, base[order[2, 0]])

    paged = client.search("vecs", queries.tolist(), limit=4, search_params={"offset": 6})
    assert [[h["id"] for h in q] for q in paged] == order[:, 6:10].tolist()
    rounded = client.search("vecs", queries[:1].tolist(), limit=3, round_decimal=2)
    assert [h["distance"] for h in rounded[0]] == pytest.approx(
        np.round(scores[0, :3], 2).tolist(), abs=1e-6
    )
    filtered = client.search("vecs", queries[:1].tolist(), limit=5, filter='color == "red"')
    reds = [i for i in order[0].tolist() if i % 3 == 0][:5]
    assert [h["id"] for h in filtered[0]] == reds
    other = "IP" if metric == "L2" else "L2"
    with pytest.raises(MilvusException, match="metric type not match") as err:
        client.search("vecs", queries[:1].tolist(), search_params={"metric_type": other})
    assert err.value.code == 1100


def test_queries_filters_count_and_get(client: MilvusClient) -> None:
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("title", DataType.VARCHAR, max_length=32)
    schema.add_field("price", DataType.DOUBLE)
    schema.add_field("doc", DataType.JSON)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=8)
    index = client.prepare_index_params("vec", metric_type="IP", index_type="AUTOINDEX")
    client.create_collection("items", schema=schema, index_params=index)
    rng = np.random.default_rng(12)
    data = [
        {
            "id": i,
            "vec": rng.random(DIM).tolist(),
            "title": f"{['apple', 'banana', 'cherry'][i % 3]}-{i}",
            "price": i / 2,
            "doc": {"size": i % 5, "kind": "even" if i % 2 == 0 else "odd"},
            "tags": [i % 4, 10 + i % 7],
            "stock": i * 10,
        }
        for i in range(300)
    ]
    client.insert("items", data)

    def ids(expr: str, **kw: Any) -> list[int]:
        return sorted(r["id"] for r in client.query("items", filter=expr, **kw))

    assert ids("price >= 10 and price < 12") == [20, 21, 22, 23]
    assert ids('title like "cherry-1%"') == [
        i for i in range(300) if str(i).startswith("1") and i % 3 == 2
    ]
    assert ids('doc["size"] == 3 and doc["kind"] == "odd"') == [
        i for i in range(300) if i % 5 == 3 and i % 2 == 1
    ]
    assert ids("stock > 2950") == [296, 297, 298, 299]  # a dynamic field
    assert ids("array_contains(tags, 13) and id < 40") == [3, 10, 17, 24, 31, 38]
    assert ids(
        "id in {keys} and price > {low}", filter_params={"keys": [1, 50, 70], "low": 30}
    ) == [70]
    count = client.query("items", filter="price < 50", output_fields=["count(*)"])
    assert list(count) == [{"count(*)": 100}]
    assert client.query("items", filter="", output_fields=["count(*)"])[0]["count(*)"] == 300
    got = client.get("items", ids=[5, 7, 1000])
    assert [r["id"] for r in got] == [5, 7]
    assert got[0]["title"] == "cherry-5" and got[0]["doc"] == {"size": 0, "kind": "odd"}
    assert got[0]["tags"] == [1, 15] and got[0]["stock"] == 50
    assert got[0]["vec"] == pytest.approx(data[5]["vec"])
    page = client.query("items", filter="id >= 100", limit=3, offset=5, output_fields=["title"])
    assert list(page) == [{"id": i, "title": data[i]["title"]} for i in (105, 106, 107)]
    assert client.query("items", filter="id < 0") == []
    it = client.query_iterator("items", batch_size=70, filter="price >= 100", output_fields=["n"])
    sizes, seen = [], []
    while batch := it.next():
        sizes.append(len(batch))
        seen.extend(r["id"] for r in batch)
    it.close()
    assert sizes == [70, 30] and seen == list(range(200, 300))
    with pytest.raises(MilvusException) as err:
        client.query("items", filter="price >> 3")
    assert err.value.code == 1100


def test_deletes_and_upserts_strong(client: MilvusClient) -> None:
    rng = np.random.default_rng(13)
    base = rng.random((200, DIM), dtype=np.float32)
    client.create_collection("mvcc", dimension=DIM, metric_type="L2", consistency_level="Strong")
    client.insert("mvcc", rows(base))
    target = base[42].tolist()
    assert client.search("mvcc", [target], limit=1)[0][0]["id"] == 42
    client.delete("mvcc", ids=[42])
    assert 42 not in [h["id"] for h in client.search("mvcc", [target], limit=10)[0]]
    assert client.query("mvcc", filter="id == 42") == []
    far = (base[42] + 10).tolist()
    client.upsert("mvcc", [{"id": 7, "vector": target, "color": "new", "n": -7}])
    hits = client.search("mvcc", [target], limit=200, output_fields=["color"])[0]
    assert hits[0]["id"] == 7 and hits[0]["entity"]["color"] == "new"
    assert [h["id"] for h in hits].count(7) == 1 and len(hits) == 199
    assert list(client.query("mvcc", filter="id == 7", output_fields=["color", "n"])) == [
        {"id": 7, "color": "new", "n": -7}
    ]
    client.upsert("mvcc", [{"id": 7, "vector": far, "color": "newer", "n": 7}])
    assert client.search("mvcc", [target], limit=1)[0][0]["id"] != 7
    assert client.query("mvcc", filter="", output_fields=["count(*)"])[0]["count(*)"] == 199


def test_session_consistency_reads_its_own_writes(client: MilvusClient) -> None:
    client.create_collection("session", dimension=DIM, consistency_level="Session")
    for i in range(20):
        vec = [float(i + 1)] * DIM
        client.insert("session", [{"id": i, "vector": vec}])
        got = client.query("session", filter=f"id == {i}", consistency_level="Session")
        assert [r["id"] for r in got] == [i]
        found = client.search("session", [vec], limit=1)  # the collection's default: Session
        assert len(found[0]) == 1


def test_reads_of_a_released_collection_are_refused(client: MilvusClient) -> None:
    client.create_collection("idle", dimension=DIM)
    client.insert("idle", [{"id": 1, "vector": [1.0] * DIM}])
    client.release_collection("idle")
    with pytest.raises(MilvusException) as err:
        client.search("idle", [[1.0] * DIM], limit=1)
    assert err.value.code == 101 and "collection not loaded" in err.value.message
    with pytest.raises(MilvusException) as err:
        client.query("idle", filter="id > 0")
    assert err.value.code == 101
    client.load_collection("idle")
    assert [r["id"] for r in client.query("idle", filter="id > 0")] == [1]


def test_search_latency_on_10k_growing_rows(client: MilvusClient, record_property: Any) -> None:
    """nq=1, top-10 over 10,000 growing 128-d rows (Bounded, the quick-setup default)."""
    rng = np.random.default_rng(14)
    dim = 128
    base = rng.random((10_000, dim), dtype=np.float32)
    client.create_collection("bench", dimension=dim, metric_type="L2")
    for start in range(0, len(base), 2000):
        chunk = base[start : start + 2000]
        client.insert("bench", [{"id": start + i, "vector": v} for i, v in enumerate(chunk)])
    queries = rng.random((220, dim), dtype=np.float32)
    order, _ = exact(base, queries[:5], "L2")
    for q, want in zip(queries[:5], order, strict=True):
        assert [h["id"] for h in client.search("bench", [q.tolist()], limit=10)[0]] == want[
            :10
        ].tolist()
    latencies = []
    for q in queries[20:]:
        data = [q.tolist()]
        started = time.perf_counter()
        client.search("bench", data, limit=10)
        latencies.append(time.perf_counter() - started)
    p50 = statistics.median(latencies) * 1000
    p99 = float(np.percentile(latencies, 99)) * 1000
    record_property("search_p50_ms", round(p50, 3))
    print(f"\nsearch nq=1 top-10 on 10,000 growing 128-d rows: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p50 < 50  # generous: a regression guard, not a benchmark


def test_search_by_ids_and_partitions(client: MilvusClient, tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    base = rng.random((100, DIM), dtype=np.float32)
    client.create_collection("parts", dimension=DIM, metric_type="L2")
    client.create_partition("parts", "p1")
    client.insert("parts", rows(base[:50]))
    client.insert("parts", rows(base[50:], 50), partition_name="p1")
    found = client.search("parts", [base[60].tolist()], limit=3, partition_names=["_default"])
    assert all(h["id"] < 50 for h in found[0])
    found = client.search("parts", [base[60].tolist()], limit=3, partition_names=["p1"])
    assert found[0][0]["id"] == 60 and all(h["id"] >= 50 for h in found[0])
    by_ids = client.search("parts", ids=[3, 77], limit=1)
    assert [q[0]["id"] for q in by_ids] == [3, 77]


def test_flushed_rows_are_still_served(client: MilvusClient) -> None:
    rng = np.random.default_rng(16)
    base = rng.random((120, DIM), dtype=np.float32)
    client.create_collection("sealed", dimension=DIM, metric_type="L2", consistency_level="Strong")
    client.insert("sealed", rows(base[:100]))
    client.flush("sealed")  # the rows leave the streaming node's memory
    client.insert("sealed", rows(base[100:], 100))  # growing
    order, _ = exact(base, base[[5, 110]], "L2")
    found = client.search("sealed", base[[5, 110]].tolist(), limit=5, output_fields=["color"])
    assert [[h["id"] for h in q] for q in found] == order[:, :5].tolist()
    assert found[0][0]["entity"]["color"] == "blue"  # 5 % 3 == 2
    got = client.query("sealed", filter="id in [5, 50, 110]", output_fields=["n"])
    assert sorted((r["id"], r["n"]) for r in got) == [(5, 5), (50, 50), (110, 110)]
    assert client.query("sealed", filter="", output_fields=["count(*)"])[0]["count(*)"] == 120
    client.delete("sealed", ids=[5])
    assert 5 not in [h["id"] for h in client.search("sealed", [base[5].tolist()], limit=3)[0]]
    assert client.query("sealed", filter="id == 5") == []
    assert client.query("sealed", filter="", output_fields=["count(*)"])[0]["count(*)"] == 119

"""Proxy reads: Search/Query request parsing (as pymilvus builds requests), consistency levels,
output fields, result encoding (read back by pymilvus' own parsers), and the handlers end to end
through ``MilvusClient`` against a ``ProxyServer`` over the in-memory streaming service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pymilvus import DataType as PDataType
from pymilvus import MilvusClient, MilvusException
from pymilvus.client.prepare import Prepare
from pymilvus.client.search_result import SearchResult
from pymilvus.grpc_gen import common_pb2, schema_pb2

from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.tso import compose, physical_ms
from cluster.milvus.status import NotSupportedYet, ParameterInvalid
from cluster.proxy.collections import Collection
from cluster.proxy.query import parse_query_params
from cluster.proxy.reads import ReadSupport, resolve_outputs
from cluster.proxy.routing import MappingRouter
from cluster.proxy.search import (
    decode_placeholders,
    encode_search_results,
    parse_search_params,
)
from cluster.proxy.server import ProxyServer
from cluster.proxy.servicer import ProxyServicer
from cluster.proxy.testing import MemoryStreamingService, ProxyHarness
from cluster.results import PartialResult
from cluster.schema import CollectionSchema, from_request_bytes

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

DIM = 4
Level = common_pb2.ConsistencyLevel


def quick_schema(dynamic: bool = True, varchar_pk: bool = False) -> CollectionSchema:
    s = MilvusClient.create_schema(enable_dynamic_field=dynamic)
    if varchar_pk:
        s.add_field("id", PDataType.VARCHAR, is_primary=True, max_length=16)
    else:
        s.add_field("id", PDataType.INT64, is_primary=True)
    s.add_field("vector", PDataType.FLOAT_VECTOR, dim=DIM)
    s.add_field("tag", PDataType.VARCHAR, max_length=16)
    req = Prepare.create_collection_request("c", s)
    return from_request_bytes(req.schema, "c")


def search_request(**kw: Any) -> Any:
    args: dict[str, Any] = {
        "collection_name": "c",
        "anns_field": "vector",
        "param": {},
        "limit": 10,
        "data": [[1.0, 2.0, 3.0, 4.0]],
    }
    args.update(kw)
    return Prepare.search_requests_with_expr(**args)


# --- request parsing ----------------------------------------------------------------------------


def test_search_params_as_pymilvus_sends_them() -> None:
    req = search_request(
        param={"metric_type": "ip", "params": {"ef": 64, "radius": 0.5}},
        limit=7,
        offset=3,
        round_decimal=2,
    )
    p = parse_search_params(req.search_params)
    assert (p.topk, p.offset, p.round_decimal, p.metric_type, p.anns_field) == (
        7,
        3,
        2,
        "IP",
        "vector",
    )
    assert p.params["ef"] == 64 and p.radius == 0.5
    plain = parse_search_params(search_request(anns_field="").search_params)
    assert plain.metric_type is None and plain.anns_field == "" and plain.offset == 0


@pytest.mark.parametrize(
    ("kw", "error", "text"),
    [
        ({"limit": 0}, ParameterInvalid, "topk [0] is invalid"),
        ({"limit": 16385}, ParameterInvalid, "topk [16385] is invalid"),
        ({"limit": 16000, "offset": 1000}, ParameterInvalid, "(offset+limit)"),
        ({"round_decimal": 7}, ParameterInvalid, "round_decimal 7 is invalid"),
        ({"param": {"params": {"range_filter": 0.1, "radius": 1}}}, NotSupportedYet, "range"),
        ({"group_by_field": "tag"}, NotSupportedYet, "group_by_field"),
    ],
)
def test_search_params_refused(kw: dict[str, Any], error: type[Exception], text: str) -> None:
    with pytest.raises(error) as err:
        parse_search_params(search_request(**kw).search_params)
    assert text in str(err.value)


def test_placeholders_decode_straight_from_the_bytes() -> None:
    schema = quick_schema()
    field = schema.require_field("vector")
    vectors = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    for data in (vectors.tolist(), list(vectors)):  # lists of floats, numpy rows
        req = search_request(data=data)
        got = decode_placeholders(req.placeholder_group, req.nq, field)
        assert got.dtype == np.float32 and np.array_equal(got, vectors)
    one = search_request(data=[vectors[0].tolist()])
    assert not decode_placeholders(one.placeholder_group, 1, field).flags.writeable  # a view
    with pytest.raises(ParameterInvalid, match=r"the dim \(3\) of field data\(vector\)"):
        req = search_request(data=[[1.0, 2.0, 3.0]])
        decode_placeholders(req.placeholder_group, 1, field)
    with pytest.raises(ParameterInvalid, match="nq"):
        decode_placeholders(search_request().placeholder_group, 2, field)
    with pytest.raises(NotSupportedYet, match="BinaryVector"):
        req = search_request(data=[b"\x01\x02"])
        decode_placeholders(req.placeholder_group, 1, field)


def test_output_fields_follow_milvus_rules() -> None:
    schema = quick_schema()
    star = resolve_outputs(schema, ["*"])
    assert [f.name for f in star.fields] == ["id", "vector", "tag", "$meta"]
    assert star.stored == ("id", "vector", "tag", "$meta") and star.dynamic_keys == ()
    mixed = resolve_outputs(schema, ["tag", "color", "tag", "size"], always=["id"])
    assert [f.name for f in mixed.fields] == ["id", "tag"]
    assert mixed.dynamic_keys == ("color", "size") and mixed.stored == ("id", "tag", "$meta")
    assert mixed.names == ("id", "tag", "color", "size")
    static = quick_schema(dynamic=False)
    with pytest.raises(ParameterInvalid, match="field color not exist"):
        resolve_outputs(static, ["color"])
    assert resolve_outputs(static, ["*"]).stored == ("id", "vector", "tag")


def test_query_params() -> None:
    def params(**kw: Any) -> Any:
        return Prepare.query_request("c", "id > 0", ["id"], [], **kw).query_params

    assert parse_query_params(params()) == (None, 0)
    assert parse_query_params(params(limit=5, offset=2)) == (5, 2)
    with pytest.raises(ParameterInvalid, match="max query result window"):
        parse_query_params(params(limit=16384, offset=1))
    with pytest.raises(ParameterInvalid, match="limit"):
        parse_query_params(params(limit=0))


class FixedTso:
    def __init__(self, ts: int) -> None:
        self.ts = ts

    async def allocate_timestamp(self, count: int = 1) -> int:
        return self.ts


def collection(level: int) -> Collection:
    info = CollectionInfo(
        1,
        "default",
        1,
        "c",
        b"",
        1,
        level,
        {},
        1,
        1,
        "created",
        ("v",),
        ("p",),
        (),  # type: ignore[arg-type]
    )
    return Collection(info, quick_schema())


async def test_consistency_levels_give_guarantee_timestamps() -> None:
    fresh = compose(1_700_000_000_000, 42)
    reads = ReadSupport(FixedTso(fresh), None)  # type: ignore[arg-type]
    bounded = compose(physical_ms(fresh) - 5000, 0)
    session_ts = compose(1_699_999_999_000, 3)
    cases = [
        (Level.Strong, False, 0, fresh),
        (Level.Bounded, False, 2, bounded),
        (Level.Session, False, session_ts, session_ts),
        (Level.Session, False, 1, 0),  # pymilvus' "no write seen": no wait
        (Level.Eventually, False, 1, 0),
        (Level.Customized, False, session_ts, session_ts),
    ]
    for level, use_default, requested, want in cases:
        got = await reads.guarantee_ts(collection(Level.Strong), use_default, level, requested)
        assert got == want, Level.Name(level)
    # use_default_consistency: the collection's level wins over the request's
    assert await reads.guarantee_ts(collection(Level.Strong), True, Level.Eventually, 1) == fresh
    assert await reads.guarantee_ts(collection(Level.Bounded), True, Level.Strong, 0) == bounded
    got = await reads.guarantee_ts(collection(Level.Session), True, Level.Strong, session_ts)
    assert got == session_ts


# --- result encoding ----------------------------------------------------------------------------


def test_search_results_read_by_pymilvus() -> None:
    schema = quick_schema()
    fields = pa.table(
        {
            "tag": pa.array(["a", "b", "c"]),
            "$meta": pa.array([b'{"x": 1, "y": 2}', b'{"x": 3}', b"{}"], pa.binary()),
        }
    )
    hits = PartialResult(
        np.array([2, 0, 1]),
        np.array([5, 6, 7]),
        np.array([0.123456, 0.5, 0.987654], np.float32),
        np.array([1, 1, 1], np.uint64),
        fields,
    )
    outputs = resolve_outputs(schema, ["tag", "x"])
    data = encode_search_results(hits, schema, outputs, top_k=2, round_decimal=3)
    wire = schema_pb2.SearchResultData.FromString(data.SerializeToString())
    assert (wire.num_queries, wire.top_k, list(wire.topks)) == (3, 2, [2, 0, 1])
    assert list(wire.scores) == pytest.approx([0.123, 0.5, 0.988])
    assert wire.primary_field_name == "id" and list(wire.output_fields) == ["tag", "x"]
    res = SearchResult(wire)
    assert [[h["id"] for h in q] for q in res] == [[5, 6], [], [7]]
    assert res[0][0]["entity"] == {"tag": "a", "x": 1}
    assert res[0][1]["entity"] == {"tag": "b", "x": 3} and res[2][0]["entity"] == {"tag": "c"}
    # string keys, nothing found, no output fields
    vs = quick_schema(varchar_pk=True)
    none = encode_search_results(
        PartialResult.empty(2, int_pks=False), vs, resolve_outputs(vs, []), 3
    )
    assert none.ids.HasField("str_id") and list(none.topks) == [0, 0]
    assert [list(q) for q in SearchResult(none)] == [[], []]
    # output fields asked, nothing found: empty columns
    empty = encode_search_results(PartialResult.empty(1), schema, outputs, 3)
    assert [fd.field_name for fd in empty.fields_data] == ["tag", "$meta"]


# --- end to end through MilvusClient -----------------------------------------------------------


class Served:
    """A ProxyServer over a harness; ``run(fn)`` calls ``fn(client)`` in a thread."""

    def __init__(self, harness: ProxyHarness, server: ProxyServer, client: MilvusClient) -> None:
        self.harness = harness
        self.server = server
        self.client = client

    async def run(self, fn: Callable[[MilvusClient], Any]) -> Any:
        return await asyncio.to_thread(fn, self.client)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    harness = await ProxyHarness.start()
    server = ProxyServer(harness.servicer, "127.0.0.1", 0)
    await server.start()
    try:
        # the client connects in its constructor: not on the loop that serves it
        client = await asyncio.to_thread(MilvusClient, uri=f"http://{server.address}")
        try:
            yield Served(harness, server, client)
        finally:
            client.close()
    finally:
        await server.stop(0)
        await harness.close()


def rows(n: int, rng: np.random.Generator, start: int = 0) -> tuple[list[dict], np.ndarray]:
    vecs = rng.random((n, DIM), dtype=np.float32)
    out = [
        {"id": start + i, "vector": vecs[i].tolist(), "tag": f"t{start + i}", "n": start + i}
        for i in range(n)
    ]
    return out, vecs


def cosine_top(base: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(q @ b.T), axis=1, kind="stable")[:, :k].tolist()


async def test_search_and_query_through_milvus_client(served: Served) -> None:
    rng = np.random.default_rng(5)
    data, base = rows(200, rng)
    queries = rng.random((3, DIM), dtype=np.float32)

    def flow(c: MilvusClient) -> dict[str, Any]:
        c.create_collection("c", dimension=DIM)  # quick setup: COSINE index, loaded
        c.insert("c", data)
        out: dict[str, Any] = {}
        out["search"] = c.search("c", queries.tolist(), limit=5, output_fields=["tag", "n"])
        out["paged"] = c.search("c", queries.tolist(), limit=3, search_params={"offset": 2})
        out["filtered"] = c.search("c", queries[:1].tolist(), limit=50, filter="n < 20")
        out["query"] = c.query("c", filter="id in [7, 3, 500]", output_fields=["tag", "n"])
        out["page"] = c.query("c", filter="id >= 100", limit=3, offset=2)
        out["count"] = c.query("c", filter="", output_fields=["count(*)"])
        out["get"] = c.get("c", ids=[9])
        out["templated"] = c.query("c", filter="id in {ids}", filter_params={"ids": [4, 5]})
        out["by_ids"] = c.search("c", ids=[11, 12], limit=1)
        out["top50"] = c.search("c", queries[:1].tolist(), limit=50)
        out["radius"] = c.search(
            "c", queries[:1].tolist(), limit=50, search_params={"params": {"radius": 0.95}}
        )
        return out

    out = await served.run(flow)
    want = cosine_top(base, queries, 5)
    assert [[h["id"] for h in q] for q in out["search"]] == want
    hit = out["search"][0][0]
    assert hit["entity"] == {"tag": f"t{hit['id']}", "n": hit["id"]}
    assert [[h["id"] for h in q] for q in out["paged"]] == [w[2:5] for w in want]
    assert all(h["id"] < 20 for h in out["filtered"][0]) and len(out["filtered"][0]) == 20
    assert [(r["id"], r["tag"], r["n"]) for r in out["query"]] == [(3, "t3", 3), (7, "t7", 7)]
    assert [r["id"] for r in out["page"]] == [102, 103, 104]
    assert out["count"][0]["count(*)"] == 200
    assert out["get"][0]["id"] == 9 and out["get"][0]["vector"] == pytest.approx(data[9]["vector"])
    assert out["get"][0]["n"] == 9
    assert [r["id"] for r in out["templated"]] == [4, 5]
    assert [q[0]["id"] for q in out["by_ids"]] == [11, 12]  # each key's own vector is nearest
    within = [h["id"] for h in out["top50"][0] if h["distance"] > 0.95]
    assert 0 < len(within) < 50 and [h["id"] for h in out["radius"][0]] == within


async def test_deletes_and_upserts_are_seen_at_once(served: Served) -> None:
    rng = np.random.default_rng(6)
    data, _ = rows(20, rng)

    def flow(c: MilvusClient) -> dict[str, Any]:
        c.create_collection("c", dimension=DIM, consistency_level="Strong")
        c.insert("c", data)
        c.delete("c", ids=[3])
        c.upsert("c", [{**data[4], "tag": "new"}])
        return {
            "deleted": c.query("c", filter="id == 3"),
            "upserted": c.query("c", filter="id == 4", output_fields=["tag"]),
            "search": c.search("c", [data[3]["vector"]], limit=20),
            "count": c.query("c", filter="", output_fields=["count(*)"]),
        }

    out = await served.run(flow)
    assert out["deleted"] == [] and [r["tag"] for r in out["upserted"]] == ["new"]
    ids = [h["id"] for h in out["search"][0]]
    assert 3 not in ids and len(ids) == 19 and ids.count(4) == 1
    assert out["count"][0]["count(*)"] == 19


async def test_read_errors_through_milvus_client(served: Served) -> None:
    def flow(c: MilvusClient) -> dict[str, tuple[int, str]]:
        c.create_collection("c", dimension=DIM)
        c.insert("c", [{"id": 1, "vector": [1.0] * DIM}])
        errors: dict[str, tuple[int, str]] = {}

        def catch(name: str, call: Callable[[], Any]) -> None:
            try:
                call()
            except MilvusException as exc:
                errors[name] = (exc.code, exc.message)

        catch("metric", lambda: c.search("c", [[1.0] * DIM], search_params={"metric_type": "L2"}))
        catch("filter", lambda: c.query("c", filter="id >>> 1"))
        catch("empty", lambda: c.query("c", filter=""))
        catch("dim", lambda: c.search("c", [[1.0] * (DIM + 1)]))
        catch("partition", lambda: c.search("c", [[1.0] * DIM], partition_names=["nope"]))
        catch("field", lambda: c.query("c", filter="id > 0", output_fields=["vector", "a b"]))
        c.release_collection("c")
        catch("search_released", lambda: c.search("c", [[1.0] * DIM]))
        catch("query_released", lambda: c.query("c", filter="id > 0"))
        catch("missing", lambda: c.query("nope", filter="id > 0"))
        schema = c.create_schema(auto_id=False)
        schema.add_field("id", PDataType.INT64, is_primary=True)
        schema.add_field("tenant", PDataType.INT64, is_partition_key=True)
        schema.add_field("vector", PDataType.FLOAT_VECTOR, dim=DIM)
        c.create_collection("pk", schema=schema)
        index = c.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="L2")
        c.create_index("pk", index)
        c.load_collection("pk")
        catch("pk_search", lambda: c.search("pk", [[1.0] * DIM], partition_names=["_default"]))
        catch("pk_query", lambda: c.query("pk", filter="id > 0", partition_names=["_default"]))
        return errors

    errors = await served.run(flow)
    assert errors["metric"][0] == 1100 and "metric type not match" in errors["metric"][1]
    assert errors["filter"][0] == 1100
    assert errors["empty"] == (
        1100,
        "empty expression should be used with limit: invalid parameter",
    )
    assert errors["dim"][0] == 1100 and "dim" in errors["dim"][1]
    assert errors["partition"][0] == 200
    assert errors["field"][0] == 1100
    assert errors["search_released"] == (101, "collection not loaded[collection=c]")
    assert errors["query_released"][0] == 101
    assert errors["missing"][0] == 100
    for read in ("pk_search", "pk_query"):  # a partition-key collection takes no names
        assert errors[read][0] == 1100 and "partition key" in errors[read][1], errors[read]


async def test_one_read_call_per_streaming_node(served: Served) -> None:
    # two in-memory nodes, one vchannel each: a search asks each node once, for its vchannel
    h = served.harness

    def create(c: MilvusClient) -> None:
        c.create_collection("c", dimension=DIM, shards_num=2)

    await served.run(create)
    info = await h.catalog.describe_collection("default", "c")
    other = MemoryStreamingService(h.coordinator)
    router = MappingRouter({info.vchannels[0]: h.streaming, info.vchannels[1]: other})
    servicer = ProxyServicer(h.coordinator, h.catalog, router, h.servicer.clock)
    server = ProxyServer(servicer, "127.0.0.1", 0)
    await server.start()
    client = await asyncio.to_thread(MilvusClient, uri=f"http://{server.address}")
    try:
        rng = np.random.default_rng(7)
        data, base = rows(100, rng)

        def flow(c: MilvusClient) -> Any:
            c.insert("c", data)
            return c.search("c", [base[10].tolist()], limit=3), c.query(
                "c", filter="", output_fields=["count(*)"]
            )

        found, count = await asyncio.to_thread(flow, client)
        assert found[0][0]["id"] == 10 and count[0]["count(*)"] == 100
        for service, vchannel in ((h.streaming, info.vchannels[0]), (other, info.vchannels[1])):
            searches = service.of("search")
            assert len(searches) == 1 and searches[0].data.vchannels == (vchannel,)
            assert service.rows_in(info.collection_id, vchannel) > 0
    finally:
        client.close()
        await server.stop(0)

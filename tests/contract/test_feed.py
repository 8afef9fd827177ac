"""The change feed (``cluster/FEED.md``) in one process: a coordinator, a streaming node owning
both pchannels of a 2-shard collection, and the feed servicers on a real gRPC server, watched
through ``sdk.feed`` over a real channel. Backends: memory objects + memory meta, file:// +
sqlite.

Invariants tested: F1 order across pchannels (inserts, deletes, upserts), F2 resume from every
token without loss or duplicate, starts from a timestamp and from now, the truncated-start
error, tokens of another collection refused, and back-pressure (a consumer that stops reading
stops the server's readers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import numpy as np
import pyarrow as pa
import pytest
from collection_setup import create_test_collection
from polling import until

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.feed import ChangeFeedServicer, FeedLimits, feed_services
from cluster.interfaces import WriteAck
from cluster.milvus.columns import arrow_schema
from cluster.rpc.server import RpcServer
from cluster.schema import CollectionSchema, from_request_bytes
from cluster.streaming.config import StreamingConfig
from cluster.streaming.node import StreamingNode
from sdk.feed import Change, FeedError, FeedTruncated, cluster_info_async, watch_async
from woodpecker import LogStore, WalConfig
from woodpecker.clock import RealClock
from woodpecker.meta import MetaStore, open_meta_store
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore, open_object_store
from woodpecker.objectstore.base import ObjectStore

pytestmark = pytest.mark.contract

DIM = 8
WAL = WalConfig(max_interval=0.002, segment_max_blocks=16)  # readers cross segments
FAST = StreamingConfig(
    time_tick_interval=0.02,
    storage_root="segments",
    maintenance_interval=0.05,
    checkpoint_interval=0.1,
    retry_delay=0.05,
)
LIMITS = FeedLimits(heartbeat_interval=0.05)

Event = tuple[str, int, tuple[int, ...]]  # (op, ts, pks): inserted/upserted rows, deleted keys


@dataclass
class Env:
    objects: ObjectStore
    meta: MetaStore
    coordinator: LocalCoordinator
    info: CollectionInfo
    schema: CollectionSchema
    logs: LogStore
    node: StreamingNode
    server: RpcServer
    channel: grpc.aio.Channel
    next_pk: int = 0
    written: list[Event] = field(default_factory=list)

    @property
    def feed(self) -> ChangeFeedServicer:
        return self.server.servicers[0]  # type: ignore[return-value]

    @property
    def cid(self) -> int:
        return self.info.collection_id

    @property
    def pid(self) -> int:
        return self.info.partitions[0].partition_id

    def batch(self, n: int, first: int | None = None) -> pa.Table:
        start = self.next_pk if first is None else first
        pks = np.arange(start, start + n, dtype=np.int64)
        if first is None:
            self.next_pk += n
        rng = np.random.default_rng(start)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * DIM, np.float32)), DIM)
        titles = pa.array([f"row {p}" for p in pks])
        return pa.Table.from_arrays([pa.array(pks), vec, titles], schema=arrow_schema(self.schema))

    async def insert(self, n: int, shard: int) -> WriteAck:
        table = self.batch(n)
        ack = await self.node.insert(self.cid, self.pid, self.info.vchannels[shard], table)
        self.written.append(("insert", ack.timestamp, tuple(table.column("id").to_pylist())))
        return ack

    async def delete(self, pks: list[int], shard: int) -> WriteAck:
        ack = await self.node.delete(self.cid, None, self.info.vchannels[shard], pa.array(pks))
        self.written.append(("delete", ack.timestamp, tuple(pks)))
        return ack

    async def upsert(self, first: int, n: int, shard: int) -> WriteAck:
        table = self.batch(n, first)
        keys = pa.array(list(range(first, first + n)), pa.int64())
        vch = self.info.vchannels[shard]
        ack = await self.node.upsert(self.cid, vch, [(self.pid, table)], keys, None)
        self.written.append(("upsert", ack.timestamp, tuple(range(first, first + n))))
        return ack

    def expected(self, after_ts: int = 0) -> list[Event]:
        return sorted((e for e in self.written if e[1] > after_ts), key=lambda e: e[1])


def event(change: Change) -> Event:
    if change.op == "delete":
        return ("delete", change.ts, tuple(change.pks))
    return (change.op, change.ts, tuple(r["id"] for r in change.rows))


async def take(stream: AsyncIterator[Change], n: int) -> list[Change]:
    out = []
    async with asyncio.timeout(30):
        while len(out) < n:
            out.append(await anext(stream))
    return out


@pytest.fixture(params=["memory+memory", "file+sqlite"])
async def env(request, tmp_path) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    if request.param == "memory+memory":
        objects: ObjectStore = MemoryObjectStore()
        meta: MetaStore = MemoryMetaStore()
    else:
        objects = open_object_store(f"file://{tmp_path}/objects")
        meta = open_meta_store(f"sqlite:///{tmp_path}/meta.db")
    coordinator = LocalCoordinator(
        meta, RealClock(), catalog=Catalog(meta, num_physical_channels=2)
    )
    await coordinator.start()
    info = await create_test_collection(coordinator, dim=DIM, shards=2)
    logs = await LogStore.open(objects, meta, WAL)
    node = StreamingNode(
        logs, objects, coordinator, channels=list(info.pchannels), meta=meta, config=FAST
    )
    await node.start()
    reader_logs = await LogStore.open(objects, meta, WAL)  # the proxy's own handle
    services = feed_services(
        reader_logs,
        coordinator.catalog.describe_collection,
        coordinator.allocate_timestamp,
        limits=LIMITS,
    )
    server = RpcServer("127.0.0.1", 0, services, name="feed")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    e = Env(
        objects, meta, coordinator, info, from_request_bytes(info.schema), logs, node, server,
        channel,
    )  # fmt: skip
    try:
        yield e
    finally:
        await channel.close()
        await server.stop(grace=0.5)
        with contextlib.suppress(Exception):
            await node.close()
        await reader_logs.close()
        await logs.close()
        await coordinator.close()
        await objects.close()
        await meta.close()


async def mixed_writes(env: Env, rounds: int) -> None:
    """Concurrent inserts on both shards, then deletes and upserts of earlier keys."""
    for r in range(rounds):
        await asyncio.gather(*(env.insert(5, shard=k % 2) for k in range(4)))
        base = r * 20
        await env.delete([base, base + 1], shard=0)
        await env.upsert(base + 2, 2, shard=1)


# --- tests ---------------------------------------------------------------------------------------


async def test_changes_arrive_in_timestamp_order_across_pchannels(env: Env) -> None:
    since = await env.coordinator.allocate_timestamp()
    await mixed_writes(env, rounds=5)
    expected = env.expected()
    stream = watch_async(env.channel, "coll", since=since)
    got = await take(stream, len(expected))
    stream.close()
    assert [event(c) for c in got] == expected
    assert {c.vchannel for c in got} == set(env.info.vchannels)  # both pchannels took part
    assert all(c.partition == "_default" for c in got if c.op != "delete")
    assert all(c.partition == "" for c in got if c.op == "delete")  # every partition
    inserted = next(c for c in got if c.op == "insert")
    assert inserted.rows[0].keys() == {"id", "vec", "title"}
    assert inserted.table.num_rows == inserted.num_rows == 5


async def test_resuming_from_every_token_gives_exactly_the_rest(env: Env) -> None:
    since = await env.coordinator.allocate_timestamp()
    await mixed_writes(env, rounds=3)
    stream = watch_async(env.channel, "coll", since=since)
    run = await take(stream, len(env.written))
    stream.close()
    await env.insert(3, shard=1)  # a sentinel after the run: proves nothing is repeated
    sentinel = env.written[-1]
    for i, change in enumerate(run):
        resumed = watch_async(env.channel, "coll", since=change.token)
        rest = await take(resumed, len(run) - i)
        resumed.close()
        assert [event(c) for c in rest] == [event(c) for c in run[i + 1 :]] + [sentinel]


async def test_a_resumed_watch_on_a_new_connection_misses_nothing_written_meanwhile(
    env: Env,
) -> None:
    since = await env.coordinator.allocate_timestamp()
    await mixed_writes(env, rounds=2)
    first = watch_async(env.channel, "coll", since=since)
    got = await take(first, 4)
    first.close()
    await mixed_writes(env, rounds=2)  # written while nobody watches
    other = grpc.aio.insecure_channel(f"127.0.0.1:{env.server.port}")
    try:
        resumed = watch_async(other, "coll", since=got[-1].token)
        got += await take(resumed, len(env.written) - 4)
        resumed.close()
    finally:
        await other.close()
    assert [event(c) for c in got] == env.expected()


async def test_since_a_timestamp_starts_after_it(env: Env) -> None:
    await mixed_writes(env, rounds=2)
    cut = env.expected()[5][1]
    stream = watch_async(env.channel, "coll", since=cut)
    rest = env.expected(after_ts=cut)
    got = await take(stream, len(rest))
    stream.close()
    assert [event(c) for c in got] == rest


async def test_a_token_taken_before_the_first_change_keeps_the_start_floor(env: Env) -> None:
    """A heartbeat token can be cut before the merge passed the writes at or below the start
    timestamp: resuming from it must still skip them."""
    from cluster.feed.watch import open_watch
    from cluster.proto import feed_pb2

    await mixed_writes(env, rounds=1)
    cut = await env.coordinator.allocate_timestamp()
    describe, ts = env.coordinator.catalog.describe_collection, env.coordinator.allocate_timestamp
    request = feed_pb2.WatchRequest(collection="coll", since_ts=cut)
    session = await open_watch(request, env.feed.logs, describe, ts)
    token = session.merger.token()  # nothing consumed yet: the positions are the oldest
    await session.close()
    await env.insert(3, shard=0)
    stream = watch_async(env.channel, "coll", since=token.encode())
    assert [event(c) for c in await take(stream, 1)] == [env.written[-1]]
    stream.close()


async def test_since_now_skips_what_was_written_before(env: Env) -> None:
    await mixed_writes(env, rounds=1)
    env.written.clear()
    stream = watch_async(env.channel, "coll")  # since=None: now
    first = asyncio.ensure_future(anext(stream))
    await until(lambda: len(env.feed.sessions) == 1)  # the start is resolved
    await mixed_writes(env, rounds=1)
    got = [await first, *await take(stream, len(env.written) - 1)]
    stream.close()
    assert [event(c) for c in got] == env.expected()


async def test_a_start_behind_deleted_wal_segments_is_refused_naming_the_oldest_position(
    env: Env,
) -> None:
    since = await env.coordinator.allocate_timestamp()
    await env.insert(2, shard=0)
    early = watch_async(env.channel, "coll", since=since)
    token = (await take(early, 1))[0].token
    early.close()
    await mixed_writes(env, rounds=2)
    ticket = await env.node.flush(env.cid, list(env.info.vchannels))
    await until(lambda: env.node.flush_state(ticket))

    async def segments_deleted() -> bool:  # checkpoint -> truncation point -> auditor
        await env.logs.audit_once()
        for ch in env.info.pchannels:
            live = [s for s in await (await env.logs.open_log(ch)).segments()]
            if not live or live[0].segment_id == 0:
                return False
        return True

    await until(segments_deleted)
    for since_ in (0, token):
        with pytest.raises(FeedTruncated, match="oldest available position") as err:
            await anext(watch_async(env.channel, "coll", since=since_))
        assert err.value.code is grpc.StatusCode.OUT_OF_RANGE
    # a start the stored WAL covers is served
    late = watch_async(env.channel, "coll", since=await env.coordinator.allocate_timestamp())
    await env.insert(2, shard=0)
    assert [event(c) for c in await take(late, 1)] == [env.written[-1]]
    late.close()
    # a collection created after the truncation: since=0 means "from its creation", served
    born = await create_test_collection(env.coordinator, dim=DIM, shards=2, name="born_later")
    rows = env.batch(3)
    await env.node.insert(
        born.collection_id, born.partitions[0].partition_id, born.vchannels[0], rows
    )
    (first,) = await take(watch_async(env.channel, "born_later", since=0), 1)
    assert (first.op, sorted(r["id"] for r in first.rows)) == (
        "insert",
        rows.column("id").to_pylist(),
    )


async def test_dropping_the_collection_ends_the_stream_after_its_last_change(env: Env) -> None:
    since = await env.coordinator.allocate_timestamp()
    await mixed_writes(env, rounds=1)
    await env.node.drop_collection(env.cid, list(env.info.vchannels))
    stream = watch_async(env.channel, "coll", since=since)
    got = [c async for c in stream]  # ends by itself
    assert [event(c) for c in got] == env.expected()
    assert stream.end_reason == "collection dropped"


async def test_bad_tokens_and_unknown_collections_are_refused(env: Env) -> None:
    other = await create_test_collection(env.coordinator, dim=DIM, shards=2, name="other")
    since = await env.coordinator.allocate_timestamp()
    await env.insert(2, shard=0)
    stream = watch_async(env.channel, "coll", since=since)
    token = (await take(stream, 1))[0].token
    stream.close()
    for name, since_, code in [
        ("other", token, grpc.StatusCode.INVALID_ARGUMENT),  # a token of another collection
        ("coll", "not-a-token", grpc.StatusCode.INVALID_ARGUMENT),
        ("missing", None, grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(FeedError) as err:
            await anext(watch_async(env.channel, name, since=since_))
        assert err.value.code is code, (name, err.value)
    assert other.collection_id != env.cid


async def test_a_consumer_that_stops_reading_stops_the_server_readers(env: Env) -> None:
    """Back-pressure: with the consumer paused after one change, the server reads at most a
    few MiB (gRPC flow-control windows + one batch + one block per pchannel) of ~30 MiB."""
    stream = watch_async(env.channel, "coll", max_batch_changes=1)
    first = asyncio.ensure_future(anext(stream))
    await until(lambda: len(env.feed.sessions) == 1)
    session = next(iter(env.feed.sessions))
    written = 0
    for k in range(300):
        acks = await asyncio.gather(*(env.insert(1000, shard=s) for s in (0, 1)))
        written += sum(a.rows for a in acks) * (8 + 4 * DIM + 12)
        if k == 0:
            await first
    samples: list[int] = []

    async def settled() -> bool:  # the server's reads stopped growing
        samples.append(session.merger.bytes_read)
        return len(samples) > 20 and samples[-1] == samples[-20]

    await until(settled, within=60, interval=0.05)
    read = samples[-1]
    print(f"back-pressure: server read {read / 2**20:.1f} MiB of {written / 2**20:.1f} MiB")
    assert written > 25 << 20
    assert read < written / 3, (read, written)
    # and the stream still delivers everything in order once the consumer reads again
    got = await take(stream, 10)
    assert [c.ts for c in got] == sorted(c.ts for c in got)
    stream.close()


async def test_cluster_info_lists_channels_wal_figures_and_collections(env: Env) -> None:
    await mixed_writes(env, rounds=1)
    info = await cluster_info_async(env.channel, timeout=10)
    assert info["mode"] == "distributed"
    channels = {c["pchannel"]: c for c in info["channels"]}
    assert set(channels) == set(env.info.pchannels)
    for ch in channels.values():
        wal = ch["wal"]
        assert wal["exists"] and wal["last_message_id"] and wal["writer_epoch"] >= 1
        assert wal["bytes"] > 0 and wal["objects"] > 0 and wal["objects_per_mib"] > 0
    (coll,) = info["collections"]
    assert coll["name"] == "coll" and coll["collection_id"] == env.cid
    assert coll["vchannels"] == list(env.info.vchannels) and coll["segments"] == []


async def test_standalone_serves_the_feed_and_admin_view_on_the_milvus_port(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

    from cluster.standalone import Standalone, StandaloneConfig

    standalone = Standalone(StandaloneConfig(data_dir=str(tmp_path / "data"), port=0))
    await standalone.start()
    try:
        assert standalone.server is not None and standalone.coordinator is not None
        assert standalone.node is not None
        info = await create_test_collection(standalone.coordinator, dim=DIM, shards=2)
        schema = from_request_bytes(info.schema)
        since = await standalone.coordinator.allocate_timestamp()
        table = pa.Table.from_arrays(
            [
                pa.array([1, 2], pa.int64()),
                pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * DIM, np.float32)), DIM),
                pa.array(["a", "b"]),
            ],
            schema=arrow_schema(schema),
        )
        pid = info.partitions[0].partition_id
        ack = await standalone.node.insert(info.collection_id, pid, info.vchannels[0], table)
        async with grpc.aio.insecure_channel(standalone.server.address) as channel:
            milvus = milvus_pb2_grpc.MilvusServiceStub(channel)
            version = await milvus.GetVersion(milvus_pb2.GetVersionRequest(), timeout=10)
            assert version.status.code == 0
            stream = watch_async(channel, "coll", since=since)
            (change,) = await take(stream, 1)
            stream.close()
            assert (change.op, change.ts, [r["id"] for r in change.rows]) == (
                "insert", ack.timestamp, [1, 2]
            )  # fmt: skip
            admin = await cluster_info_async(channel, timeout=10)
        assert admin["mode"] == "standalone"
        (node,) = admin["nodes"]
        assert set(node["roles"]) == {"coordinator", "proxy", "streaming", "data"}
        assert node["address"] == standalone.server.address
        assert len(admin["channels"]) == 2
        for ch in admin["channels"]:
            assert ch["wal"]["exists"] and (ch["node_id"], ch["state"]) == (0, "assigned")
        assert [c["name"] for c in admin["collections"]] == ["coll"]
    finally:
        await standalone.stop()


def test_the_sdk_feed_module_imports_only_the_wire_definitions() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sdk.feed; print(' '.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('cluster', 'woodpecker', 'integration'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [
        "cluster",
        "cluster.proto",
        "cluster.proto.feed_pb2",
        "cluster.proto.feed_pb2_grpc",
    ]

"""cluster.streaming.channel_state and .checkpoint: what WAL messages build in memory (upserts
included), the skip rules of a replay and the checkpoint position (pure, no I/O)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, DataType, FieldSchema
from cluster.streaming.channel_state import ChannelMemory
from cluster.streaming.checkpoint import Checkpoint
from cluster.streaming.messages import (
    MessageType,
    UpsertPart,
    WalMessage,
    ddl_message,
    decode,
    delete_message,
    encode,
    flush_message,
    insert_message,
    time_tick_message,
    upsert_message,
    with_system_columns,
)
from cluster.streaming.policy import SegmentPolicy
from woodpecker.clock import ManualClock
from woodpecker.message import Message, MessageId

SCHEMA = CollectionSchema(
    "c",
    (
        FieldSchema(100, "id", DataType.INT64, is_primary=True),
        FieldSchema(101, "vec", DataType.FLOAT_VECTOR, dim=2),
    ),
)
CID, PID, V = 7, 8, "canopy-dml_0_7v0"


def ins(pks: list[int], ts: int, sid: int, cid: int = CID) -> WalMessage:
    n = len(pks)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(2 * n, np.float32)), 2)
    table = pa.Table.from_arrays([pa.array(pks, pa.int64()), vec], schema=arrow_schema(SCHEMA))
    full = with_system_columns(table, np.arange(n) + 1000 * ts, ts)
    return insert_message(
        full, ts=ts, vchannel=V, collection_id=cid, partition_id=PID, segment_id=sid
    )


def rows(pks: list[int], ts: int) -> pa.Table:
    n = len(pks)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.full(2 * n, ts, np.float32)), 2)
    table = pa.Table.from_arrays([pa.array(pks, pa.int64()), vec], schema=arrow_schema(SCHEMA))
    return with_system_columns(table, np.arange(n) + 1000 * ts, ts)


def ups(
    keys: list[int], ts: int, *parts: tuple[int, int, list[int]], delete_pid: int | None = None
) -> WalMessage:
    """An upsert at ``ts`` deleting ``keys`` and writing each ``(partition, segment, pks)``."""
    groups = [UpsertPart(pid, sid, rows(pks, ts)) for pid, sid, pks in parts]
    return upsert_message(
        groups, keys, ts=ts, vchannel=V, collection_id=CID, delete_partition_id=delete_pid
    )


def visible(mem: ChannelMemory, ts: int) -> list[tuple[int, int]]:
    """(pk, _ts) of every row visible at ``ts`` in the channel's segments."""
    out = []
    for seg in mem.segments.values():
        t = seg.growing.query(ts, columns=["id", "_ts"])
        out += zip(t.column("id").to_pylist(), t.column("_ts").to_pylist(), strict=True)
    return sorted(out)


def roundtrip(msg: WalMessage, mid: MessageId) -> WalMessage:
    enc = encode(msg)
    return decode(Message(mid, bytes(enc.payload), enc.properties))


def memory(**kwargs: object) -> ChannelMemory:
    clock = ManualClock()
    policy = SegmentPolicy(clock=clock)
    mem = ChannelMemory("canopy-dml_0", clock, policy, **kwargs)  # type: ignore[arg-type]
    mem.schemas[CID] = SCHEMA
    return mem


def stream() -> list[WalMessage]:
    return [
        ins([1, 2], 10, sid=100),
        time_tick_message(11),
        ins([3], 12, sid=100),
        delete_message([2], ts=13, vchannel=V, collection_id=CID),
        flush_message(ts=14, vchannel=V, collection_id=CID, segment_ids=[100]),
        ins([4, 5], 15, sid=101),
        delete_message([99], ts=16, vchannel=V, collection_id=CID, partition_id=PID),
    ]


def test_messages_build_segments_seals_and_a_delete_buffer() -> None:
    mem = memory()
    for k, msg in enumerate(stream()):
        mem.apply(roundtrip(msg, MessageId(0, k)), MessageId(0, k))
    assert sorted(mem.segments) == [100, 101]
    sealed, growing = mem.segments[100], mem.segments[101]
    assert sealed.sealed and not growing.sealed and list(mem.to_flush) == [100]
    assert (sealed.first_mid, sealed.last_mid) == (MessageId(0, 0), MessageId(0, 6))
    assert sealed.growing.query(13).column("id").to_pylist() == [1, 3]
    assert [d.pks.to_pylist() for d in mem.deletes] == [[2], [99]]
    assert mem.service_ts == 16 and mem.last_mid == MessageId(0, 6)


def test_replaying_the_same_messages_builds_the_same_state() -> None:
    live, replayed = memory(), memory()
    for k, msg in enumerate(stream()):
        mid = MessageId(3, k)
        live.apply(msg, mid)
        replayed.apply(roundtrip(msg, mid), mid)
    for sid in live.segments:
        a, b = live.segments[sid].growing, replayed.segments[sid].growing
        assert a.to_table().equals(b.to_table())
        assert a.deltas(include_matched=True).equals(b.deltas(include_matched=True))
    assert live.position(None) == replayed.position(None) == MessageId(3, 0)


def test_position_is_the_first_message_still_needed() -> None:
    mem = memory()
    msgs = stream()
    for k, msg in enumerate(msgs[:5]):
        mem.apply(msg, MessageId(0, k))
    assert mem.position(None) == MessageId(0, 0)  # segment 100 is in memory
    mem.complete(100)
    assert mem.position(None) == MessageId(0, 3)  # the delete of pk 2 is not persisted yet
    mem.persisted(list(mem.deletes))
    assert mem.position(None) == MessageId(0, 4)  # nothing needed: the last message applied
    assert mem.position(MessageId(1, 0)) == MessageId(1, 0)  # never below the saved one
    assert mem.flushed_after == {100: MessageId(0, 3)}  # its last message: the delete
    assert mem.flushed_from(MessageId(0, 3)) == {100: MessageId(0, 3)}
    assert mem.flushed_from(MessageId(0, 4)) == {}  # a replay from 0:4 never meets it


def test_flushed_segments_after_the_position_are_skipped_on_replay() -> None:
    mem = memory(flushed_after={100: MessageId(0, 2)})
    first = roundtrip(ins([1], 10, sid=100), MessageId(0, 0))
    assert mem.skips(first.header)
    mem.apply(first, MessageId(0, 0))
    assert 100 not in mem.segments and mem.service_ts == 10
    mem.apply(
        flush_message(ts=11, vchannel=V, collection_id=CID, segment_ids=[100]), MessageId(0, 1)
    )
    assert not mem.to_flush
    other = ins([2], 12, sid=101)
    assert not mem.skips(other.header)
    mem.apply(other, MessageId(0, 2))
    assert sorted(mem.segments) == [101]


# --- upserts -------------------------------------------------------------------------------------

PID2 = 9


def upsert_stream() -> list[WalMessage]:
    return [
        ins([1, 2, 3], 10, sid=100),
        flush_message(ts=11, vchannel=V, collection_id=CID, segment_ids=[100]),  # sealed
        ins([4], 12, sid=101),
        # keys in a sealed segment (2), the growing one (4) and nowhere yet (5); the new rows of
        # 2 and 4 go to the growing segment, 5 to a new segment of another partition
        ups([2, 4, 5], 20, (PID, 101, [2, 4]), (PID2, 102, [5])),
        ups([3], 30, delete_pid=PID),  # keys only (auto id: the rows went elsewhere)
        ups([], 40, (PID, 101, [6])),  # rows only
    ]


def test_an_upsert_hides_the_old_versions_and_keeps_its_own_rows() -> None:
    mem = memory()
    for k, msg in enumerate(upsert_stream()):
        mem.apply(roundtrip(msg, MessageId(0, k)), MessageId(0, k))
    assert sorted(mem.segments) == [100, 101, 102]
    assert mem.segments[102].key == (CID, PID2, V)
    assert visible(mem, 19) == [(1, 10), (2, 10), (3, 10), (4, 12)]  # not before its ts
    assert visible(mem, 20) == [(1, 10), (2, 20), (3, 10), (4, 20), (5, 20)]  # at it: new only
    assert visible(mem, 30) == [(1, 10), (2, 20), (4, 20), (5, 20)]
    assert visible(mem, 40) == [(1, 10), (2, 20), (4, 20), (5, 20), (6, 40)]
    # the delete reaches the flushed segments' delete logs later, one entry per message
    assert [(d.pks.to_pylist(), d.ts, d.partition_id) for d in mem.deletes] == [
        ([2, 4, 5], 20, None),
        ([3], 30, PID),
    ]
    # and the segments' own delete logs: (k, 20) never hides the row of k stamped 20; the
    # upsert's delete came before its rows, so the segment it created has none of it
    assert mem.segments[101].growing.deltas(include_matched=True).to_pylist() == [
        {"pk": 2, "_ts": 20},
        {"pk": 4, "_ts": 20},
        {"pk": 5, "_ts": 20},
        {"pk": 3, "_ts": 30},
    ]
    assert mem.segments[102].growing.deltas(include_matched=True).num_rows == 0
    assert mem.segments[101].first_mid == MessageId(0, 2)
    assert mem.segments[102].first_mid == MessageId(0, 3)  # created by the upsert
    assert mem.position(None) == MessageId(0, 0)
    assert mem.service_ts == 40


def test_an_upsert_replays_to_the_same_state() -> None:
    live, replayed = memory(), memory()
    for k, msg in enumerate(upsert_stream()):
        mid = MessageId(3, k)
        live.apply(msg, mid)
        replayed.apply(roundtrip(msg, mid), mid)
    assert sorted(live.segments) == sorted(replayed.segments)
    for sid in live.segments:
        a, b = live.segments[sid].growing, replayed.segments[sid].growing
        assert a.to_table().equals(b.to_table())
        assert np.array_equal(a.visible_mask(10**6), b.visible_mask(10**6))
        assert a.deltas(include_matched=True).equals(b.deltas(include_matched=True))
    for ts in (19, 20, 30, 40):
        assert visible(live, ts) == visible(replayed, ts)


def test_replay_skips_an_upserts_rows_of_a_flushed_segment_but_not_its_delete() -> None:
    mem = memory(flushed_after={101: MessageId(0, 5)})
    mem.apply(ins([1, 2], 10, sid=100), MessageId(0, 0))
    msg = roundtrip(ups([2], 20, (PID, 101, [2])), MessageId(0, 1))
    assert not mem.skips(msg.header)  # its delete is needed
    mem.apply(msg, MessageId(0, 1))
    assert sorted(mem.segments) == [100]  # the rows are in the flushed segment 101
    assert visible(mem, 20) == [(1, 10)]  # the old version of 2 is hidden
    assert [d.pks.to_pylist() for d in mem.deletes] == [[2]]  # and goes to the delete logs


def test_drop_collection_forgets_and_ignores_later_writes() -> None:
    mem = memory()
    mem.apply(ins([1], 10, sid=100), MessageId(0, 0))
    mem.apply(delete_message([5], ts=11, vchannel=V, collection_id=CID), MessageId(0, 1))
    drop = ddl_message(MessageType.DROP_COLLECTION, {}, ts=12, collection_id=CID, vchannel=V)
    mem.apply(drop, MessageId(0, 2))
    assert not mem.segments and not mem.deletes and CID in mem.dropped
    late = ins([2], 13, sid=101)
    assert mem.skips(late.header)
    mem.apply(late, MessageId(0, 3))
    assert not mem.segments and mem.service_ts == 13


def test_size_limit_wakes_the_background_work() -> None:
    woken: list[bool] = []
    clock = ManualClock()
    policy = SegmentPolicy(max_rows=3, clock=clock)
    mem = ChannelMemory("p", clock, policy, on_wake=lambda: woken.append(True))
    mem.schemas[CID] = SCHEMA
    mem.apply(ins([1, 2], 10, sid=1), MessageId(0, 0))
    assert not woken
    mem.apply(ins([3], 11, sid=1), MessageId(0, 1))
    assert woken


async def test_ts_waiters_resolve_in_order() -> None:
    mem = memory()
    early, late = mem.ts_waiter(10), mem.ts_waiter(20)
    mem.apply(time_tick_message(15), MessageId(0, 0))
    assert early.done() and not late.done()
    mem.release_waiters(RuntimeError("closed"))
    assert isinstance(late.exception(), RuntimeError)


def test_checkpoint_round_trips() -> None:
    cp = Checkpoint(MessageId(3, 4), {9: MessageId(3, 7)}, 1234, 5.5)
    assert Checkpoint.decode(cp.encode()) == cp
    assert Checkpoint.decode(Checkpoint().encode()) == Checkpoint()

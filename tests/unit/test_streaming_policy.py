"""cluster.streaming.policy: seal decisions under a ManualClock."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, DataType, FieldSchema
from cluster.streaming.growing import GrowingSegment
from cluster.streaming.messages import with_system_columns
from cluster.streaming.policy import SealReason, SegmentPolicy, SegmentStats
from woodpecker.clock import ManualClock


def stats(**changes: object) -> SegmentStats:
    base = SegmentStats(
        segment_id=1,
        rows=10,
        bytes=1000,
        deletes=0,
        min_ts=1,
        max_ts=2,
        first_message_id=None,
        last_message_id=None,
        first_write_at=0.0,
        last_write_at=0.0,
        sealed=False,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def policy(clock: ManualClock, **changes: object) -> SegmentPolicy:
    limits: dict[str, object] = {
        "max_rows": 100,
        "max_bytes": 10_000,
        "max_age": 60.0,
        "max_idle": 10.0,
    }
    limits.update(changes)
    return SegmentPolicy(clock=clock, **limits)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)  # monotonic() starts at 0


def test_size_rules(clock: ManualClock) -> None:
    p = policy(clock)
    assert p.decide(stats()) is None
    assert p.decide(stats(rows=99)) is None
    assert p.decide(stats(rows=100)) is SealReason.ROWS
    assert p.decide(stats(bytes=10_000)) is SealReason.BYTES
    assert p.decide(stats(rows=500, bytes=10**9)) is SealReason.ROWS  # rows checked first


async def test_age_and_idle_rules(clock: ManualClock) -> None:
    p = policy(clock)
    s = stats(first_write_at=0.0, last_write_at=0.0)
    await clock.advance(9.9)
    assert p.decide(s) is None
    await clock.advance(0.1)
    assert p.decide(s) is SealReason.IDLE
    busy = stats(first_write_at=0.0, last_write_at=55.0)
    await clock.advance(49.9)  # now 59.9: idle 4.9 s, age 59.9 s
    assert p.decide(busy) is None
    await clock.advance(0.1)
    assert p.decide(busy) is SealReason.AGE


async def test_deadline_is_when_a_time_rule_fires(clock: ManualClock) -> None:
    p = policy(clock)
    assert p.deadline(stats(first_write_at=0.0, last_write_at=5.0)) == 15.0
    assert p.deadline(stats(first_write_at=0.0, last_write_at=58.0)) == 60.0
    assert p.deadline(stats(rows=0)) is None
    assert p.deadline(stats(sealed=True)) is None
    assert policy(clock, max_age=None, max_idle=None).deadline(stats()) is None
    s = stats(first_write_at=0.0, last_write_at=5.0)
    await clock.advance(p.deadline(s))  # type: ignore[arg-type]
    assert p.decide(s) is SealReason.IDLE


def test_flush_request_empty_and_sealed(clock: ManualClock) -> None:
    p = policy(clock)
    assert p.decide(stats(), flush_requested=True) is SealReason.FLUSH
    assert p.decide(stats(rows=1000), flush_requested=True) is SealReason.FLUSH
    empty = stats(rows=0, bytes=0, first_write_at=None, last_write_at=None)
    assert p.decide(empty, flush_requested=True) is None
    assert p.decide(stats(rows=1000, sealed=True), flush_requested=True) is None


def test_disabled_rules_and_validation(clock: ManualClock) -> None:
    p = policy(clock, max_rows=None, max_bytes=None, max_age=None, max_idle=None)
    assert p.decide(stats(rows=10**9, bytes=10**12, first_write_at=-1e9)) is None
    with pytest.raises(ValueError, match="max_rows"):
        policy(clock, max_rows=0)
    with pytest.raises(ValueError, match="max_idle"):
        policy(clock, max_idle=-1.0)
    assert SegmentPolicy().max_rows == 200_000  # defaults use the real clock


def test_fits(clock: ManualClock) -> None:
    p = policy(clock)
    assert p.fits(stats(rows=0, bytes=0), rows=10**6, nbytes=10**9)  # an empty segment takes any
    assert p.fits(stats(rows=90, bytes=9000), rows=10, nbytes=1000)
    assert not p.fits(stats(rows=90), rows=11, nbytes=1)
    assert not p.fits(stats(bytes=9000), rows=1, nbytes=1001)
    assert not p.fits(stats(rows=0, sealed=True), rows=1, nbytes=1)


async def test_policy_on_a_growing_segment_sharing_the_clock(clock: ManualClock) -> None:
    schema = CollectionSchema(
        "c",
        (
            FieldSchema(100, "id", DataType.INT64, is_primary=True),
            FieldSchema(101, "vec", DataType.FLOAT_VECTOR, dim=2),
        ),
    )

    def batch(first: int, m: int, ts: int) -> pa.Table:
        table = pa.Table.from_arrays(
            [
                pa.array(np.arange(first, first + m, dtype=np.int64)),
                pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * m, np.float32)), 2),
            ],
            schema=arrow_schema(schema),
        )
        return with_system_columns(table, np.arange(m), ts)

    seg = GrowingSegment(schema, segment_id=1, clock=clock)
    p = policy(clock, max_rows=50)
    assert p.decide(seg.stats) is None
    seg.append(batch(0, 10, 1))
    await clock.advance(8)
    seg.append(batch(10, 10, 2))
    await clock.advance(9)
    assert p.decide(seg.stats) is None  # idle 9 s
    await clock.advance(1)
    assert p.decide(seg.stats) is SealReason.IDLE
    assert p.fits(seg.stats, rows=30, nbytes=0) and not p.fits(seg.stats, rows=31, nbytes=0)
    seg.append(batch(20, 30, 3))
    assert p.decide(seg.stats) is SealReason.ROWS
    seg.seal()
    assert p.decide(seg.stats) is None

"""The pure parts of compaction: which segments a plan takes, which rows a purge removes (the
MVCC rule at the horizon), which deletes the output's log carries."""

from __future__ import annotations

import pyarrow as pa

from cluster.coordinator.compactions import (
    DELETES,
    MERGE,
    CompactionPolicy,
    SegmentStat,
    plan_compactions,
)
from cluster.datanode.compaction import carried_deletes, horizon_of, parse_fence, purge_rows

POLICY = CompactionPolicy(small_rows=100, max_inputs=3, max_rows=250, delete_ratio=0.2)


def stat(sid: int, rows: int, *, pid: int = 1, vch: str = "v0", deletes: int = 0, fp: str = ""):  # type: ignore[no-untyped-def]
    return SegmentStat(sid, pid, vch, rows, deletes, fp)


def test_small_segments_merge_oldest_first_within_caps() -> None:
    segs = [stat(s, 50) for s in (7, 3, 5, 9, 1)] + [stat(20, 100), stat(21, 500)]
    plans = plan_compactions(segs, POLICY)
    assert [(p.inputs, p.rows, p.reason) for p in plans] == [
        ((1, 3, 5), 150, MERGE),  # max_inputs 3
        ((7, 9), 100, MERGE),  # the rest; 20 and 21 are not small (rows >= small_rows)
    ]


def test_merges_respect_max_rows_and_need_two_inputs() -> None:
    segs = [stat(1, 99), stat(2, 99), stat(3, 99), stat(4, 10)]
    plans = plan_compactions(segs, POLICY)
    # 1+2 = 198; adding 3 would pass 250 -> new batch 3+4
    assert [p.inputs for p in plans] == [(1, 2), (3, 4)]
    assert plan_compactions([stat(1, 10)], POLICY) == []  # a lone small segment stays


def test_groups_never_mix_partitions_vchannels_or_schemas() -> None:
    segs = [
        stat(1, 10, pid=1),
        stat(2, 10, pid=2),
        stat(3, 10, vch="v1"),
        stat(4, 10, fp="sha256:b"),
        stat(5, 10, pid=1),
    ]
    plans = plan_compactions(segs, POLICY)
    assert [p.inputs for p in plans] == [(1, 5)]


def test_a_segment_over_the_delete_ratio_is_rewritten_alone() -> None:
    segs = [stat(1, 1000, deletes=199), stat(2, 1000, deletes=200), stat(3, 0, deletes=5)]
    plans = plan_compactions(segs, POLICY)
    assert [(p.inputs, p.reason) for p in plans] == [((2,), DELETES)]
    # a small segment with many deletes is merged (which purges it too), not planned twice
    plans = plan_compactions([stat(4, 10, deletes=9), stat(5, 10)], POLICY)
    assert [(p.inputs, p.reason) for p in plans] == [((4, 5), MERGE)]


def rows(pks: list[int], tss: list[int]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(pks, pa.int64()),
            "_row_id": pa.array(range(len(pks)), pa.int64()),
            "_ts": pa.array(tss, pa.uint64()),
        }
    )


def dels(pks: list[int], tss: list[int]) -> tuple[pa.Array, pa.Array]:
    return pa.array(pks, pa.int64()), pa.array(tss, pa.uint64())


def test_purge_applies_the_mvcc_rule_only_at_or_below_the_horizon() -> None:
    table = rows([1, 1, 2, 3, 4, 5], [10, 30, 10, 10, 10, 10])
    pks, tss = dels([1, 2, 3, 4, 4], [20, 10, 50, 11, 15])
    kept, purged = purge_rows(table, "id", pks, tss, horizon=40)
    # 1@10 hidden by 1@20 (1@30 is newer: stays); 2@10 not hidden by a delete at 10 (ts < D
    # only); 3's delete is above the horizon (readers still apply it); 4@10 hidden (max delete)
    assert sorted(zip(kept["id"].to_pylist(), kept["_ts"].to_pylist(), strict=True)) == [
        (1, 30),
        (2, 10),
        (3, 10),
        (5, 10),
    ]
    assert purged == 2
    assert kept["_row_id"].to_pylist() == [1, 2, 3, 5]  # row ids kept as written
    same, none = purge_rows(table, "id", *dels([], []), horizon=40)
    assert none == 0 and same.num_rows == 6


def test_purge_with_string_keys() -> None:
    table = pa.table(
        {
            "id": pa.array(["a", "b"]),
            "_row_id": pa.array([0, 1], pa.int64()),
            "_ts": pa.array([5, 5], pa.uint64()),
        }
    )
    kept, purged = purge_rows(table, "id", pa.array(["b"]), pa.array([6], pa.uint64()), 10)
    assert kept["id"].to_pylist() == ["a"] and purged == 1


def test_carried_deletes_keep_what_may_still_hide_a_row() -> None:
    pks, tss = dels([1, 1, 2, 3, 50, 60], [20, 20, 10, 90, 10, 10])
    keep_pks, keep_ts = carried_deletes(pks, tss, horizon=40, other_ranges=[(45, 55)])
    got = sorted(zip(keep_pks.to_pylist(), keep_ts.to_pylist(), strict=True))
    # 3@90 is above the horizon; 50 lies in another segment's range; duplicates go
    assert got == [(3, 90), (50, 10)]
    every, _ = carried_deletes(pks, tss, horizon=0, other_ranges=[])
    assert sorted(every.to_pylist()) == [1, 2, 3, 50, 60]


def test_horizon_and_fence_helpers() -> None:
    ts = (1_000_000 << 18) | 7
    assert horizon_of(ts, 2.0) == ((1_000_000 - 2000) << 18) | 7
    assert horizon_of(5, 10.0) == 0
    assert parse_fence("12/3") == (12, 3)
    assert parse_fence(None) is None and parse_fence("x/y") is None

"""Compaction plans of sealed segments: records in the MetaStore, planning, claiming, commit.

The data node's side (reading, purging, writing, fencing) is ``cluster/datanode/compaction.py``;
the storage rules are in ``cluster/storage/LAYOUT.md`` ("Compaction").

A plan merges small flushed segments of one (collection, partition, vchannel) into one new
segment, or rewrites one segment whose delete logs hide a large share of its rows; either way
rows hidden by a delete at or below the plan's **purge horizon** are left out. It is a leased
task on the same machinery as index builds (``index_builds.py``: :class:`BuildState`, the pure
transitions, :func:`cas_transition`, :func:`expire_records`, :class:`BuildOutcome`)::

    plan (txn: each input's registry key unchanged, its lock absent) -> pending, locks taken
    pending  --claim(node)-------------------> building  (attempt+1, lease)
    building --heartbeat(token)--------------> building
    building --commit(token) (one txn)-------> finished  output registered (flushed), inputs'
                                                         registry records dropped
    building --fail / lease expired----------> pending (back-off) | failed
    building --release(token)----------------> pending
    finished --finalize (after drop_delay)---> (deleted)  inputs' manifests dropped, locks freed
    failed   --discard-----------------------> (deleted)  fences lifted, locks freed

Invariants (tested in ``tests/unit/test_compaction_*.py`` and ``tests/contract/``):

1. **One plan per segment**: a plan's txn creates ``compactions/locks/{c}/{s}`` for every input
   (compared absent) and compares each input's registry key at the version planned from, so no
   segment is in two open plans and a plan never includes a segment dropped meanwhile.
2. **One commit per plan, only by the holder**: the commit txn compares the record's version
   (read while it is ``building`` by the committing ``(node_id, attempt)``), every input's
   registry key (still ``flushed``, unchanged) and the output's key absent. A stale worker
   (lease expired, plan re-claimed) gets ``STALE`` and commits nothing.
3. **Readers switch atomically**: the same txn registers the output and marks the inputs
   ``dropped`` in the registry, so a registry listing has either the inputs or the output.
4. **Index builds** of the output are created right after the commit (``sync_segment``; the
   scheduler's reconcile pass is the safety net) and those of the inputs deleted (a worker still
   building one gets ``GONE``).

Keys (JSON values): ``compactions/plans/{collection_id:020d}/{plan_id:020d}``
(:class:`CompactionRecord`) and ``compactions/locks/{collection_id:020d}/{segment_id:020d}``
(the plan id holding that segment).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from cluster.coordinator.index_builds import (
    BuildConflict,
    BuildOutcome,
    BuildPolicy,
    BuildState,
    IndexBuilds,
    LeasedRecord,
    cas_transition,
    claim_build,
    expire_records,
    fail_build,
    heartbeat_build,
    release_build,
)
from woodpecker.clock import Clock
from woodpecker.meta.base import Compare, Delete, KeyValue, MetaStore, Put

__all__ = [
    "COMPACTIONS_PREFIX",
    "CompactionPolicy",
    "CompactionRecord",
    "Compactions",
    "Plan",
    "SegmentStat",
    "plan_compactions",
]

log = logging.getLogger(__name__)

COMPACTIONS_PREFIX = "compactions/"
PLANS_PREFIX = "compactions/plans/"
LOCKS_PREFIX = "compactions/locks/"
SEGMENTS_PREFIX = "segments/"  # the segment registry (service.py)
MERGE = "merge"
DELETES = "deletes"
_COMMIT_ATTEMPTS = 20  # commit txns refused by a concurrent change before giving up


def plan_key(collection_id: int, plan_id: int) -> str:
    return f"{PLANS_PREFIX}{collection_id:020d}/{plan_id:020d}"


def lock_key(collection_id: int, segment_id: int) -> str:
    return f"{LOCKS_PREFIX}{collection_id:020d}/{segment_id:020d}"


def registry_key(collection_id: int, segment_id: int) -> str:
    return f"{SEGMENTS_PREFIX}{collection_id:020d}/{segment_id:020d}"


@dataclass(frozen=True)
class CompactionPolicy:
    """What to compact and when (``datanode.compaction_*`` in the config).

    * merge: flushed segments of one (partition, vchannel, schema) with fewer than
      ``small_rows`` rows, oldest first, at least 2 and at most ``max_inputs`` per plan and
      at most ``max_rows`` rows in all;
    * deletes: one segment whose delete logs (records since its last compaction, at or below
      the horizon) reach ``delete_ratio`` of its rows;
    * ``retention``: seconds subtracted from the plan's TSO timestamp to give the purge horizon;
    * ``drop_delay``: seconds between the commit and marking the inputs' manifests dropped
      (readers that listed the registry before the commit still read them meanwhile);
    * ``interval``: seconds between planning passes of a worker;
    * ``leases``: lease, back-off and failure limit of a plan's attempts.
    """

    small_rows: int = 100_000
    max_inputs: int = 16
    max_rows: int = 200_000
    delete_ratio: float = 0.2
    retention: float = 5.0
    drop_delay: float = 10.0
    interval: float = 10.0
    leases: BuildPolicy = field(default_factory=lambda: BuildPolicy(lease=30.0))


# --- planning (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentStat:
    """A flushed, unlocked segment as the planner sees it. ``deletes``: delete records in its
    logs at or below the horizon that no compaction has carried yet (an upper bound of the rows
    a rewrite would purge)."""

    segment_id: int
    partition_id: int
    vchannel: str
    rows: int
    deletes: int = 0
    fingerprint: str = ""


@dataclass(frozen=True)
class Plan:
    partition_id: int
    vchannel: str
    inputs: tuple[int, ...]
    rows: int
    reason: str


def plan_compactions(segments: Iterable[SegmentStat], policy: CompactionPolicy) -> list[Plan]:
    """Merges of small segments per (partition, vchannel, schema fingerprint), then rewrites of
    single segments over the delete ratio (see :class:`CompactionPolicy`)."""
    groups: dict[tuple[int, str, str], list[SegmentStat]] = {}
    for s in segments:
        groups.setdefault((s.partition_id, s.vchannel, s.fingerprint), []).append(s)
    plans: list[Plan] = []
    for (pid, vchannel, _), members in sorted(groups.items()):
        members.sort(key=lambda s: s.segment_id)
        merged: set[int] = set()
        for batch in _merge_batches([s for s in members if s.rows < policy.small_rows], policy):
            plans.append(
                Plan(pid, vchannel, tuple(s.segment_id for s in batch), _rows(batch), MERGE)
            )
            merged.update(s.segment_id for s in batch)
        for s in members:
            if s.segment_id in merged or s.rows <= 0:
                continue
            if s.deletes >= policy.delete_ratio * s.rows:
                plans.append(Plan(pid, vchannel, (s.segment_id,), s.rows, DELETES))
    return plans


def _rows(batch: Sequence[SegmentStat]) -> int:
    return sum(s.rows for s in batch)


def _merge_batches(
    small: Sequence[SegmentStat], policy: CompactionPolicy
) -> list[list[SegmentStat]]:
    batches: list[list[SegmentStat]] = []
    current: list[SegmentStat] = []
    for s in small:
        full = len(current) >= policy.max_inputs or _rows(current) + s.rows > policy.max_rows
        if current and full:
            batches.append(current)
            current = []
        current.append(s)
    batches.append(current)
    return [b for b in batches if len(b) >= 2]


# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactionRecord(LeasedRecord):
    """The value of ``compactions/plans/{collection_id:020d}/{plan_id:020d}``; a leased task
    (see :class:`~cluster.coordinator.index_builds.Leased`). ``horizon_ts``: deletes at or
    below it are purged. Set at commit: ``output_id`` (0: everything was purged, no output),
    ``output_rows``, ``purged_rows``, ``carried_deletes``."""

    collection_id: int
    plan_id: int
    partition_id: int
    vchannel: str
    inputs: tuple[int, ...]
    input_rows: int
    reason: str
    horizon_ts: int
    state: BuildState = BuildState.PENDING
    attempt: int = 0
    failures: int = 0
    node_id: int | None = None
    lease_deadline: float = 0.0
    retry_at: float = 0.0
    progress: float = 0.0
    error: str = ""
    output_id: int = 0
    output_rows: int = 0
    purged_rows: int = 0
    carried_deletes: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def key(self) -> str:
        return plan_key(self.collection_id, self.plan_id)

    @property
    def token(self) -> tuple[int, int]:
        return (self.node_id or 0, self.attempt)

    def finalizable(self, now: float) -> bool:
        return self.state is BuildState.FINISHED and self.retry_at <= now

    @staticmethod
    def decode(value: bytes) -> CompactionRecord:
        raw = json.loads(value)
        raw["state"] = BuildState(raw["state"])
        raw["inputs"] = tuple(int(s) for s in raw["inputs"])
        return CompactionRecord(**raw)


def decode_plan(kv: KeyValue) -> CompactionRecord | None:
    try:
        return CompactionRecord.decode(kv.value)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("corrupt compaction record %r: %s", kv.key, exc)
        return None


@dataclass(frozen=True)
class CompactionOutput:
    """What a compaction wrote: ``segment_id`` 0 when every row was purged."""

    segment_id: int
    rows: int
    purged_rows: int
    carried_deletes: int
    flushed_ts: int


# --- the MetaStore shell -------------------------------------------------------------------------


class Compactions:
    """Compaction records and their transitions on a MetaStore (no background work; safe from
    many tasks and processes at once: every write is a CAS or a guarded txn)."""

    def __init__(
        self, meta: MetaStore, clock: Clock, policy: CompactionPolicy | None = None
    ) -> None:
        self.meta = meta
        self.clock = clock
        self.policy = policy or CompactionPolicy()

    # --- reading -----------------------------------------------------------------------------

    async def records(self, collection_id: int | None = None) -> list[CompactionRecord]:
        prefix = PLANS_PREFIX if collection_id is None else f"{PLANS_PREFIX}{collection_id:020d}/"
        return [r for kv in await self.meta.range(prefix) if (r := decode_plan(kv)) is not None]

    async def locked(self) -> set[tuple[int, int]]:
        """``(collection_id, segment_id)`` of every segment in an open plan."""
        out = set()
        for kv in await self.meta.range(LOCKS_PREFIX):
            cid, sid = kv.key[len(LOCKS_PREFIX) :].split("/")
            out.add((int(cid), int(sid)))
        return out

    # --- creating ----------------------------------------------------------------------------

    async def create(
        self,
        collection_id: int,
        plan_id: int,
        plan: Plan,
        horizon_ts: int,
        versions: dict[int, int],
    ) -> CompactionRecord | None:
        """Record ``plan`` as pending and lock its inputs, if each input's registry key is
        still at ``versions[sid]`` and in no other plan; None otherwise."""
        now = self.clock.now()
        record = CompactionRecord(
            collection_id, plan_id, plan.partition_id, plan.vchannel, plan.inputs, plan.rows,
            plan.reason, horizon_ts, created_at=now, updated_at=now, retry_at=now,
        )  # fmt: skip
        compares = [Compare.absent(record.key)]
        puts = [Put(record.key, record.encode())]
        for sid in plan.inputs:
            compares.append(Compare.version(registry_key(collection_id, sid), versions[sid]))
            compares.append(Compare.absent(lock_key(collection_id, sid)))
            puts.append(Put(lock_key(collection_id, sid), str(plan_id).encode()))
        if not (await self.meta.txn(compares, list(puts))).succeeded:
            return None
        log.info(
            "collection %d: compaction plan %d (%s) of segments %s (%d rows)",
            collection_id, plan_id, plan.reason, list(plan.inputs), plan.rows,
        )  # fmt: skip
        return record

    # --- transitions -------------------------------------------------------------------------

    async def claim(self, node_id: int) -> CompactionRecord | None:
        """Claim the oldest claimable plan for ``node_id``; None when there is none."""
        now = self.clock.now()
        kvs = await self.meta.range(PLANS_PREFIX)
        ready = sorted(
            ((r.retry_at, r.created_at, kv.key), kv)
            for kv in kvs
            if (r := decode_plan(kv)) is not None and r.claimable(now)
        )
        for _, kv in ready:
            record = decode_plan(kv)
            assert record is not None
            claimed = claim_build(record, node_id, now, self.policy.leases.lease)
            if await self.meta.cas(kv.key, claimed.encode(), expected_version=kv.version):
                log.info(
                    "node %d claimed compaction %d (attempt %d)",
                    node_id, record.plan_id, claimed.attempt,
                )  # fmt: skip
                return claimed
        return None

    async def heartbeat(self, task: CompactionRecord, progress: float = 0.0) -> BuildOutcome:
        now = self.clock.now()
        lease = self.policy.leases.lease
        return await cas_transition(
            self.meta,
            task.key,
            decode_plan,
            task.token,
            lambda r: heartbeat_build(r, task.node_id or 0, task.attempt, now, lease, progress),
        )

    async def fail(self, task: CompactionRecord, error: str, retryable: bool) -> BuildOutcome:
        now = self.clock.now()
        log.warning("compaction %d failed (retryable=%s): %s", task.plan_id, retryable, error)
        policy = self.policy.leases
        return await cas_transition(
            self.meta,
            task.key,
            decode_plan,
            task.token,
            lambda r: fail_build(r, task.node_id or 0, task.attempt, error, retryable, now, policy),
        )

    async def release(self, task: CompactionRecord) -> BuildOutcome:
        now = self.clock.now()
        return await cas_transition(
            self.meta,
            task.key,
            decode_plan,
            task.token,
            lambda r: release_build(r, task.node_id or 0, task.attempt, now),
        )

    async def expire_leases(self) -> int:
        return await expire_records(
            self.meta,
            self.clock,
            self.policy.leases,
            await self.meta.range(PLANS_PREFIX),
            decode_plan,
        )

    async def commit(self, task: CompactionRecord, output: CompactionOutput) -> BuildOutcome:
        """The commit txn (invariants 2-4 of the module docstring): ``OK``, or ``STALE`` when
        the task no longer holds the plan or an input changed, ``GONE`` when the plan is gone.
        A retried commit whose first reply was lost answers ``OK``. A txn refused while the
        task still holds the plan and every input is still ``flushed`` (the holder's own
        heartbeat moved the record meanwhile) is retried from fresh reads."""
        for _ in range(_COMMIT_ATTEMPTS):
            outcome = await self._try_commit(task, output)
            if outcome is not None:
                break
        else:
            raise BuildConflict(f"{task.key}: too much contention to commit")
        return outcome

    async def _try_commit(
        self, task: CompactionRecord, output: CompactionOutput
    ) -> BuildOutcome | None:
        """One commit txn from fresh reads; None when it lost a race worth retrying."""
        from cluster.coordinator.service import SegmentRecord  # the registry's value type

        kv = await self.meta.get(task.key)
        if kv is None:
            return BuildOutcome.GONE
        record = decode_plan(kv)
        if record is None:
            return BuildOutcome.STALE
        if record.state is BuildState.FINISHED and record.token == task.token:
            return BuildOutcome.OK
        if not record.held_by(task.node_id or 0, task.attempt):
            return BuildOutcome.STALE
        cid = task.collection_id
        compares = [Compare.version(task.key, kv.version)]
        puts: list[Put | Delete] = []
        for sid in task.inputs:
            seg = await self.meta.get(registry_key(cid, sid))
            if seg is None or json.loads(seg.value).get("state", "flushed") != "flushed":
                return BuildOutcome.STALE
            raw = json.loads(seg.value)
            raw["state"] = "dropped"
            compares.append(Compare.version(seg.key, seg.version))
            puts.append(Put(seg.key, json.dumps(raw, sort_keys=True).encode()))
        now = self.clock.now()
        if output.segment_id:
            out = SegmentRecord(
                cid, task.partition_id, output.segment_id, task.vchannel, output.rows,
                "flushed", now, output.flushed_ts,
            )  # fmt: skip
            compares.append(Compare.absent(registry_key(cid, output.segment_id)))
            puts.append(Put(registry_key(cid, output.segment_id), out.encode()))
        done = replace(
            record,
            state=BuildState.FINISHED,
            lease_deadline=0.0,
            progress=1.0,
            error="",
            output_id=output.segment_id,
            output_rows=output.rows,
            purged_rows=output.purged_rows,
            carried_deletes=output.carried_deletes,
            retry_at=now + self.policy.drop_delay,
            updated_at=now,
        )
        puts.append(Put(task.key, done.encode()))
        if not (await self.meta.txn(compares, list(puts))).succeeded:
            log.info("compaction %d: commit lost a race; re-reading", task.plan_id)
            return None
        log.info(
            "compaction %d committed: segments %s -> %d (%d rows, %d purged)",
            task.plan_id, list(task.inputs), output.segment_id, output.rows, output.purged_rows,
        )  # fmt: skip
        await self._sync_builds(task, output)
        return BuildOutcome.OK

    async def _sync_builds(self, task: CompactionRecord, output: CompactionOutput) -> None:
        builds = IndexBuilds(self.meta, self.clock)
        try:
            if output.segment_id:
                await builds.sync_segment(
                    task.collection_id, task.partition_id, output.segment_id, output.rows,
                    output.flushed_ts,
                )  # fmt: skip
            await builds.drop_segments(task.collection_id, task.inputs)
        except BuildConflict as exc:  # the scheduler's reconcile pass creates them later
            log.warning("index builds after compaction %d: %s", task.plan_id, exc)

    async def remove(self, record: CompactionRecord) -> bool:
        """Delete a finished (finalized) or failed (fences lifted) plan and free its locks, if
        the record is still as read. True when removed."""
        kv = await self.meta.get(record.key)
        if kv is None:
            return False
        current = decode_plan(kv)
        if current is None or current.state is not record.state:
            return False
        if current.state not in (BuildState.FINISHED, BuildState.FAILED):
            raise BuildConflict(f"{record.key} is {current.state}: not removable")
        ops: list[Put | Delete] = [Delete(record.key)]
        ops += [Delete(lock_key(record.collection_id, s)) for s in record.inputs]
        return (await self.meta.txn([Compare.version(kv.key, kv.version)], list(ops))).succeeded

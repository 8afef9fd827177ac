"""The data node's compaction worker: plans, claims and runs compactions of sealed segments.

Records, planning policy and the commit txn are in ``cluster/coordinator/compactions.py``; the
storage rules (fence property, dropped manifests) in ``cluster/storage/LAYOUT.md``.

One attempt of a plan (:meth:`Compactor.run`, heartbeating the lease meanwhile):

1. **read** the inputs' manifests (all ``flushed``, same schema), their rows and every delete of
   their logs;
2. **write** the output segment (a fresh segment id per attempt): the inputs' rows minus those
   hidden by a delete at or below the plan's horizon (rows keep ``_row_id`` and ``_ts``), then
   one delete log carrying every delete of the inputs' logs (duplicates removed) except those at
   or below the horizon whose key lies outside the pk range of every other flushed segment of
   the same partition and vchannel;
3. **fence** each input: a CAS on its manifest adds ``compaction.fence = "{plan}/{attempt}"``,
   but only at the etag whose delete files were all carried (new ones are read and appended to
   the output first). From then on ``append_deltas`` refuses the input (``SegmentFenced``), so
   no delete can land there unseen;
4. **commit** (one meta txn, fenced by the attempt): output registered ``flushed``, inputs
   ``dropped`` in the registry;
5. later (``drop_delay`` after the commit, any worker): **finalize** -- the inputs' manifests
   become ``dropped`` and the plan's record and locks go.

Invariants:

* No acknowledged row or delete is lost or resurrected for reads at ``T >= horizon``: the
  registry lists either the inputs or the output (one txn); the output has every input row not
  hidden at the horizon, with its ``_ts``, and every delete an input ever accepted (carried
  before the fence, and none accepted after it). A row in both (a reader that loaded an input
  and the output) has the same ``(pk, _ts)`` and reads de-duplicate it.
* **Purge horizon** = the plan's TSO timestamp minus ``retention`` seconds: reads at or above it
  (Strong, Session, Bounded within the retention) see exactly what they saw before. Reads older
  than it may miss purged rows.
* **Deletes during a compaction**: an append that lands before the fence is carried; one after
  it is refused and retried by the streaming node (buffered meanwhile, so reads still apply it),
  which after the commit finds the input dropped in the registry and writes to the output.
* **Failures**: an attempt that fails or loses its lease before committing deletes its output
  and lifts its own fence; a crashed one leaves both -- the planner lifts fences of attempts up
  to a pending plan's last one (a later attempt's fence is never touched), and an unregistered
  output is an orphan no reader lists (garbage for GC). After a possible commit nothing is
  undone: the commit is retried until it answers.
* **Readers that listed the registry before the commit** keep reading the inputs, whose
  manifests stay ``flushed`` for ``drop_delay`` seconds (longer than any list-then-read).
* Stale workers cannot commit (the txn compares the attempt); two workers never both commit one
  plan.

:class:`Compactor` runs the loop: every ``policy.interval`` seconds it expires leases, finalizes
due plans, discards failed ones (fences lifted, locks freed), plans, and runs the plans it can
claim one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from cluster.coordinator.compactions import (
    SEGMENTS_PREFIX,
    CompactionOutput,
    CompactionPolicy,
    CompactionRecord,
    Compactions,
    SegmentStat,
    plan_compactions,
)
from cluster.coordinator.index_builds import BuildOutcome, BuildState
from cluster.coordinator.tso import LOGICAL_BITS
from cluster.storage import (
    FENCE_PROPERTY,
    STATE_DROPPED,
    TS,
    SegmentDropped,
    SegmentManifest,
    SegmentNotFound,
    SegmentWriter,
    append_deltas,
    delete_segment,
    read_deltas,
    read_manifest,
    read_segment,
    update_manifest,
)
from cluster.storage.segment_files import bounded
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError, InvalidArgument
from woodpecker.objectstore.base import ObjectStore

__all__ = [
    "CARRIED_PROPERTY",
    "CompactionSource",
    "Compactor",
    "carried_deletes",
    "purge_rows",
]

log = logging.getLogger(__name__)

CARRIED_PROPERTY = "compaction.carried_deletes"  # output manifest: delete records carried over
SOURCES_PROPERTY = "compaction.sources"  # output manifest: "sid,sid,..." of the inputs
HORIZON_PROPERTY = "compaction.horizon_ts"
_MANIFEST_READS = 16  # manifests read at once while planning

Fault = Callable[[str, CompactionRecord], Awaitable[None]]


@runtime_checkable
class CompactionSource(Protocol):
    """What the compactor needs of the coordinator: the plan records (on the meta store),
    timestamps (horizons, ``flushed_ts``) and ids (plans, output segments).
    ``LocalCoordinator`` is one; ``canopy data-node`` builds one over an RPC client."""

    compactions: Compactions

    async def allocate_timestamp(self, count: int = 1) -> int: ...

    async def allocate_ids(self, count: int = 1) -> int: ...


# --- the pure parts ------------------------------------------------------------------------------


def purge_rows(
    rows: pa.Table, pk: str, del_pks: pa.Array, del_ts: pa.Array, horizon: int
) -> tuple[pa.Table, int]:
    """``rows`` without those hidden by a delete at or below ``horizon`` (a delete of ``k`` at
    ``D`` hides rows of ``k`` with ``_ts < D``), and how many were removed."""
    at_horizon = pc.less_equal(del_ts, pa.scalar(horizon, pa.uint64()))
    pks, tss = del_pks.filter(at_horizon), del_ts.filter(at_horizon)
    if not len(pks) or not rows.num_rows:
        return rows, 0
    latest = pa.table({"pk": pks, "ts": tss}).group_by("pk").aggregate([("ts", "max")])
    where = pc.index_in(rows[pk], value_set=latest["pk"])
    delete_ts = pc.take(latest["ts_max"], where)
    hidden = pc.fill_null(pc.less(rows[TS], delete_ts), False)
    kept = rows.filter(pc.invert(hidden))
    return kept, rows.num_rows - kept.num_rows


def carried_deletes(
    del_pks: pa.Array,
    del_ts: pa.Array,
    horizon: int,
    other_ranges: Sequence[tuple[object, object]],
) -> tuple[pa.Array, pa.Array]:
    """The distinct ``(pk, ts)`` deletes the output's log must keep: every one above the
    horizon, and those at or below it whose key lies in the pk range of another segment (its
    own log should have it; kept all the same). The rest hid only rows the output no longer
    has (rows inserted later have larger ``_ts``, which a delete never hides)."""
    if not len(del_pks):
        return del_pks, del_ts
    pairs = pa.table({"pk": del_pks, "ts": del_ts}).group_by(["pk", "ts"]).aggregate([])
    keep = pc.greater(pairs["ts"], pa.scalar(horizon, pa.uint64()))
    for lo, hi in other_ranges:
        inside = pc.and_(
            pc.greater_equal(pairs["pk"], pa.scalar(lo, pairs["pk"].type)),
            pc.less_equal(pairs["pk"], pa.scalar(hi, pairs["pk"].type)),
        )
        keep = pc.or_(keep, inside)
    kept = pairs.filter(keep)
    return kept["pk"].combine_chunks(), kept["ts"].combine_chunks()


def horizon_of(ts: int, retention: float) -> int:
    """``ts`` minus ``retention`` seconds (hybrid timestamps: milliseconds << 18)."""
    return max(0, ts - (int(retention * 1000) << LOGICAL_BITS))


def parse_fence(value: str | None) -> tuple[int, int] | None:
    """``(plan_id, attempt)`` of a fence property value."""
    if not value:
        return None
    plan, _, attempt = value.partition("/")
    try:
        return int(plan), int(attempt)
    except ValueError:
        return None


def pending_deletes(m: SegmentManifest, horizon: int) -> int:
    """Delete records of ``m`` at or below ``horizon`` not carried by its own compaction."""
    total = sum(d.rows for d in m.delta_files if d.min_ts <= horizon)
    return max(0, total - int(m.properties.get(CARRIED_PROPERTY, "0")))


class _Changed(Exception):
    """An input's manifest lists delete files not carried yet (re-read and carry)."""


@dataclass
class _Attempt:
    """What one attempt did so far (for clean-up)."""

    output: SegmentManifest | None = None
    fenced: list[int] = field(default_factory=list)
    commit_started: bool = False
    progress: float = 0.0


# --- the worker ----------------------------------------------------------------------------------


class Compactor:
    """See the module docstring. ``fault(step, task)`` (tests) is awaited after each step of an
    attempt: ``read``, ``written``, ``fenced``, ``committed``."""

    def __init__(
        self,
        source: CompactionSource,
        objects: ObjectStore,
        node_id: int,
        *,
        clock: Clock | None = None,
        root: str = "",
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
        fault: Fault | None = None,
    ) -> None:
        self.source = source
        self.records = source.compactions
        self.objects = objects
        self.node_id = node_id
        self.clock = clock or RealClock()
        self.root = root
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.fault = fault
        self.committed = 0
        self.purged_rows = 0
        self._unfenced: set[tuple[int, int]] = set()  # (plan, attempt) whose fences were lifted
        self._loop: asyncio.Task[None] | None = None
        self._running: tuple[asyncio.Task[BuildOutcome], CompactionRecord] | None = None

    @property
    def policy(self) -> CompactionPolicy:
        return self.records.policy

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError("Compactor.start() called twice")
        self._loop = asyncio.get_running_loop().create_task(
            self._run_loop(), name=f"compactor-{self.node_id}"
        )

    async def wait(self) -> None:
        """Until the loop stops: raises what stopped it (``close()`` returns quietly)."""
        assert self._loop is not None, "not started"
        try:
            await asyncio.shield(self._loop)
        except asyncio.CancelledError:
            if self._loop.cancelled():
                return
            raise
        raise RuntimeError(f"compactor {self.node_id} ended unexpectedly")

    async def close(self) -> None:
        """Stop; a running attempt is cancelled, cleaned up and released."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(BaseException):
                await self._loop

    async def _run_loop(self) -> None:
        """Passes every ``policy.interval`` seconds. A failed pass is logged and retried with
        back-off (compaction is background work: it never stops the node)."""
        delay = self.retry_delay
        while True:
            await self.clock.sleep(delay if delay > self.retry_delay else self.policy.interval)
            try:
                await self.pass_once()
                delay = self.retry_delay
            except Exception as exc:
                delay = min(delay * 2, self.max_retry_delay)
                retryable = isinstance(exc, CanopyError) and exc.retryable
                log.log(
                    logging.WARNING if retryable else logging.ERROR,
                    "compaction pass failed; retrying in %.2f s", delay, exc_info=True,
                )  # fmt: skip

    async def pass_once(self) -> int:
        """Maintain, plan, then run every plan this node can claim; returns attempts run."""
        await self.maintain()
        await self.plan()
        ran = 0
        while (task := await self.records.claim(self.node_id)) is not None:
            await self.run(task)
            ran += 1
        return ran

    # --- maintenance ---------------------------------------------------------------------------

    async def maintain(self) -> None:
        """Expire leases; finalize committed plans past ``drop_delay``; discard failed plans;
        lift the fences of attempts that ended without committing."""
        await self.records.expire_leases()
        now = self.clock.now()
        for record in await self.records.records():
            if record.finalizable(now):
                await self.finalize(record)
            elif record.state is BuildState.FAILED:
                await self.discard(record)
            elif record.state is BuildState.PENDING and record.attempt:
                if (record.plan_id, record.attempt) not in self._unfenced:
                    await self.unfence(record, record.attempt)
                    self._unfenced.add((record.plan_id, record.attempt))

    async def finalize(self, record: CompactionRecord) -> None:
        """Mark the inputs' manifests dropped (idempotent), then remove the record and locks."""
        for sid in record.inputs:
            with contextlib.suppress(SegmentNotFound):
                await update_manifest(
                    self.objects, self.root, record.collection_id, record.partition_id, sid,
                    lambda m: replace(m, state=STATE_DROPPED),
                )  # fmt: skip
        await self.records.remove(record)

    async def discard(self, record: CompactionRecord) -> None:
        log.error("compaction %d failed for good: %s", record.plan_id, record.error)
        await self.unfence(record, record.attempt)
        await self.records.remove(record)

    async def unfence(self, record: CompactionRecord, max_attempt: int) -> None:
        """Lift the fences of this plan set by attempts up to ``max_attempt`` (never a later
        attempt's, never on a dropped manifest)."""

        def lift(m: SegmentManifest) -> SegmentManifest | None:
            fence = parse_fence(m.properties.get(FENCE_PROPERTY))
            if m.state == STATE_DROPPED or fence is None:
                return None
            if fence[0] != record.plan_id or fence[1] > max_attempt:
                return None
            props = {k: v for k, v in m.properties.items() if k != FENCE_PROPERTY}
            return replace(m, properties=props)

        for sid in record.inputs:
            with contextlib.suppress(SegmentNotFound):
                await update_manifest(
                    self.objects, self.root, record.collection_id, record.partition_id, sid, lift
                )

    # --- planning ------------------------------------------------------------------------------

    async def plan(self) -> list[CompactionRecord]:
        """Plan compactions of every collection's unlocked flushed segments (see
        :func:`~cluster.coordinator.compactions.plan_compactions`); returns the plans made."""
        meta = self.records.meta
        locked = await self.records.locked()
        by_cid: dict[int, list[tuple[int, dict[str, object]]]] = {}
        for kv in await meta.range(SEGMENTS_PREFIX):
            raw = json.loads(kv.value)
            cid, sid = int(raw["collection_id"]), int(raw["segment_id"])
            if raw.get("state", "flushed") == "flushed" and (cid, sid) not in locked:
                by_cid.setdefault(cid, []).append((kv.version, raw))
        if not by_cid:
            return []
        horizon = horizon_of(await self.source.allocate_timestamp(), self.policy.retention)
        made = []
        for cid, segs in sorted(by_cid.items()):
            made += await self._plan_collection(cid, segs, horizon)
        return made

    async def _plan_collection(
        self, cid: int, segs: list[tuple[int, dict[str, object]]], horizon: int
    ) -> list[CompactionRecord]:
        versions = {int(raw["segment_id"]): version for version, raw in segs}  # type: ignore[call-overload]

        async def stat(raw: dict[str, object]) -> SegmentStat | None:
            sid, pid = int(raw["segment_id"]), int(raw["partition_id"])  # type: ignore[call-overload]
            try:
                m = await read_manifest(self.objects, self.root, cid, pid, sid)
            except SegmentNotFound:
                return None
            if m.state == STATE_DROPPED:
                return None
            return SegmentStat(
                sid, pid, str(raw["vchannel"]), m.row_count, pending_deletes(m, horizon),
                m.schema_fingerprint,
            )  # fmt: skip

        loaded = await bounded([lambda r=r: stat(r) for _, r in segs], _MANIFEST_READS)
        plans = plan_compactions([s for s in loaded if s is not None], self.policy)
        if not plans:
            return []
        first = await self.source.allocate_ids(len(plans))
        made = []
        for i, plan in enumerate(plans):
            record = await self.records.create(cid, first + i, plan, horizon, versions)
            if record is not None:
                made.append(record)
        return made

    # --- one attempt ---------------------------------------------------------------------------

    async def run(self, task: CompactionRecord) -> BuildOutcome:
        """Run ``task`` (claimed) to its end, heartbeating meanwhile; returns the outcome of the
        commit or of the last report (``STALE``/``GONE`` when lost)."""
        from cluster.datanode.worker import heartbeat_until_done

        attempt = _Attempt()
        work = asyncio.ensure_future(self._compact(task, attempt))
        try:
            lost = await heartbeat_until_done(
                self.clock,
                self.policy.leases.lease,
                work,  # type: ignore[arg-type]
                lambda: self.records.heartbeat(task, attempt.progress),
                task.key,
            )
        except asyncio.CancelledError:
            await self._stop(work)
            await asyncio.shield(self._abandon(task, attempt, release=True))
            raise
        if lost is not None and attempt.commit_started:
            await asyncio.wait({work})  # committing (a beat saw the commit): its outcome decides
        elif lost is not None:
            await self._stop(work)
            await self._abandon(task, attempt, release=False)
            return lost
        exc = work.exception()
        if exc is None:
            outcome = work.result()
            if outcome is not BuildOutcome.OK:
                await self._cleanup(task, attempt)
                await self._refused(task, outcome)
            return outcome
        return await self._failed(task, attempt, exc)

    async def _refused(self, task: CompactionRecord, outcome: BuildOutcome) -> None:
        """After a refused commit, give the plan back if this attempt still holds it (an input
        changed under it): pending with back-off, not ``building`` until the lease expires. A
        no-op when the plan is another attempt's or gone (the report is token-fenced)."""
        from cluster.datanode.worker import report_retrying

        if outcome is not BuildOutcome.STALE:
            return
        await report_retrying(
            lambda: self.records.fail(task, "commit refused: an input changed", True),
            self.clock,
            self.retry_delay,
            self.max_retry_delay,
        )

    @staticmethod
    async def _stop(work: asyncio.Future[BuildOutcome]) -> None:
        if not work.done():
            work.cancel()
        with contextlib.suppress(BaseException):
            await work

    async def _failed(
        self, task: CompactionRecord, attempt: _Attempt, exc: BaseException
    ) -> BuildOutcome:
        from cluster.datanode.worker import classify_error, report_retrying

        if attempt.commit_started:  # the commit may have happened: undo nothing
            log.error("compaction %d: commit outcome unknown: %s", task.plan_id, exc)
            return BuildOutcome.STALE
        await self._cleanup(task, attempt)
        message, retryable = classify_error(exc)
        return await report_retrying(
            lambda: self.records.fail(task, message, retryable),
            self.clock,
            self.retry_delay,
            self.max_retry_delay,
        )

    async def _abandon(self, task: CompactionRecord, attempt: _Attempt, *, release: bool) -> None:
        if attempt.commit_started:
            return
        await self._cleanup(task, attempt)
        if release:
            with contextlib.suppress(Exception):
                await self.records.release(task)

    async def _cleanup(self, task: CompactionRecord, attempt: _Attempt) -> None:
        """Lift this attempt's fences and delete its (unregistered) output; best effort: what
        fails is left to the planner (fences of ended attempts) and GC (orphan outputs)."""
        try:
            if attempt.fenced:
                await self.unfence(task, task.attempt)
            if attempt.output is not None:
                m = attempt.output
                await delete_segment(
                    self.objects, self.root, m.collection_id, m.partition_id, m.segment_id
                )
        except Exception as exc:
            log.warning("compaction %d: clean-up incomplete: %s", task.plan_id, exc)

    async def _step(self, name: str, task: CompactionRecord, progress: float, a: _Attempt) -> None:
        a.progress = progress
        if self.fault is not None:
            await self.fault(name, task)

    async def _compact(self, task: CompactionRecord, a: _Attempt) -> BuildOutcome:
        from cluster.datanode.worker import report_retrying

        manifests = [await self._input(task, sid) for sid in task.inputs]
        first = manifests[0]
        if any(m.schema_fingerprint != first.schema_fingerprint for m in manifests):
            raise InvalidArgument(f"compaction {task.plan_id}: inputs differ in schema")
        rows = pa.concat_tables([await read_segment(self.objects, m) for m in manifests])
        pks, tss, carried = await self._read_deltas(manifests)
        others = await self._other_ranges(task)
        await self._step("read", task, 0.3, a)
        kept, purged = purge_rows(rows, first.pk_field, pks, tss, task.horizon_ts)
        keep_pks, keep_ts = carried_deletes(pks, tss, task.horizon_ts, others)
        output_id = 0
        if kept.num_rows:
            output_id = await self.source.allocate_ids()
            a.output = await self._write(task, first, output_id, kept, keep_pks, keep_ts)
        await self._step("written", task, 0.7, a)
        for m in manifests:
            await self._fence(task, m, carried, a)
        await self._step("fenced", task, 0.9, a)
        flushed_ts = await self.source.allocate_timestamp()
        output = CompactionOutput(output_id, kept.num_rows, purged, len(keep_pks), flushed_ts)
        a.commit_started = True
        outcome = await report_retrying(
            lambda: self.records.commit(task, output),
            self.clock,
            self.retry_delay,
            self.max_retry_delay,
        )
        if outcome is BuildOutcome.OK:
            self.committed += 1
            self.purged_rows += purged
            await self._step("committed", task, 1.0, a)
        else:
            a.commit_started = False  # refused: nothing was committed, clean up
        return outcome

    async def _input(self, task: CompactionRecord, sid: int) -> SegmentManifest:
        m = await read_manifest(self.objects, self.root, task.collection_id, task.partition_id, sid)
        if m.state == STATE_DROPPED:
            raise SegmentDropped(f"compaction {task.plan_id}: input {sid} is dropped")
        return m

    async def _read_deltas(
        self, manifests: Sequence[SegmentManifest]
    ) -> tuple[pa.Array, pa.Array, dict[int, set[str]]]:
        """Every delete of the inputs' logs, and per input the delete files read."""
        pk_parts, ts_parts, carried = [], [], {}
        for m in manifests:
            pks, tss = await read_deltas(self.objects, m)
            pk_parts.append(pks)
            ts_parts.append(tss)
            carried[m.segment_id] = {d.path for d in m.delta_files}
        return pa.concat_arrays(pk_parts), pa.concat_arrays(ts_parts), carried

    async def _other_ranges(self, task: CompactionRecord) -> list[tuple[object, object]]:
        """pk ranges of the other flushed segments of the task's partition and vchannel."""
        infos = await self.records.meta.range(f"{SEGMENTS_PREFIX}{task.collection_id:020d}/")
        ranges: list[tuple[object, object]] = []
        for kv in infos:
            raw = json.loads(kv.value)
            sid = int(raw["segment_id"])
            if (
                sid in task.inputs
                or raw.get("state", "flushed") != "flushed"
                or int(raw["partition_id"]) != task.partition_id
                or raw["vchannel"] != task.vchannel
            ):
                continue
            try:
                m = await read_manifest(
                    self.objects, self.root, task.collection_id, task.partition_id, sid
                )
            except SegmentNotFound:
                continue
            ranges.append((m.min_pk, m.max_pk))
        return ranges

    async def _write(
        self,
        task: CompactionRecord,
        first: SegmentManifest,
        output_id: int,
        rows: pa.Table,
        pks: pa.Array,
        tss: pa.Array,
    ) -> SegmentManifest:
        writer = SegmentWriter(
            self.objects, self.root, task.collection_id, task.partition_id, output_id,
            channel=first.channel, pk_field=first.pk_field, schema_version=first.schema_version,
            properties={
                SOURCES_PROPERTY: ",".join(str(s) for s in task.inputs),
                HORIZON_PROPERTY: str(task.horizon_ts),
                CARRIED_PROPERTY: str(len(pks)),
            },
            clock=self.clock,
        )  # fmt: skip
        try:
            await writer.write(rows)
            manifest = await writer.finish()
        except BaseException:
            if writer.manifest is None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(writer.abort())
            raise
        if len(pks):
            await append_deltas(
                self.objects, self.root, task.collection_id, task.partition_id, output_id,
                pks, tss,
            )  # fmt: skip
        return manifest

    async def _fence(
        self, task: CompactionRecord, m: SegmentManifest, carried: dict[int, set[str]], a: _Attempt
    ) -> None:
        """Fence input ``m`` at a manifest version whose delete files were all carried (new
        ones are appended to the output first)."""
        fence = f"{task.plan_id}/{task.attempt}"
        sid = m.segment_id
        seen = carried[sid]

        def fenced(current: SegmentManifest) -> SegmentManifest:
            if current.state == STATE_DROPPED:
                raise SegmentDropped(f"compaction {task.plan_id}: input {sid} was dropped")
            if any(d.path not in seen for d in current.delta_files):
                raise _Changed
            return replace(current, properties={**current.properties, FENCE_PROPERTY: fence})

        while True:
            try:
                await update_manifest(
                    self.objects, self.root, task.collection_id, task.partition_id, sid, fenced
                )
                a.fenced.append(sid)
                return
            except _Changed:
                current = await self._input(task, sid)
                new = tuple(d for d in current.delta_files if d.path not in seen)
                pks, tss = await read_deltas(self.objects, replace(current, delta_files=new))
                if len(pks) and a.output is not None:
                    out = a.output
                    await append_deltas(
                        self.objects, self.root, out.collection_id, out.partition_id,
                        out.segment_id, pks, tss,
                    )  # fmt: skip
                seen.update(d.path for d in new)

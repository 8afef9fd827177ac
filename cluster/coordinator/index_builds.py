"""Index builds of sealed segments: one build record per (collection, index, segment) in the
MetaStore, and the state machine over it.

States (:class:`BuildState`); every transition is one compare-and-swap on the record's version
(or a txn that also compares the catalog keys it relied on)::

    segment flushed / index created ---------------------------> pending
    pending  --claim(node)----------------------------> building (attempt+1, lease deadline)
    building --heartbeat(token)-----------------------> building (deadline moved, progress)
    building --finish(token)--------------------------> finished (index manifest key, rows)
    building --fail(token, retryable)-----------------> pending  (not before now + back-off)
    building --fail(token, not retryable)-------------> failed   (error; reported, not retried)
    building --lease expired (scheduler)--------------> pending  (reassignment)
    building --release(token) (worker stops cleanly)--> pending
    any      --index or collection dropped------------> (deleted)

A worker holds a build by its token ``(node_id, attempt)``; ``attempt`` grows on every claim, so
a worker whose lease expired cannot heartbeat, finish or fail the next holder's attempt: it gets
:attr:`BuildOutcome.STALE`. A deleted record answers :attr:`BuildOutcome.GONE` (the worker then
deletes the files it wrote). Retryable failures and lease expiries count in ``failures``; at
``BuildPolicy.max_failures`` the build is ``failed``. Lease deadlines are wall-clock seconds of
the injected clock (workers in other processes rely on clocks agreeing to well within a lease).

Parts:

- pure transitions (:func:`claim_build`, :func:`heartbeat_build`, :func:`finish_build`,
  :func:`fail_build`, :func:`expire_build`, :func:`release_build`) and :func:`summarize`
  (per-index progress, Milvus's ``completeIndexInfo`` rules);
- :class:`IndexBuilds`: those transitions on the MetaStore, plus ``sync_*`` which create the
  missing records of every (index, flushed segment) and delete those of dropped indexes and
  collections (guarded by the catalog keys' versions, so no record outlives a concurrent drop);
- the background parts (``BuildQueue``, ``IndexBuildScheduler``) are in ``index_scheduler.py``.

Keys: ``cluster/coordinator/META.md`` ("Index builds").
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol, TypeVar

from cluster.coordinator.records import (
    INDEXES_PREFIX,
    CollectionIndexes,
    IndexInfo,
    collection_id_key,
    indexes_key,
)
from woodpecker.clock import Clock
from woodpecker.errors import CanopyError
from woodpecker.meta.base import Compare, DeletePrefix, KeyValue, MetaStore, Put

__all__ = [
    "BUILDS_PREFIX",
    "BuildOutcome",
    "BuildPolicy",
    "BuildRecord",
    "BuildResult",
    "BuildState",
    "BuildTask",
    "IndexBuildProgress",
    "IndexBuilds",
    "Leased",
    "LeasedRecord",
    "ProgressState",
    "build_key",
    "cas_transition",
    "collection_of",
    "decode_build",
    "expire_records",
    "summarize",
]

log = logging.getLogger(__name__)

BUILDS_PREFIX = "index_builds/"
SEGMENTS_PREFIX = "segments/"  # the segment registry (service.py); read here, never written
_TXN_BUILDS = 50  # records created per txn (2 + 50 compares, 50 puts: below etcd's 128)
_ATTEMPTS = 20  # re-reads after a lost compare before giving up on one sync or transition


def collection_builds_prefix(collection_id: int) -> str:
    return f"{BUILDS_PREFIX}{collection_id:020d}/"


def index_builds_prefix(collection_id: int, index_id: int) -> str:
    return f"{collection_builds_prefix(collection_id)}{index_id:020d}/"


def build_key(collection_id: int, index_id: int, segment_id: int) -> str:
    return f"{index_builds_prefix(collection_id, index_id)}{segment_id:020d}"


def collection_of(key: str, prefix: str) -> int | None:
    """The collection id right after ``prefix`` in ``key`` (None if it is not one)."""
    rest = key[len(prefix) :].split("/", 1)[0]
    return int(rest) if rest.isdigit() else None


# --- records and the pure state machine ----------------------------------------------------------


class BuildState(enum.StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    FINISHED = "finished"
    FAILED = "failed"


class BuildOutcome(enum.Enum):
    """What a worker's report did: ``OK`` applied; ``STALE`` the build is no longer this
    attempt's (lease expired and reassigned, or already final); ``GONE`` the record was deleted
    (index or collection dropped)."""

    OK = "ok"
    STALE = "stale"
    GONE = "gone"


@dataclass(frozen=True)
class BuildPolicy:
    """Timing of builds (seconds of the injected clock). A worker heartbeats every
    ``lease / 3``; a retryable failure waits ``retry_delay * 2**(failures-1)`` (at most
    ``max_retry_delay``) before the build can be claimed again."""

    lease: float = 30.0
    max_failures: int = 5
    retry_delay: float = 2.0
    max_retry_delay: float = 60.0
    expiry_interval: float = 1.0  # how often the scheduler looks for expired leases
    reconcile_interval: float = 60.0  # full catalog x segments x builds pass (safety net)

    def backoff(self, failures: int) -> float:
        return min(self.max_retry_delay, self.retry_delay * 2 ** max(0, failures - 1))


class Leased(Protocol):
    """A leased task record (a :class:`BuildRecord`, or a compaction record in
    ``compactions.py``): a frozen dataclass with these fields, so the pure transitions below
    (``claim_build`` ... ``release_build``, :func:`cas_transition`, :func:`expire_records`)
    serve every kind of task."""

    state: BuildState
    attempt: int
    failures: int
    node_id: int | None
    lease_deadline: float
    retry_at: float
    progress: float
    error: str
    updated_at: float

    @property
    def key(self) -> str: ...

    def held_by(self, node_id: int, attempt: int) -> bool: ...

    def claimable(self, now: float) -> bool: ...

    def encode(self) -> bytes: ...


L = TypeVar("L", bound=Leased)


class LeasedRecord:
    """Methods every leased record shares (mixed into frozen dataclasses with the
    :class:`Leased` fields): the holder check, claimability and the JSON encoding."""

    state: BuildState
    node_id: int | None
    attempt: int
    retry_at: float

    def held_by(self, node_id: int, attempt: int) -> bool:
        return self.state is BuildState.BUILDING and (self.node_id, self.attempt) == (
            node_id,
            attempt,
        )

    def claimable(self, now: float) -> bool:
        return self.state is BuildState.PENDING and self.retry_at <= now

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()  # type: ignore[call-overload]


@dataclass(frozen=True)
class BuildRecord(LeasedRecord):
    """The value of ``index_builds/{collection_id:020d}/{index_id:020d}/{segment_id:020d}``."""

    collection_id: int
    index_id: int
    segment_id: int
    partition_id: int
    field_id: int
    rows: int  # rows of the segment
    segment_ts: int = 0  # TSO timestamp the segment was registered at (0: unknown, "old")
    state: BuildState = BuildState.PENDING
    attempt: int = 0  # claims so far; with node_id the holder's token
    failures: int = 0  # retryable failures and lease expiries
    node_id: int | None = None  # the holder while building, the last one afterwards
    lease_deadline: float = 0.0
    retry_at: float = 0.0  # a pending build is not claimed before this
    progress: float = 0.0  # the holder's last reported fraction
    error: str = ""
    manifest_key: str = ""  # the index manifest (index.json) once finished
    indexed_rows: int = 0
    index_type: str = ""  # what was built (FLAT / HNSW)
    build_seconds: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def key(self) -> str:
        return build_key(self.collection_id, self.index_id, self.segment_id)

    @staticmethod
    def decode(value: bytes) -> BuildRecord:
        raw = json.loads(value)
        raw["state"] = BuildState(raw["state"])
        return BuildRecord(**raw)


@dataclass(frozen=True)
class BuildTask:
    """A claimed build: what the worker builds and the token it reports with."""

    collection_id: int
    partition_id: int
    segment_id: int
    rows: int
    index: IndexInfo
    node_id: int
    attempt: int
    lease: float

    @property
    def key(self) -> str:
        return build_key(self.collection_id, self.index.index_id, self.segment_id)


@dataclass(frozen=True)
class BuildResult:
    """What a finished build produced (from its index manifest)."""

    manifest_key: str
    rows: int
    index_type: str
    build_seconds: float


class BuildConflict(CanopyError):
    """A transition the record's current state does not allow, or too much contention on a
    record (retryable: the next read may allow it)."""

    retryable = True


def new_build(
    index: IndexInfo, partition_id: int, segment_id: int, rows: int, segment_ts: int, now: float
) -> BuildRecord:
    return BuildRecord(
        collection_id=index.collection_id,
        index_id=index.index_id,
        segment_id=segment_id,
        partition_id=partition_id,
        field_id=index.field_id,
        rows=rows,
        segment_ts=segment_ts,
        created_at=now,
        updated_at=now,
    )


def claim_build(r: L, node_id: int, now: float, lease: float) -> L:
    if not r.claimable(now):
        raise BuildConflict(f"{r.key} is {r.state} (retry at {r.retry_at}), not claimable")
    return replace(
        r,
        state=BuildState.BUILDING,
        attempt=r.attempt + 1,
        node_id=node_id,
        lease_deadline=now + lease,
        progress=0.0,
        updated_at=now,
    )


def heartbeat_build(
    r: L, node_id: int, attempt: int, now: float, lease: float, progress: float
) -> L:
    _check_holder(r, node_id, attempt)
    return replace(r, lease_deadline=now + lease, progress=progress, updated_at=now)


def finish_build(
    r: BuildRecord, node_id: int, attempt: int, result: BuildResult, now: float
) -> BuildRecord:
    _check_holder(r, node_id, attempt)
    return replace(
        r,
        state=BuildState.FINISHED,
        lease_deadline=0.0,
        progress=1.0,
        error="",
        manifest_key=result.manifest_key,
        indexed_rows=result.rows,
        index_type=result.index_type,
        build_seconds=result.build_seconds,
        updated_at=now,
    )


def fail_build(
    r: L,
    node_id: int,
    attempt: int,
    error: str,
    retryable: bool,
    now: float,
    policy: BuildPolicy,
) -> L:
    _check_holder(r, node_id, attempt)
    return _back_off(r, error, retryable, now, policy)


def expire_build(r: L, now: float, policy: BuildPolicy) -> L:
    """A building record whose lease passed goes back to pending (claimable at once)."""
    if r.state is not BuildState.BUILDING or r.lease_deadline > now:
        raise BuildConflict(f"{r.key}: lease not expired")
    error = f"lease of node {r.node_id} expired (attempt {r.attempt})"
    expired = _back_off(r, error, True, now, policy)
    return replace(expired, retry_at=now) if expired.state is BuildState.PENDING else expired


def release_build(r: L, node_id: int, attempt: int, now: float) -> L:
    """The holder gives the build back unfinished (it is stopping): pending, no failure."""
    _check_holder(r, node_id, attempt)
    return replace(r, state=BuildState.PENDING, lease_deadline=0.0, retry_at=now, updated_at=now)


def _check_holder(r: Leased, node_id: int, attempt: int) -> None:
    if not r.held_by(node_id, attempt):
        raise BuildConflict(
            f"{r.key} is {r.state} by node {r.node_id} attempt {r.attempt}, "
            f"not node {node_id} attempt {attempt}"
        )


def _back_off(r: L, error: str, retryable: bool, now: float, policy: BuildPolicy) -> L:
    failures = r.failures + 1 if retryable else r.failures
    base = replace(r, lease_deadline=0.0, error=error, failures=failures, updated_at=now)
    if retryable and failures < policy.max_failures:
        return replace(base, state=BuildState.PENDING, retry_at=now + policy.backoff(failures))
    if retryable:
        base = replace(base, error=f"gave up after {failures} failures; last: {error}")
    return replace(base, state=BuildState.FAILED)


# --- progress ------------------------------------------------------------------------------------


class ProgressState(enum.StrEnum):
    FINISHED = "finished"
    IN_PROGRESS = "in_progress"
    FAILED = "failed"


@dataclass(frozen=True)
class IndexBuildProgress:
    """One index over the collection's flushed segments (Milvus's DescribeIndex numbers)."""

    indexed_rows: int
    total_rows: int
    pending_rows: int
    state: ProgressState
    fail_reason: str = ""


@dataclass(frozen=True)
class SegmentFacts:
    """What progress needs of a registered segment."""

    segment_id: int
    partition_id: int
    rows: int
    flushed_ts: int


def summarize(
    segments: Iterable[SegmentFacts], builds: dict[int, BuildRecord], as_of_ts: int
) -> IndexBuildProgress:
    """Milvus's rules (datacoord ``completeIndexInfo``, not real-time): every flushed segment
    counts in ``total_rows``; ``indexed_rows`` are the rows of finished builds and
    ``pending_rows`` the rest. The state looks only at segments registered at or before
    ``as_of_ts`` (the index's create timestamp, or the one the client passes; 0: every
    segment): any failed -> ``failed``; any not finished -> ``in_progress``; else
    ``finished``. So an index created on an empty collection is finished at once while later
    segments build in the background."""
    total = indexed = pending = 0
    unfinished = 0
    failed: list[str] = []
    for seg in segments:
        total += seg.rows
        build = builds.get(seg.segment_id)
        if build is not None and build.state is BuildState.FINISHED:
            indexed += seg.rows
            continue
        pending += seg.rows
        if as_of_ts and seg.flushed_ts > as_of_ts:
            continue  # registered after the moment asked about: builds in the background
        if build is not None and build.state is BuildState.FAILED:
            failed.append(f"{seg.segment_id}: {build.error};")
        else:
            unfinished += 1
    if failed:
        return IndexBuildProgress(indexed, total, pending, ProgressState.FAILED, "".join(failed))
    state = ProgressState.IN_PROGRESS if unfinished else ProgressState.FINISHED
    return IndexBuildProgress(indexed, total, pending, state)


# --- the MetaStore shell -------------------------------------------------------------------------


def decode_build(kv: KeyValue) -> BuildRecord | None:
    try:
        return BuildRecord.decode(kv.value)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("corrupt index build record %r: %s", kv.key, exc)
        return None


def _pin(key: str, kv: KeyValue | None) -> Compare:
    return Compare.absent(key) if kv is None else Compare.version(key, kv.version)


def _segment_facts(kv: KeyValue) -> SegmentFacts | None:
    raw = json.loads(kv.value)
    if raw.get("state", "flushed") != "flushed":
        return None
    return SegmentFacts(
        int(raw["segment_id"]),
        int(raw["partition_id"]),
        int(raw["rows"]),
        int(raw.get("flushed_ts", 0)),
    )


async def cas_transition(
    meta: MetaStore,
    key: str,
    decode: Callable[[KeyValue], L | None],
    token: tuple[int, int],
    change: Callable[[L], L],
    done: BuildState | None = None,
) -> BuildOutcome:
    """Apply ``change`` to the leased record at ``key`` by CAS, re-reading after a lost race.
    A refused change (:class:`BuildConflict`) is ``STALE``, unless the record already is
    ``done`` by ``token`` ``(node_id, attempt)`` (a report retried after its reply was lost:
    ``OK``); a missing record is ``GONE``."""
    for _ in range(_ATTEMPTS):
        kv = await meta.get(key)
        if kv is None:
            return BuildOutcome.GONE
        record = decode(kv)
        if record is None:
            return BuildOutcome.STALE
        try:
            new = change(record)
        except BuildConflict as exc:
            if record.state is done and (record.node_id, record.attempt) == token:
                return BuildOutcome.OK
            log.info("stale report: %s", exc)
            return BuildOutcome.STALE
        if await meta.cas(key, new.encode(), expected_version=kv.version):
            return BuildOutcome.OK
    raise BuildConflict(f"{key}: too much contention")


async def expire_records(
    meta: MetaStore,
    clock: Clock,
    policy: BuildPolicy,
    candidates: Iterable[KeyValue],
    decode: Callable[[KeyValue], L | None],
) -> int:
    """Move every ``building`` record of ``candidates`` whose lease passed back to pending (or
    to failed after ``policy.max_failures``), each by CAS. Returns how many moved."""
    now = clock.now()
    moved = 0
    for kv in candidates:
        record = decode(kv)
        if record is None or record.state is not BuildState.BUILDING:
            continue
        if record.lease_deadline > now:
            continue
        new = expire_build(record, now, policy)
        if await meta.cas(kv.key, new.encode(), expected_version=kv.version):
            log.warning("%s: %s -> %s", kv.key, new.error, new.state)
            moved += 1
    return moved


class IndexBuilds:
    """Build records and their transitions on a MetaStore (no background work; safe from many
    tasks and processes at once: every write is a CAS or a guarded txn)."""

    def __init__(self, meta: MetaStore, clock: Clock, policy: BuildPolicy | None = None) -> None:
        self.meta = meta
        self.clock = clock
        self.policy = policy or BuildPolicy()

    # --- creating and dropping records ---------------------------------------------------------

    async def _catalog(self, cid: int) -> tuple[list[Compare], list[IndexInfo]]:
        """Compares pinning the collection's liveness and index record, and its indexes
        (none when the collection is dropped)."""
        live = await self.meta.get(collection_id_key(cid))
        kv = await self.meta.get(indexes_key(cid))
        guard = [_pin(collection_id_key(cid), live), _pin(indexes_key(cid), kv)]
        if live is None or kv is None:
            return guard, []
        return guard, list(CollectionIndexes.decode(kv.value).indexes)

    async def sync_collection(self, collection_id: int) -> tuple[int, int]:
        """Create the missing records of every (index, flushed segment) of the collection and
        delete those of indexes that no longer exist (all of them once the collection is
        dropped). Returns ``(created, dropped index prefixes)``."""
        cid = collection_id
        for _ in range(_ATTEMPTS):
            guard, indexes = await self._catalog(cid)
            existing = await self.meta.range(collection_builds_prefix(cid))
            have: set[tuple[int, int]] = set()
            for kv in existing:
                if (r := decode_build(kv)) is not None:
                    have.add((r.index_id, r.segment_id))
            wanted = {i.index_id for i in indexes}
            stale = sorted({index_id for index_id, _ in have} - wanted)
            if stale:
                ops = [DeletePrefix(index_builds_prefix(cid, i)) for i in stale]
                if not (await self.meta.txn(guard, list(ops))).succeeded:
                    continue
                log.info("collection %d: dropped the builds of indexes %s", cid, stale)
            if not indexes:
                return 0, len(stale)
            segments = await self._segments(cid)
            now = self.clock.now()
            missing = [
                new_build(i, s.partition_id, s.segment_id, s.rows, s.flushed_ts, now)
                for i in indexes
                for s in segments
                if (i.index_id, s.segment_id) not in have
            ]
            if await self._create(guard, missing):
                return len(missing), len(stale)
        raise BuildConflict(f"sync of collection {cid}'s index builds: too much contention")

    async def sync_segment(
        self, collection_id: int, partition_id: int, segment_id: int, rows: int, flushed_ts: int
    ) -> int:
        """Create the records of a newly registered segment for every index of its collection
        (none if it has none or is dropped). Returns records created."""
        for _ in range(_ATTEMPTS):
            guard, indexes = await self._catalog(collection_id)
            now = self.clock.now()
            missing = []
            for info in indexes:
                if await self.meta.get(build_key(collection_id, info.index_id, segment_id)) is None:
                    missing.append(new_build(info, partition_id, segment_id, rows, flushed_ts, now))
            if await self._create(guard, missing):
                return len(missing)
        raise BuildConflict(f"index builds of segment {segment_id}: too much contention")

    async def drop_segments(self, collection_id: int, segment_ids: Iterable[int]) -> int:
        """Delete the build records of these segments (dropped by a compaction), every index.
        A worker building one then gets ``GONE`` and deletes its files. Returns deleted."""
        _, indexes = await self._catalog(collection_id)
        deleted = 0
        for info in indexes:
            for sid in segment_ids:
                deleted += await self.meta.delete(build_key(collection_id, info.index_id, sid))
        return deleted

    async def _create(self, guard: list[Compare], records: Sequence[BuildRecord]) -> bool:
        for start in range(0, len(records), _TXN_BUILDS):
            batch = records[start : start + _TXN_BUILDS]
            compares = guard + [Compare.absent(r.key) for r in batch]
            puts = [Put(r.key, r.encode()) for r in batch]
            if not (await self.meta.txn(compares, list(puts))).succeeded:
                return False
        return True

    async def sync_all(self) -> int:
        """:meth:`sync_collection` for every collection with an index record or build
        records. Returns records created."""
        cids: set[int | None] = set()
        for prefix in (INDEXES_PREFIX, BUILDS_PREFIX):
            cids |= {collection_of(kv.key, prefix) for kv in await self.meta.range(prefix)}
        created = 0
        for cid in sorted(c for c in cids if c is not None):
            created += (await self.sync_collection(cid))[0]
        return created

    async def _segments(self, cid: int) -> list[SegmentFacts]:
        kvs = await self.meta.range(f"{SEGMENTS_PREFIX}{cid:020d}/")
        return [f for kv in kvs if (f := _segment_facts(kv)) is not None]

    # --- transitions -------------------------------------------------------------------------

    async def claim(
        self, node_id: int, candidates: Iterable[KeyValue] | None = None
    ) -> BuildTask | None:
        """Claim the first claimable build of ``candidates`` (default: every record, one range
        read) for ``node_id``; None when there is none. A build whose index or collection is
        gone is dropped on the way (``sync_collection``)."""
        if candidates is None:
            candidates = await self.meta.range(BUILDS_PREFIX)
        now = self.clock.now()
        for kv in candidates:
            record = decode_build(kv)
            if record is None or not record.claimable(now):
                continue
            info = await self._index(record)
            if info is None:
                await self.sync_collection(record.collection_id)
                continue
            claimed = claim_build(record, node_id, now, self.policy.lease)
            if await self.meta.cas(kv.key, claimed.encode(), expected_version=kv.version):
                log.info(
                    "node %d claimed the build of index %d on segment %d (attempt %d)",
                    node_id,
                    record.index_id,
                    record.segment_id,
                    claimed.attempt,
                )
                return BuildTask(
                    record.collection_id,
                    record.partition_id,
                    record.segment_id,
                    record.rows,
                    info,
                    node_id,
                    claimed.attempt,
                    self.policy.lease,
                )
        return None

    async def _index(self, record: BuildRecord) -> IndexInfo | None:
        _, indexes = await self._catalog(record.collection_id)
        return next((i for i in indexes if i.index_id == record.index_id), None)

    async def _transition(
        self,
        task: BuildTask,
        change: Callable[[BuildRecord], BuildRecord],
        done: BuildState | None = None,
    ) -> BuildOutcome:
        return await cas_transition(
            self.meta, task.key, decode_build, (task.node_id, task.attempt), change, done
        )

    async def heartbeat(self, task: BuildTask, progress: float = 0.0) -> BuildOutcome:
        now = self.clock.now()
        return await self._transition(
            task,
            lambda r: heartbeat_build(r, task.node_id, task.attempt, now, task.lease, progress),
        )

    async def finish(self, task: BuildTask, result: BuildResult) -> BuildOutcome:
        now = self.clock.now()
        outcome = await self._transition(
            task,
            lambda r: finish_build(r, task.node_id, task.attempt, result, now),
            BuildState.FINISHED,
        )
        if outcome is BuildOutcome.OK:
            log.info(
                "build of index %d on segment %d finished: %d rows %s in %.1f s",
                task.index.index_id,
                task.segment_id,
                result.rows,
                result.index_type,
                result.build_seconds,
            )
        return outcome

    async def fail(self, task: BuildTask, error: str, retryable: bool) -> BuildOutcome:
        now = self.clock.now()
        log.warning(
            "build of index %d on segment %d failed (%s): %s",
            task.index.index_id,
            task.segment_id,
            "retryable" if retryable else "not retryable",
            error,
        )
        return await self._transition(
            task,
            lambda r: fail_build(r, task.node_id, task.attempt, error, retryable, now, self.policy),
        )

    async def release(self, task: BuildTask) -> BuildOutcome:
        now = self.clock.now()
        return await self._transition(
            task, lambda r: release_build(r, task.node_id, task.attempt, now)
        )

    async def expire_leases(self, candidates: Iterable[KeyValue] | None = None) -> int:
        """Move every building record whose lease passed back to pending (or to failed after
        too many failures). Returns how many moved."""
        if candidates is None:
            candidates = await self.meta.range(BUILDS_PREFIX)
        return await expire_records(self.meta, self.clock, self.policy, candidates, decode_build)

    async def release_all(self, *, except_node: int | None = None) -> int:
        """Every building record not held by ``except_node`` back to pending: for a process
        that knows it is the only worker (``canopy standalone`` at start). Returns moved."""
        now = self.clock.now()
        moved = 0
        for kv in await self.meta.range(BUILDS_PREFIX):
            record = decode_build(kv)
            if record is None or record.state is not BuildState.BUILDING:
                continue
            if record.node_id == except_node:
                continue
            new = replace(
                record, state=BuildState.PENDING, lease_deadline=0.0, retry_at=now, updated_at=now
            )
            if await self.meta.cas(kv.key, new.encode(), expected_version=kv.version):
                moved += 1
        return moved

    # --- reading -----------------------------------------------------------------------------

    async def list_builds(
        self, collection_id: int, index_id: int | None = None
    ) -> list[BuildRecord]:
        prefix = (
            collection_builds_prefix(collection_id)
            if index_id is None
            else index_builds_prefix(collection_id, index_id)
        )
        return [r for kv in await self.meta.range(prefix) if (r := decode_build(kv)) is not None]

    async def progress(
        self, collection_id: int, index_id: int, as_of_ts: int
    ) -> IndexBuildProgress:
        """See :func:`summarize`; two range reads."""
        segments = await self._segments(collection_id)
        builds = {r.segment_id: r for r in await self.list_builds(collection_id, index_id)}
        return summarize(segments, builds, as_of_ts)

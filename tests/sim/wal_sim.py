"""A seeded simulation of the WAL (DESIGN.md §3) under virtual time and injected faults.

One :class:`Sim` per seed. Everything random is drawn from ``random.Random`` instances derived
from the seed, every component runs on one :class:`~woodpecker.clock.ManualClock`, and the
driver moves that clock in small steps while the actor tasks run: no threads, no real sleeps,
so a seed replays exactly (``Sim.digest`` hashes the event trace of a run).

Actors: a writer appending bursts with ``append_nowait``; a killer that crashes the writer
(process death: its tasks are cancelled where they stand, nothing is flushed or completed),
crashes a writer open half-way through recovery, or opens a second writer while the first
still appends (fencing), sometimes twice at once; readers tailing from EARLIEST (reopened at
EARLIEST, LATEST or an acknowledged id); a named reader that checkpoints and restarts from its
checkpoint; a truncator; an auditor (sometimes two passes at once).

The checks live in :mod:`wal_sim_checks`: after every step the raw object store and the raw
meta store (below every wrapper) are inspected, and the content of each segment is captured
once it is final, so the "final log" also covers segments the auditor deletes later. The end
of a run stops the faults, recovers the log with a fresh store (as a restarted process would),
drains the readers and checks the six invariants.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sim_support import (
    LOG_NAME,
    NAMED_READER,
    IgnoresConditions,
    RawView,
    SimFailure,
    SimMeta,
    make_payload,
    props_for,
    props_ok,
    replay_hint,
    seq_of,
)
from wal_sim_checks import Checks

from woodpecker.clock import ManualClock
from woodpecker.config import KiB, MiB, WalConfig
from woodpecker.errors import CanopyError, LogTruncated, WriterFenced
from woodpecker.logstore import Log, LogStore
from woodpecker.message import MessageId
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore.memory import MemoryObjectStore
from woodpecker.objectstore.wrappers import FaultConfig, Faulty
from woodpecker.records import SegmentState
from woodpecker.writer import LogWriter, WriterState

T = TypeVar("T")

# --- models ----------------------------------------------------------------------------------


@dataclass
class WriterModel:
    wid: int
    writer: LogWriter
    epoch: int
    opened_ev: int
    appended: list[int] = field(default_factory=list)  # seqs in append order
    append_ev: list[int] = field(default_factory=list)
    acked: list[tuple[int, MessageId]] = field(default_factory=list)  # in callback order
    failures: dict[int, str] = field(default_factory=dict)  # append index -> error type
    start_ev: int = 0  # when its open_writer was called
    fenced_ev: int | None = None  # when a newer writer's open_writer returned
    failed_before_fence: bool = False
    sync_failures_after_fence: list[str] = field(default_factory=list)
    crashed: bool = False
    fence_checked: bool = False


@dataclass
class ReaderInc:
    """One incarnation of a reader (open ... close or error)."""

    rid: str
    kind: str  # earliest | latest | named | final
    start: MessageId
    opened_ev: int
    delivered: list[tuple[MessageId, bytes, MessageId | None]] = field(default_factory=list)
    ended: str | None = None


@dataclass
class SimParams:
    steps: int
    dt: float
    faults: FaultConfig
    meta_latency: float
    meta_unavailable: float
    meta_lost_reply: float
    config: WalConfig
    n_tail_readers: int
    latest_reader: bool
    crash_gap: float  # mean seconds between killer actions
    profile: str
    max_pad: int

    @staticmethod
    def draw(seed: int, rng: random.Random, *, steps: int) -> SimParams:
        # profiles: "calm" (no faults), "mixed", and "storm": many unknown outcomes and lost
        # replies while writers are fenced and crashed often (the narrow races of §3.2-3.4)
        profile = rng.choices(["calm", "mixed", "storm"], weights=[1, 6, 3])[0]
        storm = profile == "storm"
        faults = FaultConfig(
            unavailable=rng.uniform(0.0, 0.05 if storm else 0.12),
            lost_reply=rng.uniform(0.05, 0.15) if storm else rng.uniform(0.0, 0.06),
            unknown_outcome=rng.uniform(0.1, 0.25) if storm else rng.uniform(0.0, 0.06),
            latency=(0.0002, rng.uniform(0.002, 0.03)),
        )
        if profile == "calm":
            faults = FaultConfig(latency=faults.latency)
        meta_faulty = rng.random() < 0.3
        config = WalConfig(
            max_interval=rng.uniform(0.001, 0.01),
            max_bytes=rng.randint(2, 16) * KiB,
            max_block_bytes=rng.randint(1, 4) * KiB,
            max_inflight_blocks=rng.randint(1, 8),
            segment_max_blocks=rng.randint(3, 8),
            segment_max_bytes=rng.choice([64 * KiB, 256 * MiB]),
            segment_max_age=rng.choice([rng.uniform(0.1, 1.0), 600.0]),
            put_attempts=8 if storm else rng.randint(4, 8),
            retry_base_delay=0.002,
            retry_max_delay=0.05,
            reader_poll_min=0.002,
            reader_poll_max=0.05,
            compact_min_blocks=2,
            compact_small_block_bytes=1 * MiB,
            merged_block_bytes=rng.randint(2, 16) * KiB,
            lock_ttl=1.0,
        )
        return SimParams(
            steps=steps,
            dt=0.002,
            faults=faults,
            meta_latency=rng.uniform(0.0005, 0.01),
            meta_unavailable=rng.uniform(0.0, 0.02) if meta_faulty else 0.0,
            meta_lost_reply=rng.uniform(0.0, 0.01) if meta_faulty else 0.0,
            config=config,
            n_tail_readers=rng.randint(1, 2),
            latest_reader=rng.random() < 0.5,
            crash_gap=rng.uniform(0.02, 0.08) if storm else rng.uniform(0.08, 0.4),
            profile=profile,
            max_pad=rng.choice([40, 200, 600]),
        )


# --- the simulation --------------------------------------------------------------------------


class Sim(Checks):
    def __init__(self, seed: int, *, steps: int = 500, scenario: str = "main") -> None:
        self.seed = seed
        self.scenario = scenario
        root = random.Random(f"wal-sim/{scenario}/{seed}")
        self.params = SimParams.draw(seed, root, steps=steps)
        if scenario == "no-conditional":
            # the lease-lock fallback: the old writer must be dead (lease expired) before the
            # next one may open, so no concurrent opens and no meta faults
            self.params.meta_unavailable = self.params.meta_lost_reply = 0.0
            self.params.config = replace(self.params.config, lock_ttl=0.3)
            self.params.crash_gap = max(self.params.crash_gap, 0.4)
        self.rng = {
            name: random.Random(f"wal-sim/{scenario}/{seed}/{name}")
            for name in (
                "writer",
                "killer",
                "readers",
                "truncator",
                "auditor",
                "meta",
                "retry",
                "pad",
            )
        }
        self.clock = ManualClock()
        self.raw_objects = MemoryObjectStore(clock=self.clock)
        base: Any = self.raw_objects
        if scenario == "no-conditional":
            base = IgnoresConditions(base)
        self.objects = Faulty(base, seed=seed, config=FaultConfig(), clock=self.clock)
        self.raw_meta = MemoryMetaStore(clock=self.clock)
        self.meta = SimMeta(
            self.raw_meta, self.clock, self.rng["meta"], latency=self.params.meta_latency
        )
        self.trace: list[str] = []
        self.ev = 0
        self.stopping = False
        self.failures: list[str] = []
        self.writers: list[WriterModel] = []
        self.current: WriterModel | None = None
        self.opening: asyncio.Task[Any] | None = None
        self.wids = itertools.count()
        self.open_attempts: list[list[int]] = []  # [start event, end event or -1]
        self.seqs = itertools.count()
        self.payloads: dict[int, bytes] = {}
        self.owner: dict[int, tuple[WriterModel, int]] = {}
        self.acks: list[tuple[MessageId, int]] = []  # (mid, ack event) in callback order
        self.acks_checked = 0  # acks the checker has seen (the truncator picks among these)
        self.readers: list[ReaderInc] = []
        self.captured: dict[int, list[bytes]] = {}
        self.states: dict[int, SegmentState] = {}
        self.deleted: set[int] = set()
        self.stamps: dict[int, tuple[Any, ...]] = {}
        self.trunc_history: list[MessageId] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.stats: dict[str, int] = {}

    # --- bookkeeping ---------------------------------------------------------------------

    def note(self, *parts: object) -> None:
        self.ev += 1
        self.trace.append(f"{self.ev} {self.clock.monotonic():.6f} " + " ".join(map(str, parts)))

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def fail(self, msg: str) -> None:
        text = f"seed={self.seed} [{self.scenario}] t={self.clock.monotonic():.4f}: {msg}"
        self.note("VIOLATION", msg)
        self.failures.append(text)

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(max(seconds, 1e-6))

    async def drive(self, coro: Coroutine[Any, Any, T], limit: float = 120.0) -> T:
        """Run ``coro`` while moving the clock (used outside the main loop)."""
        task = asyncio.ensure_future(coro)
        elapsed = 0.0
        while not task.done():
            await self.clock.advance(self.params.dt)
            elapsed += self.params.dt
            if elapsed > limit:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise SimFailure(
                    f"seed={self.seed} [{self.scenario}]: {coro!r} still running after "
                    f"{limit}s of virtual time ({replay_hint(self.seed, self.scenario)})"
                )
        return task.result()

    # --- setup ----------------------------------------------------------------------------

    async def open_store(self) -> LogStore:
        return await LogStore.open(
            self.objects, self.meta, self.params.config, clock=self.clock, rng=self.rng["retry"]
        )

    def faults_on(self) -> None:
        self.objects.config = self.params.faults
        self.meta.unavailable = self.params.meta_unavailable
        self.meta.lost_reply = self.params.meta_lost_reply

    def faults_off(self) -> None:
        self.objects.config = FaultConfig(latency=self.params.faults.latency)
        self.meta.unavailable = self.meta.lost_reply = 0.0

    # --- writers ----------------------------------------------------------------------------

    async def open_writer(self, log: Log, by: str, *, switch: bool = True) -> WriterModel | None:
        wid = next(self.wids)
        self.note("open-start", f"w{wid}", by)
        attempt = [self.ev, -1]
        self.open_attempts.append(attempt)
        try:
            writer = await log.open_writer()
        except CanopyError as exc:
            self.note("open-failed", f"w{wid}", type(exc).__name__)
            self.count("open_failed")
            if not exc.retryable:
                self.fail(f"open_writer failed with a non-retryable error: {exc!r}")
            return None
        finally:
            attempt[1] = self.ev
        model = WriterModel(wid, writer, writer.epoch, self.ev + 1, start_ev=attempt[0])
        self.note("open", f"w{wid}", f"epoch={writer.epoch}")
        self.count("writers")
        for other in self.writers:
            if other.epoch < model.epoch and other.fenced_ev is None:
                other.fenced_ev = self.ev
                other.failed_before_fence = other.writer.state is WriterState.FAILED
        self.writers.append(model)
        if switch:
            self.switch_to(model)
        return model

    def switch_to(self, model: WriterModel) -> None:
        if self.current is None or self.current.epoch < model.epoch:
            self.current = model

    def crash(self, model: WriterModel) -> None:
        """Process death: the writer's tasks are cancelled where they stand; nothing is
        flushed, completed or closed, and the lock lease (fallback) is left to expire. Its
        unacknowledged appends stay pending or fail as the cancelled tasks unwind; none of them
        may be acknowledged (the acker stops at the cancelled upload)."""
        w = model.writer
        tasks = [w._flusher, w._acker, w._lease_watch]
        if w._seg is not None:
            tasks.extend(w._seg.uploads)
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        lease = w._lock_lease
        if lease is not None and lease._keepalive_task is not None:
            lease._keepalive_task.cancel()  # the lease now expires on its own
        w._log._writer_closed(w)
        model.crashed = True
        self.note("crash", f"w{model.wid}")
        self.count("crashes")
        if self.current is model:
            self.current = None

    def append(self, model: WriterModel, pad: int) -> asyncio.Future[MessageId] | None:
        seq = next(self.seqs)
        payload = make_payload(seq, pad)
        idx = len(model.appended)
        self.payloads[seq] = payload
        self.owner[seq] = (model, idx)
        model.appended.append(seq)
        model.append_ev.append(self.ev + 1)
        self.note("append", f"w{model.wid}", seq)
        try:
            fut = model.writer.append_nowait(payload, props_for(seq))
        except CanopyError as exc:
            model.failures[idx] = type(exc).__name__
            if model.fenced_ev is not None:
                model.sync_failures_after_fence.append(type(exc).__name__)
            self.note("append-refused", f"w{model.wid}", seq, type(exc).__name__)
            return None
        fut.add_done_callback(lambda f: self.on_done(model, idx, seq, f))  # type: ignore[arg-type]
        return fut  # type: ignore[return-value]

    def on_done(self, model: WriterModel, idx: int, seq: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self.fail(f"w{model.wid}: the future of seq {seq} was cancelled")
            return
        exc = fut.exception()
        if exc is not None:
            model.failures[idx] = type(exc).__name__
            self.note("fail", f"w{model.wid}", seq, type(exc).__name__)
            if isinstance(exc, WriterFenced) and not model.fence_checked:
                model.fence_checked = True
                self.check_fenced_for_a_reason(model, exc)
            return
        mid: MessageId = fut.result()
        self.note("ack", f"w{model.wid}", seq, mid)
        self.count("acks")
        # invariant 1: in append order, never across a failure
        if idx != len(model.acked):
            self.fail(
                f"inv1: w{model.wid} acked append #{idx} (seq {seq}) after {len(model.acked)} "
                "acks: out of append order"
            )
        if any(i < idx for i in model.failures):
            self.fail(f"inv1: w{model.wid} acked seq {seq} after an earlier entry failed")
        if model.acked and mid <= model.acked[-1][1]:
            self.fail(f"inv1: w{model.wid} acked {mid} after {model.acked[-1][1]}")
        # invariant 2: nothing appended after a newer writer opened is ever acknowledged
        if model.fenced_ev is not None and model.append_ev[idx] > model.fenced_ev:
            self.fail(
                f"inv2: w{model.wid} acked seq {seq} at {mid}, appended after a newer writer's "
                "open_writer returned"
            )
        # invariant 1: the acknowledged entry is durable (and reachable) right now
        found = self.view.lookup(mid)
        if found != self.payloads[seq]:
            self.fail(
                f"inv1: w{model.wid} acked seq {seq} at {mid}, but the store holds "
                f"{found[:14] if found else None!r} there"
            )
        model.acked.append((seq, mid))
        self.acks.append((mid, self.ev))

    # --- actors ---------------------------------------------------------------------------------

    async def supervised(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except SimFailure as exc:
            self.failures.append(str(exc))
        except BaseException as exc:  # any crash of an actor is a finding
            import traceback

            self.fail(f"actor {name} crashed: {exc!r}\n" + "".join(traceback.format_exception(exc)))

    async def writer_actor(self, log: Log) -> None:
        rng = self.rng["writer"]
        pad = self.rng["pad"]
        while not self.stopping:
            await self.sleep(rng.uniform(0.0005, 0.012))
            model = self.current
            if model is None or model.writer.state is not WriterState.OPEN:
                if model is not None and model.writer.state in (
                    WriterState.FENCED,
                    WriterState.FAILED,
                ):
                    await model.writer.close()  # as an application would: releases its lock
                    self.note("closed-dead", f"w{model.wid}", model.writer.state.value)
                if self.opening is None:
                    await self.open_in_task(log, "writer")
                continue
            r = rng.random()
            if r < 0.02:  # a graceful hand-over
                self.current = None
                self.note("close", f"w{model.wid}")
                try:
                    await model.writer.close()
                except CanopyError as exc:
                    self.note("close-failed", f"w{model.wid}", type(exc).__name__)
                self.note("closed", f"w{model.wid}", model.writer.state.value)
            elif r < 0.05:  # one synchronous append
                fut = self.append(model, pad.randrange(self.params.max_pad))
                if fut is not None:
                    await self.wait_or(fut, 0.5)
            elif r < 0.07:
                try:
                    await self.wait_or(model.writer.flush(), 0.5)
                except CanopyError:
                    pass
            else:
                for _ in range(rng.randint(1, 30)):
                    if model.writer.state is not WriterState.OPEN:
                        break
                    self.append(model, pad.randrange(self.params.max_pad))

    async def wait_or(self, aw: Awaitable[Any], seconds: float) -> None:
        """Wait for ``aw`` at most ``seconds`` of virtual time (it may never finish: a crashed
        writer's futures stay pending)."""
        fut = asyncio.ensure_future(aw)
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
        if fut.done() and not fut.cancelled():
            fut.exception()  # retrieved; errors are recorded by the done callbacks

    async def open_in_task(self, log: Log, by: str) -> None:
        """Open a writer in a task the killer may cancel (a crash during recovery)."""
        task = asyncio.ensure_future(self.open_writer(log, by))
        self.opening = task
        try:
            await asyncio.wait({task})
        finally:
            if self.opening is task:
                self.opening = None
        if task.cancelled():
            self.note("open-crashed", by)
            self.count("open_crashes")

    async def killer(self, log: Log) -> None:
        rng = self.rng["killer"]
        while not self.stopping:
            await self.sleep(rng.expovariate(1 / self.params.crash_gap))
            if self.stopping:
                return
            r = rng.random()
            if self.scenario == "no-conditional":
                model = self.current
                if model is None or model.crashed:
                    continue
                lease = model.writer._lock_lease
                if r < 0.5 or lease is None or lease._keepalive_task is None:
                    self.crash(model)
                else:
                    # a paused process: its lease expires while its tasks still run, so
                    # uploads in flight may land after the next writer recovered the segment
                    lease._keepalive_task.cancel()
                    self.note("pause", f"w{model.wid}")
                continue
            if r < 0.45:
                if self.current is not None and not self.current.crashed:
                    self.crash(self.current)
            elif r < 0.80:
                # a second writer while the first still appends: fencing. The old one may go
                # on appending for a while (a zombie that does not know yet); all of that must
                # fail as fenced and never be acknowledged.
                old = self.current
                model = await self.open_writer(log, "killer", switch=False)
                if model is None:
                    continue
                if (
                    old is not None
                    and old is not model
                    and not old.crashed
                    and old.writer.state not in (WriterState.CLOSED, WriterState.CLOSING)
                ):
                    self.append(old, 8)
                    if old.writer.state is WriterState.OPEN and rng.random() < 0.6:
                        self.note("zombie", f"w{old.wid}")
                        await self.sleep(rng.uniform(0.0, 0.05))
                self.switch_to(model)
            elif r < 0.90:
                # a crash in the middle of open_writer (epoch bumped, fences half placed)
                if self.opening is not None and not self.opening.done():
                    self.opening.cancel()
                    self.note("kill-open")
                    continue
                task = asyncio.ensure_future(self.open_writer(log, "doomed"))
                await self.wait_or(task, rng.uniform(0.0, 0.04))
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    self.note("open-crashed", "doomed")
                    self.count("open_crashes")
            else:
                results = await asyncio.gather(
                    self.open_writer(log, "twin-a"),
                    self.open_writer(log, "twin-b"),
                    return_exceptions=True,
                )
                for res in results:
                    if isinstance(res, BaseException):
                        raise res

    async def reader_actor(self, log: Log, rid: str, kind: str) -> None:
        rng = self.rng["readers"]
        reader: Any = None
        inc: ReaderInc | None = None
        while not self.stopping:
            if reader is None:
                start: MessageId | None
                mode = kind
                if kind == "earliest" and self.readers:  # a reopen: sometimes elsewhere
                    mode = rng.choices(["earliest", "latest", "mid"], weights=[6, 2, 2])[0]
                    if mode == "mid" and not self.acks_checked:
                        mode = "earliest"
                if mode == "named":
                    start = None
                elif mode == "latest":
                    start = MessageId.LATEST
                elif mode == "mid":
                    start = self.acks[rng.randrange(self.acks_checked)][0]
                else:
                    start = MessageId.EARLIEST
                try:
                    reader = await log.open_reader(
                        start, name=NAMED_READER if kind == "named" else None
                    )
                except LogTruncated as exc:
                    if kind == "named":
                        self.fail(f"inv6: the named reader cannot resume: {exc}")
                        return
                    self.note("reader-open-truncated", rid)
                    await self.sleep(0.01)
                    continue
                except CanopyError as exc:
                    self.note("reader-open-failed", rid, type(exc).__name__)
                    if not exc.retryable:
                        self.fail(f"reader {rid}: open_reader failed with {exc!r}")
                        return
                    await self.sleep(0.01)
                    continue
                inc = ReaderInc(rid, mode, reader.position, self.ev + 1)
                self.readers.append(inc)
                self.note("reader-open", rid, mode, inc.start)
                if mode == "earliest":
                    self.check_earliest_start(inc)
                elif mode == "mid" and inc.start != start:
                    self.fail(f"reader {rid} opened at {start} but is positioned at {inc.start}")
            assert inc is not None
            try:
                msg = await reader.read_next(timeout=rng.uniform(0.005, 0.1))
            except LogTruncated as exc:
                if kind == "named":
                    self.fail(f"inv6: the named reader hit LogTruncated: {exc}")
                    return
                inc.ended = "truncated"
                self.note("reader-truncated", rid)
                await reader.close()
                reader = None
                continue
            except CanopyError as exc:
                self.note("reader-error", rid, type(exc).__name__)
                if not exc.retryable:
                    inc.ended = type(exc).__name__
                    self.fail(f"reader {rid} failed: {exc!r}")
                    return
                await self.sleep(0.005)
                continue
            if msg is not None:
                inc.delivered.append((msg.id, msg.payload, self.view.truncation()))
                self.note("read", rid, msg.id, seq_of(msg.payload))
                if not props_ok(msg.payload, msg.properties):
                    self.fail(f"reader {rid}: {msg.id} came with properties {msg.properties}")
            if kind == "named" and rng.random() < 0.08:
                try:
                    await reader.checkpoint()
                    self.note("checkpoint", reader.position)
                except CanopyError as exc:
                    self.note("checkpoint-failed", type(exc).__name__)
            if rng.random() < (0.01 if kind == "named" else 0.004):
                inc.ended = "reopen"
                await reader.close()
                reader = None
        if reader is not None:
            assert inc is not None
            self.live_readers.append((reader, inc))

    async def truncator(self, log: Log) -> None:
        rng = self.rng["truncator"]
        while not self.stopping:
            await self.sleep(rng.uniform(0.05, 0.5))
            if not self.acks_checked or self.stopping:
                continue
            # prefer recent acks, so truncation keeps pace with the writer
            k = max(0, self.acks_checked - 1 - int(rng.expovariate(1 / 30)))
            mid = self.acks[k][0]
            try:
                point = await log.truncate(mid)
                self.note("truncate", mid, point)
            except CanopyError as exc:
                self.note("truncate-failed", mid, type(exc).__name__)
                if not exc.retryable:
                    self.fail(f"truncate({mid}) failed with {exc!r}")

    async def auditor(self, store: LogStore) -> None:
        rng = self.rng["auditor"]
        while not self.stopping:
            await self.sleep(rng.uniform(0.02, 0.15))
            runs = 2 if rng.random() < 0.15 else 1
            results = await asyncio.gather(
                *(store.audit_once() for _ in range(runs)), return_exceptions=True
            )
            for res in results:
                if isinstance(res, CanopyError):
                    self.note("audit-failed", type(res).__name__)
                    if not res.retryable:
                        self.fail(f"an auditor pass failed with {res!r}")
                elif isinstance(res, BaseException):
                    raise res
                else:
                    rep = res.get(LOG_NAME, {})
                    self.note(
                        "audit",
                        rep.get("deleted_segments"),
                        rep.get("compacted_segments"),
                        rep.get("skipped") is not None,
                    )

    # --- the checker ----------------------------------------------------------------------------

    # --- the run --------------------------------------------------------------------------------

    async def run(self) -> Sim:
        store = await self.drive(self.open_store())
        log = await self.drive(store.create_log(LOG_NAME))
        self.view = RawView(self.raw_objects, self.raw_meta, log.log_id)
        self.live_readers: list[tuple[Any, ReaderInc]] = []
        self.faults_on()
        p = self.params
        self.note("params", replace(p, faults=replace(p.faults, ops=frozenset())))
        actors: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("writer", self.writer_actor(log)),
            ("killer", self.killer(log)),
            ("truncator", self.truncator(log)),
            ("auditor", self.auditor(store)),
            ("named", self.reader_actor(log, "named", "named")),
        ]
        for i in range(p.n_tail_readers):
            actors.append((f"tail{i}", self.reader_actor(log, f"tail{i}", "earliest")))
        if p.latest_reader:
            actors.append(("latest", self.reader_actor(log, "latest", "latest")))
        for name, coro in actors:
            self.tasks.append(asyncio.ensure_future(self.supervised(name, coro)))
        try:
            for _ in range(p.steps):
                await self.clock.advance(p.dt)
                self.check_step()
                if self.failures:
                    break
            self.stopping = True
            self.note("stopping")
            # let every actor finish its current action (a writer may still close, etc.)
            for _ in range(int(5.0 / p.dt)):
                if all(t.done() for t in self.tasks):
                    break
                await self.clock.advance(p.dt)
                self.check_step()
            for t in self.tasks:
                if not t.done():
                    self.note("actor-stuck-cancelled")
                    t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if not self.failures:
                await self.finish(store)
        finally:
            self.stopping = True
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for model in self.writers:
                if not model.crashed and model.writer.state is WriterState.OPEN:
                    self.crash(model)  # nothing more may touch storage
        self.note("faults", self.objects.injected, self.meta.injected)
        return self

    async def finish(self, store: LogStore) -> None:
        """Stop faults, recover with a fresh store (a restarted process), drain, check."""
        self.faults_off()
        self.check_step()
        # the surviving writer closes gracefully (it may find itself fenced)
        if self.current is not None and self.current.writer.state is WriterState.OPEN:
            model = self.current
            try:
                await self.drive(model.writer.close())
            except CanopyError as exc:
                self.note("final-close-failed", type(exc).__name__)
            self.note("final-close", f"w{model.wid}", model.writer.state.value)
        for model in self.writers:
            if not model.crashed and model.writer.state is WriterState.OPEN:
                self.crash(model)
            elif not model.crashed and model.writer.state is not WriterState.CLOSED:
                await self.drive(model.writer.close())  # a dead writer releases its lock
        # recovery by a new process
        store2 = await self.drive(self.open_store())
        log2 = await self.drive(store2.open_log(LOG_NAME))
        model = await self.drive(self.open_writer(log2, "recovery"))
        if model is None:
            self.fail("the final recovery could not open a writer")
            return
        await self.drive(model.writer.close())
        self.check_step()
        for sid, rec in self.view.segments().items():
            if rec.state is SegmentState.ACTIVE:
                self.fail(f"segment {sid} is still Active after recovery and close")
        await self.drive(store2.audit_once())
        self.check_step()
        final = self.final_log()
        # drain the live readers of the first store
        for reader, inc in self.live_readers:
            await self.drive(self.drain(reader, inc, final))
        # the named reader resumes from its checkpoint in the new process
        ckpt = self.view.checkpoint(NAMED_READER)
        try:
            reader = await self.drive(log2.open_reader(name=NAMED_READER))
        except LogTruncated as exc:
            self.fail(f"inv6: the named reader cannot resume from its checkpoint {ckpt}: {exc}")
        else:
            inc = ReaderInc("named-final", "named", reader.position, self.ev + 1)
            self.readers.append(inc)
            if ckpt is not None and inc.start != ckpt:
                self.fail(f"the named reader resumed at {inc.start}, checkpoint {ckpt}")
            await self.drive(self.drain(reader, inc, final))
        # a fresh reader from EARLIEST sees the whole live log
        reader = await self.drive(log2.open_reader(MessageId.EARLIEST))
        inc = ReaderInc("earliest-final", "final", reader.position, self.ev + 1)
        self.readers.append(inc)
        await self.drive(self.drain(reader, inc, final))
        last = await self.drive(log2.last_message_id())
        if final and last != final[-1][0]:
            self.fail(f"last_message_id() is {last}, the log ends at {final[-1][0]}")
        if await self.drive(log2.truncation_point()) != self.view.truncation():
            self.fail("truncation_point() disagrees with the log record")
        self.check_final(final)
        await self.drive(store2.close())

    async def drain(
        self, reader: Any, inc: ReaderInc, final: list[tuple[MessageId, bytes]]
    ) -> None:
        last = final[-1][0] if final else None
        while True:
            try:
                msg = await reader.read_next(timeout=1.0)
            except LogTruncated:
                if inc.kind == "named":
                    self.fail("inv6: the named reader hit LogTruncated while draining")
                inc.ended = "truncated"
                return
            if msg is None:
                break
            inc.delivered.append((msg.id, msg.payload, self.view.truncation()))
            self.note("read", inc.rid, msg.id, seq_of(msg.payload))
            if not props_ok(msg.payload, msg.properties):
                self.fail(f"reader {inc.rid}: {msg.id} came with properties {msg.properties}")
            if msg.id == last:
                break
        if (
            last is not None
            and inc.start <= last
            and (not inc.delivered or inc.delivered[-1][0] != last)
        ):
            self.fail(
                f"inv5: reader {inc.rid} ({inc.kind}, from {inc.start}) did not reach the end "
                f"of the log {last}; it stopped at "
                f"{inc.delivered[-1][0] if inc.delivered else None}"
            )
        inc.ended = inc.ended or "drained"

"""The WAL under real process crashes, on SeaweedFS (S3) and etcd.

Writer processes (``wal_crash_writer.py``) append continuously and print every acknowledged
message id. The test SIGKILLs each one at a seeded random moment; the next process opens the
writer, which fences and recovers the dead one's open segment. Afterwards the whole log is read
from EARLIEST and checked against every acknowledgement collected from the pipes (DESIGN.md §3
invariants 1, 2, 4 and 5):

* every acknowledged entry is in the log, at the id it was acknowledged with, exactly once;
* entry ids run 0, 1, 2, ... inside every segment (no gap), message ids ascend;
* no payload appears twice, every payload is intact;
* each process's entries form a prefix of what it appended (an unacknowledged tail may survive
  a crash, but never with a hole), and processes follow each other in the order they ran.

Then the revival check: writer A is frozen (SIGSTOP) mid-append, writer B opens (fencing A) and
appends, A is thawed (SIGCONT): A's appends fail with ``WriterFenced`` (the process exits with
``EXIT_FENCED``), and the log holds B's entries after every entry A had acknowledged.

``CANOPY_TEST_SEED`` picks the kill moments and the writers' append patterns.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from integration.services import EtcdService, S3Service
from woodpecker import LogStore, MessageId
from woodpecker.records import SegmentState

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HELPER = HERE / "wal_crash_writer.py"
_spec = importlib.util.spec_from_file_location("wal_crash_writer", HELPER)
assert _spec is not None and _spec.loader is not None
helper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helper)

CRASHES = 20
SEED = int(os.environ.get("CANOPY_TEST_SEED", "20240611"))
LOG = "crash"
STEP_TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(240)


@dataclass
class WriterProcess:
    """One running ``wal_crash_writer.py`` and everything it printed."""

    proc_no: int
    process: asyncio.subprocess.Process
    stderr_path: Path
    acks: list[tuple[MessageId, int]] = field(default_factory=list)  # (id, seq)
    lines: list[str] = field(default_factory=list)
    epoch: int | None = None
    first_ack_at: float | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    acking: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def describe(self) -> str:
        tail = (
            self.stderr_path.read_text(errors="replace")[-2000:]
            if self.stderr_path.exists()
            else ""
        )
        return (
            f"writer P{self.proc_no} (pid {self.pid}, rc {self.process.returncode}, seed {SEED}): "
            f"last lines {self.lines[-3:]!r}\nstderr tail:\n{tail}"
        )

    async def _pump(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            if not raw.endswith(b"\n"):
                break  # a line cut by SIGKILL (never happens for pipe writes < PIPE_BUF)
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            kind, _, rest = line.partition(" ")
            if kind == "ACK":
                seg, entry, seq = (int(x) for x in rest.split())
                self.acks.append((MessageId(seg, entry), seq))
                if self.first_ack_at is None:
                    self.first_ack_at = time.monotonic()
                    self.acking.set()
            elif kind == "READY":
                self.ready.set()
            elif kind == "OPEN":
                self.epoch = int(rest)

    async def go(self) -> None:
        await asyncio.wait_for(self.ready.wait(), STEP_TIMEOUT)
        assert self.process.stdin is not None
        self.process.stdin.write(b"GO\n")
        await self.process.stdin.drain()

    async def wait_acking(self) -> None:
        try:
            await asyncio.wait_for(self.acking.wait(), STEP_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"no acknowledgement within {STEP_TIMEOUT} s: {self.describe()}")

    async def finish(self) -> int:
        """Wait for the process to exit and its output to be read; returns the exit code."""
        try:
            rc = await asyncio.wait_for(self.process.wait(), STEP_TIMEOUT)
            if self.pump is not None:
                await asyncio.wait_for(self.pump, STEP_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"did not exit within {STEP_TIMEOUT} s: {self.describe()}")
        return rc


async def spawn(
    proc_no: int, store_uri: str, meta_uri: str, env: dict[str, str], tmp: Path, **opts: int
) -> WriterProcess:
    argv = [
        sys.executable,
        str(HELPER),
        "--store",
        store_uri,
        "--meta",
        meta_uri,
        "--log",
        LOG,
        "--proc",
        str(proc_no),
        "--seed",
        str(SEED * 1000 + proc_no),
        "--wait-go",
    ]
    for key, value in opts.items():
        argv += [f"--{key}", str(value)]
    stderr_path = tmp / f"writer-{proc_no}.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            cwd=REPO,
            env=env,
        )
    wp = WriterProcess(proc_no, process, stderr_path)
    wp.pump = asyncio.create_task(wp._pump())
    return wp


def child_env(s3: S3Service) -> dict[str, str]:
    env = dict(os.environ)
    env.update(s3.env())
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


async def wait_stopped(pid: int) -> None:
    for _ in range(500):
        if process_state(pid) in "Tt":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


async def read_whole_log(store: LogStore) -> list[tuple[MessageId, int, int]]:
    """``(id, proc, seq)`` of every entry, read from EARLIEST up to ``last_message_id``."""
    log_ = await store.open_log(LOG)
    last = await log_.last_message_id()
    assert last is not None, "the log is empty"
    out: list[tuple[MessageId, int, int]] = []
    async with await log_.open_reader(MessageId.EARLIEST) as reader:
        while True:
            msg = await reader.read_next(timeout=STEP_TIMEOUT)
            assert msg is not None, f"reader stalled at {reader.position} before {last}"
            proc, seq = helper.parse_payload(msg.payload)
            out.append((msg.id, proc, seq))
            if msg.id == last:
                break
        assert await reader.read_next(timeout=0.3) is None, "entries past last_message_id"
    return out


def check_log(
    entries: list[tuple[MessageId, int, int]], writers: list[WriterProcess]
) -> dict[int, int]:
    """Every check of the module docstring; returns ``{proc: entries in the log}``."""
    # ids ascend; inside each segment they run 0, 1, 2, ... without a gap
    for (prev, _, _), (mid, _, _) in itertools.pairwise(entries):
        if mid.segment_id == prev.segment_id:
            assert mid.entry_id == prev.entry_id + 1, f"gap or reorder: {prev} then {mid}"
        else:
            assert mid.segment_id > prev.segment_id, f"segments out of order: {prev} then {mid}"
            assert mid.entry_id == 0, f"segment {mid.segment_id} starts at {mid}"
    assert entries[0][0].entry_id == 0
    # no payload twice; each process's entries are a prefix 0..k-1 of what it appended, and
    # processes follow each other in the order they ran
    seen: set[tuple[int, int]] = set()
    per_proc: dict[int, int] = {}
    order: list[int] = []
    for mid, proc, seq in entries:
        assert (proc, seq) not in seen, f"P{proc}:{seq} appears twice (again at {mid})"
        seen.add((proc, seq))
        if not order or order[-1] != proc:
            assert proc not in order, f"P{proc} entries interleave with others at {mid}"
            order.append(proc)
        assert seq == per_proc.get(proc, 0), f"P{proc}: seq {seq} at {mid}, hole before it"
        per_proc[proc] = seq + 1
    assert order == sorted(order), f"processes out of order: {order}"
    # every acknowledged entry is there, at its acknowledged id
    by_id = {mid: (proc, seq) for mid, proc, seq in entries}
    for wp in writers:
        for mid, seq in wp.acks:
            assert by_id.get(mid) == (wp.proc_no, seq), (
                f"P{wp.proc_no}:{seq} acknowledged as {mid}, but the log holds {by_id.get(mid)}"
            )
        if wp.acks:
            assert per_proc.get(wp.proc_no, 0) >= len(wp.acks)
    return per_proc


async def check_segments(store: LogStore, entries: list[tuple[MessageId, int, int]]) -> None:
    """Every segment is final and its record agrees with what was read."""
    log_ = await store.open_log(LOG)
    counts: dict[int, int] = {}
    for mid, _, _ in entries:
        counts[mid.segment_id] = counts.get(mid.segment_id, 0) + 1
    for seg in await log_.segments():
        assert seg.state in (SegmentState.COMPLETED, SegmentState.SEALED), seg
        assert seg.last_entry_id + 1 == counts.get(seg.segment_id, 0), seg


async def test_wal_survives_sigkill_and_fences_revived_writer(
    seaweedfs_service: S3Service, etcd_service: EtcdService, unique_prefix: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    store_uri = seaweedfs_service.uri(unique_prefix)
    meta_uri = etcd_service.uri(unique_prefix)
    env = child_env(seaweedfs_service)
    rng = random.Random(SEED)
    store = await LogStore.open(store_uri, meta_uri, helper.CRASH_CONFIG)
    writers: list[WriterProcess] = []
    try:
        await store.create_log(LOG)

        async def new_writer(**opts: int) -> WriterProcess:
            wp = await spawn(len(writers), store_uri, meta_uri, env, tmp_path, **opts)
            writers.append(wp)
            return wp

        # --- 1. repeated SIGKILL: each new process recovers the previous one's crash ---------
        upcoming = await new_writer()
        for _ in range(CRASHES):
            current = upcoming
            await current.go()
            await current.wait_acking()
            upcoming = await new_writer()  # warm up the next one (imports, store) meanwhile
            assert current.first_ack_at is not None
            kill_at = current.first_ack_at + rng.uniform(0.2, 2.0)
            await asyncio.sleep(max(0.0, kill_at - time.monotonic()))
            current.process.send_signal(signal.SIGKILL)
            rc = await current.finish()
            assert rc == -signal.SIGKILL, current.describe()
        crash_phase = time.monotonic() - started

        # --- 2. revival: a frozen writer wakes up fenced ----------------------------------------
        a = upcoming
        await a.go()
        await a.wait_acking()
        await asyncio.sleep(rng.uniform(0.1, 0.5))
        os.kill(a.pid, signal.SIGSTOP)
        try:
            await wait_stopped(a.pid)
            await asyncio.sleep(0.1)  # let the pump read what A printed before it froze
            acked_before_stop = len(a.acks)
            b = await new_writer(count=300)
            await b.go()
            b_rc = await b.finish()
            assert b_rc == 0 and b.lines[-1] == "DONE", b.describe()
        finally:
            os.kill(a.pid, signal.SIGCONT)
        a_rc = await a.finish()
        assert a_rc == helper.EXIT_FENCED, a.describe()
        assert a.lines[-1].startswith("FENCED"), a.describe()
        assert a.epoch is not None and b.epoch is not None and b.epoch > a.epoch
        acked_after_thaw = len(a.acks) - acked_before_stop

        # --- 3. the whole log ---------------------------------------------------------------------
        epochs = [wp.epoch for wp in writers]
        assert all(e is not None for e in epochs)
        assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs), epochs
        entries = await read_whole_log(store)
        per_proc = check_log(entries, writers)
        await check_segments(store, entries)
        assert per_proc[b.proc_no] == 300
        b_first = min(mid for mid, _ in b.acks)
        assert all(mid < b_first for mid, _ in a.acks), "A acknowledged an entry after B's"
    finally:
        for wp in writers:
            if wp.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    wp.process.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(wp.process.wait(), 10)
        await store.close()

    acked = sum(len(wp.acks) for wp in writers)
    segments = len({mid.segment_id for mid, _, _ in entries})
    print(
        f"\nWAL crash test (seed {SEED}): {CRASHES} SIGKILLs in {crash_phase:.1f} s, "
        f"{acked} acknowledged / {len(entries)} entries in the log over {segments} segments "
        f"({len(entries) - acked} unacknowledged survivors); revived writer: "
        f"{acked_before_stop} acks before SIGSTOP, {acked_after_thaw} after SIGCONT, then fenced; "
        f"total {time.monotonic() - started:.1f} s"
    )

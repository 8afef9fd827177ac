"""A WAL writer process for the crash tests in ``test_wal_crash.py`` (not a test module itself).

Opens ``LogStore.open(object_store=--store, meta=--meta)`` (S3 credentials from the standard AWS
environment variables), prints ``READY``, and, with ``--wait-go``, waits for a ``GO`` line on
stdin (so the test can pre-start the next process while the current one is still running, and
still open the writer only after the current one is dead). Then it opens a writer on ``--log``
and appends until it is killed, fenced, or has appended ``--count`` entries, mixing awaited
``append`` calls with bursts of ``append_nowait`` that keep many entries in flight.

Protocol on stdout, one flushed line per event:

    READY                          store open
    OPEN <epoch>                   writer open (earlier writers fenced, their segments recovered)
    ACK <segment> <entry> <seq>    entry number <seq> of this process is acknowledged
    DONE                           --count entries acknowledged and the writer closed cleanly
    FENCED <message>               an append failed with WriterFenced; exit code EXIT_FENCED
    ERROR <message>                anything else; exit code EXIT_ERROR

Payloads are ``make_payload(proc, seq)``: self-describing, so a reader can tell which process
wrote an entry, its sequence number, and whether its bytes are intact.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
from collections import deque
from collections.abc import Awaitable

from woodpecker import LogStore, MessageId, WalConfig, WriterFenced

EXIT_FENCED = 3
EXIT_ERROR = 4

CRASH_CONFIG = WalConfig(
    max_interval=0.02,  # many small blocks
    max_block_bytes=32 * 1024,  # a flush becomes several blocks uploading in parallel
    max_inflight_blocks=8,
    segment_max_blocks=40,  # segments roll (and complete) while a process runs
    put_attempts=4,
)


def make_payload(proc: int, seq: int) -> bytes:
    """``P<proc>:<seq>:`` then 0-3000 filler bytes derived from both."""
    head = f"P{proc}:{seq}:".encode()
    digest = hashlib.blake2b(head, digest_size=8).digest()
    filler_len = int.from_bytes(digest[:2], "little") % 3001
    return head + (digest * (filler_len // 8 + 1))[:filler_len]


def parse_payload(payload: bytes) -> tuple[int, int]:
    """``(proc, seq)`` of a payload written by ``make_payload``; ValueError if it is not one
    or its bytes are not intact."""
    try:
        tag, seq, _ = payload.split(b":", 2)
        proc, n = int(tag[1:]), int(seq)
    except ValueError:
        raise ValueError(f"not a crash-test payload: {payload[:40]!r}") from None
    if not tag.startswith(b"P") or make_payload(proc, n) != payload:
        raise ValueError(f"payload of P{proc}:{n} is damaged ({len(payload)} bytes)")
    return proc, n


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> int:
    store = await LogStore.open(args.store, args.meta, CRASH_CONFIG)
    try:
        emit("READY")
        if args.wait_go:
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if line.strip() != "GO":
                return EXIT_ERROR
        log_ = await store.open_log(args.log)
        writer = await log_.open_writer()
        emit(f"OPEN {writer.epoch}")
        await append_loop(writer, args)
        await writer.close()
        emit("DONE")
        return 0
    finally:
        await asyncio.wait_for(store.close(), timeout=10)


async def append_loop(writer, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(args.seed)
    pending: deque[tuple[int, Awaitable[MessageId]]] = deque()
    last: MessageId | None = None
    seq = 0

    def acked(n: int, mid: MessageId) -> None:
        nonlocal last
        if last is not None and mid <= last:
            raise AssertionError(f"acknowledgements out of order: {mid} after {last}")
        last = mid
        emit(f"ACK {mid.segment_id} {mid.entry_id} {n}")

    async def drain(keep: int) -> None:
        while len(pending) > keep:
            n, fut = pending.popleft()
            acked(n, await fut)

    while args.count is None or seq < args.count:
        budget = args.count - seq if args.count is not None else 1 << 30
        if rng.random() < 0.3:
            await drain(0)  # print acknowledgements in append order
            acked(seq, await writer.append(make_payload(args.proc, seq)))
            seq += 1
        else:
            for _ in range(min(rng.randint(1, 60), budget)):
                pending.append((seq, writer.append_nowait(make_payload(args.proc, seq))))
                seq += 1
            await drain(rng.randint(0, 200))  # keep up to 200 entries in flight
    await drain(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="object store URI")
    parser.add_argument("--meta", required=True, help="meta store URI")
    parser.add_argument("--log", required=True, help="log name (must exist)")
    parser.add_argument("--proc", type=int, required=True, help="process number (in payloads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=None, help="stop after this many entries")
    parser.add_argument("--wait-go", action="store_true", help="wait for GO on stdin")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args))
    except WriterFenced as exc:
        emit(f"FENCED {exc}")
        return EXIT_FENCED
    except Exception as exc:
        emit(f"ERROR {exc!r}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

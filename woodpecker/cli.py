"""``canopy wal ...``: operator commands for the write-ahead log.

Registered with the ``canopy`` command line through the ``canopy.commands`` entry point group
(``wal = "woodpecker.cli:register"``). This module imports nothing from ``cluster``: a command
returns its exit status, and reports a user error itself as one line on stderr with status 2.
``python -m woodpecker.cli ...`` runs the same commands without the ``canopy`` front end.

Every command takes ``--object-store URI`` and ``--meta URI`` (defaults: ``$CANOPY_OBJECT_STORE``
and ``$CANOPY_META``, else the embedded store under ``./canopy-data``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import functools
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from woodpecker.errors import (
    CanopyError,
    InvalidArgument,
    LogExists,
    LogNotFound,
    LogTruncated,
)
from woodpecker.logstore import Log, LogStore
from woodpecker.message import Message, MessageId
from woodpecker.records import SegmentRecord, SegmentState

PROG = "canopy"
OBJECT_STORE_ENV = "CANOPY_OBJECT_STORE"
META_ENV = "CANOPY_META"
DEFAULT_OBJECT_STORE = "file://./canopy-data/objects"
DEFAULT_META = "sqlite:///./canopy-data/meta.db"

EXIT_OK = 0
EXIT_FAILURE = 1  # the store failed (unavailable, corrupt, fenced): the command may work later
EXIT_USAGE = 2  # the request was wrong (no such log, bad URI, bad message id)
EXIT_INTERRUPTED = 130

TAIL_END_WAIT = 1.0  # seconds read_next may wait at the tail before `tail` (no --follow) stops
APPEND_MAX_UNACKED_BYTES = 32 * 1024 * 1024  # `append` waits for acks above this
APPEND_READ_CHUNK = 1024 * 1024
APPEND_BATCH = 16384  # entries handed to the writer between event-loop yields
PROGRESS_EVERY = 1.0  # seconds between `append` progress lines

# Errors that mean "the request was wrong": exit 2.
_USER_ERRORS = (LogNotFound, LogExists, LogTruncated, InvalidArgument)


class UsageError(Exception):
    """A bad request detected by the CLI itself (one line on stderr, exit 2)."""


Command = Callable[[argparse.Namespace], Awaitable[int]]
SubParsers = argparse._SubParsersAction  # type: ignore[type-arg]

# --- registration -------------------------------------------------------------------------------

WAL_DESCRIPTION = """\
Inspect and operate the write-ahead log (Woodpecker): list logs and segments, append stdin lines,
tail a log, truncate it and run the auditor.

Every command takes --object-store URI and --meta URI; the defaults are $CANOPY_OBJECT_STORE and
$CANOPY_META, else the embedded store (file://./canopy-data/objects, sqlite:///./canopy-data/meta.db).
The sqlite meta store is single-process: stop a server using it before running these commands."""

WAL_EPILOG = """\
examples:
  canopy wal create events
  seq 1 1000 | canopy wal append events
  canopy wal tail events --from 0:990
  canopy wal --help / canopy wal COMMAND --help"""


def register(subparsers: SubParsers) -> None:
    """Add ``wal`` (and its sub-commands) to the top-level ``canopy`` parser."""
    wal = subparsers.add_parser(
        "wal",
        help="inspect and operate the write-ahead log (logs, segments, tail, append, truncate)",
        description=WAL_DESCRIPTION,
        epilog=WAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    wal.set_defaults(func=_help_of(wal))
    sub = wal.add_subparsers(title="commands", dest="wal_command", metavar="COMMAND")

    def command(
        name: str, summary: str, description: str, example: str, run: Command
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog="example:\n" + "\n".join("  " + line for line in example.splitlines()),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _store_options(p)
        p.set_defaults(func=_runner(run))
        return p

    p = command(
        "ls",
        "list logs: id, segments, last message id, truncation point",
        "List the logs (optionally those whose name starts with PREFIX) with their numeric id, "
        "number of segments, the id of the last durable entry and the truncation point.",
        "canopy wal ls --prefix ch_\n"
        "NAME    ID  SEGMENTS  LAST    TRUNCATED AT\n"
        "ch_0     1         3  2:41    1:0",
        _cmd_ls,
    )
    p.add_argument("--prefix", default="", metavar="P", help="only logs whose name starts with P")
    _json_option(p)

    p = command(
        "create",
        "create an empty log",
        "Create an empty log named LOG (1-255 letters, digits, '_', '.', '-').",
        "canopy wal create events",
        _cmd_create,
    )
    p.add_argument("log", metavar="LOG", help="name of the log to create")

    p = command(
        "delete",
        "delete a log with all its segments and objects (needs --yes)",
        "Delete LOG: every object of every segment, then its metadata (segments, writer epoch, "
        "reader checkpoints). There is no undo, hence --yes.",
        "canopy wal delete events --yes",
        _cmd_delete,
    )
    p.add_argument("log", metavar="LOG", help="name of the log to delete")
    p.add_argument("--yes", action="store_true", help="really delete it")

    p = command(
        "segments",
        "list the segments of a log",
        "List the segments of LOG: id, state (active/completed/sealed/truncated), data blocks "
        "(and merged objects once sealed), entries, bytes, created and completed time (UTC). "
        "Figures of an active segment are read from its blocks in the object store.",
        "canopy wal segments events\n"
        "SEGMENT  STATE      BLOCKS  MERGED  ENTRIES   BYTES      CREATED (UTC)        "
        "COMPLETED (UTC)\n"
        "0        sealed         12       1     1000   24.1 KiB   2025-01-01 10:00:00  "
        "2025-01-01 10:10:00",
        _cmd_segments,
    )
    p.add_argument("log", metavar="LOG", help="name of the log")
    _json_option(p)

    p = command(
        "tail",
        "print the entries of a log (optionally following new ones)",
        "Print the entries of LOG from a start position, one per line: SEG:ENTRY<TAB>payload "
        "(payload decoded as UTF-8, undecodable bytes replaced). Without --follow it stops at "
        "the end of the log as of the start; with --follow it waits for new entries until "
        "Ctrl-C. --format json prints one JSON object per line with the payload in base64; "
        "--format raw prints only the payloads, each followed by a newline.",
        "canopy wal tail events --from 3:0 --limit 10\n"
        "canopy wal tail events --from latest --follow --format json",
        _cmd_tail,
    )
    p.add_argument("log", metavar="LOG", help="name of the log")
    p.add_argument(
        "--from",
        dest="start",
        default="earliest",
        metavar="POS",
        help="earliest (default), latest, or a message id SEG:ENTRY",
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new entries")
    p.add_argument("--limit", "-n", type=_positive_int, metavar="N", help="stop after N entries")
    p.add_argument(
        "--format",
        choices=("text", "json", "raw"),
        default="text",
        help="output format (default: text)",
    )

    p = command(
        "append",
        "append each line of stdin as an entry",
        "Append every line read from stdin (without its newline) to LOG as one entry. Entries "
        "are written in group-committed batches; a progress line goes to stderr every second "
        "and a summary (entries, bytes, last id, elapsed time, rate) to stdout at the end. "
        "Opening the writer fences any other writer of the log.",
        "seq 1 100000 | canopy wal append events --create\n"
        "appended 100000 entries (588.9 KiB) to 'events' in 1.9 s: 52631 entries/s, "
        "309.9 KiB/s; last id 0:99999",
        _cmd_append,
    )
    p.add_argument("log", metavar="LOG", help="name of the log")
    p.add_argument("--create", action="store_true", help="create the log if it does not exist")

    p = command(
        "truncate",
        "mark every entry below SEG:ENTRY as deletable",
        "Raise the truncation point of LOG to SEG:ENTRY: entries below it may be deleted by the "
        "auditor (whole segments only, and never what a named reader still needs). The point "
        "never moves backwards. A point past the end of the log needs --force.",
        "canopy wal truncate events 3:0 && canopy wal audit events",
        _cmd_truncate,
    )
    p.add_argument("log", metavar="LOG", help="name of the log")
    p.add_argument("position", metavar="SEG:ENTRY", help="first message id to keep")
    p.add_argument(
        "--force", action="store_true", help="allow a point past the last entry of the log"
    )

    p = command(
        "audit",
        "run one auditor pass (delete truncated segments, compact small blocks)",
        "Run one auditor pass over LOG (or every log): delete whole segments below the "
        "truncation point and compact completed segments made of many small blocks into "
        "merged objects. Prints what it deleted and compacted.",
        "canopy wal audit events\nevents: deleted segments 0, 1, 2; compacted segments 3",
        _cmd_audit,
    )
    p.add_argument("log", metavar="LOG", nargs="?", help="only this log (default: every log)")
    _json_option(p)


def _store_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("store")
    group.add_argument(
        "--object-store",
        metavar="URI",
        help=f"object store holding the blocks: s3://bucket/prefix, file:///dir, memory:// "
        f"(default: ${OBJECT_STORE_ENV} or {DEFAULT_OBJECT_STORE})",
    )
    group.add_argument(
        "--meta",
        metavar="URI",
        help=f"meta store holding the records: etcd://host:port/prefix, sqlite:///file.db "
        f"(default: ${META_ENV} or {DEFAULT_META})",
    )


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show_help(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return show_help


# --- running ------------------------------------------------------------------------------------


def _error(message: str) -> None:
    first = (str(message).strip().splitlines() or ["unknown error"])[0]
    print(f"{PROG}: error: {first}", file=sys.stderr, flush=True)


def _runner(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run an async command; map errors to one line on stderr and an exit status."""

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args))
        except UsageError as exc:
            _error(str(exc))
            return EXIT_USAGE
        except _USER_ERRORS as exc:
            _error(str(exc))
            return EXIT_USAGE
        except CanopyError as exc:
            _error(f"{type(exc).__name__}: {exc}")
            return EXIT_FAILURE
        except OSError as exc:
            _error(f"{type(exc).__name__}: {exc}")
            return EXIT_FAILURE
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return run


def _uris(args: argparse.Namespace) -> tuple[str, str]:
    objects = args.object_store or os.environ.get(OBJECT_STORE_ENV) or DEFAULT_OBJECT_STORE
    meta = args.meta or os.environ.get(META_ENV) or DEFAULT_META
    return objects, meta


@contextlib.asynccontextmanager
async def _open_store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    objects, meta = _uris(args)
    store = await LogStore.open(object_store=objects, meta=meta)
    try:
        yield store
    finally:
        await store.close()


def _parse_id(text: str, *, what: str = "message id") -> MessageId:
    try:
        return MessageId.parse(text)
    except ValueError:
        raise UsageError(
            f"bad {what} {text!r}: expected SEG:ENTRY (e.g. 3:0), earliest or latest"
        ) from None


def _fmt_id(mid: MessageId | None, none: str = "-") -> str:
    return str(mid) if mid is not None else none


def _id_json(mid: MessageId | None) -> str | None:
    return str(mid) if mid is not None else None


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _fmt_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """An aligned text table; columns in ``numeric`` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


# --- ls, create, delete -------------------------------------------------------------------------


async def _cmd_ls(args: argparse.Namespace) -> int:
    async with _open_store(args) as store:
        records = await store.catalog.list_logs(args.prefix)
        logs = []
        for record in sorted(records, key=lambda r: r.name):
            try:
                lg = await store.open_log(record.name)
                segments = await lg.segments()
                last = await lg.last_message_id()
                trunc = await lg.truncation_point()
            except LogNotFound:
                continue  # deleted while we listed
            live = [s for s in segments if s.state is not SegmentState.TRUNCATED]
            logs.append(
                {
                    "name": record.name,
                    "id": record.log_id,
                    "segments": len(live),
                    "last_message_id": _id_json(last),
                    "truncation_point": _id_json(trunc),
                    "created_at": _iso(record.created_at),
                }
            )
    if args.json:
        _print_json(logs)
        return EXIT_OK
    if not logs:
        where = f" with prefix {args.prefix!r}" if args.prefix else ""
        print(f"no logs{where}", file=sys.stderr)
        return EXIT_OK
    rows = [
        [
            lg["name"],
            str(lg["id"]),
            str(lg["segments"]),
            lg["last_message_id"] or "-",
            lg["truncation_point"] or "-",
        ]
        for lg in logs
    ]
    print(_table(["NAME", "ID", "SEGMENTS", "LAST", "TRUNCATED AT"], rows, numeric={1, 2}))
    return EXIT_OK


async def _cmd_create(args: argparse.Namespace) -> int:
    async with _open_store(args) as store:
        lg = await store.create_log(args.log)
    print(f"created log {lg.name!r} (id {lg.log_id})")
    return EXIT_OK


async def _cmd_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError(
            f"deleting log {args.log!r} removes all its entries for good; add --yes to confirm"
        )
    async with _open_store(args) as store:
        await store.delete_log(args.log)
    print(f"deleted log {args.log!r}")
    return EXIT_OK


# --- segments -----------------------------------------------------------------------------------


async def _segment_figures(lg: Log, seg: SegmentRecord) -> dict[str, Any]:
    blocks, entries, size = seg.block_count, seg.entry_count, seg.size
    if seg.state is SegmentState.ACTIVE:
        # an active segment's record is not updated per block: read the blocks themselves
        from woodpecker.segments import scan_segment

        scan = await scan_segment(lg.store.objects, lg.log_id, seg.segment_id)
        blocks = len(scan.items)
        entries = sum(item.count for item in scan.items)
        size = sum(item.size for item in scan.items)
    return {
        "segment": seg.segment_id,
        "state": seg.state.value,
        "blocks": blocks,
        "merged": seg.merged_count if seg.state is SegmentState.SEALED else None,
        "entries": entries,
        "bytes": size,
        "epoch": seg.epoch,
        "created_at": _iso(seg.created_at),
        "completed_at": _iso(seg.completed_at),
    }


async def _cmd_segments(args: argparse.Namespace) -> int:
    async with _open_store(args) as store:
        lg = await store.open_log(args.log)
        records = await lg.segments()
        segments = [await _segment_figures(lg, seg) for seg in records]
    if args.json:
        _print_json(segments)
        return EXIT_OK
    if not segments:
        print(f"log {args.log!r} has no segments", file=sys.stderr)
        return EXIT_OK
    by_id = {seg.segment_id: seg for seg in records}
    rows = [
        [
            str(s["segment"]),
            s["state"],
            str(s["blocks"]),
            "-" if s["merged"] is None else str(s["merged"]),
            str(s["entries"]),
            _fmt_bytes(s["bytes"]),
            _fmt_time(by_id[s["segment"]].created_at),
            _fmt_time(by_id[s["segment"]].completed_at),
        ]
        for s in segments
    ]
    headers = [
        "SEGMENT",
        "STATE",
        "BLOCKS",
        "MERGED",
        "ENTRIES",
        "BYTES",
        "CREATED (UTC)",
        "COMPLETED (UTC)",
    ]
    print(_table(headers, rows, numeric={2, 3, 4, 5}))
    return EXIT_OK


# --- tail ---------------------------------------------------------------------------------------


class _Output:
    """Writes messages in one of the tail formats."""

    def __init__(self, fmt: str, stream: TextIO, *, flush_each: bool) -> None:
        self._fmt = fmt
        self._stream = stream
        self._flush_each = flush_each

    def write(self, msg: Message) -> None:
        if self._fmt == "raw":
            self._stream.flush()
            binary = self._stream.buffer
            binary.write(msg.payload + b"\n")
            if self._flush_each:
                binary.flush()
            return
        if self._fmt == "json":
            line = json.dumps(
                {
                    "id": str(msg.id),
                    "payload": base64.b64encode(msg.payload).decode("ascii"),
                    "properties": msg.properties,
                },
                separators=(",", ":"),
            )
        else:
            line = f"{msg.id}\t{msg.payload.decode('utf-8', errors='replace')}"
        self._stream.write(line + "\n")
        if self._flush_each:
            self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()
        if self._fmt == "raw":
            self._stream.buffer.flush()


async def _cmd_tail(args: argparse.Namespace) -> int:
    start = _parse_id(args.start, what="start position")
    out = _Output(args.format, sys.stdout, flush_each=args.follow)
    count = 0
    try:
        async with _open_store(args) as store:
            lg = await store.open_log(args.log)
            last = None if args.follow else await lg.last_message_id()
            if not args.follow:
                trunc = await lg.truncation_point()
                first = trunc if start == MessageId.EARLIEST else start
                if last is None or start == MessageId.LATEST or (first and first > last):
                    return EXIT_OK  # nothing up to the current end
            reader = await lg.open_reader(start)
            try:
                while args.limit is None or count < args.limit:
                    msg = await reader.read_next(timeout=None if args.follow else TAIL_END_WAIT)
                    if msg is None:
                        break  # at the tail: the end moved back (truncation) or raced
                    out.write(msg)
                    count += 1
                    if last is not None and msg.id >= last:
                        break
            finally:
                await reader.close()
        out.flush()
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us; stop quietly
        with contextlib.suppress(BrokenPipeError):
            out.flush()
        return EXIT_OK
    except BrokenPipeError:  # `canopy wal tail LOG | head`: the reader went away
        _silence_stdout()
        return EXIT_OK
    return EXIT_OK


def _silence_stdout() -> None:
    # after EPIPE, Python would complain again when flushing stdout at exit
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# --- append -------------------------------------------------------------------------------------


class _StdinPump:
    """Reads stdin on a daemon thread (the event loop keeps running the writer meanwhile) and
    hands the chunks to the loop, at most ``max_chunks`` ahead of the consumer. Reads the file
    descriptor directly where there is one, so a thread blocked in ``read`` at exit never holds
    the lock of ``sys.stdin.buffer``."""

    def __init__(self, stream: Any, max_chunks: int = 8) -> None:
        self._loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._credits = threading.Semaphore(max_chunks)
        self._stopped = threading.Event()
        self._read = self._reader_for(stream)
        self._thread = threading.Thread(target=self._run, name="wal-append-stdin", daemon=True)
        self._thread.start()

    @staticmethod
    def _reader_for(stream: Any) -> Callable[[], bytes]:
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is not None:
            return lambda: os.read(fd, APPEND_READ_CHUNK)
        binary = getattr(stream, "buffer", stream)
        read = getattr(binary, "read1", None) or binary.read
        return lambda: read(APPEND_READ_CHUNK)

    def _run(self) -> None:
        while not self._stopped.is_set():
            if not self._credits.acquire(timeout=0.1):
                continue
            try:
                chunk: bytes | BaseException = self._read()
                if isinstance(chunk, str):  # a text stream without a binary buffer
                    chunk = chunk.encode()
            except BaseException as exc:
                chunk = exc
            try:
                self._loop.call_soon_threadsafe(self.queue.put_nowait, chunk)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return
            if not isinstance(chunk, bytes) or not chunk:
                return

    async def get(self) -> bytes:
        """The next chunk; b"" at end of input."""
        chunk = await self.queue.get()
        self._credits.release()
        if isinstance(chunk, BaseException):
            raise chunk
        return chunk

    def stop(self) -> None:
        self._stopped.set()


class _AppendStats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.sent = 0
        self.sent_bytes = 0
        self.acked = 0
        self.acked_bytes = 0
        self.last: MessageId | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self, to: str | None = None) -> str:
        secs = self.elapsed()
        rate = self.acked / secs if secs > 0 else 0.0
        byte_rate = self.acked_bytes / secs if secs > 0 else 0.0
        where = f" to {to!r}" if to else ""
        return (
            f"{self.acked} entries ({_fmt_bytes(self.acked_bytes)}){where} in {secs:.1f} s: "
            f"{rate:.0f} entries/s, {_fmt_bytes(byte_rate)}/s; last id {_fmt_id(self.last)}"
        )


async def _cmd_append(args: argparse.Namespace) -> int:
    stats = _AppendStats()
    interrupted = False
    async with _open_store(args) as store:
        try:
            lg = await store.open_log(args.log)
        except LogNotFound:
            if not args.create:
                raise LogNotFound(
                    f"log {args.log!r} not found (add --create to create it)"
                ) from None
            try:
                lg = await store.create_log(args.log)
            except LogExists:  # created concurrently: fine
                lg = await store.open_log(args.log)
        writer = await lg.open_writer()
        if sys.stdin.isatty():
            print(
                f"appending one entry per line to {lg.name!r}; end with Ctrl-D",
                file=sys.stderr,
            )
        pump = _StdinPump(sys.stdin)
        progress = asyncio.create_task(_report_progress(stats, lg.name))
        # batches of (futures, payload bytes), oldest first
        pending: deque[tuple[list[asyncio.Future[MessageId]], int]] = deque()
        pending_bytes = 0

        async def settle_oldest() -> None:
            """Wait for the oldest batch. Acknowledgements come in append order, so its last
            entry succeeding means the whole batch (and every batch before) is durable."""
            nonlocal pending_bytes
            futures, nbytes = pending[0]
            last = futures[-1]
            await asyncio.wait([last])  # unlike gather, never cancels it if we are cancelled
            if last.exception() is not None:
                raise last.exception()  # type: ignore[misc]
            pending.popleft()
            pending_bytes -= nbytes

        def count_acked(fut: asyncio.Future[MessageId], entries: int, nbytes: int) -> None:
            if not fut.cancelled() and fut.exception() is None:
                stats.acked += entries
                stats.acked_bytes += nbytes
                stats.last = fut.result()

        async def append_lines(lines: list[bytes]) -> None:
            nonlocal pending_bytes
            for i in range(0, len(lines), APPEND_BATCH):
                batch = lines[i : i + APPEND_BATCH]
                futures: list[asyncio.Future[MessageId]] = [
                    writer.append_nowait(line)  # type: ignore[misc]  # a Future
                    for line in batch
                ]
                nbytes = sum(map(len, batch))
                futures[-1].add_done_callback(
                    functools.partial(count_acked, entries=len(batch), nbytes=nbytes)
                )
                pending.append((futures, nbytes))
                pending_bytes += nbytes
                stats.sent += len(batch)
                stats.sent_bytes += nbytes
                while pending and pending_bytes > APPEND_MAX_UNACKED_BYTES:
                    await settle_oldest()
                await asyncio.sleep(0)  # let the writer cut and upload blocks meanwhile

        try:
            try:
                tail = b""
                while True:
                    chunk = await pump.get()
                    if not chunk:
                        lines = [tail] if tail else []
                    else:
                        *lines, tail = (tail + chunk).split(b"\n")
                    await append_lines(lines)
                    if not chunk:
                        break
            except asyncio.CancelledError:
                interrupted = True  # Ctrl-C: keep what was read, close the writer cleanly
            pump.stop()
            while pending:
                await settle_oldest()
            await writer.close()
        finally:
            pump.stop()
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
            for futures, _ in pending:  # after a failure: retrieve every outcome (no warnings)
                for fut in futures:
                    fut.add_done_callback(_retrieve)
    print(f"appended {stats.line(to=lg.name)}")
    if interrupted:
        print(f"{PROG}: interrupted; the entries above are durable", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _report_progress(stats: _AppendStats, name: str) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        pending = stats.sent - stats.acked
        print(
            f"{name}: acked {stats.line()} ({pending} pending)",
            file=sys.stderr,
            flush=True,
        )


# --- truncate, audit ----------------------------------------------------------------------------


async def _cmd_truncate(args: argparse.Namespace) -> int:
    point = _parse_id(args.position, what="truncation point")
    if point in (MessageId.EARLIEST, MessageId.LATEST):
        raise UsageError("truncate needs a message id SEG:ENTRY, not earliest/latest")
    async with _open_store(args) as store:
        lg = await store.open_log(args.log)
        before = await lg.truncation_point()
        last = await lg.last_message_id()
        end = MessageId(last.segment_id, last.entry_id + 1) if last else None
        if not args.force and (end is None or point > end):
            where = f"the log ends at {last}" if last else "the log holds no entries"
            raise UsageError(
                f"truncation point {point} is past the end of log {args.log!r} ({where}); "
                "add --force to truncate there anyway"
            )
        now = await lg.truncate(point)
    if now != point:
        print(f"log {args.log!r}: truncation point stays at {now} (it never moves back)")
    else:
        print(
            f"log {args.log!r}: truncation point now {now} (was {_fmt_id(before, 'none')}); "
            "`canopy wal audit` deletes the segments below it"
        )
    return EXIT_OK


async def _cmd_audit(args: argparse.Namespace) -> int:
    async with _open_store(args) as store:
        if args.log:
            from woodpecker.auditor import audit_log

            await store.open_log(args.log)  # LogNotFound before any work
            report = {args.log: await audit_log(store, args.log)}
        else:
            report = await store.audit_once()
    if args.json:
        _print_json(report)
        return EXIT_OK
    if not report:
        print("no logs", file=sys.stderr)
    for name, result in sorted(report.items()):
        if result.get("skipped"):
            print(f"{name}: skipped ({result['skipped']})")
            continue
        parts = []
        if result.get("deleted_segments"):
            parts.append("deleted segments " + ", ".join(map(str, result["deleted_segments"])))
        if result.get("compacted_segments"):
            parts.append("compacted segments " + ", ".join(map(str, result["compacted_segments"])))
        print(f"{name}: " + ("; ".join(parts) if parts else "nothing to do"))
    return EXIT_OK


# --- standalone ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m woodpecker.cli ...``: the ``wal`` commands without the ``canopy`` front end."""
    parser = argparse.ArgumentParser(prog="python -m woodpecker.cli")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(["wal", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

"""``LogStore`` and ``Log``: the public entry points of the WAL (names fixed by DESIGN.md §3)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import uuid
from typing import Any

from woodpecker.catalog import Catalog, Versioned
from woodpecker.clock import Clock, RealClock
from woodpecker.config import WalConfig
from woodpecker.errors import (
    CanopyError,
    LogNotFound,
    LogTruncated,
    PreconditionFailed,
    Unavailable,
)
from woodpecker.message import MessageId
from woodpecker.meta.base import MetaStore
from woodpecker.objectstore.base import ObjectStore
from woodpecker.objectstore.wrappers import Metered, Retrying
from woodpecker.records import (
    LogRecord,
    SegmentRecord,
    SegmentState,
    capabilities_key,
    lock_key,
    log_object_prefix,
)
from woodpecker.segments import recover_segment, scan_segment

log = logging.getLogger("woodpecker")


def _without_userinfo(uri: str) -> str:
    """``uri`` with any ``user:password@`` (plain or %-encoded) masked (e.g. in an endpoint URL)."""
    return re.sub(r"://[^/?#@]*?(?:@|%40)", "://***@", uri)


class LogStore:
    """A set of named logs over one object store (data) and one meta store (records)."""

    def __init__(
        self,
        objects: ObjectStore,
        meta: MetaStore,
        config: WalConfig,
        clock: Clock,
        *,
        meter: Metered,
        owns: tuple[Any, ...] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.raw_objects = objects
        self.meter = meter  # counts every request sent to the object store (the cost figures)
        self.objects: ObjectStore = Retrying(
            meter,
            attempts=config.put_attempts,
            base_delay=config.retry_base_delay,
            max_delay=config.retry_max_delay,
            clock=clock,
            rng=rng,  # retry jitter; a seeded one makes simulations replay exactly
        )
        self.meta = meta
        self.config = config
        self.clock = clock
        self.catalog = Catalog(meta, clock)
        self.conditional_writes = True
        self._owns = owns
        self._logs: dict[str, Log] = {}
        self._auditor_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        object_store: str | ObjectStore,
        meta: str | MetaStore,
        config: WalConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> LogStore:
        """Open a store from URIs (``s3://``, ``file://``, ``memory://`` and ``etcd://``,
        ``sqlite:///``, ``memory://``) or ready-made backends. Probes once, and records in meta,
        whether the object store supports conditional writes. ``clock`` and ``rng`` (retry
        jitter) are injectable so a simulation under virtual time replays from a seed."""
        from woodpecker.meta.uri import open_meta_store
        from woodpecker.objectstore.uri import open_object_store

        config = config or WalConfig()
        config.validate()
        clock = clock or RealClock()
        owns: list[Any] = []
        if isinstance(object_store, str):
            object_store = open_object_store(object_store)
            owns.append(object_store)
        if isinstance(meta, str):
            meta = open_meta_store(meta, clock=clock)
            owns.append(meta)
        store = cls(
            object_store,
            meta,
            config,
            clock,
            meter=Metered(object_store),
            owns=tuple(owns),
            rng=rng,
        )
        try:
            store.conditional_writes = await store._probe_conditional_writes()
        except BaseException:
            await store.close()
            raise
        return store

    async def _probe_conditional_writes(self) -> bool:
        key = capabilities_key(self.raw_objects.uri)
        kv = await self.meta.get(key)
        if kv is not None:
            supported = bool(json.loads(kv.value).get("conditional_writes", True))
            self._log_fencing_mode(supported, "recorded by an earlier probe")
            return supported
        probe = f"_probe/{uuid.uuid4().hex}"
        await self.objects.put(probe, b"probe", if_none_match="*")
        try:
            await self.objects.put(probe, b"probe-2", if_none_match="*")
            supported = False
        except PreconditionFailed:
            supported = True
        finally:
            await self.objects.delete(probe)
        record = {"conditional_writes": supported, "probed_at": self.clock.now()}
        await self.meta.cas(key, json.dumps(record).encode(), expected_version=0)
        self._log_fencing_mode(supported, "probed now")
        return supported

    def _log_fencing_mode(self, supported: bool, source: str) -> None:
        """One INFO line (conditional writes) or one WARNING (lease-lock fallback) naming the
        object store (its URI carries no credentials), the mode and, for the fallback, what it
        costs and the key to tune."""
        store = _without_userinfo(self.raw_objects.uri)
        if supported:
            log.info(
                "WAL fencing mode: conditional writes (If-None-Match) on object store %s (%s)",
                store,
                source,
            )
            return
        log.warning(
            "WAL fencing mode: meta-store lock (lease; wal.lock_ttl=%gs) on object store %s "
            "(%s): the store ignores If-None-Match, so each log writer holds a lease lock in the "
            "meta store; a crashed writer's logs are taken over only after wal.lock_ttl, and "
            "fencing relies on lease timing. Tune wal.lock_ttl; verify the store with "
            "`canopy storage-check`",
            self.config.lock_ttl,
            store,
            source,
        )

    # --- logs ----------------------------------------------------------------------------

    async def create_log(self, name: str) -> Log:
        record = await self.catalog.create_log(name)
        return self._log_for(record)

    async def open_log(self, name: str) -> Log:
        """The named log; raises ``LogNotFound``."""
        record = (await self.catalog.get_log(name)).record
        return self._log_for(record)

    async def list_logs(self, prefix: str = "") -> list[str]:
        return [r.name for r in await self.catalog.list_logs(prefix)]

    async def delete_log(self, name: str) -> None:
        """Delete the log's objects, then its records. Raises ``LogNotFound``."""
        record = (await self.catalog.get_log(name)).record
        keys = [info.key async for info in self.objects.list(log_object_prefix(record.log_id))]
        sem = asyncio.Semaphore(32)

        async def delete(key: str) -> None:
            async with sem:
                await self.objects.delete(key)

        await asyncio.gather(*(delete(k) for k in keys))
        await self.catalog.delete_log_meta(name)
        self._logs.pop(name, None)

    def _log_for(self, record: LogRecord) -> Log:
        existing = self._logs.get(record.name)
        if existing is not None and existing.log_id == record.log_id:
            return existing
        created = Log(self, record)
        self._logs[record.name] = created
        return created

    # --- auditor -------------------------------------------------------------------------

    async def audit_once(self) -> dict[str, Any]:
        """One auditor pass over every log: delete truncated segments, compact small blocks."""
        from woodpecker.auditor import audit_log

        report: dict[str, Any] = {}
        for name in await self.list_logs():
            try:
                report[name] = await audit_log(self, name)
            except LogNotFound:
                continue
        return report

    def start_auditor(self) -> None:
        """Run ``audit_once`` every ``config.auditor_interval`` seconds until ``close``."""
        if self._auditor_task is None:
            self._auditor_task = asyncio.create_task(self._auditor_loop(), name="wal-auditor")

    async def _auditor_loop(self) -> None:
        while True:
            await self.clock.sleep(self.config.auditor_interval)
            try:
                await self.audit_once()
            except CanopyError as exc:
                log.warning("auditor pass failed; will retry", extra={"error": str(exc)})

    async def close(self) -> None:
        if self._auditor_task is not None:
            self._auditor_task.cancel()
            await asyncio.gather(self._auditor_task, return_exceptions=True)
        for lg in list(self._logs.values()):
            await lg._close_handles()
        for owned in self._owns:
            await owned.close()


class Log:
    """One named log. Obtain through ``LogStore.create_log`` / ``open_log``."""

    def __init__(self, store: LogStore, record: LogRecord) -> None:
        self.store = store
        self.name = record.name
        self.log_id = record.log_id
        self._appended = asyncio.Event()
        self._writers: set[Any] = set()
        self._readers: set[Any] = set()

    def __repr__(self) -> str:
        return f"Log({self.name!r}, id={self.log_id})"

    # --- writing -------------------------------------------------------------------------

    async def open_writer(self):  # type: ignore[no-untyped-def]
        """Become the log's only writer: bump the epoch, fence and recover every Active segment.
        Any earlier writer fails its next PUT and closes as fenced."""
        from woodpecker.writer import LogWriter

        lease = None
        if not self.store.conditional_writes:
            lease = await self._acquire_lock()
        try:
            writer_rec = await self.store.catalog.bump_epoch(self.name)
            epoch = writer_rec.record.epoch
            for seg in await self.store.catalog.segments(self.name):
                if seg.record.state is SegmentState.ACTIVE:
                    await recover_segment(
                        self.store.objects, self.store.catalog, self.name, self.log_id, seg, epoch
                    )
        except BaseException:
            if lease is not None:  # else its keepalive holds the lock for good: no writer ever
                with contextlib.suppress(CanopyError):
                    await lease.revoke()
            raise
        writer = LogWriter(self, writer_rec, self.store.config.interval_for(self.store.objects.uri))
        writer._lock_lease = lease
        if lease is not None:
            writer._lease_watch = asyncio.create_task(self._fence_on_lease_loss(writer, lease))
        self._writers.add(writer)
        log.info("writer opened", extra={"log": self.name, "epoch": epoch})
        return writer

    async def _acquire_lock(self):  # type: ignore[no-untyped-def]
        ttl = self.store.config.lock_ttl
        deadline = self.store.clock.monotonic() + 3 * ttl
        while True:
            lease = await self.store.meta.grant_lease(ttl)
            token = uuid.uuid4().hex.encode()
            if await self.store.meta.cas(
                lock_key(self.name), token, expected_version=0, lease=lease.id
            ):
                lease.start_keepalive()
                return lease
            await lease.revoke()
            if self.store.clock.monotonic() > deadline:
                raise Unavailable(
                    f"log {self.name!r} is locked by another writer (lease lock fallback: the "
                    "object store lacks conditional writes)"
                )
            await self.store.clock.sleep(ttl / 4)

    async def _fence_on_lease_loss(self, writer: Any, lease: Any) -> None:
        from woodpecker.errors import WriterFenced

        await lease.wait_lost()
        writer._fail(WriterFenced(f"log {self.name!r}: writer lock lease lost"))

    def _writer_closed(self, writer: Any) -> None:
        self._writers.discard(writer)

    def _notify_appended(self) -> None:
        """Wake in-process readers waiting at the tail."""
        self._appended.set()
        self._appended = asyncio.Event()

    def appended_signal(self) -> asyncio.Event:
        """The event the next in-process acknowledgement will set."""
        return self._appended

    async def wait_appended(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Return when ``event`` (default: the next in-process acknowledgement) is set, or
        after ``seconds``."""
        event = event or self._appended
        sleeper = asyncio.ensure_future(self.store.clock.sleep(seconds))
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()

    # --- reading -------------------------------------------------------------------------

    async def open_reader(self, start: MessageId | None = None, name: str | None = None):  # type: ignore[no-untyped-def]
        """A reader from ``start`` (EARLIEST, LATEST or a message id). A named reader persists
        its position with ``checkpoint()``; opened again without ``start`` it resumes there,
        and the auditor keeps every segment it still needs."""
        from woodpecker.reader import LogReader

        if name is not None:
            from woodpecker.records import check_log_name

            check_log_name(name)
        if start is None and name is not None:
            saved = await self.store.catalog.get_reader(self.name, name)
            start = MessageId.from_list(saved.position) if saved else MessageId.EARLIEST
        position, hint = await self._resolve_start(start or MessageId.EARLIEST)
        reader = LogReader(self, position, name, block_hint=hint)
        if name is not None:
            await self.store.catalog.put_reader(self.name, name, position)
        self._readers.add(reader)
        return reader

    async def _resolve_start(self, start: MessageId) -> tuple[MessageId, int | None]:
        trunc = await self.truncation_point()
        # Read before listing the segments: a writer may create a segment in between, and that
        # one gets at least this id. (Read after an empty listing, it would already point past
        # the new segment, and the reader would skip it.)
        next_start = await self._next_segment_start()
        segments = await self.store.catalog.segments(self.name)
        live = [s.record for s in segments if s.record.state is not SegmentState.TRUNCATED]
        if start == MessageId.EARLIEST:
            first = MessageId(live[0].segment_id, 0) if live else next_start
            return (max(first, trunc) if trunc else first), None
        if start == MessageId.LATEST:
            return await self._tail_position(live, next_start)
        if trunc is not None and start < trunc:
            # below the point entries may be gone; they are readable while their segment lives
            # (a named reader holds it back from the auditor)
            if not any(s.segment_id == start.segment_id for s in live):
                raise LogTruncated(
                    f"log {self.name!r}: {start} is below the truncation point {trunc} and its "
                    "segment has been deleted"
                )
        return start, None

    async def _next_segment_start(self) -> MessageId:
        writer = await self.store.catalog.get_writer(self.name)
        return MessageId(writer.record.next_segment_id, 0)

    async def _tail_position(
        self, live: list[SegmentRecord], next_start: MessageId
    ) -> tuple[MessageId, int | None]:
        """The id the next appended entry will get (and the block it will be in), as far as
        storage shows now."""
        if not live:
            return next_start, None
        last = live[-1]
        if last.is_final:
            return MessageId(last.segment_id + 1, 0), None
        scan = await scan_segment(self.store.objects, self.log_id, last.segment_id)
        next_entry = sum(item.count for item in scan.items)
        return MessageId(last.segment_id, next_entry), scan.stop

    async def last_message_id(self) -> MessageId | None:
        """The id of the last durable entry, or None if the log holds none."""
        segments = await self.store.catalog.segments(self.name)
        for seg in reversed([s.record for s in segments]):
            if seg.state is SegmentState.TRUNCATED:
                break
            if seg.is_final:
                if seg.last_entry_id >= 0:
                    return MessageId(seg.segment_id, seg.last_entry_id)
                continue
            scan = await scan_segment(self.store.objects, self.log_id, seg.segment_id)
            if scan.items:
                last = scan.items[-1]
                return MessageId(seg.segment_id, last.first_entry_id + last.count - 1)
        return None

    # --- truncation ----------------------------------------------------------------------

    async def truncate(self, mid: MessageId) -> MessageId:
        """Mark every entry below ``mid`` as deletable; the auditor removes whole segments below
        it. The point never moves backwards; returns the point now in force."""
        if mid in (MessageId.EARLIEST, MessageId.LATEST) or mid.segment_id < 0:
            raise ValueError("truncate needs a real message id")
        return await self.store.catalog.set_truncation(self.name, mid)

    async def truncation_point(self) -> MessageId | None:
        return (await self.store.catalog.get_log(self.name)).record.truncation_point

    async def segments(self) -> list[SegmentRecord]:
        return [s.record for s in await self.store.catalog.segments(self.name)]

    async def _close_handles(self) -> None:
        for writer in list(self._writers):
            await writer.close()
        for reader in list(self._readers):
            await reader.close()

    def _reader_closed(self, reader: Any) -> None:
        self._readers.discard(reader)


__all__ = ["Log", "LogStore", "Versioned"]

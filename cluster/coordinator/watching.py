"""A mirror of the keys under a prefix: a consistent snapshot, then every change, across watch
reconnects and compactions.

:class:`PrefixMirror` is the one place the coordinator turns MetaStore watches into state; the
session registry, the channel manager and the streaming node's assignment watcher build on it.

Contract:

- ``await start()`` reads revision ``R0``, then ranges the prefix (a consistent state at some
  revision ``Rr >= R0``), then watches from ``R0 + 1``. Watch events at or below a key's
  ``mod_revision`` in the snapshot are already in it and are skipped; a DELETE of a key the mirror
  does not hold is skipped. So the snapshot plus the changes yielded afterwards reproduce every
  state of the prefix from ``Rr`` on, each change exactly once. (A key both created and deleted
  between ``R0`` and ``Rr`` can show up as a create and a delete: two true changes, never a
  repeated or missing one; the end state is always exact.)
- Iteration yields :class:`Change` records (old and new :class:`KeyValue`) in revision order and
  keeps :attr:`PrefixMirror.kvs` equal to the state after the last yielded change.
- A retryable error (``Unavailable``) of the watch is retried with backoff on the injected clock,
  resuming at the revision after the last event seen: nothing is missed or repeated. If that
  revision was compacted away (``WatchCompacted``), the mirror re-reads the prefix and yields the
  difference between its view and the new snapshot as changes, then watches on.
- The iteration ends (``StopAsyncIteration``) after :meth:`close`, or when the store closes its
  watches; other errors propagate.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from woodpecker.clock import Clock
from woodpecker.errors import CanopyError, WatchCompacted
from woodpecker.meta.base import EventType, KeyValue, MetaStore, Watch, WatchEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """One key's change: ``old`` is None when the key appeared, ``new`` None when it went away."""

    key: str
    old: KeyValue | None
    new: KeyValue | None
    revision: int


class PrefixMirror:
    """The keys under ``prefix`` as of the last change yielded (see the module docstring)."""

    def __init__(
        self,
        meta: MetaStore,
        prefix: str,
        clock: Clock,
        *,
        retry_delay: float = 0.05,
        max_retry_delay: float = 1.0,
    ) -> None:
        self.meta = meta
        self.prefix = prefix
        self.clock = clock
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.kvs: dict[str, KeyValue] = {}
        self._next = 0  # the first revision the watch must deliver
        self._watch: Watch | None = None
        self._pending: deque[Change] = deque()
        self._started = False
        self._closed = False

    async def start(self) -> dict[str, KeyValue]:
        """Take the snapshot; returns (and keeps in :attr:`kvs`) the keys under the prefix."""
        if not self._started:
            self.kvs = await self._snapshot()
            self._started = True
        return self.kvs

    async def _snapshot(self) -> dict[str, KeyValue]:
        first = await self.meta.revision()
        kvs = {kv.key: kv for kv in await self.meta.range(self.prefix)}
        self._next = first + 1
        return kvs

    @property
    def next_revision(self) -> int:
        """The first revision not yet reflected by the watch (0 before ``start``)."""
        return self._next

    def __aiter__(self) -> PrefixMirror:
        return self

    async def __anext__(self) -> Change:
        if not self._started:
            await self.start()
        delay = self.retry_delay
        while not self._closed:
            if self._pending:
                return self._pending.popleft()
            try:
                # a local: close() may drop self._watch while this awaits; the closed watch
                # then ends the iteration
                watch = self._watch
                if watch is None:
                    watch = self._watch = self.meta.watch(self.prefix, start_revision=self._next)
                    await watch.__aenter__()
                event = await watch.__anext__()
            except StopAsyncIteration:
                break
            except WatchCompacted as exc:
                log.warning("watch %r compacted (%s): re-reading the prefix", self.prefix, exc)
                await self._drop_watch()
                try:
                    await self._resync()
                except CanopyError as err:
                    if not err.retryable:
                        raise
                    await self.clock.sleep(delay)
                    delay = min(delay * 2, self.max_retry_delay)
                continue
            except CanopyError as exc:
                if not exc.retryable or self._closed:
                    raise
                log.info("watch %r broken (%s); resuming at %d", self.prefix, exc, self._next)
                await self._drop_watch()
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            delay = self.retry_delay
            change = self._apply(event)
            if change is not None:
                return change
        raise StopAsyncIteration

    def _apply(self, event: WatchEvent) -> Change | None:
        self._next = max(self._next, event.revision + 1)
        old = self.kvs.get(event.key)
        if old is not None and event.revision <= old.mod_revision:
            return None  # already in the snapshot
        if event.type is EventType.DELETE:
            if old is None:
                return None
            del self.kvs[event.key]
            return Change(event.key, old, None, event.revision)
        new = KeyValue(
            event.key,
            event.value,
            event.version,
            old.create_revision if old is not None and event.version > 1 else event.revision,
            event.revision,
        )
        self.kvs[event.key] = new
        return Change(event.key, old, new, event.revision)

    async def _resync(self) -> None:
        fresh = await self._snapshot()
        revision = self._next - 1
        for key in sorted(self.kvs.keys() | fresh.keys()):
            old, new = self.kvs.get(key), fresh.get(key)
            if old is None or new is None or old.mod_revision != new.mod_revision:
                self._pending.append(Change(key, old, new, revision))
        self.kvs = fresh

    async def _drop_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            try:
                await watch.close()
            except CanopyError as exc:
                log.debug("closing watch %r: %s", self.prefix, exc)

    async def close(self) -> None:
        """End the iteration and release the watch."""
        self._closed = True
        await self._drop_watch()

    async def __aenter__(self) -> PrefixMirror:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

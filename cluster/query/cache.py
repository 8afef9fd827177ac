"""The query node's local SSD cache: a size-bounded LRU directory over an ObjectStore.

Contracts:

* Cached objects must be immutable (segment insert / delta files and content-addressed index
  files are); a key's bytes are never re-validated. Never cache a manifest.
* Two kinds of entry: whole objects (:meth:`LocalCache.get_file`, :meth:`LocalCache.lease`) and
  aligned ``block_bytes`` blocks of an object (:meth:`LocalCache.get_range`, used for projected
  Parquet reads). A range is served from the whole object when that is cached, else from blocks,
  fetching each missing run of blocks with one GET.
* Concurrent requests for the same entry download it once; the others wait for that download.
* ``max_bytes`` bounds the bytes of all entries: after each admission the least recently used
  entries are deleted until the total fits, skipping entries in use (leased, or being read).
  When everything left is in use the cache stays over budget until leases end. An entry larger
  than ``max_bytes`` is still admitted (and goes first once unused).
* Restart: downloads go to ``tmp/`` and are renamed into ``objects/`` when complete, so
  :meth:`LocalCache.open` drops ``tmp/`` and rebuilds its index from ``objects/`` (LRU order by
  file mtime, which a hit refreshes). One process per directory.
* Metrics (:class:`CacheMetrics`): hits and misses count entries (a range over three blocks is
  three), ``bytes_downloaded`` what came from the store, ``evictions`` entries deleted for space.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from cluster.storage.segment_files import bounded
from woodpecker.errors import InvalidArgument
from woodpecker.objectstore.base import DEFAULT_MAX_KEYS, ListPage, ObjectInfo, ObjectStore

MiB = 1024 * 1024
DEFAULT_BLOCK_BYTES = 1 * MiB
DEFAULT_PART_BYTES = 8 * MiB  # whole-object downloads above this are parallel ranged GETs
DEFAULT_CONCURRENCY = 8


@dataclass
class CacheMetrics:
    hits: int = 0
    misses: int = 0
    bytes_downloaded: int = 0
    evictions: int = 0
    bytes_evicted: int = 0


@dataclass(slots=True)
class _Entry:
    size: int
    refs: int = 0


@dataclass(slots=True)
class _Inflight:
    task: asyncio.Future[None]
    waiters: int = 0
    admitted: bool = False


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


class LocalCache:
    """An LRU directory of immutable objects of ``store`` (see the module docstring).

    Create with :meth:`open` (or construct, then ``await cache.start()``). Not thread-safe: use
    it from one event loop.
    """

    def __init__(
        self,
        store: ObjectStore,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        part_bytes: int = DEFAULT_PART_BYTES,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if max_bytes < 1 or block_bytes < 1 or part_bytes < 1 or concurrency < 1:
            raise InvalidArgument("max_bytes, block_bytes, part_bytes, concurrency must be >= 1")
        self.store = store
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.block_bytes = block_bytes
        self.part_bytes = part_bytes
        self.metrics = CacheMetrics()
        self._sem = asyncio.Semaphore(concurrency)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # name -> entry, LRU first
        self._inflight: dict[str, _Inflight] = {}
        self._used = 0
        self._started = False

    @classmethod
    async def open(
        cls, store: ObjectStore, directory: str | os.PathLike[str], **kwargs: int
    ) -> LocalCache:
        cache = cls(store, directory, **kwargs)
        await cache.start()
        return cache

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def entries(self) -> int:
        return len(self._entries)

    # --- files on disk ---------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.directory / "objects" / name[:2] / name

    async def start(self) -> None:
        """Drop partial downloads, index what ``objects/`` holds, evict down to ``max_bytes``."""
        found = await asyncio.to_thread(self._scan)
        self._entries = OrderedDict((name, _Entry(size)) for name, size in found)
        self._used = sum(e.size for e in self._entries.values())
        self._started = True
        self._evict()

    def _scan(self) -> list[tuple[str, int]]:
        shutil.rmtree(self.directory / "tmp", ignore_errors=True)
        (self.directory / "tmp").mkdir(parents=True, exist_ok=True)
        (self.directory / "objects").mkdir(parents=True, exist_ok=True)
        found = []
        for sub in (self.directory / "objects").iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                st = f.stat()
                found.append((st.st_mtime_ns, f.name, st.st_size))
        found.sort()
        return [(name, size) for _, name, size in found]

    def contains(self, key: str) -> bool:
        """Whether the whole object ``key`` is cached."""
        return _digest(key) in self._entries

    # --- acquiring entries -----------------------------------------------------------------

    def _pin_cached(self, name: str) -> bool:
        entry = self._entries.get(name)
        if entry is None:
            return False
        entry.refs += 1
        self._entries.move_to_end(name)
        self.metrics.hits += 1
        with contextlib.suppress(OSError):
            os.utime(self._path(name))
        return True

    def _release(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is not None and entry.refs > 0:
            entry.refs -= 1
            if self._used > self.max_bytes:
                self._evict()

    def _admit(self, name: str, size: int) -> None:
        """Record a downloaded entry, pinned once for each requester waiting for it."""
        flight = self._inflight.pop(name, None)
        refs = 0
        if flight is not None:
            flight.admitted = True
            refs = flight.waiters
        self._entries[name] = _Entry(size, refs)
        self._used += size
        self.metrics.misses += 1
        self.metrics.bytes_downloaded += size
        self._evict()

    def _evict(self) -> None:
        excess = self._used - self.max_bytes
        if excess <= 0:
            return
        victims = []
        for name, entry in self._entries.items():  # least recently used first
            if entry.refs == 0:
                victims.append(name)
                excess -= entry.size
                if excess <= 0:
                    break
        for name in victims:
            entry = self._entries.pop(name)
            with contextlib.suppress(FileNotFoundError):
                self._path(name).unlink()
            self._used -= entry.size
            self.metrics.evictions += 1
            self.metrics.bytes_evicted += entry.size

    async def _acquire(self, names: list[str]) -> None:
        """Wait for the in-flight downloads of ``names``; on return each is cached and pinned
        once for this caller (on failure or cancellation nothing stays pinned)."""
        waits: list[tuple[str, _Inflight]] = []
        for name in names:
            flight = self._inflight.get(name)
            if flight is None:
                raise RuntimeError(f"cache entry {name} neither cached nor in flight")
            flight.waiters += 1
            waits.append((name, flight))
        try:
            for _, flight in waits:
                await asyncio.shield(flight.task)
        except BaseException:
            for name, flight in waits:
                if flight.admitted:
                    self._release(name)
                else:
                    flight.waiters -= 1
            raise

    def _launch(self, names: list[str], coro_factory) -> None:  # type: ignore[no-untyped-def]
        """Start one download task for ``names`` (entries neither cached nor in flight)."""
        if not self._started:
            raise InvalidArgument("LocalCache not started: use LocalCache.open or await start()")
        task = asyncio.ensure_future(coro_factory())
        task.add_done_callback(_observe)
        for name in names:
            self._inflight[name] = _Inflight(task)

        def cleanup(_: asyncio.Future[None]) -> None:
            for name in names:  # failed or cancelled before admission
                flight = self._inflight.get(name)
                if flight is not None and flight.task is task:
                    del self._inflight[name]

        task.add_done_callback(cleanup)

    def _tmp(self, name: str) -> Path:
        return self.directory / "tmp" / f"{name}.{uuid.uuid4().hex[:8]}.part"

    def _install(self, tmp: Path, name: str) -> None:
        final = self._path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    async def _get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        async with self._sem:
            return await self.store.get(key, offset=offset, length=length)

    # --- whole objects ---------------------------------------------------------------------

    async def _download_whole(self, key: str, name: str) -> None:
        size = (await self.store.head(key)).size
        tmp = self._tmp(name)
        try:
            if size <= self.part_bytes:
                data = await self._get(key)
                await asyncio.to_thread(tmp.write_bytes, data)
                size = len(data)
            else:
                fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT, 0o644)
                try:

                    async def part(off: int) -> None:
                        chunk = await self._get(key, off, min(self.part_bytes, size - off))
                        await asyncio.to_thread(os.pwrite, fd, chunk, off)

                    await bounded(
                        [lambda o=o: part(o) for o in range(0, size, self.part_bytes)], 64
                    )
                finally:
                    os.close(fd)
            await asyncio.to_thread(self._install, tmp, name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._drop_blocks(name)
        self._admit(name, size)

    def _drop_blocks(self, name: str) -> None:
        """Blocks of an object now cached whole are redundant: evict the unused ones."""
        prefix = name + "."
        for other in [n for n, e in self._entries.items() if n.startswith(prefix) and not e.refs]:
            entry = self._entries.pop(other)
            self._path(other).unlink(missing_ok=True)
            self._used -= entry.size
            self.metrics.evictions += 1
            self.metrics.bytes_evicted += entry.size

    async def _acquire_whole(self, key: str) -> str:
        name = _digest(key)
        if self._pin_cached(name):
            return name
        if name not in self._inflight:
            self._launch([name], lambda: self._download_whole(key, name))
        await self._acquire([name])
        return name

    async def get_file(self, key: str) -> Path:
        """The local path of the whole object ``key`` (downloaded on a miss). The file may be
        evicted once this returns: hold a :meth:`lease` while using it."""
        name = await self._acquire_whole(key)
        self._release(name)
        return self._path(name)

    @contextlib.asynccontextmanager
    async def lease(self, key: str) -> AsyncIterator[Path]:
        """``async with cache.lease(key) as path``: the whole object, never evicted while held."""
        name = await self._acquire_whole(key)
        try:
            yield self._path(name)
        finally:
            self._release(name)

    async def get(self, key: str) -> bytes:
        """The whole object's bytes, through the cache."""
        async with self.lease(key) as path:
            return await asyncio.to_thread(path.read_bytes)

    async def warm(self, keys: Iterable[str], *, concurrency: int = 4) -> None:
        """Download the whole objects ``keys`` that are not cached yet."""
        await bounded([lambda k=k: self.get_file(k) for k in keys], concurrency)

    # --- ranges ----------------------------------------------------------------------------

    async def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of ``key`` (clipped at the object's end), from
        the whole cached object if present, else from cached blocks (missing ones fetched)."""
        if offset < 0 or length < 0:
            raise InvalidArgument(f"bad range offset={offset} length={length}")
        if length == 0:
            return b""
        whole = _digest(key)
        if self._pin_cached(whole):
            try:
                return await asyncio.to_thread(_pread, self._path(whole), offset, length)
            finally:
                self._release(whole)
        bs = self.block_bytes
        first, last = offset // bs, (offset + length - 1) // bs
        names = [f"{whole}.{b}" for b in range(first, last + 1)]
        pinned: list[str] = []
        waiting: list[str] = []
        runs: list[list[int]] = []
        for b, name in zip(range(first, last + 1), names, strict=True):
            if self._pin_cached(name):
                pinned.append(name)
                continue
            waiting.append(name)
            if name in self._inflight:
                continue
            if runs and runs[-1][-1] == b - 1 and (len(runs[-1]) + 1) * bs <= self.part_bytes:
                runs[-1].append(b)
            else:
                runs.append([b])
        for run in runs:
            run_names = [f"{whole}.{b}" for b in run]
            self._launch(
                run_names,
                lambda run=run, run_names=run_names: self._download_blocks(key, run, run_names),
            )
        try:
            await self._acquire(waiting)
            pinned += waiting
            blocks = await asyncio.to_thread(_read_all, [self._path(n) for n in names])
        finally:
            for name in pinned:
                self._release(name)
        data = b"".join(blocks)
        start = offset - first * bs
        return data[start : start + length]

    async def _download_blocks(self, key: str, run: list[int], names: list[str]) -> None:
        bs = self.block_bytes
        data = await self._get(key, run[0] * bs, len(run) * bs)
        view = memoryview(data)
        written: list[tuple[str, int]] = []
        tmps: list[tuple[Path, str]] = []
        for i, name in enumerate(names):
            piece = view[i * bs : (i + 1) * bs]
            tmp = self._tmp(name)
            tmps.append((tmp, name))
            written.append((name, len(piece)))

        def write_all() -> None:
            for i, (tmp, name) in enumerate(tmps):
                tmp.write_bytes(view[i * bs : (i + 1) * bs])
                self._install(tmp, name)

        try:
            await asyncio.to_thread(write_all)
        except BaseException:
            for tmp, _ in tmps:
                tmp.unlink(missing_ok=True)
            raise
        for name, size in written:
            self._admit(name, size)

    def view(self) -> CachedStore:
        """A read-only ObjectStore that reads ``store`` through this cache."""
        return CachedStore(self)


def _observe(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: waiters got it; no "never retrieved" warning


def _pread(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


def _read_all(paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in paths]


class CachedStore:
    """Read-only ObjectStore view of a :class:`LocalCache`: ``get`` of a whole object caches it
    whole, a ranged ``get`` goes through blocks; ``head`` and listings go to the store; writes
    raise ``InvalidArgument``."""

    def __init__(self, cache: LocalCache) -> None:
        self.cache = cache

    @property
    def uri(self) -> str:
        return f"cache+{self.cache.store.uri}"

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        if offset == 0 and length is None:
            return await self.cache.get(key)
        if length is None:
            size = (await self.cache.store.head(key)).size
            length = max(0, size - offset)
        return await self.cache.get_range(key, offset, length)

    async def head(self, key: str) -> ObjectInfo:
        return await self.cache.store.head(key)

    async def list_page(
        self, prefix: str = "", *, start_after: str | None = None, max_keys: int = DEFAULT_MAX_KEYS
    ) -> ListPage:
        return await self.cache.store.list_page(prefix, start_after=start_after, max_keys=max_keys)

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = DEFAULT_MAX_KEYS
    ) -> AsyncIterator[ObjectInfo]:
        return self.cache.store.list(prefix, start_after=start_after, page_size=page_size)

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: str | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        raise InvalidArgument("a cached store is read-only")

    async def delete(self, key: str) -> None:
        raise InvalidArgument("a cached store is read-only")

    async def close(self) -> None:
        return None

"""``file:///dir`` — an ObjectStore on a local (or shared POSIX) directory.

Mapping: key ``a/b/c`` is the file ``dir/a/b/c``. Every put writes a temporary file under
``dir/.canopy/tmp``, fsyncs it, and then publishes it atomically:

- unconditional put: ``rename`` over the target (readers see old or new bytes, never a mix);
- ``if_none_match="*"``: ``link`` to the target, which the kernel refuses if the target exists
  (exclusive like ``O_EXCL``, but the object appears complete, never half-written);
- ``if_match=etag``: under an exclusive ``flock`` on a per-key lock file, compare and rename.

Etags are ``{inode:x}-{mtime_ns:x}-{size:x}`` of the published file: every put creates a new
inode, so a changed object always has a changed etag. Keys must be relative paths without empty,
``.`` or ``..`` components; the ``.canopy/`` prefix is reserved.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from woodpecker.errors import InvalidArgument, ObjectNotFound, PreconditionFailed, StorageError
from woodpecker.objectstore.base import (
    DEFAULT_MAX_KEYS,
    ListPage,
    ObjectInfo,
    check_key,
    check_max_keys,
    check_put_conditions,
    check_range,
    iterate_pages,
)

_RESERVED = ".canopy"


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key, st.st_size, _etag(st), st.st_mtime)


class FileObjectStore:
    """Objects as files under ``root``; all blocking I/O runs in worker threads."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._root = Path(root).absolute()
        self._fsync = fsync
        self._tmp = self._root / _RESERVED / "tmp"
        self._locks = self._root / _RESERVED / "locks"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._locks.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return f"file://{self._root}"

    @property
    def root(self) -> Path:
        return self._root

    # --- paths -----------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        check_key(key)
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise InvalidArgument(
                f"invalid object key {key!r} for file://: empty, . or .. component"
            )
        if parts[0] == _RESERVED:
            raise InvalidArgument(f"object keys under {_RESERVED}/ are reserved by file://")
        return self._root.joinpath(*parts)

    # --- put -------------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: str | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        check_put_conditions(if_none_match, if_match)
        path = self._path(key)
        return await asyncio.to_thread(
            self._put_sync, key, path, bytes(data), if_none_match, if_match
        )

    def _put_sync(
        self, key: str, path: Path, data: bytes, if_none_match: str | None, if_match: str | None
    ) -> ObjectInfo:
        tmp = self._tmp / uuid.uuid4().hex
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            st = os.stat(tmp)
            if if_none_match == "*":
                self._publish(lambda: os.link(tmp, path), path)
            elif if_match is not None:
                with self._key_lock(key):
                    try:
                        current = _etag(os.stat(path))
                    except FileNotFoundError:
                        current = None
                    if current != if_match:
                        raise PreconditionFailed(f"object {key!r} does not have etag {if_match!r}")
                    self._publish(lambda: os.replace(tmp, path), path)
            else:
                self._publish(lambda: os.replace(tmp, path), path)
            if self._fsync:
                self._fsync_dir(path.parent)
            return _info(key, st)
        except FileExistsError:
            raise PreconditionFailed(f"object {key!r} already exists") from None
        except OSError as exc:
            raise StorageError(f"file store put {key!r} failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _publish(action, path: Path) -> None:  # type: ignore[no-untyped-def]
        """Run ``action``, creating parent directories (and re-creating them if a concurrent
        delete pruned them in between)."""
        for _ in range(10):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                action()
                return
            except FileNotFoundError:
                continue
        raise StorageError(f"could not create the directory for {path}")

    def _key_lock(self, key: str):  # type: ignore[no-untyped-def]
        name = hashlib.sha1(key.encode()).hexdigest()[:2]  # 256 lock stripes
        return _FileLock(self._locks / name)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- reads -----------------------------------------------------------------------------

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        check_range(offset, length)
        path = self._path(key)
        return await asyncio.to_thread(self._get_sync, key, path, offset, length)

    @staticmethod
    def _get_sync(key: str, path: Path, offset: int, length: int | None) -> bytes:
        try:
            with open(path, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found") from None
        except OSError as exc:
            raise StorageError(f"file store get {key!r} failed: {exc}") from exc

    async def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found") from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"object {key!r} not found")
        return _info(key, st)

    async def list_page(
        self, prefix: str = "", *, start_after: str | None = None, max_keys: int = DEFAULT_MAX_KEYS
    ) -> ListPage:
        check_max_keys(max_keys)
        return await asyncio.to_thread(self._list_sync, prefix, start_after, max_keys)

    def _list_sync(self, prefix: str, start_after: str | None, max_keys: int) -> ListPage:
        found: list[ObjectInfo] = []
        base_dir = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        for key, st in self._walk(base_dir, prefix, start_after or ""):
            if len(found) == max_keys:
                return ListPage(found, is_truncated=True)
            found.append(_info(key, st))
        return ListPage(found, is_truncated=False)

    def _walk(self, dir_key: str, prefix: str, after: str) -> Iterator[tuple[str, os.stat_result]]:
        """Files under ``dir_key`` (a key prefix ending in "/" or "") in byte order of their
        keys, restricted to ``prefix`` and keys > ``after``, skipping whole subtrees early."""
        directory = self._root / dir_key if dir_key else self._root
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        named = []
        for entry in entries:
            if not dir_key and entry.name == _RESERVED:
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            named.append((dir_key + entry.name + ("/" if is_dir else ""), is_dir, entry))
        named.sort(key=lambda t: t[0].encode())
        for key, is_dir, entry in named:
            if is_dir:
                # every key inside starts with `key`; skip if it cannot match prefix or is <= after
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                if after and not after.startswith(key) and after.encode() > key.encode():
                    continue
                yield from self._walk(key, prefix, after)
            else:
                if not key.startswith(prefix) or key.encode() <= after.encode():
                    continue
                try:
                    yield key, entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while listing

    # --- delete ----------------------------------------------------------------------------

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(self._delete_sync, key, path)

    def _delete_sync(self, key: str, path: Path) -> None:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a "directory" is not an object
        except OSError as exc:
            raise StorageError(f"file store delete {key!r} failed: {exc}") from exc
        parent = path.parent
        while parent != self._root:  # prune empty directories, best effort
            try:
                parent.rmdir()
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    break
                raise
            parent = parent.parent

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = DEFAULT_MAX_KEYS
    ) -> AsyncIterator[ObjectInfo]:
        return iterate_pages(self, prefix, start_after, page_size)

    async def close(self) -> None:
        return None


class _FileLock:
    """An exclusive ``flock`` held for the duration of a ``with`` block (cross-process)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> _FileLock:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)

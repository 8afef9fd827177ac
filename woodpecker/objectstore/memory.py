"""``memory://`` — an in-process ObjectStore for unit tests and simulations.

``memory://`` gives a fresh private store; ``memory://NAME`` gives the process-wide store of that
name, so two components opened with the same URI see the same objects.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator
from dataclasses import dataclass

from woodpecker.clock import Clock, RealClock
from woodpecker.errors import ObjectNotFound, PreconditionFailed
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


@dataclass(slots=True)
class _Object:
    data: bytes
    info: ObjectInfo


class _Bucket:
    """The shared state behind one or more MemoryObjectStore handles."""

    def __init__(self) -> None:
        self.objects: dict[str, _Object] = {}
        self.sorted_keys: list[str] = []
        self.writes = 0


_NAMED: dict[str, _Bucket] = {}


class MemoryObjectStore:
    """Objects in a dict. Every put gets a fresh etag (a per-bucket sequence number), so equal
    etags always mean the same write, without hashing the content on the event loop."""

    def __init__(self, name: str | None = None, *, clock: Clock | None = None) -> None:
        self._name = name
        self._bucket = _NAMED.setdefault(name, _Bucket()) if name else _Bucket()
        self._clock = clock or RealClock()

    @property
    def uri(self) -> str:
        if self._name:
            return f"memory://{self._name}"
        return f"memory://?private={id(self._bucket):x}"  # distinct per private store

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: str | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        check_key(key)
        check_put_conditions(if_none_match, if_match)
        data = bytes(data)
        current = self._bucket.objects.get(key)
        if if_none_match == "*" and current is not None:
            raise PreconditionFailed(f"object {key!r} already exists")
        if if_match is not None and (current is None or current.info.etag != if_match):
            raise PreconditionFailed(f"object {key!r} does not have etag {if_match!r}")
        self._bucket.writes += 1
        info = ObjectInfo(key, len(data), f"{self._bucket.writes:016x}", self._clock.now())
        if current is None:
            bisect.insort(self._bucket.sorted_keys, key)
        self._bucket.objects[key] = _Object(data, info)
        return info

    def _lookup(self, key: str) -> _Object:
        try:
            return self._bucket.objects[key]
        except KeyError:
            raise ObjectNotFound(f"object {key!r} not found") from None

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        check_range(offset, length)
        data = self._lookup(key).data
        end = len(data) if length is None else offset + length
        return data[offset:end]

    async def head(self, key: str) -> ObjectInfo:
        return self._lookup(key).info

    async def list_page(
        self, prefix: str = "", *, start_after: str | None = None, max_keys: int = DEFAULT_MAX_KEYS
    ) -> ListPage:
        check_max_keys(max_keys)
        keys = self._bucket.sorted_keys
        lo = bisect.bisect_left(keys, prefix)
        if start_after is not None:
            lo = max(lo, bisect.bisect_right(keys, start_after))
        found: list[ObjectInfo] = []
        for i in range(lo, len(keys)):
            key = keys[i]
            if not key.startswith(prefix):
                break
            if len(found) == max_keys:
                return ListPage(found, is_truncated=True)
            found.append(self._bucket.objects[key].info)
        return ListPage(found, is_truncated=False)

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = DEFAULT_MAX_KEYS
    ) -> AsyncIterator[ObjectInfo]:
        return iterate_pages(self, prefix, start_after, page_size)

    async def delete(self, key: str) -> None:
        if self._bucket.objects.pop(key, None) is not None:
            i = bisect.bisect_left(self._bucket.sorted_keys, key)
            del self._bucket.sorted_keys[i]

    async def close(self) -> None:
        return None

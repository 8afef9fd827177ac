"""Object-store stand-ins shared by tests (``from store_fakes import IgnoresConditions``)."""

from __future__ import annotations

from woodpecker.objectstore.base import ObjectInfo
from woodpecker.objectstore.wrappers import _Wrapper


class IgnoresConditions(_Wrapper):
    """An S3-compatible store that silently ignores If-None-Match / If-Match (old servers)."""

    async def put(self, key, data, *, if_none_match=None, if_match=None) -> ObjectInfo:  # type: ignore[no-untyped-def]
        return await self.inner.put(key, data)

    async def get(self, key, *, offset=0, length=None):  # type: ignore[no-untyped-def]
        return await self.inner.get(key, offset=offset, length=length)

    async def head(self, key):  # type: ignore[no-untyped-def]
        return await self.inner.head(key)

    async def list_page(self, prefix="", *, start_after=None, max_keys=1000):  # type: ignore[no-untyped-def]
        return await self.inner.list_page(prefix, start_after=start_after, max_keys=max_keys)

    async def delete(self, key):  # type: ignore[no-untyped-def]
        await self.inner.delete(key)

"""The ObjectStore interface: the narrow boundary between Canopy and S3-like storage.

Contract (checked by ``tests/contract/test_objectstore_contract.py`` against every backend):

- ``put`` writes the whole object atomically; readers see the old or the new bytes, never a mix.
  ``if_none_match="*"`` succeeds only when no object exists at the key, ``if_match=etag`` only
  when the current object has that etag; a lost condition raises ``PreconditionFailed``.
  Of many concurrent ``if_none_match`` writers on one key exactly one succeeds.
- ``get`` returns the bytes, or the range ``[offset, offset+length)`` of them (clipped at the
  end of the object; an offset at or past the end returns ``b""``). A missing key raises
  ``ObjectNotFound``.
- ``list_page`` returns keys under a prefix in ascending byte order, strictly after
  ``start_after``, at most ``max_keys``; ``list`` iterates every page.
- ``delete`` is idempotent: deleting a missing key is not an error.
- Etags are opaque strings; equal etags mean equal content for the same key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from woodpecker.errors import InvalidArgument

DEFAULT_MAX_KEYS = 1000


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``head``, ``put`` and ``list`` report about one object."""

    key: str
    size: int
    etag: str
    last_modified: float | None = None  # seconds since the epoch, when the backend knows


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing; ``is_truncated`` means more keys follow the last one."""

    objects: list[ObjectInfo] = field(default_factory=list)
    is_truncated: bool = False

    @property
    def last_key(self) -> str | None:
        return self.objects[-1].key if self.objects else None


@runtime_checkable
class ObjectStore(Protocol):
    """Async object storage. Every backend and wrapper implements exactly these methods."""

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: str | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo: ...

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes: ...

    async def head(self, key: str) -> ObjectInfo: ...

    async def list_page(
        self, prefix: str = "", *, start_after: str | None = None, max_keys: int = DEFAULT_MAX_KEYS
    ) -> ListPage: ...

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = DEFAULT_MAX_KEYS
    ) -> AsyncIterator[ObjectInfo]: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...

    @property
    def uri(self) -> str: ...


async def iterate_pages(
    store: ObjectStore, prefix: str, start_after: str | None, page_size: int
) -> AsyncIterator[ObjectInfo]:
    """Every object under ``prefix`` after ``start_after``, fetching ``page_size`` keys a page."""
    cursor = start_after
    while True:
        page = await store.list_page(prefix, start_after=cursor, max_keys=page_size)
        for info in page.objects:
            yield info
        if not page.is_truncated or page.last_key is None:
            return
        cursor = page.last_key


def check_put_conditions(if_none_match: str | None, if_match: str | None) -> None:
    """Reject condition combinations no backend supports, with a message that says what works."""
    if if_none_match is not None and if_none_match != "*":
        raise InvalidArgument(f'if_none_match supports only "*", got {if_none_match!r}')
    if if_none_match is not None and if_match is not None:
        raise InvalidArgument("pass at most one of if_none_match and if_match")


def check_range(offset: int, length: int | None) -> None:
    if offset < 0:
        raise InvalidArgument(f"offset must be >= 0, got {offset}")
    if length is not None and length < 0:
        raise InvalidArgument(f"length must be >= 0, got {length}")


def check_key(key: str) -> None:
    if not key or key.startswith("/") or "\x00" in key:
        raise InvalidArgument(f"invalid object key {key!r}: must be non-empty and not start with /")
    if len(key.encode()) > 1024:
        raise InvalidArgument("object keys are limited to 1024 bytes")


def check_max_keys(max_keys: int) -> None:
    if not 1 <= max_keys <= DEFAULT_MAX_KEYS:
        raise InvalidArgument(f"max_keys must be between 1 and {DEFAULT_MAX_KEYS}, got {max_keys}")

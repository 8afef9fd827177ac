"""The MetaStore interface: small, strongly consistent key-value metadata (etcd semantics).

Contract (checked by ``tests/contract/test_metastore_contract.py`` against every backend):

- Keys are ``str``, values ``bytes``. Every key carries etcd-style bookkeeping: ``create_revision``,
  ``mod_revision`` (the store-wide revision of its last change) and ``version`` (1 on create,
  +1 on every put, reset on delete). The store revision increases by one per successful write
  transaction (a put, a delete that removed something, or a txn with at least one effective op).
- ``range(prefix)`` returns the keys under a prefix in ascending order.
- ``txn`` is atomic: if every ``Compare`` holds, all ``success`` ops apply at one new revision;
  otherwise none do. ``cas`` is the one-key shorthand: ``expected_version=0`` means "must not
  exist". Of many concurrent CAS calls with the same expectation exactly one wins.
- Leases: ``grant_lease(ttl)`` returns a lease; keys put with it are deleted (with DELETE
  events) when it expires or is revoked. ``keepalive()`` refreshes it once; ``start_keepalive()``
  keeps it alive in a supervised background task until ``revoke()``/``close()``.
- ``watch(prefix, start_revision)`` yields every change under the prefix with revision >=
  ``start_revision`` (default: changes after the call), in revision order, none missed, none
  repeated. Resuming from a revision that history no longer holds raises ``WatchCompacted``
  (on iteration), whose ``compact_revision`` is the oldest revision a watch may start from.
  A remote backend (etcd) establishes the watch on ``__aenter__`` or the first ``__anext__``:
  "after the call" means after that point, so enter the watch before making the changes it
  must see, or pass ``start_revision``.
- Limits are etcd's defaults on every backend: at most 128 ops per txn branch, 1.5 MiB per
  request, and no key written twice (or written and deleted) in one branch (``InvalidArgument``).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    version: int
    create_revision: int
    mod_revision: int
    lease: int = 0  # 0: no lease


class CompareTarget(enum.Enum):
    VERSION = "version"
    MOD_REVISION = "mod_revision"
    CREATE_REVISION = "create_revision"
    VALUE = "value"


@dataclass(frozen=True, slots=True)
class Compare:
    """``key``'s ``target`` must equal ``expected``. A missing key has version, mod_revision and
    create_revision 0 and never equals any value."""

    key: str
    target: CompareTarget
    expected: int | bytes

    @staticmethod
    def version(key: str, expected: int) -> Compare:
        return Compare(key, CompareTarget.VERSION, expected)

    @staticmethod
    def mod_revision(key: str, expected: int) -> Compare:
        return Compare(key, CompareTarget.MOD_REVISION, expected)

    @staticmethod
    def create_revision(key: str, expected: int) -> Compare:
        return Compare(key, CompareTarget.CREATE_REVISION, expected)

    @staticmethod
    def value(key: str, expected: bytes) -> Compare:
        return Compare(key, CompareTarget.VALUE, expected)

    @staticmethod
    def absent(key: str) -> Compare:
        return Compare(key, CompareTarget.VERSION, 0)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class DeletePrefix:
    prefix: str


Op = Put | Delete | DeletePrefix


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store revision after the txn (unchanged when it failed or was a no-op)


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    key: str
    value: bytes  # b"" for DELETE
    revision: int  # the mod_revision of the change
    version: int  # 0 for DELETE


@runtime_checkable
class Lease(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def ttl(self) -> float: ...

    async def keepalive(self) -> None:
        """Refresh once; raises ``LeaseExpired`` if the lease is already gone."""

    def start_keepalive(self) -> None:
        """Refresh every ttl/3 in the background until revoke() or close()."""

    @property
    def alive(self) -> bool:
        """False once the lease is known to be expired or revoked."""

    async def wait_lost(self) -> None:
        """Return when the lease is known to be lost (keepalive failed or revoke())."""

    async def revoke(self) -> None: ...


class Watch(Protocol):
    """An async iterator of events that must be closed (or used as an async context manager)."""

    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    async def __anext__(self) -> WatchEvent: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Watch: ...

    async def __aexit__(self, *exc: object) -> None: ...


@runtime_checkable
class MetaStore(Protocol):
    async def get(self, key: str) -> KeyValue | None: ...

    async def range(self, prefix: str, *, limit: int | None = None) -> list[KeyValue]: ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Returns the new store revision."""

    async def delete(self, key: str) -> bool:
        """True if the key existed."""

    async def delete_prefix(self, prefix: str) -> int:
        """Number of keys deleted."""

    async def txn(
        self, compares: list[Compare], success: list[Op], failure: list[Op] | None = None
    ) -> TxnResult: ...

    async def cas(self, key: str, value: bytes, *, expected_version: int, lease: int = 0) -> bool:
        """Put ``value`` iff ``key``'s version is ``expected_version`` (0: absent)."""

    async def revision(self) -> int:
        """The current store revision."""

    async def grant_lease(self, ttl: float) -> Lease: ...

    def watch(self, prefix: str, *, start_revision: int | None = None) -> Watch: ...

    async def close(self) -> None: ...

    @property
    def uri(self) -> str: ...

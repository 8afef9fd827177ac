"""The one error model shared by every layer of Canopy.

Every public error is a :class:`CanopyError` with a ``retryable`` flag. Provider errors (botocore,
gRPC from etcd, sqlite) are translated into these kinds in exactly one place per backend; callers
never see a provider exception.
"""

from __future__ import annotations


class CanopyError(Exception):
    """Base of every error Canopy raises on purpose."""

    retryable: bool = False


# --- storage -----------------------------------------------------------------------------------


class StorageError(CanopyError):
    """An object or meta store operation failed."""


class ObjectNotFound(StorageError):
    """The object does not exist (or the meta key, where a key is required)."""


class PreconditionFailed(StorageError):
    """A conditional write lost: ``if_none_match="*"`` on an existing object, or a stale
    ``if_match``."""


class Unavailable(StorageError):
    """The store could not be reached or asked us to slow down; the same call may succeed later.

    ``outcome_unknown`` is true when the request may have taken effect (a timeout after sending,
    a lost reply): a retry must be idempotent (same key, same bytes)."""

    retryable = True

    def __init__(self, message: str = "", *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class InvalidArgument(CanopyError):
    """A caller passed something the interface does not accept (bad URI, bad range, bad key)."""


class WatchCompacted(StorageError):
    """A watch asked to resume from a revision whose history has been compacted away."""

    def __init__(self, message: str, *, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class LeaseExpired(StorageError):
    """The lease is gone (expired or revoked); keys attached to it have been removed."""


# --- WAL ---------------------------------------------------------------------------------------


class LogNotFound(CanopyError):
    """No log with that name exists."""


class LogExists(CanopyError):
    """A log with that name already exists."""


class WriterFenced(CanopyError):
    """A newer writer has opened the log; this writer can no longer extend it."""


class WriterClosed(CanopyError):
    """The writer was closed; open a new one to append."""


class CorruptBlock(CanopyError):
    """A block failed its checksum or structural checks; its bytes are never returned."""


class LogTruncated(CanopyError):
    """The requested entries lie below the log's truncation point and may be gone."""

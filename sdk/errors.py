"""The SDK's one error model: Milvus status codes and gRPC failures -> typed exceptions.

Every error the SDK raises is a :class:`CanopyError`, a subclass of pymilvus'
``MilvusException`` (same ``code`` / ``message`` / ``compatible_code`` / ``retriable`` /
``is_input_error`` properties), so code written against pymilvus that catches
``MilvusException`` keeps working. :func:`error_from_status` and :func:`error_from_rpc` are the
only places that translate; the class of an error is chosen by its Milvus ``code``.

``retryable`` says whether resending the *same request* is safe and may succeed:

* status codes 1 (not ready), 2 (unavailable) and 8 (rate limited), or any status the server
  flags ``retriable``;
* gRPC ``UNAVAILABLE`` / ``RESOURCE_EXHAUSTED`` (:class:`Unavailable`). Whether the server ran
  the request is unknown then, so the client retries such failures only for reads and idempotent
  calls (see ``sdk._rpc``).
"""

from __future__ import annotations

from typing import ClassVar

import grpc
from pymilvus.exceptions import MilvusException
from pymilvus.grpc_gen import common_pb2

__all__ = [
    "CanopyError",
    "CollectionNotFound",
    "CollectionNotLoaded",
    "DatabaseNotFound",
    "EmptyCollection",
    "IndexNotFound",
    "InvalidArgument",
    "NotSupported",
    "PartitionNotFound",
    "RateLimited",
    "SchemaMismatch",
    "Timeout",
    "Unavailable",
    "error_from_rpc",
    "error_from_status",
]


class CanopyError(MilvusException):
    """Base of every SDK error: ``code`` (Milvus merr code), ``message``, ``retryable``."""

    default_code: ClassVar[int] = 65535
    retryable: ClassVar[bool] = False
    transport: bool = False  # raised for a gRPC failure, not a Milvus status
    input_error: ClassVar[bool] = False
    _by_code: ClassVar[dict[int, type[CanopyError]]] = {}

    def __init_subclass__(cls, codes: tuple[int, ...] = (), **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for code in codes:
            CanopyError._by_code[code] = cls

    def __init__(
        self,
        message: str = "",
        code: int | None = None,
        compatible_code: int = common_pb2.UnexpectedError,
        *,
        retriable: bool | None = None,
        is_input_error: bool | None = None,
    ) -> None:
        super().__init__(
            self.default_code if code is None else code,
            message,
            compatible_code,
            is_input_error=self.input_error if is_input_error is None else is_input_error,
            retriable=self.retryable if retriable is None else retriable,
        )

    def __str__(self) -> str:
        return f"<{type(self).__name__}: (code={self.code}, message={self.message})>"


class Unavailable(CanopyError, codes=(1, 2)):
    """The server (or the network to it) cannot serve now; retry later."""

    default_code = 2
    retryable = True


class RateLimited(CanopyError, codes=(8,)):
    default_code = 8
    retryable = True


class EmptyCollection(CanopyError, codes=(26,)):
    default_code = 26


class CollectionNotFound(CanopyError, codes=(100,)):
    default_code = 100
    input_error = True


class CollectionNotLoaded(CanopyError, codes=(101,)):
    default_code = 101


class SchemaMismatch(CanopyError, codes=(109,)):
    default_code = 109
    input_error = True


class PartitionNotFound(CanopyError, codes=(200,)):
    default_code = 200
    input_error = True


class IndexNotFound(CanopyError, codes=(700,)):
    default_code = 700


class DatabaseNotFound(CanopyError, codes=(800,)):
    default_code = 800
    input_error = True


class InvalidArgument(CanopyError, codes=(105, 701, 702, 802, 1100, 1101, 1102, 1700, 1701, 2201)):
    """A request the server (or the SDK, before sending) refuses as malformed."""

    default_code = 1100
    input_error = True


class NotSupported(CanopyError, codes=(10, 3000)):
    """Valid Milvus, but not implemented by the server."""

    default_code = 3000


class Timeout(CanopyError, codes=(10001,)):
    """The call's deadline passed (client side) or the server gave up (code 10001)."""

    default_code = 10001


_RETRYABLE_GRPC = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


def error_from_status(status: common_pb2.Status) -> CanopyError:
    """The typed error for a non-success Milvus ``Status``."""
    code = status.code or (65535 if status.error_code else 0)
    if status.error_code == common_pb2.CollectionNotExists:
        code = 100
    elif status.error_code == common_pb2.SchemaMismatch:
        code = 109
    cls = CanopyError._by_code.get(code, CanopyError)
    retriable = cls.retryable or bool(status.retriable)
    input_err = cls.input_error or status.extra_info.get("is_input_error") == "true"
    return cls(
        status.reason or status.detail,
        code,
        status.error_code,
        retriable=retriable,
        is_input_error=input_err,
    )


def error_from_rpc(err: grpc.RpcError) -> CanopyError:
    """The typed error for a failed gRPC call (transport level, not a Milvus status)."""
    exc = _rpc_error(err)
    exc.transport = True
    return exc


def _rpc_error(err: grpc.RpcError) -> CanopyError:
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else None) or str(err)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"deadline exceeded: {details}")
    if code in _RETRYABLE_GRPC:
        return Unavailable(f"{code.name}: {details}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotSupported(f"server does not implement this call: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details)
    name = code.name if code is not None else "UNKNOWN"
    return CanopyError(f"{name}: {details}")


def is_success(status: common_pb2.Status) -> bool:
    """Milvus success: both the new code and the legacy error_code are 0."""
    return status.code == 0 and status.error_code == 0

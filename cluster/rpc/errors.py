"""Errors across Canopy's internal RPCs: the one place where a remote exception or a transport
failure becomes a local exception.

Contract:

- A server handler never fails a call: :func:`encode_error` puts what it raised into the reply's
  ``Error`` (class as ``module:qualname``, ``str(exc)``, ``retryable``, the instance attributes
  that can be rebuilt, and the Milvus status code and reason ``status_for`` gives it).
- :func:`decode_error` rebuilds an instance of the *same class* when it is a
  :class:`~woodpecker.errors.CanopyError` subclass importable from the ``cluster`` or
  ``woodpecker`` packages, without calling its ``__init__`` (``cls.__new__`` +
  ``Exception.__init__(inst, message)``), then restores its attributes (``reason``/``message`` of
  a ``MilvusError``, ``milvus_code``, ``CollectionExists.existing`` as a ``CollectionInfo``,
  ``Unavailable.outcome_unknown``, ...). So ``str()``, ``isinstance`` checks and
  ``cluster.milvus.status.status_for`` see what they would have seen in-process.
- Anything else becomes :class:`RemoteError`: its ``str`` is the Milvus reason the server computed
  and its ``milvus_code`` that status' code, so the proxy's ``status_of`` answers the client with
  the same status as for the original.
- :func:`transport_error` maps a failed gRPC call (``grpc.aio.AioRpcError``) to
  :class:`~woodpecker.errors.Unavailable` (retryable; ``outcome_unknown`` unless the call
  provably never left this process) or, for statuses a retry cannot fix, a non-retryable
  ``RemoteError``. :func:`call` is the client-side wrapper that applies both mappings and retries
  transport failures of idempotent calls with back-off.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cluster.milvus.status import status_for
from cluster.proto import canopy_pb2 as pb
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError, Unavailable

__all__ = [
    "UNEXPECTED_CODE",
    "RemoteError",
    "Unreachable",
    "call",
    "decode_error",
    "encode_error",
    "transport_error",
]

log = logging.getLogger(__name__)

UNEXPECTED_CODE = 65535  # Milvus merr errUnexpected
_PACKAGES = ("cluster", "woodpecker")

# gRPC statuses a retry may cure: the server was not reached, went away, or ran out of time.
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class RemoteError(CanopyError):
    """A remote exception whose class cannot be rebuilt here (a bug such as ``KeyError``, or a
    class outside ``cluster``/``woodpecker``), or a gRPC status a retry cannot fix.

    ``type_name`` is ``module:qualname`` of the remote class (``grpc:<STATUS>`` for a gRPC
    status), ``remote_message`` its ``str``, ``retryable`` its flag, ``milvus_code`` the Milvus
    status code the server mapped it to; ``str(exc)`` is that status' reason."""

    def __init__(
        self,
        type_name: str,
        message: str = "",
        *,
        retryable: bool = False,
        milvus_code: int = UNEXPECTED_CODE,
        reason: str = "",
    ) -> None:
        short = type_name.rpartition(":")[2] or type_name
        super().__init__(reason or (f"{short}: {message}" if message else short))
        self.type_name = type_name
        self.remote_message = message
        self.retryable = retryable
        self.milvus_code = milvus_code


# --- values of exception attributes ---------------------------------------------------------


class _Skip(Exception):
    """An attribute value that cannot travel (it is left out)."""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _ours(path: str) -> bool:
    module = path.partition(":")[0]
    return any(module == p or module.startswith(p + ".") for p in _PACKAGES)


def _resolve(path: str) -> Any:
    """The object at ``module:qualname`` inside our packages, or None."""
    if not _ours(path):
        return None
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    return obj


def _to_json(value: Any) -> Any:
    """A JSON form of ``value`` (tagged objects for bytes, tuples, dicts, records, dataclasses
    and enums of our packages); raises ``_Skip`` for anything else."""
    if value is None or (
        isinstance(value, bool | int | float | str) and not isinstance(value, enum.Enum)
    ):
        return value
    if isinstance(value, bytes):
        return {"t": "bytes", "v": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, tuple):
        return {"t": "tuple", "v": [_to_json(v) for v in value]}
    if isinstance(value, dict):
        return {"t": "dict", "v": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    cls = type(value)
    path = _class_path(cls)
    if not _ours(path) or _resolve(path) is not cls:
        raise _Skip(path)
    if isinstance(value, enum.Enum):
        return {"t": "enum", "c": path, "v": _to_json(value.value)}
    if callable(getattr(value, "encode", None)) and callable(getattr(cls, "decode", None)):
        data = value.encode()
        if isinstance(data, bytes):
            return {"t": "record", "c": path, "v": base64.b64encode(data).decode()}
    if dataclasses.is_dataclass(value):
        fields = {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"t": "dataclass", "c": path, "v": fields}
    raise _Skip(path)


def _from_json(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return [_from_json(v) for v in raw] if isinstance(raw, list) else raw
    kind, value = raw.get("t"), raw.get("v")
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "tuple":
        return tuple(_from_json(v) for v in value)
    if kind == "dict":
        return {_from_json(k): _from_json(v) for k, v in value}
    cls = _resolve(str(raw.get("c", "")))
    if not isinstance(cls, type):
        raise _Skip(raw.get("c"))
    if kind == "enum":
        return cls(_from_json(value))
    if kind == "record":
        return cls.decode(base64.b64decode(value))
    if kind == "dataclass":
        return cls(**{k: _from_json(v) for k, v in value.items()})
    raise _Skip(kind)


# --- exceptions -----------------------------------------------------------------------------


def encode_error(exc: BaseException) -> pb.Error:
    """The wire form of ``exc`` (see the module docstring). Never raises."""
    try:
        message = str(exc)
    except Exception:
        message = repr(exc)
    attrs: dict[str, Any] = {}
    for key, value in vars(exc).items():
        if key.startswith("__"):
            continue
        try:
            attrs[key] = _to_json(value)
        except Exception as skip:  # _Skip, or a record that cannot encode itself
            log.debug("%s.%s (%r) does not travel", type(exc).__name__, key, skip)
    try:
        status = status_for(exc)
        code, reason = int(status.code), status.reason
    except Exception:  # a broken __str__ or attribute: keep the error itself
        code, reason = UNEXPECTED_CODE, f"{type(exc).__name__}: {message}"
    return pb.Error(
        type=_class_path(type(exc)),
        message=message,
        retryable=bool(getattr(exc, "retryable", False)),
        attrs_json=json.dumps(attrs, separators=(",", ":")) if attrs else "",
        milvus_code=code,
        milvus_reason=reason,
        no_args=not exc.args,
    )


def decode_error(err: pb.Error) -> Exception:
    """The local exception for a remote ``err`` (see the module docstring). Never raises."""
    cls = _resolve(err.type)
    inst: Exception | None = None
    if isinstance(cls, type) and issubclass(cls, CanopyError):
        try:
            inst = cls.__new__(cls)
            Exception.__init__(inst, *(() if err.no_args else (err.message,)))
        except Exception:  # a class that cannot be built this way
            inst = None
    if inst is None:
        return RemoteError(
            err.type,
            err.message,
            retryable=err.retryable,
            milvus_code=err.milvus_code or UNEXPECTED_CODE,
            reason=err.milvus_reason,
        )
    try:
        attrs = json.loads(err.attrs_json) if err.attrs_json else {}
    except ValueError:
        attrs = {}
    for key, raw in attrs.items() if isinstance(attrs, dict) else ():
        try:
            setattr(inst, key, _from_json(raw))
        except Exception as exc:  # a value that cannot be rebuilt here: leave it out
            log.debug("cannot restore %s.%s: %s", err.type, key, exc)
    if bool(getattr(inst, "retryable", False)) != err.retryable:
        inst.retryable = err.retryable
    return inst


class Unreachable(Unavailable):
    """The call provably never reached a server (no connected address, e.g. the node is down):
    nothing was applied, so sending it again -- to the same or another node -- is safe."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, outcome_unknown=False)


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    """True when the call provably never reached a server: gRPC found no connected address."""
    details = (exc.details() or "").lower()
    return exc.code() is grpc.StatusCode.UNAVAILABLE and "failed to connect" in details


def transport_error(exc: grpc.aio.AioRpcError, what: str = "") -> CanopyError:
    """The Canopy error for a failed gRPC call (``what`` names the call in the message)."""
    code = exc.code()
    text = f"{what}: " if what else ""
    text += f"gRPC {code.name}: {exc.details() or ''}".rstrip(": ")
    if code in _TRANSIENT:
        return Unreachable(text) if _never_sent(exc) else Unavailable(text, outcome_unknown=True)
    return RemoteError(f"grpc:{code.name}", text, retryable=False)


# --- the client-side call -------------------------------------------------------------------

Reply = TypeVar("Reply")


async def call(
    method: Callable[..., Awaitable[Reply]],
    request: Any,
    *,
    what: str,
    attempt_timeout: float,
    retry_for: float = 0.0,
    clock: Clock | None = None,
    max_delay: float = 1.0,
) -> Reply:
    """``await method(request, timeout=attempt_timeout)`` and return the reply; raise the
    remote error it carries (:func:`decode_error`) or the transport failure
    (:func:`transport_error`).
    Retryable transport failures are retried with exponential back-off (50 ms up to
    ``max_delay``) until ``retry_for`` seconds have passed (the last attempt at the end of the
    window): pass it only for idempotent calls."""
    clock = clock or RealClock()
    deadline = clock.monotonic() + retry_for
    delay = 0.05
    while True:
        try:
            reply = await method(request, timeout=attempt_timeout)
        except grpc.aio.AioRpcError as exc:
            error = transport_error(exc, what)
            remaining = deadline - clock.monotonic()
            if not error.retryable or remaining <= 0:
                raise error from exc
            log.debug("%s: %s; retrying in %.2fs", what, error, min(delay, remaining))
            await clock.sleep(min(delay, remaining))
            delay = min(delay * 2, max_delay)
            continue
        if reply.HasField("error"):  # type: ignore[attr-defined]
            raise decode_error(reply.error)  # type: ignore[attr-defined]
        return reply

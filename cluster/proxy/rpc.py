"""Plumbing shared by every proxy handler: the never-raise wrapper, error translation, metadata.

Contract of :func:`rpc`: a handler wrapped with ``@rpc(ReplyType)`` never raises. Whatever it
raises (except cancellation) becomes ``ReplyType(status=...)`` -- or the ``Status`` itself for
RPCs whose reply *is* a ``common_pb2.Status`` -- with the status from :func:`status_of`. An
exception escaping a handler would reach the client as gRPC UNKNOWN, which pymilvus retries with
back-off for minutes.

:func:`status_of` is a thin front of :func:`cluster.milvus.status.status_for` (the one mapping
to Milvus statuses): the coordinator's typed errors (``cluster.coordinator.errors``) carry their
Milvus code as ``milvus_code`` and their message already in Milvus' wording, so they are turned
into the :class:`~cluster.milvus.status.MilvusError` of that code with the message kept
verbatim, then mapped like every other error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from pymilvus.grpc_gen import common_pb2

from cluster.coordinator.records import DEFAULT_DB
from cluster.milvus.status import MilvusError, error_from_status, status_for
from woodpecker.errors import CanopyError

__all__ = ["metadata_value", "request_db", "rpc", "status_of"]

log = logging.getLogger(__name__)

R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


def status_of(exc: BaseException) -> common_pb2.Status:
    """The Milvus ``Status`` for any exception (see the module docstring)."""
    code = getattr(exc, "milvus_code", None)
    if not isinstance(exc, MilvusError) and isinstance(code, int) and code != 0:
        translated = error_from_status(common_pb2.Status(code=code, reason=str(exc)))
        if translated is not None:
            return status_for(translated)
    return status_for(exc)


def rpc(reply: type[R]) -> Callable[[Handler[R]], Handler[R]]:
    """Wrap a servicer method so that it always returns a ``reply`` (see the module docstring).
    Milvus and coordinator errors are logged at debug level, other Canopy errors as warnings,
    anything else (a bug) with its traceback."""

    def wrap(fn: Handler[R]) -> Handler[R]:
        name = fn.__name__

        @functools.wraps(fn)
        async def run(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
            try:
                return await fn(self, request, context)
            except Exception as exc:
                status = status_of(exc)
                if isinstance(exc, MilvusError) or hasattr(exc, "milvus_code"):
                    log.debug("%s: %s (code %d)", name, status.reason, status.code)
                elif isinstance(exc, CanopyError):
                    log.warning("%s: %s (code %d)", name, status.reason, status.code)
                else:  # a bug: keep the traceback
                    log.exception("%s failed unexpectedly", name)
                if reply is common_pb2.Status:
                    return status  # type: ignore[return-value]
                return reply(status=status)

        return run

    return wrap


def metadata_value(context: grpc.aio.ServicerContext | None, key: str) -> str | None:
    """The value of invocation metadata ``key`` (last one wins), or None."""
    if context is None:
        return None
    found: str | None = None
    for item in context.invocation_metadata() or ():
        k, v = item
        if k == key:
            found = v.decode() if isinstance(v, bytes) else v
    return found


def request_db(request: Any, context: grpc.aio.ServicerContext | None) -> str:
    """The database a request addresses: its ``db_name`` field when set, else the ``dbname``
    header (what pymilvus sends), else ``default`` -- the order Milvus' proxy applies."""
    db = getattr(request, "db_name", "") or metadata_value(context, "dbname") or ""
    return db.strip() or DEFAULT_DB

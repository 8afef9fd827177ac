"""The one mapping from Canopy errors to the Milvus ``common_pb2.Status``.

Every Milvus-facing error is a :class:`MilvusError` (a :class:`~woodpecker.errors.CanopyError`)
that carries the new-style Milvus error ``code`` (Milvus ``pkg/util/merr``) and the legacy
``error_code`` (``common_pb2.ErrorCode``, what ``merr.oldCode`` maps the code to). Handlers never
build a ``Status`` by hand: they ``return ok_status()`` or ``status_for(exc)``, and
``status_for`` also translates non-Milvus errors (storage, WAL, bugs) in exactly one place.

Reasons follow Milvus' wording (``merr`` wrapping) because clients and test suites match on
them: ``<message>: <text>[key=value]...`` -- e.g. ``collection not found[database=default]
[collection=xyz]`` or ``the dim (8) of field data(vec) is not equal to schema dim (4): invalid
parameter[expected=4][actual=8]``.

What pymilvus (3.0.2, also 2.5/2.6) does with a status: success is ``code == 0 and error_code ==
0``; ``has_collection`` answers False on code 100 (or error_code CollectionNotExists);
``describe_index`` treats code 700 / error_code IndexNotExist as "no index"; error_code
SchemaMismatch (62) drops the cached schema and retries the insert/upsert once; code 8 / error_code
RateLimit is retried with back-off; in Query, code or error_code 26 means an empty result. The
``retriable`` flag and ``extra_info["is_input_error"]`` are carried into ``MilvusException``.

Code table (``code`` / legacy ``error_code`` / class / reason text / retriable / input error):

=====  =======================  ===================  ==========================  ===  ===
code   error_code               class                text                        rtr  inp
=====  =======================  ===================  ==========================  ===  ===
1      NotReadyServe (56)       ServiceNotReady      service not ready           yes  no
2      UnexpectedError (1)      ServiceUnavailable   service unavailable         yes  no
5      UnexpectedError (1)      ServiceInternal      service internal error      no   no
8      RateLimit (49)           RateLimited          rate limit exceeded         yes  no
9      ForceDeny (48)           QuotaExceeded        quota exceeded              no   no
10     UnexpectedError (1)      Unimplemented        service unimplemented       no   no
26     EmptyCollection (26)     EmptyCollection      empty collection            no   no
100    CollectionNotExists (4)  CollectionNotFound   collection not found        no   yes
101    UnexpectedError (1)      CollectionNotLoaded  collection not loaded       no   no
105    UnexpectedError (1)      IllegalSchema        illegal collection schema   no   yes
109    SchemaMismatch (62)      SchemaMismatch       collection schema mismatch  no   yes
200    MetaFailed (15)          PartitionNotFound    partition not found         no   yes
201    UnexpectedError (1)      PartitionNotLoaded   partition not loaded        no   no
700    IndexNotExist (25)       IndexNotFound        index not found             no   no
701    UnexpectedError (1)      IndexNotSupported    index type not supported    no   yes
702    UnexpectedError (1)      IndexDuplicate       index duplicates            no   yes
800    UnexpectedError (1)      DatabaseNotFound     database not found          no   yes
802    UnexpectedError (1)      DatabaseNameInvalid  invalid database name       no   yes
1100   IllegalArgument (5)      ParameterInvalid     invalid parameter           no   yes
1101   UnexpectedError (1)      ParameterMissing     missing parameter           no   yes
1102   UnexpectedError (1)      ParameterTooLarge    parameter too large         no   yes
1400   UnexpectedError (1)      NotAuthenticated     not authenticated           no   yes
1401   UnexpectedError (1)      PermissionDenied     privilege not permitted     no   yes
1600   UnexpectedError (1)      AliasNotFound        alias not found             no   yes
1602   UnexpectedError (1)      AliasAlreadyExists   alias already exist         no   yes
1700   UnexpectedError (1)      FieldNotFound        field not found             no   yes
1701   UnexpectedError (1)      FieldNameInvalid     field name invalid          no   yes
2201   UnexpectedError (1)      QueryPlanInvalid     query plan failed           no   yes
3000   UnexpectedError (1)      NotSupportedYet      unsupported operation       no   no
10001  UnexpectedError (1)      Timeout              deadline exceeded           no   no
65535  UnexpectedError (1)      UnexpectedError      unexpected error            no   no
=====  =======================  ===================  ==========================  ===  ===

Translation of other errors by :func:`status_for` / :func:`as_milvus_error`:
``woodpecker.errors.InvalidArgument`` -> ParameterInvalid; ``TimeoutError`` -> Timeout; any
other ``CanopyError`` with ``retryable`` (``Unavailable``, ...) -> ServiceUnavailable; anything
else (including bugs) -> UnexpectedError with ``"<ExceptionType>: <message>"``.

``NotSupportedYet`` (3000, Milvus' ``ErrOperationNotSupported``) marks a request that is valid
Milvus but that Canopy does not implement yet (binary/float16/sparse vectors, functions, ...), so
callers and compat tests can tell it apart from an invalid request (1100).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from pymilvus.grpc_gen import common_pb2

from woodpecker.errors import CanopyError, InvalidArgument

__all__ = [
    "AliasAlreadyExists",
    "AliasNotFound",
    "CollectionNotFound",
    "CollectionNotLoaded",
    "DatabaseNameInvalid",
    "DatabaseNotFound",
    "EmptyCollection",
    "FieldNameInvalid",
    "FieldNotFound",
    "IllegalSchema",
    "IndexDuplicate",
    "IndexNotFound",
    "IndexNotSupported",
    "MilvusError",
    "NotAuthenticated",
    "NotSupportedYet",
    "ParameterInvalid",
    "ParameterMissing",
    "ParameterTooLarge",
    "PartitionNotFound",
    "PartitionNotLoaded",
    "PermissionDenied",
    "QueryPlanInvalid",
    "QuotaExceeded",
    "RateLimited",
    "SchemaMismatch",
    "ServiceInternal",
    "ServiceNotReady",
    "ServiceUnavailable",
    "Timeout",
    "UnexpectedError",
    "Unimplemented",
    "as_milvus_error",
    "error_from_status",
    "ok_status",
    "status_for",
]

_E = common_pb2  # legacy ErrorCode values live at module level of common_pb2
_UNSET = object()


def _fmt(value: object) -> str:
    """Format a field value like Go's ``%v`` does for the values we pass (bools lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class MilvusError(CanopyError):
    """An error with a Milvus status: ``code`` (merr), legacy ``error_code``, ``reason``.

    ``reason`` is built like ``merr`` does: ``"<message>: <text>[k=v]...[: desc]"``, where
    ``text`` is the class' fixed Milvus text, ``fields`` are ``(key, value)`` pairs appended as
    ``[key=value]`` (``[value]`` when key is None) and ``message`` is the caller's context
    (optional). ``str(exc) == reason``.
    """

    code: ClassVar[int] = 65535
    error_code: ClassVar[int] = _E.UnexpectedError
    text: ClassVar[str] = "unexpected error"
    input_error: ClassVar[bool] = False
    retryable = False

    _by_code: ClassVar[dict[int, type[MilvusError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        MilvusError._by_code.setdefault(cls.code, cls)

    def __init__(
        self,
        message: str | None = None,
        *,
        fields: Iterable[tuple[str | None, object]] = (),
        desc: str | None = None,
    ) -> None:
        base = self.text + "".join(
            f"[{_fmt(v)}]" if k is None else f"[{k}={_fmt(v)}]" for k, v in fields
        )
        if desc:
            base = f"{base}: {desc}"
        reason = f"{message}: {base}" if message else base
        super().__init__(reason)
        self.reason = reason
        self.message = message or ""

    def to_status(self) -> common_pb2.Status:
        """The ``common_pb2.Status`` to put in the reply."""
        status = common_pb2.Status(
            code=self.code,
            error_code=self.error_code,
            reason=self.reason,
            retriable=self.retryable,
            detail=self.reason,
        )
        if self.input_error:
            status.extra_info["is_input_error"] = "true"
        return status


# --- service --------------------------------------------------------------------------------------


class ServiceNotReady(MilvusError):
    code = 1
    error_code = _E.NotReadyServe
    text = "service not ready"
    retryable = True


class ServiceUnavailable(MilvusError):
    code = 2
    text = "service unavailable"
    retryable = True

    def __init__(self, reason: str = "", message: str | None = None) -> None:
        super().__init__(message, desc=reason or None)


class ServiceInternal(MilvusError):
    code = 5
    text = "service internal error"

    def __init__(self, reason: str = "", message: str | None = None) -> None:
        super().__init__(message, desc=reason or None)


class RateLimited(MilvusError):
    code = 8
    error_code = _E.RateLimit
    text = "rate limit exceeded"
    retryable = True


class QuotaExceeded(MilvusError):
    code = 9
    error_code = _E.ForceDeny
    text = "quota exceeded"

    def __init__(self, reason: str = "", message: str | None = None) -> None:
        super().__init__(message, fields=[("reason", reason)] if reason else ())


class Unimplemented(MilvusError):
    code = 10
    text = "service unimplemented"


class EmptyCollection(MilvusError):
    """Legacy "empty result" answer of Query (pymilvus returns ``[]`` on code or error_code 26)."""

    code = 26
    error_code = _E.EmptyCollection
    text = "empty collection"


# --- collection / partition / index / database ----------------------------------------------------


class CollectionNotFound(MilvusError):
    """``collection not found[database=default][collection=xyz]`` (database omitted if None)."""

    code = 100
    error_code = _E.CollectionNotExists
    text = "collection not found"
    input_error = True

    def __init__(
        self, collection: str, database: str | None = "default", message: str | None = None
    ) -> None:
        fields: list[tuple[str, object]] = []
        if database is not None:
            fields.append(("database", database))
        fields.append(("collection", collection))
        super().__init__(message, fields=fields)
        self.collection = collection
        self.database = database


class CollectionNotLoaded(MilvusError):
    code = 101
    text = "collection not loaded"

    def __init__(self, collection: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("collection", collection)])


class IllegalSchema(MilvusError):
    code = 105
    text = "illegal collection schema"
    input_error = True

    def __init__(self, collection: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("collection", collection)])


class SchemaMismatch(MilvusError):
    """The client's cached schema is stale (collection dropped and recreated, or altered)."""

    code = 109
    error_code = _E.SchemaMismatch
    text = "collection schema mismatch"
    input_error = True

    def __init__(self, collection: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("collection", collection)])


class PartitionNotFound(MilvusError):
    code = 200
    error_code = _E.MetaFailed
    text = "partition not found"
    input_error = True

    def __init__(self, partition: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("partition", partition)])


class PartitionNotLoaded(MilvusError):
    code = 201
    text = "partition not loaded"

    def __init__(self, partition: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("partition", partition)])


class IndexNotFound(MilvusError):
    """``index not found[indexName=x]`` or ``index not found[collection=c]``."""

    code = 700
    error_code = _E.IndexNotExist
    text = "index not found"

    def __init__(
        self,
        *,
        index_name: str | None = None,
        collection: str | None = None,
        message: str | None = None,
    ) -> None:
        fields: list[tuple[str, object]] = []
        if index_name is not None:
            fields.append(("indexName", index_name))
        if collection is not None:
            fields.append(("collection", collection))
        super().__init__(message, fields=fields)


class IndexNotSupported(MilvusError):
    code = 701
    text = "index type not supported"
    input_error = True

    def __init__(self, index_type: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("indexType", index_type)])


class IndexDuplicate(MilvusError):
    code = 702
    text = "index duplicates"
    input_error = True

    def __init__(self, index_name: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("indexName", index_name)])


class DatabaseNotFound(MilvusError):
    """``database not found[database=x]``."""

    code = 800
    text = "database not found"
    input_error = True

    def __init__(self, database: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("database", database)])


class DatabaseNameInvalid(MilvusError):
    code = 802
    text = "invalid database name"
    input_error = True

    def __init__(self, database: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("database", database)])


# --- parameters -----------------------------------------------------------------------------------


class ParameterInvalid(MilvusError):
    """``<message>: invalid parameter``; with ``expected``/``actual`` Milvus'
    ``<message>: invalid parameter[expected=..][actual=..]``; with ``bound=(v, lo, hi)``
    ``<message>: invalid parameter[v out of range lo <= value <= hi]``."""

    code = 1100
    error_code = _E.IllegalArgument
    text = "invalid parameter"
    input_error = True

    def __init__(
        self,
        message: str | None = None,
        *,
        expected: object = _UNSET,
        actual: object = _UNSET,
        bound: tuple[object, object, object] | None = None,
    ) -> None:
        fields: list[tuple[str | None, object]] = []
        if expected is not _UNSET:
            fields.append(("expected", expected))
        if actual is not _UNSET:
            fields.append(("actual", actual))
        if bound is not None:  # Milvus WrapErrParameterInvalidRange: (value, lower, upper)
            value, lower, upper = bound
            fields.append((None, f"{_fmt(value)} out of range {lower} <= value <= {upper}"))
        super().__init__(message, fields=fields)


class ParameterMissing(MilvusError):
    code = 1101
    text = "missing parameter"
    input_error = True

    def __init__(self, param: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("missing_param", param)])


class ParameterTooLarge(MilvusError):
    code = 1102
    text = "parameter too large"
    input_error = True

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("message", name)])


class NotAuthenticated(MilvusError):
    code = 1400
    text = "not authenticated"
    input_error = True


class PermissionDenied(MilvusError):
    code = 1401
    text = "privilege not permitted"
    input_error = True


class AliasNotFound(MilvusError):
    code = 1600
    text = "alias not found"
    input_error = True

    def __init__(self, alias: str, database: str = "default", message: str | None = None) -> None:
        super().__init__(message, fields=[("database", database), ("alias", alias)])


class AliasAlreadyExists(MilvusError):
    code = 1602
    text = "alias already exist"
    input_error = True

    def __init__(self, alias: str, database: str = "default", message: str | None = None) -> None:
        super().__init__(message, fields=[("database", database), ("alias", alias)])


class FieldNotFound(MilvusError):
    code = 1700
    text = "field not found"
    input_error = True

    def __init__(self, field: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("field", field)])


class FieldNameInvalid(MilvusError):
    code = 1701
    text = "field name invalid"
    input_error = True

    def __init__(self, field: str, message: str | None = None) -> None:
        super().__init__(message, fields=[("field", field)])


class QueryPlanInvalid(MilvusError):
    """A filter expression that does not parse or type-check."""

    code = 2201
    text = "query plan failed"
    input_error = True


class NotSupportedYet(MilvusError):
    """Valid Milvus, not implemented by Canopy: ``<what> is not supported yet: unsupported
    operation``."""

    code = 3000
    text = "unsupported operation"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not supported yet")


class Timeout(MilvusError):
    code = 10001
    text = "deadline exceeded"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)


class UnexpectedError(MilvusError):
    code = 65535
    text = "unexpected error"


# --- the one translation point --------------------------------------------------------------------


def ok_status() -> common_pb2.Status:
    """A fresh success status (``code == 0``, ``error_code == Success``)."""
    return common_pb2.Status()


def as_milvus_error(exc: BaseException) -> MilvusError:
    """Translate any exception into the :class:`MilvusError` the client should see."""
    if isinstance(exc, MilvusError):
        return exc
    if isinstance(exc, InvalidArgument):
        return ParameterInvalid(str(exc) or None)
    if isinstance(exc, TimeoutError):
        return Timeout(str(exc) or None)
    if isinstance(exc, CanopyError) and exc.retryable:
        return ServiceUnavailable(
            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        )
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return UnexpectedError(text)


def status_for(exc: BaseException) -> common_pb2.Status:
    """The ``common_pb2.Status`` for ``exc`` (see the table in the module docstring)."""
    return as_milvus_error(exc).to_status()


def error_from_status(status: common_pb2.Status) -> MilvusError | None:
    """Rebuild an error from a status received over the wire (None for success).

    The class is chosen by ``code`` (falling back to UnexpectedError); ``reason`` is kept
    verbatim, so ``error_from_status(e.to_status()).reason == e.reason``.
    """
    if status.code == 0 and status.error_code == 0:
        return None
    cls = MilvusError._by_code.get(status.code, UnexpectedError)
    err = cls.__new__(cls)
    CanopyError.__init__(err, status.reason)
    err.reason = status.reason
    err.message = status.reason
    return err

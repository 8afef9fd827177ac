"""``S3ObjectStore``: the ObjectStore interface on S3 and S3-compatible servers (aioboto3).

Works with AWS S3, MinIO, SeaweedFS and moto. One aiobotocore client is created lazily on first
use (so constructing a store does no I/O and needs no running loop) and closed by ``close()``.

botocore's own retries are off (``max_attempts=1``): retrying is the job of the ``Retrying``
wrapper, which needs to see every failure to apply its policy and its outcome-unknown rules.
Every provider exception is translated by :func:`_translate`, the one place that knows botocore
and aiohttp error shapes.

URI form (see :meth:`S3ObjectStore.from_uri`)::

    s3://bucket/prefix?endpoint=http://127.0.0.1:8333&region=us-east-1&addressing=path
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore import exceptions as boto_exc

from woodpecker.errors import (
    CanopyError,
    InvalidArgument,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    Unavailable,
)
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

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000

URI_PARAMS = ("endpoint", "region", "addressing")
ADDRESSING_STYLES = ("auto", "path", "virtual")

# Error codes (and HTTP statuses) that mean "try again later". Throttling codes are the ones
# botocore's own retry handler treats as transient.
_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "ServiceUnavailable",
        "RequestTimeout",  # the server gave up waiting for our body: nothing was applied
        "OperationAborted",  # "a conflicting conditional operation is in progress; try again"
    }
)
# Server-side failures after which a write may or may not have been applied.
_UNKNOWN_OUTCOME_CODES = frozenset({"InternalError", "RequestTimeoutException"})
_UNKNOWN_OUTCOME_STATUSES = frozenset({500, 502, 504})
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})


def _translate(
    exc: BaseException, *, op: str = "", key: str = "", mutating: bool = False
) -> CanopyError:
    """Map any provider exception to Canopy's error model. The only place that does so.

    ``mutating`` marks requests that change state (put, complete-multipart, delete): a failure
    after the request was sent then means the outcome is unknown, and is reported as
    ``Unavailable(outcome_unknown=True)`` so the caller retries idempotently.
    """
    if isinstance(exc, CanopyError):
        return exc
    where = f"s3 {op} {key!r}".rstrip() if op or key else "s3"

    if isinstance(exc, boto_exc.ClientError):
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code", "") or "")
        message = str(error.get("Message", "") or "") or str(exc)
        status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") or 0)
        detail = f"{where}: {code or status}: {message}"
        if code == "NoSuchBucket":
            return StorageError(f"{where}: bucket does not exist: {message}")
        if code in _PRECONDITION_CODES or status == 412:
            return PreconditionFailed(detail)
        if code in _NOT_FOUND_CODES or (status == 404 and code in ("", "NoSuchKey")):
            return ObjectNotFound(f"{where}: not found")
        if code in _UNKNOWN_OUTCOME_CODES or status in _UNKNOWN_OUTCOME_STATUSES:
            return Unavailable(detail, outcome_unknown=mutating)
        if code in _THROTTLE_CODES or status in (429, 503):
            return Unavailable(detail)
        return StorageError(detail)

    # Connection could not be established: the request was never sent, the outcome is known.
    # (ConnectTimeoutError is a subclass of botocore's ConnectionError, as is SSLError.)
    if isinstance(exc, boto_exc.ConnectionError):
        return Unavailable(f"{where}: cannot connect: {exc}")
    # Sent, then the connection broke or the reply did not come in time.
    if isinstance(exc, boto_exc.ReadTimeoutError):
        return Unavailable(
            f"{where}: timed out waiting for the reply: {exc}", outcome_unknown=mutating
        )
    if isinstance(exc, boto_exc.ConnectionClosedError):
        return Unavailable(f"{where}: connection closed: {exc}", outcome_unknown=mutating)
    if isinstance(exc, boto_exc.ResponseStreamingError | boto_exc.IncompleteReadError):
        return Unavailable(f"{where}: reply body broken off: {exc}", outcome_unknown=mutating)
    if isinstance(exc, boto_exc.HTTPClientError):
        return Unavailable(f"{where}: HTTP client error: {exc}", outcome_unknown=mutating)
    if isinstance(exc, boto_exc.NoCredentialsError | boto_exc.PartialCredentialsError):
        return StorageError(f"{where}: no usable AWS credentials: {exc}")
    if isinstance(exc, boto_exc.BotoCoreError):
        return StorageError(f"{where}: {exc}")
    # Raw transport errors that can escape aiobotocore (e.g. while streaming a body).
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Unavailable(f"{where}: cannot connect: {exc}")
    if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError):
        return Unavailable(f"{where}: {type(exc).__name__}: {exc}", outcome_unknown=mutating)
    return StorageError(f"{where}: {type(exc).__name__}: {exc}")


def _strip_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"')


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, boto_exc.ClientError):
        return str((exc.response.get("Error", {}) or {}).get("Code", "") or "")
    return ""


def _drop_expect_header(request: Any = None, **_: Any) -> None:
    if request is not None and "Expect" in request.headers:
        del request.headers["Expect"]


def _normalise_prefix(prefix: str) -> str:
    if prefix.startswith("/") or "\x00" in prefix:
        raise InvalidArgument(f"invalid S3 prefix {prefix!r}: must not start with / or hold NUL")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


class S3ObjectStore:
    """ObjectStore on one S3 bucket, under an optional key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        addressing_style: str | None = None,
        multipart_threshold: int = 16 * MiB,
        part_size: int = 8 * MiB,
        multipart_concurrency: int = 8,
        max_pool_connections: int = 64,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        if not bucket or "/" in bucket:
            raise InvalidArgument(f"invalid S3 bucket name {bucket!r}")
        if (access_key_id is None) != (secret_access_key is None):
            raise InvalidArgument("pass both access_key_id and secret_access_key, or neither")
        if addressing_style is None:
            configured = (
                endpoint_url
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL")
            )
            addressing_style = "path" if configured else "auto"
        if addressing_style not in ADDRESSING_STYLES:
            raise InvalidArgument(
                f"addressing_style must be one of {', '.join(ADDRESSING_STYLES)}, "
                f"got {addressing_style!r}"
            )
        if part_size < MIN_PART_SIZE:
            raise InvalidArgument(f"part_size must be >= {MIN_PART_SIZE} (5 MiB), got {part_size}")
        if multipart_threshold < 1:
            raise InvalidArgument(f"multipart_threshold must be >= 1, got {multipart_threshold}")
        if multipart_concurrency < 1 or max_pool_connections < 1:
            raise InvalidArgument("multipart_concurrency and max_pool_connections must be >= 1")
        self.bucket = bucket
        self.prefix = _normalise_prefix(prefix)
        self.endpoint_url = endpoint_url
        self.region = region
        self.addressing_style = addressing_style
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.multipart_concurrency = multipart_concurrency
        self._credentials = (access_key_id, secret_access_key, session_token)
        self._config = AioConfig(
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},  # no retries here
            s3={"addressing_style": addressing_style},
            # Checksums only where S3 demands them: S3-compatible servers differ in what they
            # accept, and WAL blocks carry their own CRC32C per entry.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._client_lock: asyncio.Lock | None = None
        self._closed = False

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> S3ObjectStore:
        """``s3://bucket/prefix?endpoint=URL&region=NAME&addressing=path|virtual|auto``.

        Keyword ``options`` go to the constructor (credentials, sizes, timeouts).
        """
        parts = urlsplit(uri)
        if parts.scheme != "s3":
            raise InvalidArgument(f"not an s3:// URI: {uri!r}")
        if parts.fragment:
            raise InvalidArgument(f"s3 URI must not have a #fragment: {uri!r}")
        if "@" in parts.netloc or ":" in parts.netloc:
            raise InvalidArgument(
                f"s3 URI takes a bare bucket name as host (no credentials or port): {uri!r}; "
                "credentials come from the AWS environment or config"
            )
        bucket = parts.netloc
        if not bucket:
            raise InvalidArgument(f"s3 URI needs a bucket: s3://bucket/prefix, got {uri!r}")
        prefix = parts.path[1:] if parts.path.startswith("/") else parts.path
        params: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if name not in URI_PARAMS:
                raise InvalidArgument(
                    f"unknown s3 URI parameter {name!r}; allowed: {', '.join(URI_PARAMS)}"
                )
            if name in params:
                raise InvalidArgument(f"s3 URI parameter {name!r} given twice")
            if not value:
                raise InvalidArgument(f"s3 URI parameter {name!r} is empty")
            params[name] = value
        endpoint = params.get("endpoint")
        if endpoint is not None:
            ep = urlsplit(endpoint)
            if ep.scheme not in ("http", "https") or not ep.netloc:
                raise InvalidArgument(
                    f"s3 URI endpoint must be an http:// or https:// URL, got {endpoint!r}"
                )
        addressing = params.get("addressing")
        if addressing is not None and addressing not in ADDRESSING_STYLES:
            raise InvalidArgument(
                f"s3 URI addressing must be one of {', '.join(ADDRESSING_STYLES)}, "
                f"got {addressing!r}"
            )
        kwargs: dict[str, Any] = {
            "endpoint_url": endpoint,
            "region": params.get("region"),
            "addressing_style": addressing,
        }
        kwargs.update(options)
        return cls(bucket, prefix, **kwargs)

    @property
    def uri(self) -> str:
        query: dict[str, str] = {}
        if self.endpoint_url:
            query["endpoint"] = self.endpoint_url
        if self.region:
            query["region"] = self.region
        default_style = "path" if self.endpoint_url else "auto"
        if self.addressing_style != default_style:
            query["addressing"] = self.addressing_style
        path = quote(self.prefix.rstrip("/"), safe="/")
        base = f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"
        return f"{base}?{urlencode(query, safe=':/')}" if query else base

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.uri!r})"

    async def _s3(self) -> Any:
        """The aiobotocore client, created on first use and kept until ``close()``."""
        if self._client is not None:
            return self._client
        if self._closed:
            raise StorageError(f"{self!r} is closed")
        if self._client_lock is None:
            self._client_lock = asyncio.Lock()
        async with self._client_lock:
            if self._client is None:
                if self._closed:
                    raise StorageError(f"{self!r} is closed")
                key_id, secret, token = self._credentials
                session = aioboto3.Session(
                    aws_access_key_id=key_id,
                    aws_secret_access_key=secret,
                    aws_session_token=token,
                    region_name=self.region,
                )
                stack = AsyncExitStack()
                try:
                    client = await stack.enter_async_context(
                        session.client("s3", endpoint_url=self.endpoint_url, config=self._config)
                    )
                except Exception as exc:
                    await stack.aclose()
                    raise _translate(exc, op="connect") from exc
                # botocore sends "Expect: 100-continue" on every PUT: one extra round trip per
                # write, and aiohttp waits for the 100 with no timeout, so a server that accepts
                # the connection and then stalls would hang the put forever. Send bodies at once.
                client.meta.events.register_last("before-sign.s3", _drop_expect_header)
                self._stack, self._client = stack, client
        return self._client

    async def close(self) -> None:
        self._closed = True
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    def _full(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    # --- operations --------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: str | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        check_put_conditions(if_none_match, if_match)
        full = self._full(key)
        data = bytes(data)
        conditions: dict[str, str] = {}
        if if_none_match is not None:
            conditions["IfNoneMatch"] = if_none_match
        if if_match is not None:
            conditions["IfMatch"] = f'"{_strip_etag(if_match)}"'
        client = await self._s3()
        try:
            if len(data) > self.multipart_threshold:
                etag = await self._put_multipart(client, full, data, conditions)
            else:
                resp = await client.put_object(
                    Bucket=self.bucket, Key=full, Body=data, **conditions
                )
                etag = _strip_etag(resp.get("ETag"))
        except CanopyError:
            raise
        except Exception as exc:
            err = _translate(exc, op="put", key=full, mutating=True)
            if if_match is not None and isinstance(err, ObjectNotFound):
                # S3 answers 404 to if_match on a missing key; for us that is a lost condition.
                err = PreconditionFailed(f"s3 put {full!r}: if_match on a missing object")
            raise err from exc
        return ObjectInfo(key=key, size=len(data), etag=etag)

    async def _put_multipart(
        self, client: Any, full: str, data: bytes, conditions: dict[str, str]
    ) -> str:
        """Upload ``data`` in parts (concurrently, bounded); the condition goes on Complete.

        Any failure, including cancellation, aborts the upload so no parts are left behind.
        """
        part_size = max(self.part_size, -(-len(data) // MAX_PARTS))
        try:
            created = await client.create_multipart_upload(Bucket=self.bucket, Key=full)
        except Exception as exc:  # nothing is written until Complete: the outcome is known
            raise _translate(exc, op="put (create multipart)", key=full) from exc
        upload_id = created["UploadId"]
        sem = asyncio.Semaphore(self.multipart_concurrency)
        view = memoryview(data)

        async def upload(number: int, start: int) -> dict[str, Any]:
            async with sem:
                resp = await client.upload_part(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(view[start : start + part_size]),
                )
            return {"PartNumber": number, "ETag": resp["ETag"]}

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(upload(i + 1, start))
                    for i, start in enumerate(range(0, len(data), part_size))
                ]
            parts = [t.result() for t in tasks]
            resp = await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **conditions,
            )
        except BaseException as exc:
            await self._abort(client, full, upload_id)
            if isinstance(exc, BaseExceptionGroup):
                # TaskGroup wraps part failures; report the first one, translated.
                first = exc.exceptions[0]
                while isinstance(first, BaseExceptionGroup):
                    first = first.exceptions[0]
                if isinstance(first, Exception):
                    raise _translate(first, op="put (upload part)", key=full) from first
            raise
        return _strip_etag(resp.get("ETag"))

    async def _abort(self, client: Any, full: str, upload_id: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(
                client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            )

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        check_range(offset, length)
        full = self._full(key)
        if length == 0:
            return b""
        extra: dict[str, str] = {}
        if offset > 0 or length is not None:
            end = "" if length is None else str(offset + length - 1)
            extra["Range"] = f"bytes={offset}-{end}"
        client = await self._s3()
        try:
            resp = await client.get_object(Bucket=self.bucket, Key=full, **extra)
            async with resp["Body"] as body:
                data = await body.read()
        except Exception as exc:
            if _error_code(exc) == "InvalidRange":
                return b""  # 416: offset at or past the end (the key exists, or it'd be 404)
            raise _translate(exc, op="get", key=full) from exc
        if extra and "ContentRange" not in resp:
            # The server ignored Range and sent the whole object: cut the range out ourselves.
            data = data[offset:] if length is None else data[offset : offset + length]
        return data

    async def head(self, key: str) -> ObjectInfo:
        full = self._full(key)
        client = await self._s3()
        try:
            resp = await client.head_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            raise _translate(exc, op="head", key=full) from exc
        modified = resp.get("LastModified")
        return ObjectInfo(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            etag=_strip_etag(resp.get("ETag")),
            last_modified=modified.timestamp() if modified is not None else None,
        )

    async def list_page(
        self, prefix: str = "", *, start_after: str | None = None, max_keys: int = DEFAULT_MAX_KEYS
    ) -> ListPage:
        check_max_keys(max_keys)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxKeys": max_keys,
        }
        if start_after:
            params["StartAfter"] = self.prefix + start_after
        client = await self._s3()
        try:
            resp = await client.list_objects_v2(**params)
        except Exception as exc:
            raise _translate(exc, op="list", key=self.prefix + prefix) from exc
        cut = len(self.prefix)
        objects = []
        for item in resp.get("Contents", []) or []:
            modified = item.get("LastModified")
            objects.append(
                ObjectInfo(
                    key=item["Key"][cut:],
                    size=int(item.get("Size", 0)),
                    etag=_strip_etag(item.get("ETag")),
                    last_modified=modified.timestamp() if modified is not None else None,
                )
            )
        return ListPage(objects=objects, is_truncated=bool(resp.get("IsTruncated", False)))

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = DEFAULT_MAX_KEYS
    ) -> AsyncIterator[ObjectInfo]:
        check_max_keys(page_size)
        return iterate_pages(self, prefix, start_after, page_size)

    async def delete(self, key: str) -> None:
        full = self._full(key)
        client = await self._s3()
        try:
            await client.delete_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            err = _translate(exc, op="delete", key=full, mutating=True)
            if isinstance(err, ObjectNotFound):
                return  # some servers answer 404 for a missing key; delete is idempotent
            raise err from exc

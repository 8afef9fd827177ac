"""``_translate``: every provider error shape maps to the right Canopy error kind.

Errors are constructed the way botocore/aiobotocore raise them; no network.
"""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
import pytest
from aiobotocore.response import AioReadTimeoutError
from botocore import exceptions as boto_exc

from woodpecker.errors import (
    CanopyError,
    InvalidArgument,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    Unavailable,
)
from woodpecker.objectstore.s3 import _translate

URL = "http://127.0.0.1:8333/b/k"


def client_error(code: str, status: int, message: str = "provider says no") -> Exception:
    body: dict = {"ResponseMetadata": {"HTTPStatusCode": status}}
    if code or message:
        body["Error"] = {"Code": code, "Message": message}
    return boto_exc.ClientError(body, "PutObject")


@pytest.mark.parametrize(
    ("code", "status"),
    [("NoSuchKey", 404), ("404", 404), ("NotFound", 404), ("", 404)],
)
def test_not_found(code: str, status: int) -> None:
    err = _translate(client_error(code, status), op="get", key="p/k")
    assert type(err) is ObjectNotFound
    assert not err.retryable
    assert "p/k" in str(err)


def test_missing_bucket_is_not_a_missing_object() -> None:
    err = _translate(client_error("NoSuchBucket", 404, "The bucket does not exist"))
    assert type(err) is StorageError
    assert "bucket" in str(err)


def test_missing_multipart_upload_is_not_a_missing_object() -> None:
    assert type(_translate(client_error("NoSuchUpload", 404))) is StorageError


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("PreconditionFailed", 412),
        ("412", 412),  # HEAD-style: no body, only the status
        ("ConditionalRequestConflict", 409),  # AWS, on racing conditional writes
    ],
)
def test_lost_conditions(code: str, status: int) -> None:
    err = _translate(client_error(code, status), op="put", mutating=True)
    assert type(err) is PreconditionFailed
    assert not err.retryable


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("ServiceUnavailable", 503),
        ("503", 503),
        ("RequestTimeout", 400),  # server gave up reading our body: nothing applied
        ("Throttling", 400),
        ("ThrottlingException", 400),
        ("TooManyRequests", 429),
        ("OperationAborted", 409),
    ],
)
def test_throttling_is_retryable_with_known_outcome(code: str, status: int) -> None:
    err = _translate(client_error(code, status), op="put", mutating=True)
    assert type(err) is Unavailable
    assert err.retryable
    assert err.outcome_unknown is False


@pytest.mark.parametrize(
    ("code", "status"),
    [("InternalError", 500), ("500", 500), ("BadGateway", 502), ("GatewayTimeout", 504)],
)
def test_server_errors_make_writes_outcome_unknown(code: str, status: int) -> None:
    write = _translate(client_error(code, status), op="put", mutating=True)
    read = _translate(client_error(code, status), op="get")
    assert type(write) is Unavailable and type(read) is Unavailable
    assert write.outcome_unknown is True
    assert read.outcome_unknown is False


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("InvalidAccessKeyId", 403),
        ("SignatureDoesNotMatch", 403),
        ("NotImplemented", 501),  # e.g. a server without conditional writes
        ("EntityTooSmall", 400),
        ("BucketAlreadyExists", 409),
    ],
)
def test_other_client_errors_are_storage_errors_with_the_provider_message(
    code: str, status: int
) -> None:
    err = _translate(client_error(code, status, f"{code} explained"), op="put", key="p/k")
    assert type(err) is StorageError
    assert not err.retryable
    assert code in str(err) and f"{code} explained" in str(err)


def test_connect_failures_are_retryable_and_never_outcome_unknown() -> None:
    for exc in (
        boto_exc.EndpointConnectionError(endpoint_url=URL),
        boto_exc.ConnectTimeoutError(endpoint_url=URL),
        aiohttp.ClientConnectorError(
            connection_key=SimpleNamespace(ssl=True, host="h", port=1),  # type: ignore[arg-type]
            os_error=ConnectionRefusedError(111, "refused"),
        ),
    ):
        err = _translate(exc, op="put", mutating=True)
        assert type(err) is Unavailable, exc
        assert err.outcome_unknown is False, exc


@pytest.mark.parametrize(
    "exc",
    [
        boto_exc.ReadTimeoutError(endpoint_url=URL),
        AioReadTimeoutError(endpoint_url=URL, error=TimeoutError()),
        boto_exc.ConnectionClosedError(endpoint_url=URL),
        boto_exc.HTTPClientError(error=OSError("reset")),
        aiohttp.ServerDisconnectedError(),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_failures_after_sending(exc: Exception) -> None:
    write = _translate(exc, op="put", mutating=True)
    read = _translate(exc, op="get")
    assert type(write) is Unavailable and type(read) is Unavailable
    assert write.outcome_unknown is True
    assert read.outcome_unknown is False


def test_broken_response_body_is_retryable() -> None:
    for exc in (
        boto_exc.ResponseStreamingError(error=aiohttp.ClientPayloadError("cut")),
        boto_exc.IncompleteReadError(actual_bytes=10, expected_bytes=20),
    ):
        err = _translate(exc, op="get")
        assert type(err) is Unavailable


def test_credentials_problems_are_not_retryable() -> None:
    for exc in (
        boto_exc.NoCredentialsError(),
        boto_exc.PartialCredentialsError(provider="env", cred_var="x"),
    ):
        err = _translate(exc)
        assert type(err) is StorageError
        assert "credentials" in str(err)


def test_canopy_errors_pass_through_unchanged() -> None:
    original = InvalidArgument("bad key")
    assert _translate(original) is original


def test_anything_else_is_a_storage_error_naming_it() -> None:
    err = _translate(ValueError("weird"), op="list", key="p/")
    assert type(err) is StorageError
    assert "ValueError" in str(err) and "weird" in str(err)
    assert isinstance(err, CanopyError)

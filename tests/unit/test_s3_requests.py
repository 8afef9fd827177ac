"""S3ObjectStore's requests, checked against a recording fake client (no network).

What the shared contract suite cannot see: the exact S3 parameters (Range, IfNoneMatch on
CompleteMultipartUpload, StartAfter with the prefix), and the multipart abort on failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from botocore import exceptions as boto_exc

from woodpecker.errors import ObjectNotFound, PreconditionFailed, Unavailable
from woodpecker.objectstore.s3 import MiB, S3ObjectStore


def client_error(code: str, status: int, op: str = "Op") -> boto_exc.ClientError:
    return boto_exc.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        op,
    )


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aenter__(self) -> Body:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return self.data


class FakeS3:
    """Records every call; ``fail`` maps an operation name to the exception it raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, Exception] = {}
        self.fail_part: int | None = None

    def _record(self, op: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((op, kwargs))
        if op in self.fail:
            raise self.fail[op]

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]

    async def put_object(self, **kw: Any) -> dict[str, Any]:
        self._record("put_object", kw)
        return {"ETag": '"abc"'}

    async def get_object(self, **kw: Any) -> dict[str, Any]:
        self._record("get_object", kw)
        return {"Body": Body(b"0123456789"), "ContentRange": "bytes 0-9/10"}

    async def head_object(self, **kw: Any) -> dict[str, Any]:
        self._record("head_object", kw)
        return {
            "ContentLength": 10,
            "ETag": '"e"',
            "LastModified": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        }

    async def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
        self._record("list_objects_v2", kw)
        return {
            "Contents": [
                {"Key": kw["Prefix"] + "x", "Size": 1, "ETag": '"1"'},
                {"Key": kw["Prefix"] + "y", "Size": 2, "ETag": '"2"'},
            ],
            "IsTruncated": True,
        }

    async def delete_object(self, **kw: Any) -> dict[str, Any]:
        self._record("delete_object", kw)
        return {}

    async def create_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._record("create_multipart_upload", kw)
        return {"UploadId": "u1"}

    async def upload_part(self, **kw: Any) -> dict[str, Any]:
        self._record("upload_part", kw)
        await asyncio.sleep(0)
        if kw["PartNumber"] == self.fail_part:
            raise boto_exc.ConnectionClosedError(endpoint_url="http://x")
        return {"ETag": f'"p{kw["PartNumber"]}"'}

    async def complete_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._record("complete_multipart_upload", kw)
        return {"ETag": '"m-3"'}

    async def abort_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._record("abort_multipart_upload", kw)
        return {}


@pytest.fixture
def fake() -> FakeS3:
    return FakeS3()


@pytest.fixture
def store(fake: FakeS3) -> S3ObjectStore:
    s = S3ObjectStore(
        "b",
        "pre",
        endpoint_url="http://127.0.0.1:1",
        multipart_threshold=12 * MiB,
        part_size=5 * MiB,
    )
    s._client = fake
    return s


async def test_put_conditions(store: S3ObjectStore, fake: FakeS3) -> None:
    info = await store.put("k", b"abc", if_none_match="*")
    assert (info.key, info.size, info.etag) == ("k", 3, "abc")
    await store.put("k", b"abc", if_match="abc")
    await store.put("k", b"abc", if_match='"abc"')  # quoted or not, sent quoted once
    puts = [kw for op, kw in fake.calls if op == "put_object"]
    assert puts[0]["Key"] == "pre/k" and puts[0]["IfNoneMatch"] == "*"
    assert "IfMatch" not in puts[0]
    assert puts[1]["IfMatch"] == '"abc"' and puts[2]["IfMatch"] == '"abc"'


async def test_if_match_on_missing_object_is_a_lost_condition(
    store: S3ObjectStore, fake: FakeS3
) -> None:
    fake.fail["put_object"] = client_error("NoSuchKey", 404)
    with pytest.raises(PreconditionFailed):
        await store.put("k", b"x", if_match="abc")
    with pytest.raises(ObjectNotFound):  # without a condition a 404 stays a 404
        await store.put("k", b"x")


async def test_multipart_carries_the_condition_on_complete(
    store: S3ObjectStore, fake: FakeS3
) -> None:
    data = bytes(13 * MiB)
    info = await store.put("big", data, if_none_match="*")
    assert info.etag == "m-3" and info.size == len(data)
    parts = [kw for op, kw in fake.calls if op == "upload_part"]
    assert sorted(p["PartNumber"] for p in parts) == [1, 2, 3]
    assert sum(len(p["Body"]) for p in parts) == len(data)
    (complete,) = [kw for op, kw in fake.calls if op == "complete_multipart_upload"]
    assert complete["IfNoneMatch"] == "*"
    assert [p["PartNumber"] for p in complete["MultipartUpload"]["Parts"]] == [1, 2, 3]
    assert "IfNoneMatch" not in next(kw for op, kw in fake.calls if op == "create_multipart_upload")
    assert "abort_multipart_upload" not in fake.ops()


async def test_small_objects_skip_multipart(store: S3ObjectStore, fake: FakeS3) -> None:
    await store.put("k", bytes(12 * MiB))  # at the threshold: one PUT
    assert fake.ops() == ["put_object"]


async def test_failed_part_aborts_the_upload(store: S3ObjectStore, fake: FakeS3) -> None:
    fake.fail_part = 2
    with pytest.raises(Unavailable) as info:
        await store.put("big", bytes(13 * MiB))
    assert info.value.outcome_unknown is False  # nothing is visible before Complete
    assert fake.ops()[-1] == "abort_multipart_upload"
    assert "complete_multipart_upload" not in fake.ops()


async def test_lost_condition_on_complete_aborts_the_upload(
    store: S3ObjectStore, fake: FakeS3
) -> None:
    fake.fail["complete_multipart_upload"] = client_error("PreconditionFailed", 412)
    with pytest.raises(PreconditionFailed):
        await store.put("big", bytes(13 * MiB), if_none_match="*")
    assert fake.ops()[-1] == "abort_multipart_upload"


async def test_timeout_on_complete_is_outcome_unknown(store: S3ObjectStore, fake: FakeS3) -> None:
    fake.fail["complete_multipart_upload"] = boto_exc.ReadTimeoutError(endpoint_url="http://x")
    with pytest.raises(Unavailable) as info:
        await store.put("big", bytes(13 * MiB))
    assert info.value.outcome_unknown is True


async def test_cancelled_multipart_aborts_the_upload(store: S3ObjectStore, fake: FakeS3) -> None:
    started = asyncio.Event()
    original = fake.upload_part

    async def slow_part(**kw: Any) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(10)
        return await original(**kw)

    fake.upload_part = slow_part  # type: ignore[method-assign]
    task = asyncio.create_task(store.put("big", bytes(13 * MiB)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.ops()[-1] == "abort_multipart_upload"


@pytest.mark.parametrize(
    ("offset", "length", "header"),
    [(0, None, None), (0, 4, "bytes=0-3"), (5, None, "bytes=5-"), (5, 1, "bytes=5-5")],
)
async def test_range_header(
    store: S3ObjectStore, fake: FakeS3, offset: int, length: int | None, header: str | None
) -> None:
    await store.get("k", offset=offset, length=length)
    (_, kw) = fake.calls[-1]
    assert kw["Key"] == "pre/k"
    assert kw.get("Range") == header


async def test_range_past_the_end_is_empty_but_missing_is_not_found(
    store: S3ObjectStore, fake: FakeS3
) -> None:
    fake.fail["get_object"] = client_error("InvalidRange", 416)
    assert await store.get("k", offset=100, length=5) == b""
    fake.fail["get_object"] = client_error("NoSuchKey", 404)
    with pytest.raises(ObjectNotFound):
        await store.get("k", offset=100, length=5)


async def test_range_ignored_by_server_is_cut_locally(store: S3ObjectStore, fake: FakeS3) -> None:
    async def whole(**kw: Any) -> dict[str, Any]:
        return {"Body": Body(b"0123456789")}  # 200 with the whole object, no ContentRange

    fake.get_object = whole  # type: ignore[method-assign]
    assert await store.get("k", offset=2, length=3) == b"234"
    assert await store.get("k", offset=8) == b"89"
    assert await store.get("k", offset=20, length=3) == b""


async def test_list_page_adds_and_strips_the_prefix(store: S3ObjectStore, fake: FakeS3) -> None:
    page = await store.list_page("1/", start_after="1/a", max_keys=2)
    (_, kw) = fake.calls[-1]
    assert kw == {"Bucket": "b", "Prefix": "pre/1/", "StartAfter": "pre/1/a", "MaxKeys": 2}
    assert [o.key for o in page.objects] == ["1/x", "1/y"]
    assert [o.etag for o in page.objects] == ["1", "2"]
    assert page.is_truncated


async def test_head_reports_size_etag_and_time(store: S3ObjectStore) -> None:
    info = await store.head("k")
    assert (info.key, info.size, info.etag) == ("k", 10, "e")
    assert info.last_modified == dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()


async def test_delete_is_idempotent_even_if_the_server_says_404(
    store: S3ObjectStore, fake: FakeS3
) -> None:
    fake.fail["delete_object"] = client_error("NoSuchKey", 404)
    await store.delete("k")
    fake.fail["delete_object"] = client_error("SlowDown", 503)
    with pytest.raises(Unavailable):
        await store.delete("k")

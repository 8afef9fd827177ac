"""The ObjectStore contract, run against every backend.

Backends: memory://, file://, s3:// against a real SeaweedFS and against moto's server, and
memory:// behind ``Retrying(Faulty(...))`` with injected 503s and lost replies: the contract must
hold through the retry wrapper exactly as it holds without faults.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from woodpecker.errors import InvalidArgument, ObjectNotFound, PreconditionFailed
from woodpecker.objectstore import (
    FaultConfig,
    Faulty,
    FileObjectStore,
    MemoryObjectStore,
    Metered,
    ObjectStore,
    Retrying,
)

pytestmark = pytest.mark.contract

MiB = 1024 * 1024
BACKENDS = ["memory", "file", "faulty-memory", "s3-seaweedfs", "s3-moto"]


def _s3_store(service, prefix: str) -> ObjectStore:  # type: ignore[no-untyped-def]
    from woodpecker.objectstore.s3 import S3ObjectStore

    return S3ObjectStore(
        service.bucket,
        prefix,
        endpoint_url=service.endpoint_url,
        region=service.region,
        access_key_id=service.access_key_id,
        secret_access_key=service.secret_access_key,
        multipart_threshold=6 * MiB,
        part_size=5 * MiB,
    )


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path, unique_prefix) -> AsyncIterator[ObjectStore]:  # type: ignore[no-untyped-def]
    kind = request.param
    if kind == "memory":
        s: ObjectStore = MemoryObjectStore()
    elif kind == "file":
        s = FileObjectStore(tmp_path / "objects")
    elif kind == "faulty-memory":
        faults = FaultConfig(unavailable=0.15, lost_reply=0.1, unknown_outcome=0.1)
        s = Retrying(Faulty(MemoryObjectStore(), seed=7, config=faults), attempts=30, base_delay=0)
    elif kind == "s3-seaweedfs":
        s = _s3_store(request.getfixturevalue("seaweedfs_service"), unique_prefix)
    else:
        s = _s3_store(request.getfixturevalue("moto_service"), unique_prefix)
    try:
        yield s
    finally:
        await s.close()


async def test_put_get_head_roundtrip(store: ObjectStore) -> None:
    data = bytes(range(256)) * 17
    info = await store.put("a/b/obj", data)
    assert info.key == "a/b/obj" and info.size == len(data) and info.etag
    assert await store.get("a/b/obj") == data
    head = await store.head("a/b/obj")
    assert head.size == len(data) and head.etag == info.etag


async def test_empty_object(store: ObjectStore) -> None:
    await store.put("empty", b"")
    assert await store.get("empty") == b""
    assert (await store.head("empty")).size == 0


async def test_missing_object_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await store.get("nope")
    with pytest.raises(ObjectNotFound):
        await store.head("nope")
    with pytest.raises(ObjectNotFound):
        await store.get("nope", offset=3, length=2)


async def test_overwrite_changes_content_and_etag(store: ObjectStore) -> None:
    first = await store.put("k", b"one")
    second = await store.put("k", b"two-two")
    assert await store.get("k") == b"two-two"
    assert first.etag != second.etag
    assert (await store.head("k")).etag == second.etag


async def test_ranged_reads(store: ObjectStore) -> None:
    data = os.urandom(10_000)
    await store.put("r", data)
    assert await store.get("r", offset=0, length=10) == data[:10]
    assert await store.get("r", offset=123, length=1000) == data[123:1123]
    assert await store.get("r", offset=9_990) == data[9_990:]
    assert await store.get("r", offset=9_995, length=100) == data[9_995:]  # clipped at the end
    assert await store.get("r", offset=10_000) == b""
    assert await store.get("r", offset=20_000, length=5) == b""
    assert await store.get("r", offset=5, length=0) == b""
    with pytest.raises(InvalidArgument):
        await store.get("r", offset=-1)
    with pytest.raises(InvalidArgument):
        await store.get("r", length=-1)


async def test_if_none_match_creates_only_when_absent(store: ObjectStore) -> None:
    await store.put("c", b"first", if_none_match="*")
    with pytest.raises(PreconditionFailed):
        await store.put("c", b"second", if_none_match="*")
    assert await store.get("c") == b"first"


async def test_if_match_requires_current_etag(store: ObjectStore) -> None:
    with pytest.raises(PreconditionFailed):
        await store.put("m", b"x", if_match="0123456789abcdef")
    v1 = await store.put("m", b"v1")
    v2 = await store.put("m", b"v2", if_match=v1.etag)
    assert await store.get("m") == b"v2"
    with pytest.raises(PreconditionFailed):
        await store.put("m", b"v3", if_match=v1.etag)  # stale
    assert await store.get("m") == b"v2"
    await store.put("m", b"v3", if_match=v2.etag)
    assert await store.get("m") == b"v3"


async def test_unsupported_conditions_are_rejected(store: ObjectStore) -> None:
    with pytest.raises(InvalidArgument):
        await store.put("x", b"", if_none_match="etag")
    with pytest.raises(InvalidArgument):
        await store.put("x", b"", if_none_match="*", if_match="abc")


async def test_sixteen_concurrent_if_none_match_writers_exactly_one_wins(
    store: ObjectStore,
) -> None:
    async def write(i: int) -> int | None:
        try:
            await store.put("race/obj", f"writer-{i}".encode() * 100, if_none_match="*")
            return i
        except PreconditionFailed:
            return None

    for round_no in range(3):
        key_results = await asyncio.gather(*(write(i) for i in range(16)))
        winners = [i for i in key_results if i is not None]
        assert len(winners) == 1, f"round {round_no}: winners {winners}"
        assert await store.get("race/obj") == f"writer-{winners[0]}".encode() * 100
        await store.delete("race/obj")


async def test_concurrent_if_match_writers_exactly_one_wins(store: ObjectStore) -> None:
    base = await store.put("cas/obj", b"base")

    async def write(i: int) -> int | None:
        try:
            await store.put("cas/obj", f"w{i}".encode(), if_match=base.etag)
            return i
        except PreconditionFailed:
            return None

    winners = [i for i in await asyncio.gather(*(write(i) for i in range(8))) if i is not None]
    assert len(winners) == 1
    assert await store.get("cas/obj") == f"w{winners[0]}".encode()


async def test_list_prefix_order_and_start_after(store: ObjectStore) -> None:
    keys = ["p/a", "p/b/1", "p/b/2", "p/a.c", "p/c", "q/x", "p-sibling"]
    for k in keys:
        await store.put(k, k.encode())
    listed = [o.key async for o in store.list("p/")]
    assert listed == sorted(k for k in keys if k.startswith("p/"))
    assert listed == ["p/a", "p/a.c", "p/b/1", "p/b/2", "p/c"]
    after = [o.key async for o in store.list("p/", start_after="p/a.c")]
    assert after == ["p/b/1", "p/b/2", "p/c"]
    partial = [o.key async for o in store.list("p/b")]
    assert partial == ["p/b/1", "p/b/2"]
    sizes = {o.key: o.size async for o in store.list("p/")}
    assert sizes["p/b/1"] == len(b"p/b/1")
    assert [o.key async for o in store.list("zzz/")] == []


async def test_list_paging_across_more_than_1000_keys(store: ObjectStore) -> None:
    n = 1_050
    sem = asyncio.Semaphore(32)

    async def put(i: int) -> None:
        async with sem:
            await store.put(f"many/{i:05d}", b"x")

    await asyncio.gather(*(put(i) for i in range(n)))
    first = await store.list_page("many/")
    assert len(first.objects) == 1000 and first.is_truncated
    second = await store.list_page("many/", start_after=first.last_key)
    assert len(second.objects) == n - 1000 and not second.is_truncated
    small = await store.list_page("many/", max_keys=7)
    assert [o.key for o in small.objects] == [f"many/{i:05d}" for i in range(7)]
    assert small.is_truncated
    everything = [o.key async for o in store.list("many/", page_size=333)]
    assert everything == [f"many/{i:05d}" for i in range(n)]
    with pytest.raises(InvalidArgument):
        await store.list_page("many/", max_keys=0)


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.put("d/x", b"1")
    await store.put("d/y", b"2")
    await store.delete("d/x")
    await store.delete("d/x")
    await store.delete("never/existed")
    with pytest.raises(ObjectNotFound):
        await store.get("d/x")
    assert [o.key async for o in store.list("d/")] == ["d/y"]
    await store.put("d/x", b"again", if_none_match="*")  # a deleted key can be created again
    assert await store.get("d/x") == b"again"


async def test_large_object_multipart_and_ranges(store: ObjectStore) -> None:
    data = os.urandom(13 * MiB)
    info = await store.put("big/obj", data)
    assert info.size == len(data)
    assert (await store.head("big/obj")).size == len(data)
    assert await store.get("big/obj") == data
    boundary = 5 * MiB
    assert (
        await store.get("big/obj", offset=boundary - 10, length=20)
        == data[boundary - 10 : boundary + 10]
    )
    with pytest.raises(PreconditionFailed):
        await store.put("big/obj", data, if_none_match="*")


async def test_unicode_and_deep_keys(store: ObjectStore) -> None:
    key = "tenant-ü/日本/seg 1/0000.blk"
    await store.put(key, b"ok")
    assert await store.get(key) == b"ok"
    assert [o.key async for o in store.list("tenant-ü/")] == [key]


async def test_metered_counts_requests_and_bytes(store: ObjectStore) -> None:
    metered = Metered(store)
    await metered.put("meter/a", b"12345")
    await metered.get("meter/a")
    await metered.get("meter/a", offset=1, length=2)
    with pytest.raises(ObjectNotFound):
        await metered.get("meter/missing")
    [o async for o in metered.list("meter/")]
    snap = metered.meter.snapshot()
    assert snap["put"].requests == 1 and snap["put"].bytes == 5
    assert snap["get"].requests == 3 and snap["get"].bytes == 7 and snap["get"].errors == 1
    assert snap["list"].requests == 1

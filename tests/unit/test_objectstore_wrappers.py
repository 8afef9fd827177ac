"""Unit tests for the Retrying / Faulty / Metered wrappers and file:// specifics."""

from __future__ import annotations

import asyncio

import pytest

from woodpecker.clock import ManualClock
from woodpecker.errors import InvalidArgument, PreconditionFailed, StorageError, Unavailable
from woodpecker.objectstore import (
    FaultConfig,
    Faulty,
    FileObjectStore,
    MemoryObjectStore,
    Metered,
    Retrying,
    open_object_store,
)


async def test_lost_reply_on_conditional_put_counts_as_success_when_bytes_match() -> None:
    faulty = Faulty(MemoryObjectStore())
    faulty.fail_next("put", "lost_reply")  # the put lands, its reply is lost
    store = Retrying(faulty, base_delay=0)
    info = await store.put("k", b"ours", if_none_match="*")
    assert info.size == 4
    assert await store.get("k") == b"ours"


async def test_lost_reply_then_other_writer_is_still_precondition_failed() -> None:
    inner = MemoryObjectStore()
    await inner.put("k", b"theirs")
    faulty = Faulty(inner)
    faulty.fail_next("put", "unknown_outcome_dropped")  # ours never landed
    with pytest.raises(PreconditionFailed):
        await Retrying(faulty, base_delay=0).put("k", b"ours", if_none_match="*")
    assert await inner.get("k") == b"theirs"


async def test_plain_precondition_failure_is_not_retried_or_masked() -> None:
    inner = MemoryObjectStore()
    await inner.put("k", b"same")
    metered = Metered(inner)
    with pytest.raises(PreconditionFailed):  # identical bytes, but no unknown outcome happened
        await Retrying(metered, base_delay=0).put("k", b"same", if_none_match="*")
    assert metered.meter.ops["put"].requests == 1
    assert metered.meter.ops["get"].requests == 0


async def test_retrying_gives_up_after_attempts_with_backoff_on_the_clock() -> None:
    clock = ManualClock()
    faulty = Faulty(MemoryObjectStore())
    faulty.down = True
    metered = Metered(faulty)
    store = Retrying(metered, attempts=4, base_delay=1.0, max_delay=10, clock=clock)
    task = asyncio.create_task(store.get("x"))
    for _ in range(10):
        await clock.advance(10)
    with pytest.raises(Unavailable):
        await task
    assert metered.meter.ops["get"].requests == 4


async def test_non_retryable_errors_pass_through_once() -> None:
    faulty = Faulty(MemoryObjectStore())
    faulty.fail_next("get", StorageError("boom"))
    metered = Metered(faulty)
    with pytest.raises(StorageError, match="boom"):
        await Retrying(metered, base_delay=0).get("x")
    assert metered.meter.ops["get"].requests == 1


async def test_faulty_is_deterministic_for_a_seed() -> None:
    async def run(seed: int) -> list[str]:
        cfg = FaultConfig(unavailable=0.3, lost_reply=0.2, unknown_outcome=0.2)
        store = Faulty(MemoryObjectStore(), seed=seed, config=cfg)
        outcomes = []
        for i in range(200):
            try:
                await store.put(f"k{i}", b"v")
                outcomes.append("ok")
            except Unavailable as exc:
                outcomes.append(f"unavailable:{exc.outcome_unknown}")
        return outcomes

    a, b, c = await run(1), await run(1), await run(2)
    assert a == b
    assert a != c
    assert {"ok", "unavailable:False", "unavailable:True"} <= set(a)


async def test_faulty_lost_reply_applies_the_effect() -> None:
    inner = MemoryObjectStore()
    faulty = Faulty(inner)
    faulty.fail_next("put", "lost_reply")
    with pytest.raises(Unavailable) as info:
        await faulty.put("k", b"v")
    assert info.value.outcome_unknown
    assert await inner.get("k") == b"v"
    assert faulty.injected["lost_reply"] == 1


async def test_named_memory_stores_share_objects() -> None:
    a = open_object_store("memory://shared-test-bucket")
    b = open_object_store("memory://shared-test-bucket")
    private = open_object_store("memory://")
    await a.put("x", b"1")
    assert await b.get("x") == b"1"
    assert [o.key async for o in private.list()] == []


def test_bad_uris_say_what_is_supported() -> None:
    with pytest.raises(InvalidArgument, match="s3://"):
        open_object_store("gs://bucket/x")
    with pytest.raises(InvalidArgument, match="file:///absolute"):
        open_object_store("file://somehost/dir")


async def test_file_store_rejects_keys_it_cannot_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = FileObjectStore(tmp_path)
    for bad in ("a//b", "a/../b", "./a", ".canopy/tmp/x", "/abs", ""):
        with pytest.raises(InvalidArgument):
            await store.put(bad, b"x")


async def test_file_store_survives_reopen_and_prunes_empty_dirs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = FileObjectStore(tmp_path)
    await store.put("log/1/0.blk", b"block")
    reopened = open_object_store(f"file://{tmp_path}")
    assert await reopened.get("log/1/0.blk") == b"block"
    await reopened.delete("log/1/0.blk")
    assert not (tmp_path / "log").exists()
    assert not list((tmp_path / ".canopy" / "tmp").iterdir())

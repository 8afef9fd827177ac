"""Cancelling and closing MetaStore watches, on every backend (memory://, sqlite://, real etcd).

Regression tests for a hang on etcd: a task cancelled at the moment its watch was being created
lost the cancellation (aetcd awaited the creation with ``asyncio.wait_for``, which on Python 3.11
returns the result instead of raising when the cancellation and the completion coincide), then
waited for events forever, and whoever awaited the cancelled task hung with it.

Every wait here is bounded: a swallowed cancellation or a close that does not end the iteration
fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest

from woodpecker.meta import MetaStore, Watch, WatchEvent, open_meta_store

pytestmark = pytest.mark.contract

BACKENDS = ["memory", "sqlite", "etcd"]
ROUNDS = 300
BOUND = 5.0  # seconds: anything slower is a hang


@pytest.fixture(params=BACKENDS)
async def meta(
    request: pytest.FixtureRequest, meta_uri: Callable[[str], str]
) -> AsyncIterator[MetaStore]:
    store = open_meta_store(meta_uri(request.param))
    yield store
    await asyncio.wait_for(store.close(), BOUND)


async def _writer(meta: MetaStore, prefix: str, stop: asyncio.Event) -> int:
    n = 0
    while not stop.is_set():
        await meta.put(f"{prefix}{n % 7}", str(n).encode())
        n += 1
        await asyncio.sleep(0)
    return n


async def _pause(rng: random.Random, turns: int) -> None:
    """Let the loop turn ``turns`` times (so a sweep over ``turns`` lands a cancellation on every
    step of creating a watch and of reading from it), sometimes a few ms more."""
    for _ in range(turns):
        await asyncio.sleep(0)
    if rng.random() < 0.2:
        await asyncio.sleep(rng.uniform(0, 0.003))


async def _ended(task: asyncio.Task[object]) -> None:
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    assert task in done, "the task did not end: a cancellation was swallowed or a close ignored"


async def test_cancelling_a_task_in_a_watch_always_cancels_it(meta: MetaStore) -> None:
    """Cancel tasks while they create a watch, wait for events or take them, while events
    arrive: each task ends cancelled, promptly, every time."""
    rng = random.Random(7)
    stop = asyncio.Event()
    writer = asyncio.create_task(_writer(meta, "c/", stop))
    entered = 0

    async def consume() -> None:
        nonlocal entered
        async with meta.watch("c/") as watch:
            entered += 1
            async for _ in watch:
                pass

    try:
        for i in range(ROUNDS):
            task = asyncio.create_task(consume())
            await _pause(rng, i)
            task.cancel()
            await _ended(task)
            assert task.cancelled(), f"the cancellation was lost: {task!r}"
        assert entered > 0  # some cancellations landed after the watch was established
    finally:
        stop.set()
        await asyncio.wait_for(writer, BOUND)


async def test_cancelling_next_leaves_the_watch_usable(meta: MetaStore) -> None:
    """A consumer whose ``__anext__`` is cancelled (a timeout) and which then reads on misses
    nothing and repeats nothing."""
    rng = random.Random(11)
    async with meta.watch("n/") as watch:
        revisions = []
        got: list[WatchEvent] = []
        for i in range(60):
            revisions.append(await meta.put(f"n/{i % 5}", b"v"))
            try:
                async with asyncio.timeout(rng.choice([0, 0.0005, 0.002])):
                    got.append(await watch.__anext__())
            except TimeoutError:
                pass
        while len(got) < len(revisions):
            got.append(await asyncio.wait_for(watch.__anext__(), BOUND))
        assert [e.revision for e in got] == revisions


async def test_closing_a_watch_with_events_in_flight_ends_its_reader(meta: MetaStore) -> None:
    """Close a watch from another task while events stream in: the reader's iteration ends
    (no error, no hang) having seen a gap-free prefix of the events; closing is idempotent."""
    rng = random.Random(13)
    stop = asyncio.Event()
    writer = asyncio.create_task(_writer(meta, "f/", stop))
    try:
        for _ in range(ROUNDS // 3):
            watch: Watch = meta.watch("f/")
            seen: list[WatchEvent] = []

            async def read(w: Watch = watch, out: list[WatchEvent] = seen) -> None:
                async for event in w:
                    out.append(event)

            await asyncio.wait_for(watch.__aenter__(), BOUND)
            reader = asyncio.create_task(read())
            await _pause(rng, rng.randrange(50))
            await asyncio.wait_for(watch.close(), BOUND)
            await _ended(reader)
            assert reader.exception() is None
            revisions = [e.revision for e in seen]
            assert revisions == sorted(set(revisions))
            await asyncio.wait_for(watch.close(), BOUND)
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(watch.__anext__(), BOUND)
    finally:
        stop.set()
        await asyncio.wait_for(writer, BOUND)


async def test_closing_the_store_ends_every_watch(meta: MetaStore) -> None:
    watches = [meta.watch(f"s{i}/") for i in range(3)]
    for watch in watches:
        await watch.__aenter__()

    async def drain(w: Watch) -> None:
        async for _ in w:
            pass

    readers = [asyncio.create_task(drain(w)) for w in watches]
    await meta.put("s0/k", b"v")
    await asyncio.sleep(0.05)
    await asyncio.wait_for(meta.close(), BOUND)
    for reader in readers:
        await _ended(reader)
        assert reader.exception() is None

"""The timestamp oracle (TSO): hybrid timestamps, strictly increasing across calls and restarts.

A timestamp is ``physical_ms << 18 | logical`` (Milvus's layout: 46 bits of Unix milliseconds,
18 bits of counter). Contract of :class:`TimestampOracle`:

- Every timestamp it issues is larger than every timestamp issued before on the same meta key,
  by this oracle or any earlier one (closed or crashed), even if the wall clock went backwards:
  then the logical part advances on the last physical part, and when it overflows the physical
  part moves 1 ms ahead of the clock.
- Before issuing a physical part it has persisted a high-water mark (``key``) at least that
  large. The mark runs ``window_ms`` ahead of use and is renewed in the background when a third
  of the window is left (and inline if issuing outruns it), so a restart starts above it.
- Each write of the mark is a CAS on the key's version. A second oracle that starts on the same
  key takes it over (that is also how a restart after a crash looks); the first one learns at
  its next renewal, raises :class:`~cluster.coordinator.errors.TsoFenced` from then on, and never
  issues beyond the window it owned. There is no leader lease yet: a deployment runs exactly one
  coordinator (the Kubernetes manifests: one replica, ``Recreate``), and the CAS makes a second
  one fail loudly instead of corrupting time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime

from cluster.coordinator.errors import TsoClosed, TsoFenced
from woodpecker.clock import Clock
from woodpecker.errors import CanopyError
from woodpecker.meta.base import MetaStore

log = logging.getLogger(__name__)

LOGICAL_BITS = 18
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_COUNT = 1 << LOGICAL_BITS  # timestamps one allocate() may return (one physical ms)
_RETRY_DELAY = 0.2  # seconds between renewal attempts after a retryable meta error


def compose(physical_ms: int, logical: int) -> int:
    if not 0 <= logical <= LOGICAL_MASK:
        raise ValueError(f"logical part {logical} out of range 0..{LOGICAL_MASK}")
    if physical_ms < 0:
        raise ValueError(f"physical part {physical_ms} is negative")
    return (physical_ms << LOGICAL_BITS) | logical


def physical_ms(ts: int) -> int:
    return ts >> LOGICAL_BITS


def logical(ts: int) -> int:
    return ts & LOGICAL_MASK


def ts_to_datetime(ts: int) -> datetime:
    """The physical part as an aware UTC datetime."""
    return datetime.fromtimestamp(physical_ms(ts) / 1000, tz=UTC)


def datetime_to_ts(dt: datetime, logical_part: int = 0) -> int:
    """The timestamp of an (aware or UTC-naive) datetime, e.g. for Bounded-staleness reads."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return compose(int(dt.timestamp() * 1000), logical_part)


class TimestampOracle:
    """Issues hybrid timestamps from a high-water mark persisted under ``key`` in ``meta``.

    ``await start()`` before use, ``await close()`` at the end. ``allocate`` is safe to call
    from many tasks at once."""

    def __init__(
        self,
        meta: MetaStore,
        clock: Clock,
        *,
        key: str = "tso/high_water",
        window_ms: int = 3000,
        owner: str | None = None,
    ) -> None:
        if window_ms < 3:
            raise ValueError("window_ms must be at least 3")
        self.meta = meta
        self.clock = clock
        self.key = key
        self.window_ms = window_ms
        self.owner = owner or uuid.uuid4().hex
        self._physical = 0  # physical part of the last timestamp issued
        self._logical = LOGICAL_MASK  # logical part of the last timestamp issued
        self._high_water = -1  # persisted mark: no physical part above it may be issued
        self._version = 0  # the key's version as we last wrote it
        self._lock = asyncio.Lock()  # serialises writes of the mark
        self._renewer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failure: CanopyError | None = None
        self._started = False
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the persisted mark, take ownership of a fresh window above it, start renewing.
        Raises ``TsoFenced`` if another oracle wrote the key between our read and our write."""
        if self._started:
            raise RuntimeError("TimestampOracle.start() called twice")
        kv = await self.meta.get(self.key)
        previous = _decode(kv.value)["high_water_ms"] if kv is not None else 0
        self._version = kv.version if kv is not None else 0
        # Everything issued before us had physical <= previous: continue strictly above it.
        self._physical, self._logical = previous, LOGICAL_MASK
        await self._renew(previous + 1)
        self._started = True
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_loop(), name=f"tso-renew-{self.key}"
        )
        self._renewer.add_done_callback(self._renewer_done)

    async def close(self) -> None:
        """Stop issuing and renewing. The mark is lowered to the last physical part issued (best
        effort, by CAS), so a restart does not run ahead of the clock for a whole window."""
        if self._closed:
            return
        self._closed = True
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # crashes are logged
                await self._renewer
        if self._started and self._failure is None:
            async with self._lock:
                with contextlib.suppress(CanopyError):
                    await self.meta.cas(
                        self.key, self._encode(self._physical), expected_version=self._version
                    )

    async def __aenter__(self) -> TimestampOracle:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def high_water_ms(self) -> int:
        """The persisted high-water mark this oracle owns (physical ms)."""
        return self._high_water

    @property
    def last(self) -> int:
        """An upper bound of every timestamp issued so far on this key (exact once this oracle
        has issued one)."""
        return compose(self._physical, self._logical)

    # --- allocation ----------------------------------------------------------------------------

    async def allocate(self, count: int = 1) -> int:
        """Return the first of ``count`` consecutive timestamps (1 <= count <= 2**18), all larger
        than any timestamp issued before on this key."""
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be in 1..{MAX_COUNT}, got {count}")
        while True:
            self._check_usable()
            physical, first = self._next(count)
            if physical <= self._high_water:
                # No suspension point between the check and the commit: atomic for asyncio.
                self._physical, self._logical = physical, first + count - 1
                if self._remaining(physical) * 3 <= self.window_ms:
                    self._wake.set()
                return compose(physical, first)
            await self._renew(physical)

    def _next(self, count: int) -> tuple[int, int]:
        now = self._now_ms()
        if now > self._physical:
            physical, first = now, 0
        else:  # the clock stands still or went backwards: continue the logical counter
            physical, first = self._physical, self._logical + 1
        if first + count - 1 > LOGICAL_MASK:  # overflow: move 1 ms ahead
            physical, first = physical + 1, 0
        return physical, first

    def _now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def _remaining(self, physical: int) -> int:
        return self._high_water - max(physical, self._now_ms())

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed or not self._started:
            raise TsoClosed(f"timestamp oracle on {self.key!r} is not running")

    # --- the high-water mark -------------------------------------------------------------------

    def _encode(self, high_water_ms: int) -> bytes:
        return json.dumps(
            {"high_water_ms": high_water_ms, "owner": self.owner, "written_at": self.clock.now()}
        ).encode()

    async def _renew(self, needed_physical: int) -> None:
        """Persist a mark covering ``needed_physical`` plus a window (no-op if already covered)."""
        async with self._lock:
            self._check_usable_for_renewal()
            if needed_physical <= self._high_water and self._remaining(needed_physical) * 3 > (
                self.window_ms
            ):
                return
            target = max(needed_physical, self._now_ms(), self._physical) + self.window_ms
            while not await self.meta.cas(
                self.key, self._encode(target), expected_version=self._version
            ):
                kv = await self.meta.get(self.key)
                record = _decode(kv.value) if kv is not None else {}
                if kv is None or record.get("owner") != self.owner or kv.version <= self._version:
                    self._failure = TsoFenced(
                        f"timestamp oracle {self.owner} lost {self.key!r} to oracle "
                        f"{record.get('owner')}: another oracle started on the same meta store"
                    )
                    raise self._failure
                # An earlier write of ours whose reply was lost (outcome unknown) landed.
                self._version = kv.version
            self._version += 1
            self._high_water = target

    def _check_usable_for_renewal(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise TsoClosed(f"timestamp oracle on {self.key!r} is closed")

    async def _renew_loop(self) -> None:
        """Renew when a third of the window is left; wake early when allocate() asks."""
        while True:
            left_ms = self._remaining(self._physical) - self.window_ms // 3
            if left_ms > 0:
                self._wake.clear()
                sleeper = asyncio.ensure_future(self.clock.sleep(left_ms / 1000))
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    waker.cancel()
                continue
            try:
                await self._renew(self._physical)
            except TsoFenced:
                log.error("timestamp oracle %s fenced on %r", self.owner, self.key)
                return
            except CanopyError as exc:
                if not exc.retryable:
                    raise
                log.warning("timestamp oracle %s: renewal failed (%s), retrying", self.owner, exc)
                await self.clock.sleep(_RETRY_DELAY)

    def _renewer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (exc := task.exception()) is None:
            return
        log.error("timestamp oracle %s: renewal task crashed", self.owner, exc_info=exc)
        if self._failure is None:
            failure = TsoClosed(f"timestamp oracle renewal crashed: {exc!r}")
            failure.__cause__ = exc
            self._failure = failure


def _decode(value: bytes) -> dict[str, int | str]:
    try:
        record = json.loads(value)
        int(record["high_water_ms"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CanopyError(f"corrupt timestamp oracle record: {value[:100]!r}") from exc
    return record

"""Cross-cutting ObjectStore concerns as wrappers: ``Retrying``, ``Metered``, ``Faulty``.

Each wrapper is itself an ObjectStore around an inner one, so they compose:
``Metered(Retrying(S3ObjectStore(...)))`` counts what the application asked for, while
``Retrying(Metered(...))`` counts every attempt sent to the provider.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError, ObjectNotFound, PreconditionFailed, Unavailable
from woodpecker.objectstore.base import (
    DEFAULT_MAX_KEYS,
    ListPage,
    ObjectInfo,
    ObjectStore,
    iterate_pages,
)

T = TypeVar("T")


class _Wrapper:
    """Forwards everything to ``inner``; subclasses override what they change."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    @property
    def uri(self) -> str:
        return self.inner.uri

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = DEFAULT_MAX_KEYS
    ) -> AsyncIterator[ObjectInfo]:
        return iterate_pages(self, prefix, start_after, page_size)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.inner.close()


class _Intercepting(_Wrapper):
    """A wrapper that routes every call through one hook, ``_around(op, call, sent)``, where
    ``op`` is one of ``OPS`` and ``sent`` the bytes a put uploads."""

    async def _around(self, op: str, call: Callable[[], Awaitable[T]], sent: int) -> T:
        raise NotImplementedError

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: str | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        return await self._around(
            "put",
            lambda: self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match),
            len(data),
        )

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        return await self._around(
            "get", lambda: self.inner.get(key, offset=offset, length=length), 0
        )

    async def head(self, key: str) -> ObjectInfo:
        return await self._around("head", lambda: self.inner.head(key), 0)

    async def list_page(
        self, prefix: str = "", *, start_after: str | None = None, max_keys: int = DEFAULT_MAX_KEYS
    ) -> ListPage:
        return await self._around(
            "list",
            lambda: self.inner.list_page(prefix, start_after=start_after, max_keys=max_keys),
            0,
        )

    async def delete(self, key: str) -> None:
        await self._around("delete", lambda: self.inner.delete(key), 0)


# --- Retrying --------------------------------------------------------------------------------


class Retrying(_Wrapper):
    """Retries retryable failures with capped, jittered exponential back-off.

    Puts are safe to retry because a retry sends the same key and bytes. When an attempt's
    outcome was unknown (a lost reply) and a conditional retry then fails its precondition, the
    earlier attempt may be what now occupies the key: if the stored bytes equal ours, the put
    succeeded and is reported as such; otherwise ``PreconditionFailed`` stands (someone else won).
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        attempts: int = 8,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(inner)
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock or RealClock()
        self._rng = rng or random.Random()

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self.attempts):
            try:
                return await call()
            except CanopyError as exc:
                if not exc.retryable or attempt == self.attempts - 1:
                    raise
            delay = min(self.max_delay, self.base_delay * (2**attempt))
            await self._clock.sleep(delay * (0.5 + self._rng.random() / 2))
        raise AssertionError("unreachable")

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: str | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        conditional = if_none_match is not None or if_match is not None
        maybe_applied = False
        for attempt in range(self.attempts):
            try:
                return await self.inner.put(
                    key, data, if_none_match=if_none_match, if_match=if_match
                )
            except PreconditionFailed:
                if conditional and maybe_applied:
                    info = await self._ours(key, data)
                    if info is not None:
                        return info
                raise
            except CanopyError as exc:
                if not exc.retryable or attempt == self.attempts - 1:
                    raise
                maybe_applied |= isinstance(exc, Unavailable) and exc.outcome_unknown
            delay = min(self.max_delay, self.base_delay * (2**attempt))
            await self._clock.sleep(delay * (0.5 + self._rng.random() / 2))
        raise AssertionError("unreachable")

    async def _ours(self, key: str, data: bytes) -> ObjectInfo | None:
        """The object's info if it holds exactly ``data`` (our earlier attempt landed)."""
        try:
            info = await self._retry(lambda: self.inner.head(key))
            if info.size != len(data):
                return None
            stored = await self._retry(lambda: self.inner.get(key))
        except ObjectNotFound:
            return None
        return info if stored == data else None

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        return await self._retry(lambda: self.inner.get(key, offset=offset, length=length))

    async def head(self, key: str) -> ObjectInfo:
        return await self._retry(lambda: self.inner.head(key))

    async def list_page(
        self, prefix: str = "", *, start_after: str | None = None, max_keys: int = DEFAULT_MAX_KEYS
    ) -> ListPage:
        return await self._retry(
            lambda: self.inner.list_page(prefix, start_after=start_after, max_keys=max_keys)
        )

    async def delete(self, key: str) -> None:
        await self._retry(lambda: self.inner.delete(key))


# --- Metered ---------------------------------------------------------------------------------

OPS = ("put", "get", "head", "list", "delete")


@dataclass
class OpStats:
    requests: int = 0
    errors: int = 0
    bytes: int = 0  # bytes sent (put) or received (get)
    seconds: float = 0.0


@dataclass
class Meter:
    """Counts per operation kind: the cost figures (PUTs, GETs, LISTs and bytes moved)."""

    ops: dict[str, OpStats] = field(default_factory=lambda: {op: OpStats() for op in OPS})

    def snapshot(self) -> dict[str, OpStats]:
        return {op: OpStats(s.requests, s.errors, s.bytes, s.seconds) for op, s in self.ops.items()}

    def reset(self) -> None:
        for op in OPS:
            self.ops[op] = OpStats()


class Metered(_Intercepting):
    """Counts requests, errors, bytes and time per operation kind in ``self.meter``."""

    def __init__(
        self, inner: ObjectStore, *, meter: Meter | None = None, clock: Clock | None = None
    ) -> None:
        super().__init__(inner)
        self.meter = meter or Meter()
        self._clock = clock or RealClock()

    async def _around(self, op: str, call: Callable[[], Awaitable[T]], sent: int) -> T:
        stats = self.meter.ops[op]
        stats.requests += 1
        started = self._clock.monotonic()
        try:
            result = await call()
        except Exception:
            stats.errors += 1
            raise
        finally:
            stats.seconds += self._clock.monotonic() - started
        stats.bytes += sent if op == "put" else len(result) if isinstance(result, bytes) else 0
        return result


# --- Faulty ----------------------------------------------------------------------------------


@dataclass
class FaultConfig:
    """Probabilities (0..1) per request, and an injected latency range in seconds.

    - ``unavailable``: fail before the request reaches the store (a 503); no effect happened.
    - ``lost_reply``: the request takes effect, then the reply is lost (outcome unknown).
    - ``unknown_outcome``: a timeout; the request took effect or not, by a coin flip.
    """

    unavailable: float = 0.0
    lost_reply: float = 0.0
    unknown_outcome: float = 0.0
    latency: tuple[float, float] = (0.0, 0.0)
    ops: frozenset[str] = frozenset(OPS)  # which operation kinds faults apply to


class Faulty(_Intercepting):
    """Injects seeded faults for tests. The same seed and call sequence give the same faults.

    Besides the random ``config``, ``down = True`` makes every request fail as unavailable (an
    outage), and ``fail_next(op, exc)`` scripts a specific failure for the next call of ``op``.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        seed: int = 0,
        config: FaultConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(inner)
        self.config = config or FaultConfig()
        self.down = False
        self.injected: dict[str, int] = {"unavailable": 0, "lost_reply": 0, "unknown_outcome": 0}
        self._rng = random.Random(seed)
        self._clock = clock or RealClock()
        self._scripted: dict[str, list[BaseException | str]] = {}

    def fail_next(self, op: str, fault: BaseException | str) -> None:
        """Make the next ``op`` call fail: with an exception, or with a named fault kind
        (``"unavailable"``, ``"lost_reply"``, ``"unknown_outcome_applied"``,
        ``"unknown_outcome_dropped"``)."""
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}")
        self._scripted.setdefault(op, []).append(fault)

    def _draw(self, op: str) -> str | BaseException | None:
        scripted = self._scripted.get(op)
        if scripted:
            return scripted.pop(0)
        if self.down:
            return "unavailable"
        cfg = self.config
        if op not in cfg.ops:
            return None
        roll = self._rng.random()
        if roll < cfg.unavailable:
            return "unavailable"
        roll -= cfg.unavailable
        if roll < cfg.lost_reply:
            return "lost_reply"
        roll -= cfg.lost_reply
        if roll < cfg.unknown_outcome:
            applied = self._rng.random() < 0.5
            return "unknown_outcome_applied" if applied else "unknown_outcome_dropped"
        return None

    async def _around(self, op: str, call: Callable[[], Awaitable[T]], sent: int) -> T:
        low, high = self.config.latency
        if high > 0:
            await self._clock.sleep(low + (high - low) * self._rng.random())
        fault = self._draw(op)
        if fault is None:
            return await call()
        if isinstance(fault, BaseException):
            raise fault
        kind = "unknown_outcome" if fault.startswith("unknown_outcome") else fault
        self.injected[kind] = self.injected.get(kind, 0) + 1
        if fault in ("unavailable", "unknown_outcome_dropped"):
            raise Unavailable(f"injected {fault} on {op}", outcome_unknown=fault != "unavailable")
        try:  # lost_reply / unknown_outcome_applied: the request reaches the store
            await call()
        except CanopyError:
            pass  # whatever the store answered, the caller never hears it
        raise Unavailable(f"injected {fault} on {op}", outcome_unknown=True)

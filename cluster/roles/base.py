"""What every role process shares: the lifecycle, supervision and signal handling.

Contract of :class:`Role`:

- ``await start()`` opens what the role needs and returns once it serves; on failure it stops
  what it had opened and raises.
- ``await wait()`` returns when a supervised part of the role (a background task, the session,
  the channel manager...) ended by itself, raising its error: a role never keeps running with a
  dead part. :meth:`supervise` registers those parts.
- ``await stop()`` undoes ``start`` in reverse order (the callbacks given to :meth:`on_stop`),
  each step bounded by ``stop_timeout`` and logged if it fails; it is safe to call twice.
- ``await liveness()`` / ``await readiness()`` give the reasons the role is not alive (a
  supervised part ended) / not ready (not started yet, stopping, or a role-specific reason from
  :meth:`_not_ready`); empty lists mean it is. The health endpoint serves them.

:func:`serve` runs a role until SIGINT/SIGTERM or its failure, then stops it; a failure is
re-raised so the process exits non-zero. With ``health_port`` it serves the HTTP health
endpoint (:mod:`cluster.roles.health`) for the whole life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from cluster.roles.health import HealthServer

log = logging.getLogger("canopy.roles")

__all__ = ["Role", "configure_logging", "serve"]


class Role:
    """Base of the role runners (see the module docstring)."""

    name = "role"
    stop_timeout = 15.0

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._watched: list[tuple[str, asyncio.Future[object]]] = []
        self._started = False
        self._stopped = False

    def on_stop(self, what: str, stop: Callable[[], Awaitable[object]]) -> None:
        """Run ``stop`` at :meth:`stop` time, before everything registered earlier."""
        self._stops.append((what, stop))

    def supervise(self, what: str, awaitable: Awaitable[object]) -> None:
        """The role fails when ``awaitable`` ends (with its error, or a RuntimeError saying
        that ``what`` ended)."""

        async def watch() -> None:
            await awaitable
            raise RuntimeError(f"{self.name}: {what} ended unexpectedly")

        task = asyncio.ensure_future(watch())
        self._watched.append((what, task))

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self._started = True

    async def liveness(self) -> list[str]:
        """Why the role is not alive: the supervised parts that ended."""
        return [f"{what} ended" for what, task in self._watched if task.done()]

    async def readiness(self) -> list[str]:
        """Why the role does not serve (yet): see the module docstring."""
        if self._stopped:
            return [f"{self.name} is stopping"]
        if not self._started:
            return [f"{self.name} is starting"]
        return await self.liveness() or await self._not_ready()

    async def _not_ready(self) -> list[str]:
        """Role-specific reasons, asked only of a started role; none by default."""
        return []

    async def _start(self) -> None:
        raise NotImplementedError

    async def wait(self) -> None:
        """Until a supervised part ends; raises its error."""
        if not self._watched:
            await asyncio.Event().wait()
        tasks = [task for _, task in self._watched]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for _, task in self._watched:
            task.cancel()
        for _, task in self._watched:
            with contextlib.suppress(BaseException):
                await task
        for what, stop in reversed(self._stops):
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await stop()
            except Exception as exc:  # keep stopping the rest
                log.warning(
                    "%s: stopping %s failed: %s: %s", self.name, what, type(exc).__name__, exc
                )


async def serve(role: Role, health_host: str = "127.0.0.1", health_port: int = 0) -> None:
    """Start ``role``, run until SIGINT/SIGTERM or until it fails, then stop it; with
    ``health_port`` > 0 serve its health endpoint on ``health_host`` meanwhile."""
    health: HealthServer | None = None
    if health_port > 0:
        health = HealthServer(
            role.name, health_host, health_port, live=role.liveness, ready=role.readiness
        )
        await health.start()
    try:
        await _serve(role)
    finally:
        if health is not None:
            await health.stop()


async def _serve(role: Role) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await role.start()
    failed = asyncio.ensure_future(role.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        log.info("%s stopping", role.name)
        await role.stop()
    if failed.done() and not failed.cancelled() and failed.exception() is not None:
        raise failed.exception()  # type: ignore[misc]
    failed.cancel()
    log.info("%s stopped", role.name)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(level: str, fmt: str = "text", role: str = "") -> None:
    """Root logging to stderr: ``text`` (human) or ``json`` (one object per line)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        tag = f" [{role}]" if role else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

"""The HTTP health endpoint of a role process, for Docker HEALTHCHECK and Kubernetes probes.

Contract of :class:`HealthServer` (``health.host``/``health.port``; port 0 means none is
served):

- ``GET /healthz`` (liveness): 200 while the process runs and none of its supervised parts has
  ended; 503 with the reasons otherwise. It answers from the moment the server starts, also
  while the role is still starting, so a slow start is not mistaken for a hang.
- ``GET /readyz`` (readiness): 200 once the role serves (for a proxy: its CheckHealth is
  healthy too), 503 with the reasons before that and while it is unhealthy.
- Any other path is 404; any other method 405. Bodies are JSON
  ``{"role": ..., "status": "ok"|"unavailable", "reasons": [...]}``. A probe that takes longer
  than ``probe_timeout`` answers 503 with that reason instead of hanging the caller.

The server is plain asyncio (no dependency): one request per connection, ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("canopy.health")

__all__ = ["HealthServer", "Probe"]

Probe = Callable[[], Awaitable[list[str]]]
"""A check: the reasons the process is not healthy/ready; an empty list means it is."""

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_HEADER_LINES = 100


class HealthServer:
    """See the module docstring. ``port`` 0 binds a free port (:attr:`port` tells which)."""

    def __init__(
        self,
        role: str,
        host: str,
        port: int,
        *,
        live: Probe,
        ready: Probe,
        probe_timeout: float = 5.0,
    ) -> None:
        self.role = role
        self.host = host
        self._port = port
        self._probes = {"/healthz": live, "/readyz": ready}
        self.probe_timeout = probe_timeout
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Bind and serve; raises ``OSError`` when the address is taken."""
        self._server = await asyncio.start_server(self._handle, self.host, self._port)
        log.info("%s health endpoint on http://%s:%d/healthz and /readyz", *self._where())

    def _where(self) -> tuple[str, str, int]:
        return self.role, self.host, self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.probe_timeout + 5):
                code, body = await self._answer(reader)
                payload = json.dumps(body).encode()
                head = (
                    f"HTTP/1.1 {code} {_REASONS[code]}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                writer.write(head.encode() + payload)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a client that hung up or sent garbage gets nothing more
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
        request = (await reader.readline()).decode("latin-1").split()
        if len(request) < 2:
            raise ValueError("not an HTTP request")
        for _ in range(_MAX_HEADER_LINES):  # the headers carry nothing we need
            if (await reader.readline()) in (b"\r\n", b"\n", b""):
                break
        method, path = request[0], request[1].split("?", 1)[0]
        probe = self._probes.get(path)
        if probe is None:
            return 404, self._body(["unknown path: use /healthz or /readyz"])
        if method not in ("GET", "HEAD"):
            return 405, self._body([f"{method} not allowed: use GET"])
        try:
            async with asyncio.timeout(self.probe_timeout):
                reasons = await probe()
        except TimeoutError:
            reasons = [f"the check took longer than {self.probe_timeout:g} s"]
        except Exception as exc:
            reasons = [f"the check failed: {type(exc).__name__}: {exc}"]
        return (503 if reasons else 200), self._body(reasons)

    def _body(self, reasons: list[str]) -> dict[str, object]:
        status = "unavailable" if reasons else "ok"
        return {"role": self.role, "status": status, "reasons": reasons}

"""The HTTP health endpoint (``cluster/roles/health.py``), a role's liveness and readiness
(``cluster/roles/base.py``) and ``canopy health``, which probes the endpoint."""

from __future__ import annotations

import asyncio
import json

import pytest

from cluster.cli import main
from cluster.roles.base import Role
from cluster.roles.health import HealthServer

pytestmark = pytest.mark.unit


async def http(port: int, request: bytes) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


class Flags:
    """Probe answers a test can change."""

    def __init__(self) -> None:
        self.live: list[str] = []
        self.ready: list[str] = ["starting"]

    async def live_probe(self) -> list[str]:
        return self.live

    async def ready_probe(self) -> list[str]:
        return self.ready


async def started(flags: Flags, **kwargs: float) -> HealthServer:
    server = HealthServer(
        "tester", "127.0.0.1", 0, live=flags.live_probe, ready=flags.ready_probe, **kwargs
    )
    await server.start()
    return server


async def test_liveness_and_readiness_follow_the_probes() -> None:
    flags = Flags()
    server = await started(flags)
    try:
        assert await http(server.port, get("/healthz")) == (
            200,
            {"role": "tester", "status": "ok", "reasons": []},
        )
        assert await http(server.port, get("/readyz")) == (
            503,
            {"role": "tester", "status": "unavailable", "reasons": ["starting"]},
        )
        flags.ready = []
        assert (await http(server.port, get("/readyz?verbose=1")))[0] == 200
        flags.live = ["the channel manager ended"]
        status, body = await http(server.port, get("/healthz"))
        assert (status, body["reasons"]) == (503, ["the channel manager ended"])
    finally:
        await server.stop()


async def test_unknown_paths_methods_and_garbage_get_clear_answers() -> None:
    server = await started(Flags())
    try:
        status, body = await http(server.port, get("/metrics"))
        assert status == 404 and "use /healthz or /readyz" in body["reasons"][0]
        status, body = await http(server.port, b"POST /healthz HTTP/1.1\r\n\r\n")
        assert status == 405
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\r\n")  # not a request: the connection is closed, the server lives on
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        assert (await http(server.port, get("/healthz")))[0] == 200
    finally:
        await server.stop()


async def test_a_slow_or_failing_probe_answers_503_instead_of_hanging() -> None:
    async def slow() -> list[str]:
        await asyncio.sleep(30)
        return []

    async def broken() -> list[str]:
        raise RuntimeError("catalog gone")

    server = HealthServer("tester", "127.0.0.1", 0, live=broken, ready=slow, probe_timeout=0.2)
    await server.start()
    try:
        status, body = await http(server.port, get("/readyz"))
        assert status == 503 and "longer than 0.2 s" in body["reasons"][0]
        status, body = await http(server.port, get("/healthz"))
        assert status == 503 and "RuntimeError: catalog gone" in body["reasons"][0]
    finally:
        await server.stop()


class Part:
    def __init__(self) -> None:
        self.done = asyncio.Event()

    async def wait(self) -> None:
        await self.done.wait()


class Demo(Role):
    name = "demo"

    def __init__(self) -> None:
        super().__init__()
        self.part = Part()
        self.extra: list[str] = []

    async def _start(self) -> None:
        self.supervise("the demo loop", self.part.wait())

    async def _not_ready(self) -> list[str]:
        return self.extra


async def test_role_readiness_through_its_lifecycle() -> None:
    role = Demo()
    assert await role.readiness() == ["demo is starting"]
    assert await role.liveness() == []
    await role.start()
    assert await role.readiness() == []
    role.extra = ["channel x has no live streaming node"]
    assert await role.readiness() == role.extra
    role.extra = []
    role.part.done.set()
    await asyncio.sleep(0.01)
    assert await role.liveness() == ["the demo loop ended"]
    assert await role.readiness() == ["the demo loop ended"]
    await role.stop()
    assert await role.readiness() == ["demo is stopping"]


async def test_canopy_health_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    flags = Flags()
    server = await started(flags)
    try:
        port = str(server.port)
        assert await asyncio.to_thread(main, ["health", "--port", port]) == 0
        assert capsys.readouterr().out.strip() == "tester: ok"
        assert await asyncio.to_thread(main, ["health", "--port", port, "--ready"]) == 1
        assert capsys.readouterr().out.splitlines() == ["tester: unavailable", "  - starting"]
    finally:
        await server.stop()
    assert await asyncio.to_thread(main, ["health", "--port", port, "--timeout", "1"]) == 1
    assert "no answer from http://127.0.0.1:" in capsys.readouterr().err

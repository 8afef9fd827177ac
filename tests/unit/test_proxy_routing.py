"""Routing writes to the owner of a vchannel: call_owner's retry rules and the SessionRouter's
view of channel records and sessions in the meta store."""

from __future__ import annotations

import asyncio

import pytest

from cluster.coordinator.channels import ChannelRecord, ChannelState, channel_key
from cluster.coordinator.sessions import SessionInfo, session_key
from cluster.proxy.discovery import SessionRouter
from cluster.proxy.routing import ChannelUnassigned, MappingRouter, call_owner
from cluster.rpc.errors import Unreachable
from cluster.streaming.errors import ChannelFenced, ChannelNotOwned, NodeClosed
from woodpecker.clock import RealClock
from woodpecker.errors import Unavailable
from woodpecker.meta import open_meta_store

VCH = "canopy-dml_1_7v0"


class Refusing:
    def __init__(self, error: Exception | None, name: str = "") -> None:
        self.error = error
        self.name = name
        self.calls = 0
        self.closed = False

    async def insert(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.name

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "refusal",
    [ChannelNotOwned("moved"), ChannelFenced("fenced"), NodeClosed("closing")],
)
async def test_call_owner_retries_a_refusal_at_the_new_owner(refusal: Exception) -> None:
    old, new = Refusing(refusal, "old"), Refusing(None, "new")
    router = MappingRouter({VCH: old}, retry_for=5.0)

    async def move_later() -> None:
        await asyncio.sleep(0.12)
        router.routes[VCH] = new

    mover = asyncio.ensure_future(move_later())
    assert await call_owner(router, VCH, lambda s: s.insert()) == "new"
    await mover
    assert old.calls >= 2 and new.calls == 1


async def test_call_owner_waits_for_an_unassigned_channel() -> None:
    router = MappingRouter({}, retry_for=5.0)
    late = Refusing(None, "late")
    asyncio.get_running_loop().call_later(0.1, router.routes.__setitem__, VCH, late)
    assert await call_owner(router, VCH, lambda s: s.insert()) == "late"


async def test_call_owner_gives_up_after_retry_for() -> None:
    router = MappingRouter({VCH: Refusing(ChannelNotOwned("moved"))}, retry_for=0.2)
    with pytest.raises(ChannelNotOwned):
        await call_owner(router, VCH, lambda s: s.insert())
    with pytest.raises(ChannelUnassigned):
        await call_owner(MappingRouter({}, retry_for=0.0), VCH, lambda s: s.insert())


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("connection lost", outcome_unknown=True),  # it may have been applied
        Unavailable("WAL store down"),  # the node's storage failed: report, do not spin
    ],
)
async def test_call_owner_never_retries_other_failures(error: Exception) -> None:
    node = Refusing(error)
    with pytest.raises(Unavailable):
        await call_owner(MappingRouter({VCH: node}, retry_for=5.0), VCH, lambda s: s.insert())
    assert node.calls == 1  # only the client may decide


async def test_call_owner_retries_a_call_that_never_left() -> None:
    dead = Refusing(Unreachable("failed to connect"))
    router = MappingRouter({VCH: dead}, retry_for=5.0)
    asyncio.get_running_loop().call_later(0.1, router.routes.__setitem__, VCH, Refusing(None, "b"))
    assert await call_owner(router, VCH, lambda s: s.insert()) == "b"
    assert dead.calls >= 2


def _session(node_id: int, address: str) -> bytes:
    return SessionInfo(node_id, "streaming", address, 0.0, "test").encode()


def _owned_by(node_id: int | None, state: ChannelState = ChannelState.ASSIGNED) -> bytes:
    return ChannelRecord(node_id, 1, state).encode()


async def test_session_router_follows_channels_and_sessions() -> None:
    meta = open_meta_store("memory://")
    connected: dict[str, Refusing] = {}

    def connect(address: str) -> Refusing:
        connected[address] = Refusing(None, address)
        return connected[address]

    await meta.put(session_key("streaming", 1), _session(1, "127.0.0.1:1001"))
    await meta.put(channel_key("canopy-dml_1"), _owned_by(1))
    await meta.put(channel_key("canopy-dml_2"), _owned_by(None, ChannelState.UNASSIGNED))
    router = SessionRouter(meta, RealClock(), connect=connect)  # type: ignore[arg-type]
    await router.start()
    try:
        first = await router.service_for(VCH)
        assert first is connected["127.0.0.1:1001"]
        assert await router.service_for("canopy-dml_1_8v1") is first  # one client per node
        with pytest.raises(ChannelUnassigned):
            await router.service_for("canopy-dml_2_7v1")
        assert router.unserved() == ["canopy-dml_2"]

        # node 2 joins and takes canopy-dml_1 over; node 1's session ends
        refresh = asyncio.ensure_future(router.refresh(VCH, first))
        await meta.put(session_key("streaming", 2), _session(2, "127.0.0.1:1002"))
        await asyncio.wait_for(refresh, 2.0)
        await meta.put(channel_key("canopy-dml_1"), _owned_by(2))
        await meta.put(channel_key("canopy-dml_2"), _owned_by(2))
        await meta.delete(session_key("streaming", 1))
        for _ in range(100):
            if router.unserved() == [] and "127.0.0.1:1001" not in router._address.values():
                break
            await asyncio.sleep(0.01)
        assert (await router.service_for(VCH)).name == "127.0.0.1:1002"
        assert router.unserved() == []
        await asyncio.sleep(0.01)
        assert first.closed  # the departed node's client was closed
    finally:
        await router.close()
        await meta.close()

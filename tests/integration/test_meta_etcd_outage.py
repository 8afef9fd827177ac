"""The etcd MetaStore across an etcd restart: calls fail with ``Unavailable`` while it is down,
a watch resumes where it stopped (nothing lost, nothing repeated), and a kept-alive lease
survives an outage shorter than its ttl."""

from __future__ import annotations

import asyncio

import pytest
from polling import until

from cluster.coordinator.sessions import STREAMING, NodeSession
from integration.services import start_etcd, stop
from woodpecker.clock import RealClock
from woodpecker.errors import Unavailable
from woodpecker.meta import EventType, open_meta_store

pytestmark = pytest.mark.integration


async def test_etcd_restart_resumes_watch_and_keeps_lease(tmp_path) -> None:
    etcd = await asyncio.to_thread(start_etcd, tmp_path)
    store = open_meta_store(etcd.uri("outage"))
    try:
        lease = await store.grant_lease(6)
        lease.start_keepalive()
        await store.put("session", b"me", lease=lease.id)
        async with store.watch("w/") as watch:
            before = await store.put("w/before", b"1")
            assert (await asyncio.wait_for(watch.__anext__(), 5)).revision == before

            await asyncio.to_thread(stop, etcd)
            with pytest.raises(Unavailable):
                await store.put("w/while-down", b"x")
            etcd = await asyncio.to_thread(
                start_etcd, tmp_path, port=etcd.port, peer_port=etcd.peer_port
            )

            writer = open_meta_store(etcd.uri("outage"))
            # gRPC shares subchannels between channels to one target: the writer's first call
            # may still see the connection failure cached while etcd was down (refused, so not
            # applied). Retry that one until the restarted etcd answers.
            first: list[int] = []

            async def first_put_lands() -> bool:
                try:
                    first.append(await writer.put("w/after0", b"2"))
                except Unavailable:
                    return False
                return True

            await until(first_put_lands, within=15, interval=0.2)
            revs = first + [await writer.put(f"w/after{i}", b"2") for i in (1, 2)]
            await writer.close()
            events = [await asyncio.wait_for(watch.__anext__(), 15) for _ in range(3)]
            assert [(e.type, e.key, e.revision) for e in events] == [
                (EventType.PUT, f"w/after{i}", rev) for i, rev in enumerate(revs)
            ]
        await asyncio.sleep(lease.ttl / 2)
        assert lease.alive
        assert (await store.get("session")) is not None
        await lease.revoke()
    finally:
        await store.close()
        await asyncio.to_thread(stop, etcd)


async def test_a_session_outlives_an_etcd_restart_longer_than_its_ttl(tmp_path) -> None:
    """etcd keeps leases across a restart: a node session whose keepalives failed for more
    than its ttl is unconfirmed meanwhile, then confirmed again with its key still there (the
    node keeps its work instead of exiting)."""
    etcd = await asyncio.to_thread(start_etcd, tmp_path)
    store = open_meta_store(etcd.uri("sessions"))
    session = NodeSession(store, STREAMING, address="n:1", clock=RealClock(), ttl=2.0)
    try:
        await session.start()
        await asyncio.to_thread(stop, etcd)
        await until(lambda: not session.confirmed, within=10, interval=0.05)
        await asyncio.sleep(1.0)  # well past the ttl without a keepalive
        assert session.alive
        etcd = await asyncio.to_thread(
            start_etcd, tmp_path, port=etcd.port, peer_port=etcd.peer_port
        )
        await until(lambda: session.confirmed, within=20, interval=0.1)
        assert session.alive
        assert (await store.get(session.key)) is not None
    finally:
        await session.close()
        await store.close()
        await asyncio.to_thread(stop, etcd)

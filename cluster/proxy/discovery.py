"""The proxy's view of the write path in a distributed deployment: which streaming node owns
each physical channel, and where that node listens.

:class:`SessionRouter` mirrors two prefixes of the meta store (with
:class:`~cluster.coordinator.watching.PrefixMirror`: a snapshot, then every change, across watch
reconnects): the channel records ``channels/{pchannel}`` written by the coordinator's channel
manager (owner node id, epoch) and the streaming nodes' leased sessions
``sessions/streaming/{node_id}`` (their gRPC address). A vchannel is routed to the owner of its
pchannel; one :class:`~cluster.rpc.streaming.StreamingClient` per node address is kept and closed
when the node's session goes away.

Routing is advisory: the streaming node checks ownership on every call and answers
``ChannelNotOwned`` when the channel has moved; the caller then asks :meth:`refresh` and retries
(see :func:`cluster.proxy.routing.call_owner`). A channel without a live owner raises
:class:`~cluster.proxy.routing.ChannelUnassigned` (retryable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cluster.coordinator.channels import CHANNELS_PREFIX, ChannelRecord
from cluster.coordinator.sessions import STREAMING, SessionInfo, role_prefix
from cluster.coordinator.watching import Change, PrefixMirror
from cluster.interfaces import StreamingService
from cluster.proxy.routing import ChannelUnassigned
from cluster.rpc.streaming import StreamingClient
from cluster.streaming.routing import pchannel_of
from woodpecker.clock import Clock
from woodpecker.meta.base import KeyValue, MetaStore

__all__ = ["SessionRouter"]

log = logging.getLogger(__name__)

REFRESH_WAIT = 0.5  # seconds refresh() waits for a routing change before letting the caller retry


class SessionRouter:
    """vchannel -> the StreamingService of its pchannel's owner (see the module docstring).
    ``await start()`` returns once both snapshots are read; ``close()`` stops the watches and
    closes the clients. ``retry_for`` is how long callers keep retrying a moved channel."""

    def __init__(
        self,
        meta: MetaStore,
        clock: Clock,
        *,
        retry_for: float = 15.0,
        connect: Callable[[str], StreamingService] = StreamingClient,
    ) -> None:
        self.meta = meta
        self.clock = clock
        self.retry_for = retry_for
        self._connect = connect
        self._channels = PrefixMirror(meta, CHANNELS_PREFIX, clock)
        self._sessions = PrefixMirror(meta, role_prefix(STREAMING), clock)
        self._owner: dict[str, int | None] = {}
        self._address: dict[int, str] = {}
        self._clients: dict[str, StreamingService] = {}
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for key, kv in (await self._channels.start()).items():
            self._set_channel(key, kv)
        for key, kv in (await self._sessions.start()).items():
            self._set_session(key, kv)
        for name, mirror in (("channels", self._channels), ("sessions", self._sessions)):
            self._tasks.append(
                asyncio.get_running_loop().create_task(self._follow(mirror), name=f"router-{name}")
            )
        log.info("router started: %s", self.describe())

    async def _follow(self, mirror: PrefixMirror) -> None:
        async for change in mirror:
            self._apply(mirror, change)

    def _apply(self, mirror: PrefixMirror, change: Change) -> None:
        if mirror is self._channels:
            self._set_channel(change.key, change.new)
        else:
            self._set_session(change.key, change.new)
        self._changed.set()
        self._changed = asyncio.Event()

    def _set_channel(self, key: str, kv: KeyValue | None) -> None:
        channel = key[len(CHANNELS_PREFIX) :]
        if kv is None:
            self._owner.pop(channel, None)
            return
        try:
            self._owner[channel] = ChannelRecord.decode(kv.value).owner
        except (ValueError, KeyError, TypeError) as exc:
            log.error("ignoring undecodable channel record %s: %s", key, exc)

    def _set_session(self, key: str, kv: KeyValue | None) -> None:
        try:
            node_id = int(key.rsplit("/", 1)[1])
        except ValueError:
            return
        if kv is None:
            address = self._address.pop(node_id, None)
            if address is not None and address not in self._address.values():
                client = self._clients.pop(address, None)
                if client is not None:
                    asyncio.get_running_loop().create_task(_close_quietly(client))
            return
        try:
            self._address[node_id] = SessionInfo.decode(kv.value).address
        except (ValueError, KeyError, TypeError) as exc:
            log.error("ignoring undecodable session %s: %s", key, exc)

    # --- StreamingRouter -----------------------------------------------------------------------

    async def service_for(self, vchannel: str) -> StreamingService:
        pchannel = pchannel_of(vchannel)
        node = self._owner.get(pchannel)
        address = self._address.get(node) if node is not None else None
        if address is None:
            raise ChannelUnassigned(vchannel)
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = self._connect(address)
        return client

    async def refresh(self, vchannel: str, stale: StreamingService | None) -> None:
        """Wait (briefly) for the next routing change: the caller saw ``stale`` refuse
        ``vchannel`` or found no owner."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REFRESH_WAIT):
                await self._changed.wait()

    # --- health --------------------------------------------------------------------------------

    def unserved(self) -> list[str]:
        """Physical channels with no live owner right now (empty when all are served)."""
        return sorted(
            ch for ch, node in self._owner.items() if node is None or node not in self._address
        )

    def describe(self) -> str:
        owners = ", ".join(f"{ch}->{node}" for ch, node in sorted(self._owner.items()))
        return f"{len(self._address)} streaming nodes; {owners or 'no channels yet'}"

    async def wait(self) -> None:
        """Until a watch ends by itself (raises its error)."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._channels.close()
        await self._sessions.close()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await _close_quietly(client)


async def _close_quietly(client: StreamingService) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()

"""``AsyncClient``: the asyncio SDK client, on a ``grpc.aio`` channel.

Same constructor, methods and results as :class:`sdk.Client`; every method is awaited. One
client serves many concurrent calls (one channel, HTTP/2 multiplexing). Create it inside the
running event loop that will use it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from pymilvus.grpc_gen import milvus_pb2_grpc

from sdk import _bulk, _rpc
from sdk._api import CHANNEL_OPTIONS, ClientAPI, auth_metadata, target_of
from sdk.errors import CanopyError, Timeout, error_from_rpc


class AsyncClient(ClientAPI):
    """An asyncio client; methods return coroutines."""

    def __init__(
        self,
        uri: str = "http://localhost:19530",
        user: str = "",
        password: str = "",
        db_name: str = "",
        token: str = "",
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._channel = grpc.aio.insecure_channel(target_of(uri), options=CHANNEL_OPTIONS)
        self._stub = milvus_pb2_grpc.MilvusServiceStub(self._channel)
        self._state = _rpc.State(db_name=db_name or "default")
        self._auth = auth_metadata(user, password, token)
        self._timeout = timeout
        self._closed = False

    async def _run(self, op: _rpc.Op, timeout: float | None) -> Any:  # noqa: ASYNC109
        deadline = time.monotonic() + _rpc.resolve_timeout(timeout, self._timeout)
        reply: Any = None
        try:
            step = op.send(None)
            while True:
                try:
                    if isinstance(step, _rpc.Sleep):
                        await _sleep_until(step.seconds, deadline)
                        reply = None
                    else:
                        reply = await self._invoke(step, deadline)
                except CanopyError as err:
                    step = op.throw(err)
                    continue
                step = op.send(reply)
        except StopIteration as done:
            return done.value

    async def _run_bulk(self, ops: list[_rpc.Op], timeout: float | None) -> Any:  # noqa: ASYNC109
        """The slices of one insert, ``_bulk.IN_FLIGHT`` at a time, under one deadline."""
        deadline = time.monotonic() + _rpc.resolve_timeout(timeout, self._timeout)
        slots = asyncio.Semaphore(_bulk.IN_FLIGHT)

        async def run(op: _rpc.Op) -> Any:
            async with slots:
                return await self._run(op, max(deadline - time.monotonic(), 0.001))

        results = await asyncio.gather(*(run(op) for op in ops), return_exceptions=True)
        return _bulk.gather(list(results))

    async def _invoke(self, call: _rpc.Call, deadline: float) -> Any:
        method = getattr(self._stub, call.method)
        metadata = self._state.metadata() + self._auth
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"{call.method}: the call's timeout passed")
            try:
                reply = await method(call.request, timeout=remaining, metadata=metadata)
                return _rpc.check_reply(call, reply)
            except grpc.RpcError as rpc_err:
                err: CanopyError = error_from_rpc(rpc_err)
            except CanopyError as status_err:
                err = status_err
            delay = _rpc.retry_delay(call, err, attempt, deadline - time.monotonic())
            if delay is None:
                raise err
            await asyncio.sleep(delay)
            attempt += 1

    # --- feed (sdk.feed, another module) ---

    def watch(self, collection_name: str, since: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        from sdk import feed

        return feed.watch_async(
            self._channel, collection_name, since=since, db_name=self._db_name, **kwargs
        )

    async def cluster_info(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        from sdk import feed

        return await feed.cluster_info_async(self._channel, timeout=timeout)

    # --- lifecycle ---

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _sleep_until(seconds: float, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Timeout("the call's timeout passed while waiting")
    await asyncio.sleep(min(seconds, remaining))

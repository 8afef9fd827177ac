"""``Client``: the synchronous SDK client, on a blocking ``grpc`` channel.

``Client(uri="http://127.0.0.1:19530", user="", password="", db_name="", token="",
timeout=None)`` opens one channel (``client._channel``) and speaks the Milvus gRPC protocol
through ``pymilvus.grpc_gen`` stubs. Methods and results are those of pymilvus' MilvusClient
(see :mod:`sdk._api`); every RPC carries a deadline (the call's ``timeout``, else the client's,
else ``sdk._rpc.DEFAULT_TIMEOUT``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from pymilvus.grpc_gen import milvus_pb2_grpc

from sdk import _bulk, _rpc
from sdk._api import CHANNEL_OPTIONS, ClientAPI, auth_metadata, target_of
from sdk.errors import CanopyError, Timeout, error_from_rpc


class Client(ClientAPI):
    """A blocking client; safe to share between threads."""

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
        self._channel = grpc.insecure_channel(target_of(uri), options=CHANNEL_OPTIONS)
        self._stub = milvus_pb2_grpc.MilvusServiceStub(self._channel)
        self._state = _rpc.State(db_name=db_name or "default")
        self._auth = auth_metadata(user, password, token)
        self._timeout = timeout
        self._closed = False

    def _run(self, op: _rpc.Op, timeout: float | None) -> Any:
        deadline = time.monotonic() + _rpc.resolve_timeout(timeout, self._timeout)
        reply: Any = None
        try:
            step = op.send(None)
            while True:
                try:
                    if isinstance(step, _rpc.Sleep):
                        _sleep_until(step.seconds, deadline)
                        reply = None
                    else:
                        reply = self._invoke(step, deadline)
                except CanopyError as err:
                    step = op.throw(err)
                    continue
                step = op.send(reply)
        except StopIteration as done:
            return done.value

    def _run_bulk(self, ops: list[_rpc.Op], timeout: float | None) -> Any:
        """The slices of one insert, ``_bulk.IN_FLIGHT`` at a time, under one deadline."""
        deadline = time.monotonic() + _rpc.resolve_timeout(timeout, self._timeout)

        def run(op: _rpc.Op) -> Any:
            return self._run(op, max(deadline - time.monotonic(), 0.001))

        with ThreadPoolExecutor(_bulk.IN_FLIGHT, thread_name_prefix="canopy-insert") as pool:
            futures = [pool.submit(run, op) for op in ops]
        return _bulk.gather([f.exception() or f.result() for f in futures])

    def _invoke(self, call: _rpc.Call, deadline: float) -> Any:
        method = getattr(self._stub, call.method)
        metadata = self._state.metadata() + self._auth
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"{call.method}: the call's timeout passed")
            try:
                reply = method(call.request, timeout=remaining, metadata=metadata)
                return _rpc.check_reply(call, reply)
            except grpc.RpcError as rpc_err:
                err: CanopyError = error_from_rpc(rpc_err)
            except CanopyError as status_err:
                err = status_err
            delay = _rpc.retry_delay(call, err, attempt, deadline - time.monotonic())
            if delay is None:
                raise err
            time.sleep(delay)
            attempt += 1

    # --- feed (sdk.feed, another module) ---

    def watch(self, collection_name: str, since: Any = None, **kwargs: Any) -> Iterator[Any]:
        from sdk import feed

        return feed.watch(
            self._channel, collection_name, since=since, db_name=self._db_name, **kwargs
        )

    def cluster_info(self, timeout: float | None = None) -> Any:
        from sdk import feed

        return feed.cluster_info(self._channel, timeout=timeout)

    # --- lifecycle ---

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sleep_until(seconds: float, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Timeout("the call's timeout passed while waiting")
    time.sleep(min(seconds, remaining))

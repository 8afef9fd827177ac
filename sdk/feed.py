"""The change feed and the admin view over gRPC (``canopy.feed.v1``; contract in the server's
``cluster/FEED.md``). Wire only: this module imports the generated protobuf modules and nothing
else of the cluster.

    for change in watch(channel, "docs", since="now"):
        print(change.op, change.ts, change.rows or change.pks)
        last = change.token                 # resume later with since=last

Guarantee: changes arrive in timestamp order (ties by physical channel and WAL position);
resuming from the token of the last change handled gives exactly the changes after it (no loss,
no duplicate). An acknowledged write is always delivered; a write whose outcome was unknown to
its client may be. A broken stream raises :class:`FeedError` whose ``token`` is the last token
received (from a change or a heartbeat): pass it as ``since`` to carry on, at any proxy.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc

from cluster.proto import feed_pb2, feed_pb2_grpc

__all__ = [
    "Change",
    "FeedError",
    "FeedTruncated",
    "cluster_info",
    "cluster_info_async",
    "watch",
    "watch_async",
]

Op = Literal["insert", "delete", "upsert"]
_OPS: dict[int, Op] = {
    feed_pb2.INSERT: "insert",
    feed_pb2.DELETE: "delete",
    feed_pb2.UPSERT: "upsert",
}
Since = None | int | str


class FeedError(Exception):
    """The watch failed or its stream broke. ``code`` is the gRPC status code; ``token`` the
    last token received (None before any): resume with ``since=token``."""

    def __init__(self, message: str, code: grpc.StatusCode | None, token: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.token = token

    @property
    def retryable(self) -> bool:
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, None)


class FeedTruncated(FeedError):
    """The WAL no longer holds the start (``OUT_OF_RANGE``); the message names the oldest
    available position."""


@dataclass(frozen=True)
class Change:
    """One insert, delete or upsert of ``collection`` at timestamp ``ts``.

    ``rows`` (insert/upsert): the rows as dicts, JSON fields parsed, dynamic fields (``$meta``)
    merged in; ``table`` the same rows as an Arrow table (``pyarrow`` needed). ``pks``
    (delete/upsert): the deleted primary keys. ``token``: resume here to get what follows."""

    op: Op
    ts: int
    collection: str
    partition: str
    pks: list[int] | list[str]
    token: str
    vchannel: str = ""
    num_rows: int = 0
    rows_arrow: bytes = field(default=b"", repr=False)

    @property
    def table(self) -> Any:
        """The rows as a ``pyarrow.Table`` (None for a delete)."""
        if not self.rows_arrow:
            return None
        import pyarrow as pa

        with pa.ipc.open_stream(pa.py_buffer(self.rows_arrow)) as reader:
            return reader.read_all()

    @property
    def rows(self) -> list[dict[str, Any]]:
        table = self.table
        if table is None:
            return []
        import pyarrow as pa

        json_cols = [f.name for f in table.schema if pa.types.is_binary(f.type)]
        out = table.to_pylist()
        for row in out:
            for name in json_cols:
                if row[name] is not None:
                    row[name] = json.loads(row[name])
            meta = row.pop("$meta", None)
            if isinstance(meta, dict):
                row.update(meta)
        return out


def _change(pb: Any, collection: str) -> Change:
    pks = list(pb.int_pks) if pb.int_pks else list(pb.str_pks)
    return Change(
        _OPS[pb.op],
        pb.ts,
        collection,
        pb.partition,
        pks,
        pb.token,
        pb.vchannel,
        pb.num_rows,
        pb.rows_arrow,
    )


def _request(collection: str, since: Since, db_name: str, **kwargs: Any) -> Any:
    request = feed_pb2.WatchRequest(db_name=db_name, collection=collection, **kwargs)
    if since is None or since == "now":
        request.now = True
    elif isinstance(since, bool):
        raise TypeError("since is None, 'now', a timestamp (int) or a resume token (str)")
    elif isinstance(since, int):
        request.since_ts = since
    elif isinstance(since, str):
        request.resume_token = since
    else:
        raise TypeError("since is None, 'now', a timestamp (int) or a resume token (str)")
    return request


def _error(exc: grpc.RpcError, token: str | None) -> FeedError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    kind = FeedTruncated if code is grpc.StatusCode.OUT_OF_RANGE else FeedError
    return kind(f"change feed: {details} ({code.name if code else 'no status'})", code, token)


_WATCH_OPTIONS = ("max_batch_changes", "max_batch_bytes", "heartbeat_interval")


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    unknown = set(kwargs) - {*_WATCH_OPTIONS, "timeout"}
    if unknown:
        raise TypeError(f"unknown watch options {sorted(unknown)}; known: {_WATCH_OPTIONS}")
    return {k: v for k, v in kwargs.items() if k in _WATCH_OPTIONS}, kwargs.get("timeout")


class Watch(Iterator[Change]):
    """The iterator :func:`watch` returns. ``token``: the newest token received (changes and
    heartbeats), None before any; ``close()`` cancels the stream."""

    def __init__(self, stream: Any, collection: str, since: Since) -> None:
        self._stream = stream
        self._collection = collection
        self._batch: list[Change] = []
        self.token: str | None = since if isinstance(since, str) and since != "now" else None
        self.end_reason = ""

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Change:
        while not self._batch:
            try:
                batch = next(self._stream)
            except StopIteration:
                raise
            except grpc.RpcError as exc:
                raise _error(exc, self.token) from None
            self._batch = [_change(c, self._collection) for c in batch.changes]
            if not self._batch:
                self.token = batch.token or self.token
            if batch.end_reason:
                self.end_reason = batch.end_reason
        change = self._batch.pop(0)
        self.token = change.token
        return change

    def close(self) -> None:
        self._stream.cancel()


def watch(
    channel: grpc.Channel,
    collection: str,
    *,
    since: Since = None,
    db_name: str = "default",
    **kwargs: Any,
) -> Watch:
    """The changes of ``collection`` from ``since``: None/"now" (what is written from now on),
    an int timestamp (changes with a larger ts) or a resume token. Options:
    ``max_batch_changes``, ``max_batch_bytes``, ``heartbeat_interval`` (seconds), ``timeout``
    (of the whole stream). Raises :class:`FeedError` (``FeedTruncated``) while iterating."""
    options, timeout = _split(kwargs)
    request = _request(collection, since, db_name, **options)
    stream = feed_pb2_grpc.ChangeFeedStub(channel).Watch(request, timeout=timeout)
    return Watch(stream, collection, since)


class AsyncWatch(AsyncIterator[Change]):
    """The async iterator :func:`watch_async` returns (``token``, ``close()`` as :class:`Watch`)."""

    def __init__(self, stream: Any, collection: str, since: Since) -> None:
        self._stream = stream
        self._collection = collection
        self._batch: list[Change] = []
        self.token: str | None = since if isinstance(since, str) and since != "now" else None
        self.end_reason = ""

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Change:
        while not self._batch:
            try:
                batch = await self._stream.read()
            except grpc.RpcError as exc:
                raise _error(exc, self.token) from None
            if batch is grpc.aio.EOF:
                raise StopAsyncIteration
            self._batch = [_change(c, self._collection) for c in batch.changes]
            if not self._batch:
                self.token = batch.token or self.token
            if batch.end_reason:
                self.end_reason = batch.end_reason
        change = self._batch.pop(0)
        self.token = change.token
        return change

    def close(self) -> None:
        self._stream.cancel()


def watch_async(
    channel: grpc.aio.Channel,
    collection: str,
    *,
    since: Since = None,
    db_name: str = "default",
    **kwargs: Any,
) -> AsyncWatch:
    """:func:`watch` on an asyncio channel: ``async for change in watch_async(...)``."""
    options, timeout = _split(kwargs)
    request = _request(collection, since, db_name, **options)
    stream = feed_pb2_grpc.ChangeFeedStub(channel).Watch(request, timeout=timeout)
    return AsyncWatch(stream, collection, since)


def _info(reply: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def cluster_info(channel: grpc.Channel, timeout: float | None = None) -> dict[str, Any]:
    """Nodes and roles, channel assignments with their WAL figures, and sealed segments per
    collection, as a dict (the fields of ``ClusterInfoReply``; 64-bit integers as ``int``)."""
    try:
        reply = feed_pb2_grpc.AdminStub(channel).ClusterInfo(
            feed_pb2.ClusterInfoRequest(), timeout=timeout
        )
    except grpc.RpcError as exc:
        raise _error(exc, None) from None
    return _ints(_info(reply))


async def cluster_info_async(
    channel: grpc.aio.Channel,
    timeout: float | None = None,  # noqa: ASYNC109 (the gRPC deadline)
) -> dict[str, Any]:
    """:func:`cluster_info` on an asyncio channel."""
    try:
        reply = await feed_pb2_grpc.AdminStub(channel).ClusterInfo(
            feed_pb2.ClusterInfoRequest(), timeout=timeout
        )
    except grpc.RpcError as exc:
        raise _error(exc, None) from None
    return _ints(_info(reply))


_INT_FIELDS = {
    "node_id", "epoch", "service_ts", "writer_epoch", "bytes", "objects", "collection_id",
    "segment_id", "partition_id", "rows",
}  # fmt: skip


def _ints(value: Any) -> Any:
    """JSON mapping renders 64-bit integers as strings: back to ``int``."""
    if isinstance(value, dict):
        return {
            k: int(v) if k in _INT_FIELDS and isinstance(v, str) else _ints(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value

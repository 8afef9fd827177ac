"""The streaming node over gRPC: :class:`StreamingServicer` (server side of the ``Streaming``
service) and :class:`StreamingClient` (a :class:`~cluster.interfaces.StreamingService`).

Contract: a client call has the semantics, results and exceptions of the in-process call
(:class:`~cluster.streaming.node.StreamingNode`); errors are re-raised as the same class
(:mod:`cluster.rpc.errors`). Arrow data travels as Arrow IPC stream bytes (insert rows with their
schema and metadata; delete primary keys as a one-column stream; an upsert's row groups as one
stream, group after group, with each group's partition and row count beside it). ``insert``,
``delete`` and ``upsert`` are never retried: after a transport failure they raise
:class:`~woodpecker.errors.Unavailable` with ``outcome_unknown`` (False only when the call
provably never left this process) and the caller decides. ``flush`` (it returns every segment
not yet flushed, so a repeat is safe), ``flush_state`` and ``drop_collection`` are retried on
transport failures for up to ``retry_for`` seconds; so are the reads, ``search`` and
``query`` (query vectors travel as raw little-endian float32 bytes, template values and search
params as JSON, results as Arrow IPC: the hits with ``$pk``/``$score``/``$ts`` columns before
the output columns, ``topks`` beside them; a query's table carries its ``visible_ts`` in the
schema metadata).

The insert and upsert hot path avoids copies of the rows: the client writes the
``InsertRequest`` / ``UpsertRequest`` wire bytes itself (:func:`encode_insert`,
:func:`encode_upsert`: protobuf header + the IPC stream appended as the ``table`` field, one
copy), and the server splits them without protobuf copying the payload (:func:`split_insert`,
:func:`split_upsert`); the decoded Arrow columns point into the received bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import grpc
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.ipc as ipc

from cluster.interfaces import (
    FlushTicket,
    GrowingQuery,
    GrowingSearch,
    GrowingSearchResult,
    StreamingService,
    WriteAck,
)
from cluster.proto import canopy_pb2 as pb
from cluster.proto import canopy_pb2_grpc as pb_grpc
from cluster.results import PartialResult
from cluster.rpc.server import ServiceClient, handler
from woodpecker.errors import InvalidArgument

__all__ = [
    "SplitRequest",
    "StreamingClient",
    "StreamingServicer",
    "decode_array",
    "decode_query",
    "decode_search",
    "decode_table",
    "decode_upsert_groups",
    "encode_array",
    "encode_insert",
    "encode_query",
    "encode_search",
    "encode_table",
    "encode_upsert",
    "split_insert",
    "split_upsert",
]

Ctx = grpc.aio.ServicerContext

_PK_COLUMN = "pk"
_SERVICE = pb.DESCRIPTOR.services_by_name["Streaming"]
_INSERT_PATH = f"/{_SERVICE.full_name}/Insert"
_UPSERT_PATH = f"/{_SERVICE.full_name}/Upsert"
_TABLE_FIELD = pb.InsertRequest.DESCRIPTOR.fields_by_name["table"].number
assert pb.UpsertRequest.DESCRIPTOR.fields_by_name["table"].number == _TABLE_FIELD


# --- Arrow IPC ------------------------------------------------------------------------------


def _ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def encode_table(table: pa.Table) -> bytes:
    """``table`` as one Arrow IPC stream (schema with metadata, then its record batches)."""
    return _ipc(table).to_pybytes()


def decode_table(data: bytes | memoryview) -> pa.Table:
    """The table of an Arrow IPC stream; its buffers point into ``data`` (no copy)."""
    return ipc.open_stream(pa.py_buffer(data)).read_all()


def encode_array(array: pa.Array | pa.ChunkedArray) -> bytes:
    """A one-column Arrow IPC stream of ``array``."""
    return encode_table(pa.table({_PK_COLUMN: array}))


def decode_array(data: bytes | memoryview) -> pa.Array:
    """The array of :func:`encode_array` (several chunks are concatenated; the usual single
    chunk is returned without a copy)."""
    column = decode_table(data).column(0)
    if column.num_chunks == 1:
        return column.chunk(0)
    if column.num_chunks == 0:
        return pa.array([], type=column.type)
    return pa.concat_arrays(column.chunks)


# --- the insert/upsert hot path: protobuf wire format by hand -------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


_TABLE_TAG = _varint(_TABLE_FIELD << 3 | 2)


def _with_table(head: bytes, table: pa.Table | None) -> bytes:
    """``head`` (a serialized request) plus ``table`` as its length-delimited ``table`` field."""
    if table is None:
        return head
    payload = _ipc(table)
    return b"".join((head, _TABLE_TAG, _varint(payload.size), payload))


def encode_insert(collection_id: int, partition_id: int, vchannel: str, table: pa.Table) -> bytes:
    """A serialized ``InsertRequest``: the small header through protobuf, then the Arrow IPC
    stream of ``table`` appended as the length-delimited ``table`` field (valid protobuf: any
    client may send the same message the ordinary way)."""
    head = pb.InsertRequest(
        collection_id=collection_id, partition_id=partition_id, vchannel=vchannel
    ).SerializeToString()
    return _with_table(head, table)


def encode_upsert(
    collection_id: int,
    vchannel: str,
    inserts: Sequence[tuple[int, pa.Table]],
    delete_pks: pa.Array | pa.ChunkedArray,
    delete_partition_id: int | None,
) -> bytes:
    """A serialized ``UpsertRequest``, built like :func:`encode_insert`: the non-empty groups'
    rows go into one IPC stream (the tables are concatenated; a column missing from some
    group becomes nulls there), their partitions and row counts into the header."""
    groups = [(pid, table) for pid, table in inserts if table.num_rows]
    head = pb.UpsertRequest(
        collection_id=collection_id,
        vchannel=vchannel,
        partition_ids=[pid for pid, _ in groups],
        group_rows=[table.num_rows for _, table in groups],
        delete_pks=encode_array(delete_pks),
    )
    if delete_partition_id is not None:
        head.delete_partition_id = delete_partition_id
    tables = [t for _, t in groups]
    table = None
    if len(tables) == 1:
        table = tables[0]
    elif tables:
        table = pa.concat_tables(tables, promote_options="default")
    return _with_table(head.SerializeToString(), table)


class SplitRequest(NamedTuple):
    """A received ``InsertRequest`` or ``UpsertRequest``: ``header`` without the payload,
    ``table`` a view of the IPC stream inside the received bytes; ``error`` when the bytes did
    not parse."""

    header: Any
    table: memoryview
    error: Exception | None = None


def _split(data: bytes, request: Any) -> SplitRequest:
    """Parse request wire bytes without copying the ``table`` field (its last occurrence wins,
    as in protobuf). Never raises: a parse failure is in ``error``."""
    view = memoryview(data)
    head: list[memoryview] = []
    table = view[0:0]
    pos, end = 0, len(view)
    try:
        while pos < end:
            start = pos
            tag, pos = _read_varint(view, pos)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _, pos = _read_varint(view, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                size, pos = _read_varint(view, pos)
                if field == _TABLE_FIELD:
                    table, pos = view[pos : pos + size], pos + size
                    if pos > end:
                        raise ValueError(f"truncated {request.__name__}")
                    continue
                pos += size
            else:
                raise ValueError(f"unsupported wire type {wire}")
            if pos > end:
                raise ValueError(f"truncated {request.__name__}")
            head.append(view[start:pos])
        return SplitRequest(request.FromString(b"".join(head)), table)
    except Exception as exc:  # IndexError, ValueError, protobuf's DecodeError
        return SplitRequest(request(), view[0:0], exc)


def split_insert(data: bytes) -> SplitRequest:
    """``InsertRequest`` wire bytes split as described in :func:`_split`."""
    return _split(data, pb.InsertRequest)


def split_upsert(data: bytes) -> SplitRequest:
    """``UpsertRequest`` wire bytes split as described in :func:`_split`."""
    return _split(data, pb.UpsertRequest)


def decode_upsert_groups(request: SplitRequest) -> list[tuple[int, pa.Table]]:
    """The ``(partition_id, table)`` groups of a split ``UpsertRequest`` (zero-copy slices of
    its one table); raises :class:`InvalidArgument` when the counts do not fit the table."""
    head: pb.UpsertRequest = request.header
    if len(head.partition_ids) != len(head.group_rows):
        raise InvalidArgument(
            f"upsert: {len(head.partition_ids)} partition ids for {len(head.group_rows)} groups"
        )
    table = decode_table(request.table) if len(request.table) else None
    rows = table.num_rows if table is not None else 0
    if sum(head.group_rows) != rows or any(n <= 0 for n in head.group_rows):
        raise InvalidArgument(f"upsert: groups of {list(head.group_rows)} rows in {rows} rows")
    groups, start = [], 0
    for pid, n in zip(head.partition_ids, head.group_rows, strict=True):
        assert table is not None
        groups.append((pid, table.slice(start, n)))
        start += n
    return groups


def _raw_method(channel: grpc.aio.Channel, path: str) -> grpc.aio.UnaryUnaryMultiCallable:
    """A ``Streaming`` method taking requests already serialized (by :func:`encode_insert` or
    :func:`encode_upsert`)."""
    return channel.unary_unary(
        path, request_serializer=None, response_deserializer=pb.WriteAckReply.FromString
    )


def _insert_method(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    return _raw_method(channel, _INSERT_PATH)


def _upsert_method(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    return _raw_method(channel, _UPSERT_PATH)


# --- conversions ----------------------------------------------------------------------------


def _ack(reply: pb.WriteAckReply) -> WriteAck:
    return WriteAck(timestamp=reply.ack.timestamp, rows=reply.ack.rows)


def _ack_pb(ack: WriteAck) -> pb.WriteAckReply:
    return pb.WriteAckReply(ack=pb.WriteAck(timestamp=ack.timestamp, rows=ack.rows))


def _ticket_pb(ticket: FlushTicket) -> pb.FlushTicket:
    return pb.FlushTicket(
        collection_id=ticket.collection_id,
        segment_ids=list(ticket.segment_ids),
        flush_ts=ticket.flush_ts,
    )


def _ticket(ticket: pb.FlushTicket) -> FlushTicket:
    return FlushTicket(ticket.collection_id, tuple(ticket.segment_ids), ticket.flush_ts)


def _json(values: Mapping[str, Any], what: str) -> str:
    if not values:
        return ""
    try:
        return orjson.dumps(dict(values), option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError as exc:
        raise InvalidArgument(f"{what} must be plain JSON values: {exc}") from None


def _unjson(text: str) -> dict[str, Any]:
    return orjson.loads(text) if text else {}


def encode_search(request: GrowingSearch) -> pb.SearchRequest:
    """A :class:`GrowingSearch` as its ``SearchRequest``."""
    queries = np.ascontiguousarray(request.queries, dtype="<f4")
    if queries.ndim != 2:
        raise InvalidArgument(f"queries must be (nq, dim), got shape {queries.shape}")
    msg = pb.SearchRequest(
        collection_id=request.collection_id,
        vchannels=list(request.vchannels),
        has_partitions=request.partition_ids is not None,
        partition_ids=list(request.partition_ids or ()),
        anns_field=request.anns_field,
        metric=request.metric,
        k=request.k,
        nq=queries.shape[0],
        dim=queries.shape[1],
        queries=queries.tobytes(),
        filter=request.filter,
        template_values_json=_json(request.template_values, "template values"),
        output_fields=list(request.output_fields),
        guarantee_ts=request.guarantee_ts,
        wait_timeout=request.wait_timeout,
        params_json=_json(request.params, "search params"),
    )
    return msg


def decode_search(msg: pb.SearchRequest) -> GrowingSearch:
    """The inverse of :func:`encode_search` (the queries are a view of the message bytes)."""
    if len(msg.queries) != 4 * msg.nq * msg.dim:
        raise InvalidArgument(
            f"search: {len(msg.queries)} bytes of queries for {msg.nq} x {msg.dim} floats"
        )
    queries = np.frombuffer(msg.queries, dtype="<f4").reshape(msg.nq, msg.dim)
    return GrowingSearch(
        collection_id=msg.collection_id,
        vchannels=tuple(msg.vchannels),
        anns_field=msg.anns_field,
        metric=msg.metric,
        k=msg.k,
        queries=queries,
        partition_ids=tuple(msg.partition_ids) if msg.has_partitions else None,
        filter=msg.filter,
        template_values=_unjson(msg.template_values_json),
        output_fields=tuple(msg.output_fields),
        guarantee_ts=msg.guarantee_ts,
        wait_timeout=msg.wait_timeout,
        params=_unjson(msg.params_json),
    )


def encode_query(request: GrowingQuery) -> pb.QueryRequest:
    """A :class:`GrowingQuery` as its ``QueryRequest``."""
    msg = pb.QueryRequest(
        collection_id=request.collection_id,
        vchannels=list(request.vchannels),
        has_partitions=request.partition_ids is not None,
        partition_ids=list(request.partition_ids or ()),
        filter=request.filter,
        template_values_json=_json(request.template_values, "template values"),
        output_fields=list(request.output_fields),
        count=request.count,
        guarantee_ts=request.guarantee_ts,
        wait_timeout=request.wait_timeout,
    )
    if request.limit is not None:
        msg.limit = request.limit
    return msg


def decode_query(msg: pb.QueryRequest) -> GrowingQuery:
    """The inverse of :func:`encode_query`."""
    return GrowingQuery(
        collection_id=msg.collection_id,
        vchannels=tuple(msg.vchannels),
        partition_ids=tuple(msg.partition_ids) if msg.has_partitions else None,
        filter=msg.filter,
        template_values=_unjson(msg.template_values_json),
        output_fields=tuple(msg.output_fields),
        limit=msg.limit if msg.HasField("limit") else None,
        count=msg.count,
        guarantee_ts=msg.guarantee_ts,
        wait_timeout=msg.wait_timeout,
    )


# --- server ---------------------------------------------------------------------------------


class StreamingServicer(pb_grpc.StreamingServicer):
    """Serves ``node`` (started and closed by the caller) as the ``Streaming`` service."""

    def __init__(self, node: StreamingService) -> None:
        self.node = node

    def register(self, server: grpc.aio.Server) -> None:
        """The generated registration, except that Insert and Upsert requests are split by
        :func:`split_insert` / :func:`split_upsert` instead of parsed by protobuf."""
        splitters = {"Insert": split_insert, "Upsert": split_upsert}
        handlers = {}
        for method in _SERVICE.methods:
            request = getattr(pb, method.input_type.name)
            reply = getattr(pb, method.output_type.name)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                getattr(self, method.name),
                request_deserializer=splitters.get(method.name, request.FromString),
                response_serializer=reply.SerializeToString,
            )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers),)
        )

    @handler(pb.WriteAckReply)
    async def Insert(self, request: SplitRequest, context: Ctx):
        if request.error is not None:
            raise request.error
        head = request.header
        table = decode_table(request.table)
        ack = await self.node.insert(head.collection_id, head.partition_id, head.vchannel, table)
        return _ack_pb(ack)

    @handler(pb.WriteAckReply)
    async def Delete(self, request: pb.DeleteRequest, context: Ctx):
        partition_id = request.partition_id if request.HasField("partition_id") else None
        ack = await self.node.delete(
            request.collection_id, partition_id, request.vchannel, decode_array(request.pks)
        )
        return _ack_pb(ack)

    @handler(pb.WriteAckReply)
    async def Upsert(self, request: SplitRequest, context: Ctx):
        if request.error is not None:
            raise request.error
        head: pb.UpsertRequest = request.header
        groups = decode_upsert_groups(request)
        pks = decode_array(head.delete_pks) if head.delete_pks else pa.array([], pa.int64())
        delete_pid = head.delete_partition_id if head.HasField("delete_partition_id") else None
        ack = await self.node.upsert(head.collection_id, head.vchannel, groups, pks, delete_pid)
        return _ack_pb(ack)

    @handler(pb.FlushReply)
    async def Flush(self, request: pb.FlushRequest, context: Ctx):
        ticket = await self.node.flush(request.collection_id, list(request.vchannels))
        return pb.FlushReply(ticket=_ticket_pb(ticket))

    @handler(pb.BoolReply)
    async def FlushState(self, request: pb.FlushStateRequest, context: Ctx):
        return pb.BoolReply(value=await self.node.flush_state(_ticket(request.ticket)))

    @handler(pb.EmptyReply)
    async def DropCollection(self, request: pb.DropChannelsRequest, context: Ctx):
        await self.node.drop_collection(request.collection_id, list(request.vchannels))
        return pb.EmptyReply()

    @handler(pb.SearchReply)
    async def Search(self, request: pb.SearchRequest, context: Ctx):
        result = await self.node.search(decode_search(request))
        hits = result.hits
        return pb.SearchReply(
            topks=hits.topks.tolist(),
            hits=_ipc(hits.to_table()).to_pybytes(),
            visible_ts=result.visible_ts,
        )

    @handler(pb.QueryReply)
    async def Query(self, request: pb.QueryRequest, context: Ctx):
        table = await self.node.query(decode_query(request))
        return pb.QueryReply(table=_ipc(table).to_pybytes())


# --- client ---------------------------------------------------------------------------------


class StreamingClient(ServiceClient):
    """A :class:`~cluster.interfaces.StreamingService` answered by the streaming node at
    ``target`` (``host:port``) over one channel. ``timeout`` bounds each attempt, ``retry_for``
    the retries of flush, flush_state and drop_collection (see the module docstring).
    ``await close()`` (or ``async with``) when done."""

    service = "Streaming"

    def _stub(self) -> pb_grpc.StreamingStub:
        return self._channel.stub(pb_grpc.StreamingStub)

    async def insert(
        self, collection_id: int, partition_id: int, vchannel: str, table: pa.Table
    ) -> WriteAck:
        request = encode_insert(collection_id, partition_id, vchannel, table)
        method = self._channel.stub(_insert_method)
        return _ack(await self._call(method, "Insert", request, retry=False))

    async def delete(
        self, collection_id: int, partition_id: int | None, vchannel: str, pks: pa.Array
    ) -> WriteAck:
        request = pb.DeleteRequest(
            collection_id=collection_id, vchannel=vchannel, pks=encode_array(pks)
        )
        if partition_id is not None:
            request.partition_id = partition_id
        return _ack(await self._call(self._stub().Delete, "Delete", request, retry=False))

    async def upsert(
        self,
        collection_id: int,
        vchannel: str,
        inserts: Sequence[tuple[int, pa.Table]],
        delete_pks: pa.Array,
        delete_partition_id: int | None,
    ) -> WriteAck:
        request = encode_upsert(collection_id, vchannel, inserts, delete_pks, delete_partition_id)
        method = self._channel.stub(_upsert_method)
        return _ack(await self._call(method, "Upsert", request, retry=False))

    async def flush(self, collection_id: int, vchannels: list[str]) -> FlushTicket:
        request = pb.FlushRequest(collection_id=collection_id, vchannels=list(vchannels))
        reply = await self._call(self._stub().Flush, "Flush", request, retry=True)
        return _ticket(reply.ticket)

    async def flush_state(self, ticket: FlushTicket) -> bool:
        request = pb.FlushStateRequest(ticket=_ticket_pb(ticket))
        reply = await self._call(self._stub().FlushState, "FlushState", request, retry=True)
        return bool(reply.value)

    async def drop_collection(self, collection_id: int, vchannels: list[str]) -> None:
        request = pb.DropChannelsRequest(collection_id=collection_id, vchannels=list(vchannels))
        await self._call(self._stub().DropCollection, "DropCollection", request, retry=True)

    async def search(self, request: GrowingSearch) -> GrowingSearchResult:
        msg = encode_search(request)
        reply = await self._call(self._stub().Search, "Search", msg, retry=True)
        hits = PartialResult.from_table(decode_table(reply.hits), reply.topks)
        return GrowingSearchResult(hits, reply.visible_ts)

    async def query(self, request: GrowingQuery) -> pa.Table:
        msg = encode_query(request)
        reply = await self._call(self._stub().Query, "Query", msg, retry=True)
        return decode_table(reply.table)

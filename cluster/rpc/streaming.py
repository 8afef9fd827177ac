"""The streaming node over gRPC: :class:`StreamingServicer` (server side of the ``Streaming``
service) and :class:`StreamingClient` (a :class:`~cluster.interfaces.StreamingService`).

Contract: a client call has the semantics, results and exceptions of the in-process call
(:class:`~cluster.streaming.node.StreamingNode`); errors are re-raised as the same class
(:mod:`cluster.rpc.errors`). Arrow data travels as Arrow IPC stream bytes (insert rows with their
schema and metadata; delete primary keys as a one-column stream). ``insert`` and ``delete`` are
never retried: after a transport failure they raise :class:`~woodpecker.errors.Unavailable` with
``outcome_unknown`` (False only when the call provably never left this process) and the caller
decides. ``flush`` (it returns every segment not yet flushed, so a repeat is safe),
``flush_state`` and ``drop_collection`` are retried on transport failures for up to
``retry_for`` seconds.

The insert hot path avoids copies of the payload: the client writes the ``InsertRequest`` wire
bytes itself (:func:`encode_insert`: protobuf header + the IPC stream appended as the ``table``
field, one copy), and the server splits them without protobuf copying the payload
(:func:`split_insert`); the decoded Arrow columns point into the received bytes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import grpc
import pyarrow as pa
import pyarrow.ipc as ipc

from cluster.interfaces import FlushTicket, StreamingService, WriteAck
from cluster.proto import canopy_pb2 as pb
from cluster.proto import canopy_pb2_grpc as pb_grpc
from cluster.rpc.errors import call
from cluster.rpc.server import MAX_MESSAGE_BYTES, RpcChannel, handler
from woodpecker.clock import Clock, RealClock

__all__ = [
    "InsertParts",
    "StreamingClient",
    "StreamingServicer",
    "decode_array",
    "decode_table",
    "encode_array",
    "encode_insert",
    "encode_table",
    "split_insert",
]

Ctx = grpc.aio.ServicerContext

_PK_COLUMN = "pk"
_SERVICE = pb.DESCRIPTOR.services_by_name["Streaming"]
_INSERT_PATH = f"/{_SERVICE.full_name}/Insert"
_TABLE_FIELD = pb.InsertRequest.DESCRIPTOR.fields_by_name["table"].number


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


# --- the insert hot path: protobuf wire format by hand --------------------------------------


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


def encode_insert(collection_id: int, partition_id: int, vchannel: str, table: pa.Table) -> bytes:
    """A serialized ``InsertRequest``: the small header through protobuf, then the Arrow IPC
    stream of ``table`` appended as the length-delimited ``table`` field (valid protobuf: any
    client may send the same message the ordinary way)."""
    head = pb.InsertRequest(
        collection_id=collection_id, partition_id=partition_id, vchannel=vchannel
    ).SerializeToString()
    payload = _ipc(table)
    return b"".join((head, _TABLE_TAG, _varint(payload.size), payload))


class InsertParts(NamedTuple):
    """A received ``InsertRequest``: ``header`` without the payload, ``table`` a view of the
    IPC stream inside the received bytes; ``error`` when the bytes did not parse."""

    header: pb.InsertRequest
    table: memoryview
    error: Exception | None = None


def split_insert(data: bytes) -> InsertParts:
    """Parse ``InsertRequest`` wire bytes without copying the ``table`` field (its last
    occurrence wins, as in protobuf). Never raises: a parse failure is in ``error``."""
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
                        raise ValueError("truncated InsertRequest")
                    continue
                pos += size
            else:
                raise ValueError(f"unsupported wire type {wire}")
            if pos > end:
                raise ValueError("truncated InsertRequest")
            head.append(view[start:pos])
        return InsertParts(pb.InsertRequest.FromString(b"".join(head)), table)
    except Exception as exc:  # IndexError, ValueError, protobuf's DecodeError
        return InsertParts(pb.InsertRequest(), view[0:0], exc)


def _insert_method(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    """``Streaming/Insert`` taking requests already serialized by :func:`encode_insert`."""
    return channel.unary_unary(
        _INSERT_PATH, request_serializer=None, response_deserializer=pb.WriteAckReply.FromString
    )


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


# --- server ---------------------------------------------------------------------------------


class StreamingServicer(pb_grpc.StreamingServicer):
    """Serves ``node`` (started and closed by the caller) as the ``Streaming`` service."""

    def __init__(self, node: StreamingService) -> None:
        self.node = node

    def register(self, server: grpc.aio.Server) -> None:
        """The generated registration, except that Insert requests are split by
        :func:`split_insert` instead of parsed by protobuf."""
        handlers = {}
        for method in _SERVICE.methods:
            request = getattr(pb, method.input_type.name)
            reply = getattr(pb, method.output_type.name)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                getattr(self, method.name),
                request_deserializer=split_insert
                if method.name == "Insert"
                else request.FromString,
                response_serializer=reply.SerializeToString,
            )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers),)
        )

    @handler(pb.WriteAckReply)
    async def Insert(self, request: InsertParts, context: Ctx):
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


# --- client ---------------------------------------------------------------------------------


class StreamingClient:
    """A :class:`~cluster.interfaces.StreamingService` answered by the streaming node at
    ``target`` (``host:port``) over one channel. ``timeout`` bounds each attempt, ``retry_for``
    the retries of flush, flush_state and drop_collection (see the module docstring).
    ``await close()`` (or ``async with``) when done."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        retry_for: float = 5.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        clock: Clock | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retry_for = retry_for
        self.clock: Clock = clock or RealClock()
        self._channel = RpcChannel(target, max_message_bytes=max_message_bytes)

    async def _call(self, method: Any, name: str, request: object, *, retry: bool) -> Any:
        return await call(
            method,
            request,
            what=f"Streaming/{name} at {self.target}",
            attempt_timeout=self.timeout,
            retry_for=self.retry_for if retry else 0.0,
            clock=self.clock,
        )

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

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> StreamingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""The query node over gRPC: :class:`QueryNodeServicer` (server side of the ``QueryNode``
service) and :class:`QueryNodeClient` (what a streaming node, the shard delegator, calls).

Contract: a client call has the results and exceptions of the in-process call
(:class:`~cluster.query.node.QueryNode`); errors come back as the same class
(:mod:`cluster.rpc.errors`). Requests reuse the streaming node's read encodings
(:func:`~cluster.rpc.streaming.encode_search` / ``encode_query``) plus the shards: per vchannel
the segment ids and the delegator's memory snapshot (buffered deletes as one-column Arrow IPC
streams). Both reads are retried on transport failures for up to ``retry_for`` seconds (0 by
default: the delegator falls back to reading the segments itself instead of waiting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pyarrow as pa

from cluster.interfaces import GrowingQuery, GrowingSearch
from cluster.proto import canopy_pb2 as pb
from cluster.proto import canopy_pb2_grpc as pb_grpc
from cluster.query.node import QueryNode, ShardRead
from cluster.results import PartialResult
from cluster.rpc.server import ServiceClient, handler
from cluster.rpc.streaming import (
    _ipc,
    decode_array,
    decode_query,
    decode_search,
    decode_table,
    encode_array,
    encode_query,
    encode_search,
)
from cluster.streaming.flushing import BufferedDelete
from cluster.streaming.sealed import SealedSnapshot
from woodpecker.message import MessageId

__all__ = ["QueryNodeClient", "QueryNodeServicer", "decode_shards", "encode_shards"]

Ctx = grpc.aio.ServicerContext


def encode_shards(shards: Sequence[ShardRead]) -> list[pb.SealedShard]:
    out = []
    for shard in shards:
        snap = shard.snapshot
        msg = pb.SealedShard(
            vchannel=snap.vchannel,
            segment_ids=list(shard.segment_ids),
            source=snap.source,
            generation=snap.generation,
        )
        for d in snap.deletes:
            entry = msg.deletes.add(
                pks=encode_array(d.pks),
                ts=d.ts,
                wal_segment_id=d.message_id.segment_id,
                wal_entry_id=d.message_id.entry_id,
            )
            if d.partition_id is not None:
                entry.partition_id = d.partition_id
        out.append(msg)
    return out


def decode_shards(collection_id: int, shards: Sequence[pb.SealedShard]) -> list[ShardRead]:
    out = []
    for msg in shards:
        deletes = tuple(
            BufferedDelete(
                collection_id,
                d.partition_id if d.HasField("partition_id") else None,
                msg.vchannel,
                decode_array(d.pks),
                d.ts,
                MessageId(d.wal_segment_id, d.wal_entry_id),
            )
            for d in msg.deletes
        )
        snap = SealedSnapshot(collection_id, msg.vchannel, msg.source, msg.generation, deletes)
        out.append(ShardRead(snap, tuple(msg.segment_ids)))
    return out


class QueryNodeServicer(pb_grpc.QueryNodeServicer):
    """Serves ``node`` (started and closed by the caller) as the ``QueryNode`` service."""

    def __init__(self, node: QueryNode) -> None:
        self.node = node

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_QueryNodeServicer_to_server(self, server)

    @handler(pb.SearchReply)
    async def SearchSealed(self, request: pb.SealedSearchRequest, context: Ctx):
        search = decode_search(request.search)
        shards = decode_shards(search.collection_id, request.shards)
        hits = await self.node.search_sealed(search, request.visible_ts, shards)
        return pb.SearchReply(
            topks=hits.topks.tolist(),
            hits=_ipc(hits.to_table()).to_pybytes(),
            visible_ts=request.visible_ts,
        )

    @handler(pb.QueryReply)
    async def QuerySealed(self, request: pb.SealedQueryRequest, context: Ctx):
        query = decode_query(request.query)
        shards = decode_shards(query.collection_id, request.shards)
        table = await self.node.query_sealed(query, request.visible_ts, shards)
        return pb.QueryReply(table=_ipc(table).to_pybytes())


class QueryNodeClient(ServiceClient):
    """Reads of the query node at ``target`` (``host:port``) over one channel; ``timeout``
    bounds each attempt; reads are retried for ``retry_for`` seconds (default 0: see the module
    docstring). ``await close()`` when done."""

    service = "QueryNode"

    def __init__(self, target: str, *, retry_for: float = 0.0, **kwargs: Any) -> None:
        super().__init__(target, retry_for=retry_for, **kwargs)

    def _stub(self) -> pb_grpc.QueryNodeStub:
        return self._channel.stub(pb_grpc.QueryNodeStub)

    async def search_sealed(
        self, request: GrowingSearch, visible_ts: int, shards: Sequence[ShardRead]
    ) -> PartialResult:
        msg = pb.SealedSearchRequest(
            search=encode_search(request), shards=encode_shards(shards), visible_ts=visible_ts
        )
        reply = await self._call(self._stub().SearchSealed, "SearchSealed", msg, retry=True)
        return PartialResult.from_table(decode_table(reply.hits), reply.topks)

    async def query_sealed(
        self, request: GrowingQuery, visible_ts: int, shards: Sequence[ShardRead]
    ) -> pa.Table:
        msg = pb.SealedQueryRequest(
            query=encode_query(request), shards=encode_shards(shards), visible_ts=visible_ts
        )
        reply = await self._call(self._stub().QuerySealed, "QuerySealed", msg, retry=True)
        return decode_table(reply.table)

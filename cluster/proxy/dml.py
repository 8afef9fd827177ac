"""Write-path handlers of the proxy: Insert, Upsert, Delete, Flush, GetFlushState.

Contract of a write: the request is validated and decoded in full first (nothing is sent when
any row is bad); rows are hashed by primary key to the collection's shards (vchannels, Milvus'
hash functions, :mod:`cluster.milvus.shard`) and, in partition-key mode, by partition key to
the partitions ``_default_0..`` (same hash functions, partition ``i`` = the collection's
``i``-th partition); each vchannel's part goes to the StreamingService that owns it (see
:mod:`cluster.proxy.routing`), all vchannels concurrently; the reply is sent only after every
part is acknowledged by the WAL, with ``timestamp`` = the largest ack timestamp (pymilvus uses
it as the Session-consistency guarantee). If a part fails, the other parts still run to their
end and the first error is answered: as in Milvus, a failed write may be partially applied.

Upsert (Milvus "override" mode): ONE ``StreamingService.upsert`` per vchannel, carrying the
request's primary keys that hash there (deleted in the named partition, or in every partition
when the request names none -- what Milvus does) and the rows that hash there (per partition),
so each vchannel's delete and insert are one WAL message at one timestamp: both or neither are
applied, and a read sees the old row or the new one, never no row. With an auto-id primary key
the rows get new ids, as in Milvus, which may hash to other vchannels than the old keys: such a
vchannel gets an upsert with only keys or only rows. Across vchannels an upsert is as atomic as
an insert (each vchannel's part is; see above).

Delete takes ``<pk> in [..]`` (what ``delete(ids=...)`` sends, see :mod:`cluster.proxy.pk_expr`)
as the keys to delete; any other filter (or a template) is a delete by filter: ``match_keys``
(the proxy's :meth:`~cluster.proxy.query.QueryHandlers.primary_keys`, a query of the primary key
at the request's consistency level, so the collection must be loaded) finds the keys, which are
then deleted like ids, and ``delete_cnt`` is their number. Without ``match_keys`` a filter is
answered with code 3000.

Flush asks every streaming node owning one of the collection's vchannels to seal them and
answers the union of the sealed segment ids with the largest flush timestamp. GetFlushState asks
the same nodes about their own tickets (remembered by this proxy, bounded); for a ticket this
proxy did not issue (another proxy, a restart) it sends the whole ticket to every owner.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pyarrow as pa
from pymilvus.grpc_gen import milvus_pb2, schema_pb2

from cluster.interfaces import CoordinatorService, FlushTicket, StreamingService, WriteAck
from cluster.milvus.columns import RowBatch, decode_insert, encode_ids
from cluster.milvus.shard import hash_pk_to_shard, rows_by_shard
from cluster.milvus.status import (
    MilvusError,
    NotSupportedYet,
    ParameterInvalid,
    SchemaMismatch,
    ok_status,
)
from cluster.proxy.collections import Collection, Collections
from cluster.proxy.pk_expr import parse_pk_list
from cluster.proxy.routing import StreamingRouter, call_owner, gather_all, scatter
from woodpecker.clock import Clock

__all__ = ["DeleteByFilterNotSupported", "DmlHandlers"]

T = TypeVar("T")
MatchKeys = Callable[[milvus_pb2.DeleteRequest, str], Awaitable[np.ndarray | pa.Array]]


class DeleteByFilterNotSupported(NotSupportedYet):
    """Code 3000: a delete whose filter is not ``<pk> in [..]``."""

    def __init__(self, expr: str) -> None:
        MilvusError.__init__(
            self,
            f"delete by filter arrives with the read path; only '<primary key> in [...]' "
            f"(delete by ids) is supported now, got filter: {expr}",
        )


@dataclass
class _Plan:
    """The writes of one request for one vchannel: run in list order (insert, delete), or as
    one upsert."""

    deletes: list[tuple[int | None, pa.Array]] = field(default_factory=list)
    inserts: list[tuple[int, pa.Table]] = field(default_factory=list)


def _as_arrow(pks: np.ndarray | pa.Array) -> pa.Array:
    return pks if isinstance(pks, pa.Array) else pa.array(pks, pa.int64())


class DmlHandlers:
    """Insert, Upsert, Delete, Flush and GetFlushState. Stateless apart from the schema cache
    and the flush tickets it issued (at most ``max_tickets``)."""

    def __init__(
        self,
        coordinator: CoordinatorService,
        router: StreamingRouter,
        collections: Collections,
        clock: Clock,
        *,
        max_tickets: int = 1024,
        match_keys: MatchKeys | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.router = router
        self.collections = collections
        self.clock = clock
        self.max_tickets = max_tickets
        self.match_keys = match_keys
        self._tickets: OrderedDict[tuple[int, int], list[tuple[StreamingService, FlushTicket]]]
        self._tickets = OrderedDict()

    # --- insert / upsert -----------------------------------------------------------------------

    async def _target(self, db: str, name: str, schema_ts: int) -> Collection:
        coll = await self.collections.get(db, name)
        if schema_ts and schema_ts != coll.info.update_ts:
            raise SchemaMismatch(coll.info.name)
        return coll

    async def _auto_ids(self, batch: RowBatch) -> RowBatch:
        n = batch.num_rows
        first = await self.coordinator.allocate_ids(n)
        return batch.with_auto_ids(np.arange(first, first + n, dtype=np.int64))

    async def insert(self, req: milvus_pb2.InsertRequest, db: str) -> milvus_pb2.MutationResult:
        coll = await self._target(db, req.collection_name, req.schema_timestamp)
        partition = coll.write_partition(req.partition_name)
        batch = decode_insert(req.fields_data, req.num_rows, coll.schema)
        if not batch.has_pks:
            batch = await self._auto_ids(batch)
        plans: dict[str, _Plan] = {}
        self._plan_inserts(coll, batch, partition.partition_id if partition else None, plans)
        ts = await self._execute(coll, plans)
        n = batch.num_rows
        return milvus_pb2.MutationResult(
            status=ok_status(),
            IDs=encode_ids(batch.pks()),
            succ_index=range(n),
            insert_cnt=n,
            timestamp=ts,
        )

    async def upsert(self, req: milvus_pb2.UpsertRequest, db: str) -> milvus_pb2.MutationResult:
        if req.partial_update:
            raise NotSupportedYet("upsert with partial_update (merge mode)")
        coll = await self._target(db, req.collection_name, req.schema_timestamp)
        partition = coll.write_partition(req.partition_name)
        batch = decode_insert(req.fields_data, req.num_rows, coll.schema, upsert=True)
        old_pks = batch.pks()
        pk = coll.schema.primary_field
        if pk.auto_id:  # Milvus: the rows get new ids, the given keys are deleted
            batch = await self._auto_ids(RowBatch(batch.schema, batch.table.drop_columns(pk.name)))
        pid = partition.partition_id if partition else None
        # Milvus: the old keys are deleted in the named partition, else wherever they are
        delete_pid = pid if req.partition_name else None
        plans: dict[str, _Plan] = {}
        self._plan_deletes(coll, old_pks, delete_pid, plans)
        self._plan_inserts(coll, batch, pid, plans)
        ts = await self._execute_upserts(coll, plans, delete_pid, _as_arrow(old_pks).slice(0, 0))
        n = batch.num_rows
        return milvus_pb2.MutationResult(
            status=ok_status(),
            IDs=encode_ids(batch.pks()),
            succ_index=range(n),
            insert_cnt=n,
            upsert_cnt=n,
            timestamp=ts,
        )

    def _plan_inserts(
        self, coll: Collection, batch: RowBatch, partition_id: int | None, plans: dict[str, _Plan]
    ) -> None:
        info = coll.info
        num_shards = len(info.vchannels)
        shards = hash_pk_to_shard(batch.pks(), num_shards)
        key_field = coll.partition_key
        if partition_id is None:
            if key_field is None:
                raise ValueError("a write needs a partition unless the collection has a key")
            parts = hash_pk_to_shard(batch.column(key_field.name), len(info.partitions))
            groups = shards * len(info.partitions) + parts
            num_groups = num_shards * len(info.partitions)
        else:
            groups, num_groups = shards, num_shards
        for group, rows in enumerate(rows_by_shard(groups, num_groups)):
            if not len(rows):
                continue
            if partition_id is None:
                shard, part = divmod(group, len(info.partitions))
                pid = info.partitions[part].partition_id
            else:
                shard, pid = group, partition_id
            plan = plans.setdefault(info.vchannels[shard], _Plan())
            plan.inserts.append((pid, batch.take(rows).table))

    def _plan_deletes(
        self,
        coll: Collection,
        pks: np.ndarray | pa.Array,
        partition_id: int | None,
        plans: dict[str, _Plan],
    ) -> None:
        vchannels = coll.info.vchannels
        shards = hash_pk_to_shard(pks, len(vchannels))
        arrow = _as_arrow(pks)
        for shard, rows in enumerate(rows_by_shard(shards, len(vchannels))):
            if len(rows):
                plan = plans.setdefault(vchannels[shard], _Plan())
                plan.deletes.append((partition_id, arrow.take(pa.array(rows))))

    async def _execute(self, coll: Collection, plans: dict[str, _Plan]) -> int:
        """Run every vchannel's plan (deletes, then inserts) concurrently; the largest ack ts."""
        cid = coll.info.collection_id

        async def run(vchannel: str, plan: _Plan) -> list[WriteAck]:
            # In order, each at the vchannel's current owner (a moved channel is retried there).
            acks = []
            for pid, pks in plan.deletes:
                acks.append(
                    await call_owner(
                        self.router, vchannel, lambda s, p=pid, k=pks: s.delete(cid, p, vchannel, k)
                    )
                )
            for pid, table in plan.inserts:
                acks.append(
                    await call_owner(
                        self.router,
                        vchannel,
                        lambda s, p=pid, t=table: s.insert(cid, p, vchannel, t),
                    )
                )
            return acks

        results = await gather_all([run(v, p) for v, p in plans.items()])
        return max((ack.timestamp for acks in results for ack in acks), default=0)

    async def _execute_upserts(
        self, coll: Collection, plans: dict[str, _Plan], delete_pid: int | None, no_keys: pa.Array
    ) -> int:
        """Send each vchannel's plan as ONE upsert (its keys, ``no_keys`` when it has none, and
        its row groups), all vchannels concurrently; the largest ack ts."""
        cid = coll.info.collection_id

        async def run(vchannel: str, plan: _Plan) -> WriteAck:
            keys = [k for _, k in plan.deletes]
            pks = pa.concat_arrays(keys) if len(keys) > 1 else keys[0] if keys else no_keys
            return await call_owner(
                self.router,
                vchannel,
                lambda s: s.upsert(cid, vchannel, plan.inserts, pks, delete_pid),
            )

        acks = await gather_all([run(v, p) for v, p in plans.items()])
        return max((ack.timestamp for ack in acks), default=0)

    # --- delete --------------------------------------------------------------------------------

    async def delete(self, req: milvus_pb2.DeleteRequest, db: str) -> milvus_pb2.MutationResult:
        coll = await self.collections.get(db, req.collection_name)
        expr = req.expr.strip()
        if not expr:
            raise ParameterInvalid("expr cannot be empty")
        pk = coll.schema.primary_field
        pks = None if len(req.expr_template_values) else parse_pk_list(expr, pk)
        if pks is None:
            if self.match_keys is None:
                raise DeleteByFilterNotSupported(expr)
            pks = await self.match_keys(req, db)
        partition_id: int | None = None
        if req.partition_name:
            partition = coll.write_partition(req.partition_name)
            partition_id = partition.partition_id if partition else None
        plans: dict[str, _Plan] = {}
        if len(pks):
            self._plan_deletes(coll, pks, partition_id, plans)
        ts = await self._execute(coll, plans)
        if not ts:  # nothing to delete: still answer a timestamp the client can read at
            ts = await self.coordinator.allocate_timestamp()
        return milvus_pb2.MutationResult(
            status=ok_status(), IDs=schema_pb2.IDs(), delete_cnt=len(pks), timestamp=ts
        )

    # --- flush ---------------------------------------------------------------------------------

    async def flush(self, req: milvus_pb2.FlushRequest, db: str) -> milvus_pb2.FlushResponse:
        reply = milvus_pb2.FlushResponse(status=ok_status(), db_name=db)
        for name in req.collection_names:
            coll = await self.collections.get(db, name)
            cid = coll.info.collection_id
            issued = await self._flush_all(cid, coll.info.vchannels)
            flush_ts = max((t.flush_ts for _, t in issued), default=0)
            if not flush_ts:
                flush_ts = await self.coordinator.allocate_timestamp()
            segments = sorted({s for _, t in issued for s in t.segment_ids})
            self._remember((cid, flush_ts), issued)
            reply.coll_segIDs[name].data.extend(segments)
            reply.flush_coll_segIDs[name].data.extend([])
            reply.coll_flush_ts[name] = flush_ts
            reply.coll_seal_times[name] = int(self.clock.now())
        return reply

    def _remember(
        self, key: tuple[int, int], tickets: list[tuple[StreamingService, FlushTicket]]
    ) -> None:
        self._tickets[key] = tickets
        self._tickets.move_to_end(key)
        while len(self._tickets) > self.max_tickets:
            self._tickets.popitem(last=False)

    async def get_flush_state(
        self, req: milvus_pb2.GetFlushStateRequest, db: str
    ) -> milvus_pb2.GetFlushStateResponse:
        coll = await self.collections.get(db, req.collection_name)
        cid = coll.info.collection_id
        if not req.segmentIDs:
            return milvus_pb2.GetFlushStateResponse(status=ok_status(), flushed=True)
        issued = self._tickets.get((cid, req.flush_ts))
        if issued is None:
            # Another proxy issued the flush (or this one forgot it): every owner decides for
            # the whole ticket (segments it does not know are looked up in the registry).
            whole = FlushTicket(cid, tuple(req.segmentIDs), req.flush_ts)
            states = await gather_all(
                [
                    call_owner(self.router, v, lambda s: s.flush_state(whole))
                    for v in coll.info.vchannels
                ]
            )
        else:
            states = await gather_all([s.flush_state(t) for s, t in issued])
        return milvus_pb2.GetFlushStateResponse(status=ok_status(), flushed=all(states))

    async def _flush_all(
        self, collection_id: int, vchannels: Sequence[str]
    ) -> list[tuple[StreamingService, FlushTicket]]:
        """Flush every vchannel, one call per owning node (see ``routing.scatter``):
        (owner, ticket) pairs."""

        async def flush(
            service: StreamingService, vcs: tuple[str, ...]
        ) -> tuple[StreamingService, FlushTicket]:
            return service, await service.flush(collection_id, list(vcs))

        return await scatter(self.router, vchannels, flush)

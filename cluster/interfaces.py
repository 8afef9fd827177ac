"""Service interfaces between cluster roles.

Roles talk only through these Protocols. Each has an in-process implementation (used by
``canopy standalone``) and, later, a gRPC client/server pair (used when roles run as separate
processes). Arguments and results are plain data (ids, Arrow tables, dataclasses) so both
implementations carry the same contract.

Errors are ``woodpecker.errors.CanopyError`` subclasses (e.g. ``cluster.milvus.status.MilvusError``
or the coordinator's typed errors); the proxy maps them to a Milvus status in one place
(``cluster.milvus.status.status_for``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from cluster.coordinator.records import CollectionInfo


@dataclass(frozen=True)
class WriteAck:
    """A write is acknowledged only after its WAL append is durable.

    ``timestamp`` is the hybrid TSO timestamp stamped on the write (the MVCC version and the
    client's Session-consistency guarantee); ``rows`` how many rows it covered."""

    timestamp: int
    rows: int


@dataclass(frozen=True)
class FlushTicket:
    """What a flush request sealed: every growing segment of the collection's vchannels that
    held data at ``flush_ts``. ``segment_ids`` may be empty (nothing to flush)."""

    collection_id: int
    segment_ids: tuple[int, ...]
    flush_ts: int


@dataclass(frozen=True)
class SegmentInfo:
    """A sealed segment as the coordinator's registry knows it: written to object storage
    (Parquet + manifest under ``cluster/storage`` layout) by the streaming node that owned
    ``vchannel``. ``state`` is ``"flushed"`` (later: ``"dropped"`` once compacted away)."""

    collection_id: int
    partition_id: int
    segment_id: int
    vchannel: str
    rows: int
    state: str = "flushed"


class CoordinatorService(Protocol):
    """What the other roles ask the coordinator."""

    async def allocate_timestamp(self, count: int = 1) -> int:
        """The first of ``count`` consecutive, strictly increasing hybrid timestamps."""

    async def allocate_ids(self, count: int = 1) -> int:
        """The first of ``count`` consecutive unique int64 ids (row ids, segment ids)."""

    async def describe_collection_by_id(self, collection_id: int) -> CollectionInfo:
        """The catalog record (schema bytes, vchannels, partitions); raises
        ``CollectionNotFound`` for unknown or dropped ids."""

    async def report_flushed_segment(
        self, collection_id: int, partition_id: int, segment_id: int, vchannel: str, rows: int
    ) -> None:
        """A streaming node wrote a sealed segment (Parquet + manifest) to object storage.
        Idempotent: reporting a registered segment again changes nothing."""

    async def list_segments(self, collection_id: int) -> list[SegmentInfo]:
        """The registered sealed segments of the collection, by segment id (empty for an
        unknown collection)."""


class StreamingService(Protocol):
    """What the proxy asks the streaming node that owns a vchannel's physical channel."""

    async def insert(
        self, collection_id: int, partition_id: int, vchannel: str, table: pa.Table
    ) -> WriteAck:
        """Append the rows (user columns, primary keys already assigned) to the channel's WAL,
        stamped with one TSO timestamp; returns after the WAL ack."""

    async def delete(
        self, collection_id: int, partition_id: int | None, vchannel: str, pks: pa.Array
    ) -> WriteAck:
        """Append a delete of these primary keys (in one partition, or all when None)."""

    async def upsert(
        self,
        collection_id: int,
        vchannel: str,
        inserts: Sequence[tuple[int, pa.Table]],
        delete_pks: pa.Array,
        delete_partition_id: int | None,
    ) -> WriteAck:
        """Milvus upsert on one vchannel: delete ``delete_pks`` (in ``delete_partition_id``, or
        every partition when None) and insert the rows of each ``(partition_id, table)`` group
        (as :meth:`insert` takes them), as ONE WAL message stamped with ONE timestamp ``T``.
        Atomic: the delete and the rows become durable, visible and replayed together or not
        at all. The delete hides the keys' versions stamped below ``T``, never the rows the
        upsert writes (stamped ``T``). Either part may be empty (with an auto-id key the new
        rows may hash to other vchannels than the old keys); with neither, nothing is appended.
        ``WriteAck.rows`` counts the inserted rows. Repeating an upsert whose keys cover its
        rows' keys (no auto id) leaves the same visible rows."""

    async def flush(self, collection_id: int, vchannels: list[str]) -> FlushTicket:
        """Seal the collection's growing segments on these vchannels and start writing them to
        object storage."""

    async def flush_state(self, ticket: FlushTicket) -> bool:
        """True once every segment of the ticket is durable in object storage and registered."""

    async def drop_collection(self, collection_id: int, vchannels: list[str]) -> None:
        """Forget the collection's growing data on these vchannels (after a DropCollection)."""

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from cluster.coordinator.index_builds import IndexBuildProgress
from cluster.coordinator.records import CollectionInfo
from cluster.results import PartialResult


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
    ``vchannel``. ``state`` is ``"flushed"``, or ``"dropped"`` once compacted away."""

    collection_id: int
    partition_id: int
    segment_id: int
    vchannel: str
    rows: int
    state: str = "flushed"


DEFAULT_READ_WAIT = 10.0
"""Seconds a read waits, by default, for its guarantee timestamp before it fails."""
VISIBLE_TS_KEY = b"canopy.visible_ts"
"""Schema metadata key of the ``visible_ts`` of a :meth:`StreamingService.query` result."""
COUNT_COLUMN = "count(*)"


@dataclass(frozen=True, eq=False)
class GrowingSearch:
    """An exact top-``k`` search of the growing data of ``collection_id`` on ``vchannels``.

    ``queries`` is a float32 ``(nq, dim)`` array for the FLOAT_VECTOR field ``anns_field``;
    ``metric`` is ``L2``, ``IP`` or ``COSINE`` (scores as in
    :func:`cluster.streaming.search.exact_search`). ``partition_ids`` None means every partition.
    ``filter`` is a Milvus boolean expression (empty: every row) with ``{name}`` placeholders
    bound by ``template_values`` (plain Python values). ``output_fields`` are *stored* column
    names (the dynamic field is ``$meta``) returned for each hit. ``guarantee_ts`` and
    ``wait_timeout``: see :meth:`StreamingService.search`. ``params`` are the index search
    parameters (``ef``, ``nprobe``, ...): growing data is searched exactly and ignores them.
    """

    collection_id: int
    vchannels: tuple[str, ...]
    anns_field: str
    metric: str
    k: int
    queries: np.ndarray
    partition_ids: tuple[int, ...] | None = None
    filter: str = ""
    template_values: Mapping[str, Any] = field(default_factory=dict)
    output_fields: tuple[str, ...] = ()
    guarantee_ts: int = 0
    wait_timeout: float = DEFAULT_READ_WAIT
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class GrowingSearchResult:
    """``hits``: per query the best ``k`` rows (fewer when fewer match), best first, newest
    version per primary key, with ``output_fields`` as ``hits.fields`` (None when none were
    asked for); ``visible_ts``: the timestamp the data was read at."""

    hits: PartialResult
    visible_ts: int


@dataclass(frozen=True, eq=False)
class GrowingQuery:
    """The rows of the growing data of ``collection_id`` on ``vchannels`` that match
    ``filter`` (see :class:`GrowingSearch` for the shared fields).

    ``limit``: at most that many rows, the first ones in primary-key order (None: all). There
    is no offset here: an offset applies to the merged rows of every source, so a proxy asks
    each source for ``offset + limit`` rows and cuts the merged result. ``count``: answer only
    the number of matching rows (one ``count(*)`` int64 column, one row)."""

    collection_id: int
    vchannels: tuple[str, ...]
    partition_ids: tuple[int, ...] | None = None
    filter: str = ""
    template_values: Mapping[str, Any] = field(default_factory=dict)
    output_fields: tuple[str, ...] = ()
    limit: int | None = None
    count: bool = False
    guarantee_ts: int = 0
    wait_timeout: float = DEFAULT_READ_WAIT


def visible_ts_of(table: pa.Table) -> int:
    """The ``visible_ts`` a :meth:`StreamingService.query` result was read at (0 if unset)."""
    raw = (table.schema.metadata or {}).get(VISIBLE_TS_KEY)
    return int(raw) if raw else 0


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

    async def index_build_progress(
        self, collection_id: int, index_id: int, as_of_ts: int = 0
    ) -> IndexBuildProgress:
        """The index's build progress over the collection's flushed segments (Milvus's
        DescribeIndex numbers), its state as of ``as_of_ts`` (0: every segment); see
        :func:`~cluster.coordinator.index_builds.summarize`."""

    async def load_progress(
        self, collection_id: int, partition_ids: Sequence[int] | None = None
    ) -> int:
        """Percent (0-100) of the collection's sealed segments (of ``partition_ids``; None:
        every partition) that a live query node has loaded; 100 when there are none, or no
        query node is live (the streaming nodes serve the segments then)."""


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

    async def search(self, request: GrowingSearch) -> GrowingSearchResult:
        """Exact search of the growing data (every in-memory segment: growing, or sealed and
        not yet flushed) of the request's vchannels, which must all be served here.

        Read timestamp: first wait, for at most ``wait_timeout`` seconds (else
        ``cluster.milvus.status.Timeout``), until every vchannel has applied each write
        stamped at or below ``guarantee_ts`` (0: no wait); ``guarantee_ts`` must be a timestamp
        the oracle has issued. Then the node reads all of them at one ``visible_ts >=
        guarantee_ts`` such that every write stamped at or below it is applied on each: a
        request sees exactly the writes stamped ``<= visible_ts`` (MVCC: a row inserted later,
        a row deleted at or before it, the old version of a row upserted at or before it are
        not seen). ``visible_ts`` is at least the smallest service time of the channels, and
        as large as the largest issued timestamp the node knows of when no write is in flight.

        A bad filter raises ``cluster.expr.ExprError`` (code 1100); an unknown field
        ``FieldNotFound``."""

    async def query(self, request: GrowingQuery) -> pa.Table:
        """The matching rows, read as :meth:`search` reads: the primary-key column, the
        requested columns, and ``_ts`` last, in primary-key order, newest version per key; or
        the count (see :class:`GrowingQuery`). The schema metadata holds the
        ``visible_ts`` (:func:`visible_ts_of`)."""

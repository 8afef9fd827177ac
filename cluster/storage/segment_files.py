"""Sealed segments in object storage: write, manifest updates, list, delete.

The layout and every manifest field are documented in ``cluster/storage/LAYOUT.md``; reading is
in :mod:`cluster.storage.segment_reader`, delete logs in :mod:`cluster.storage.deltas`.

Contracts:

* Data files (insert and delta) are written with ``if_none_match="*"`` and never overwritten;
  the manifest is written last, so its presence means the segment is complete. A PUT that finds
  identical bytes already in place (a retried call) counts as success; different bytes raise
  :class:`SegmentExists`.
* The manifest is the only mutable object. Every change (:func:`append_deltas`,
  :func:`update_manifest`) is a compare-and-swap on its etag, re-read and retried on conflict, so
  concurrent appenders never lose each other's delta files.
* Readers see only what a manifest lists. :func:`list_segments` skips prefixes without a manifest
  (half-written or half-deleted segments); :func:`delete_segment` removes the manifest first.
* Missing or damaged files listed in a manifest raise :class:`SegmentCorrupt`; a missing manifest
  raises :class:`SegmentNotFound`; store errors such as ``Unavailable`` pass through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from cluster.storage.errors import SegmentCorrupt, SegmentExists, SegmentNotFound
from cluster.storage.layout import (
    FORMAT_VERSION,
    STATES,
    ColumnInfo,
    InsertFile,
    SegmentManifest,
    SegmentPath,
    collection_prefix,
    insert_path,
)
from cluster.storage.parquet_io import (
    ROW_ID,
    TS,
    ParquetOptions,
    encode_insert,
    schema_fingerprint,
)
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import InvalidArgument, ObjectNotFound, PreconditionFailed
from woodpecker.objectstore.base import ObjectStore

T = TypeVar("T")
MiB = 1024 * 1024

DEFAULT_MAX_FILE_BYTES = 512 * MiB  # in-memory Arrow bytes buffered before an insert file is cut
FETCH_CONCURRENCY = 8
CAS_ATTEMPTS = 100


async def bounded(calls: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run ``calls`` at most ``limit`` at a time; results in order. On the first failure the
    rest are cancelled and that exception (not an ExceptionGroup) is raised."""
    sem = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await call()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(c)) for c in calls]
    except BaseExceptionGroup as failed:
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]


def _pk_type(t: pa.DataType) -> str | None:
    if pa.types.is_int64(t):
        return "int64"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return None


def pk_arrow_type(pk_type: str) -> pa.DataType:
    return pa.int64() if pk_type == "int64" else pa.string()


def min_max(col: pa.ChunkedArray | pa.Array) -> tuple[Any, Any]:
    mm = pc.min_max(col)
    return mm["min"].as_py(), mm["max"].as_py()


async def _put_new(store: ObjectStore, key: str, data: bytes) -> str:
    """PUT ``data`` unless ``key`` exists and return its etag; identical bytes already there
    (our own earlier attempt) count as success, different ones raise :class:`SegmentExists`."""
    try:
        return (await store.put(key, data, if_none_match="*")).etag
    except PreconditionFailed:
        try:
            info = await store.head(key)
            same = info.size == len(data) and await store.get(key) == data
        except ObjectNotFound:
            same = False
        if not same:
            raise SegmentExists(
                f"{key} already exists; segment files are never overwritten"
            ) from None
        return info.etag


# --- writing -------------------------------------------------------------------------------------


class SegmentWriter:
    """Writes one sealed segment: ``write`` tables (same schema), then ``finish`` or ``abort``.

    Tables carry the collection's fields plus ``_row_id`` (int64) and ``_ts`` (uint64); the pk
    column is int64 or string; none of these three may hold nulls. Buffered rows are cut into a
    new ``insert/{n}.parquet`` whenever they exceed ``max_file_bytes`` (so a segment written in
    one go is one file). ``finish`` writes the manifest and returns it.
    """

    def __init__(
        self,
        store: ObjectStore,
        root: str,
        collection_id: int,
        partition_id: int,
        segment_id: int,
        *,
        channel: str,
        pk_field: str,
        schema_version: int = 0,
        properties: Mapping[str, str] | None = None,
        options: ParquetOptions | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.path = SegmentPath(root, collection_id, partition_id, segment_id)
        self.channel = channel
        self.pk_field = pk_field
        self.schema_version = schema_version
        self.properties = dict(properties or {})
        self.options = options or ParquetOptions()
        self.max_file_bytes = max_file_bytes
        self._clock = clock or RealClock()
        self._schema: pa.Schema | None = None
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
        self._files: list[InsertFile] = []
        self._staged: tuple[InsertFile, bytes] | None = None
        self._written: list[str] = []
        self._manifest: SegmentManifest | None = None

    @property
    def manifest(self) -> SegmentManifest | None:
        """The manifest once ``finish`` has succeeded, else None."""
        return self._manifest

    def _check(self, table: pa.Table) -> None:
        schema = table.schema
        if self._schema is not None:
            if not schema.equals(self._schema):
                raise InvalidArgument(
                    f"segment {self.path.segment_id}: table schema differs from the first "
                    f"table's:\n{schema}\nvs\n{self._schema}"
                )
            return
        names = schema.names
        if len(set(names)) != len(names):
            raise InvalidArgument(f"duplicate column names in {names}")
        expected = {ROW_ID: pa.int64(), TS: pa.uint64()}
        for name, typ in expected.items():
            if name not in names or schema.field(name).type != typ:
                raise InvalidArgument(f"segment tables need a {typ} column {name!r}")
        if self.pk_field not in names:
            raise InvalidArgument(f"pk_field {self.pk_field!r} is not a column of {names}")
        if _pk_type(schema.field(self.pk_field).type) is None:
            raise InvalidArgument(
                f"pk_field {self.pk_field!r} must be int64 or string, "
                f"not {schema.field(self.pk_field).type}"
            )
        self._schema = schema

    async def write(self, table: pa.Table) -> None:
        """Buffer ``table``; upload an insert file once the buffer exceeds ``max_file_bytes``."""
        if self._manifest is not None:
            raise InvalidArgument("segment writer already finished")
        self._check(table)
        for name in (self.pk_field, ROW_ID, TS):
            if table[name].null_count:
                raise InvalidArgument(f"column {name!r} must not contain nulls")
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        if self._pending_bytes >= self.max_file_bytes:
            await self._flush()

    async def _flush(self) -> None:
        """Upload the staged file (left by a failed attempt: same bytes again), then the buffer."""
        while self._staged is not None or self._pending:
            if self._staged is None:
                table = pa.concat_tables(self._pending)
                n = len(self._files)
                data = await asyncio.to_thread(encode_insert, table, self.options, self.pk_field)
                min_ts, max_ts = min_max(table[TS])
                min_pk, max_pk = min_max(table[self.pk_field])
                rgs = -(-table.num_rows // self.options.row_group_rows)
                file = InsertFile(
                    insert_path(n), len(data), table.num_rows, rgs, min_ts, max_ts, min_pk, max_pk
                )
                self._staged = (file, data)
                self._pending, self._pending_bytes = [], 0
            file, data = self._staged
            key = self.path.prefix + file.path
            try:
                await _put_new(self.store, key, data)
            except SegmentExists:
                self._staged = None  # not ours: abort must not delete it
                raise
            self._written.append(key)
            self._files.append(file)
            self._staged = None

    async def finish(self) -> SegmentManifest:
        """Upload buffered rows and the manifest; the segment is visible from then on.

        May be called again after a failure (PUTs of identical bytes are idempotent)."""
        if self._manifest is not None:
            return self._manifest
        await self._flush()
        if not self._files or self._schema is None:
            raise InvalidArgument(f"segment {self.path.segment_id} has no rows")
        files = self._files
        schema = self._schema
        manifest = SegmentManifest(
            collection_id=self.path.collection_id,
            partition_id=self.path.partition_id,
            segment_id=self.path.segment_id,
            channel=self.channel,
            pk_field=self.pk_field,
            pk_type=_pk_type(schema.field(self.pk_field).type) or "",
            row_count=sum(f.rows for f in files),
            min_pk=min(f.min_pk for f in files),
            max_pk=max(f.max_pk for f in files),
            min_ts=min(f.min_ts for f in files),
            max_ts=max(f.max_ts for f in files),
            schema_version=self.schema_version,
            schema_fingerprint=schema_fingerprint(schema),
            columns=tuple(ColumnInfo(f.name, str(f.type)) for f in schema),
            insert_files=tuple(files),
            created_at=self._clock.now(),
            properties=self.properties,
            prefix=self.path.prefix,
        )
        data = manifest.to_json()
        etag = await _put_new(self.store, self.path.manifest_key, data)
        self._manifest = replace(manifest, etag=etag)
        return self._manifest

    async def abort(self) -> None:
        """Delete the insert files this writer uploaded (no manifest was written)."""
        if self._manifest is not None:
            raise InvalidArgument("segment already finished; use delete_segment")
        keys = list(self._written)
        if self._staged is not None:  # its PUT failed: the object may or may not be ours
            file, data = self._staged
            key = self.path.prefix + file.path
            with contextlib.suppress(ObjectNotFound):
                if await self.store.get(key) == data:
                    keys.append(key)
        self._pending, self._pending_bytes, self._staged = [], 0, None
        await bounded([lambda k=k: self.store.delete(k) for k in keys], FETCH_CONCURRENCY)
        self._written.clear()
        self._files.clear()


async def write_segment(
    store: ObjectStore,
    root: str,
    collection_id: int,
    partition_id: int,
    segment_id: int,
    table: pa.Table,
    *,
    channel: str,
    pk_field: str,
    **kwargs: Any,
) -> SegmentManifest:
    """Write ``table`` as one complete segment (one insert file + manifest) and return its
    manifest. ``kwargs`` go to :class:`SegmentWriter`. On failure the data files are removed."""
    writer = SegmentWriter(
        store, root, collection_id, partition_id, segment_id,
        channel=channel, pk_field=pk_field, **kwargs,
    )  # fmt: skip
    try:
        await writer.write(table)
        return await writer.finish()
    except BaseException:
        if writer.manifest is None:
            with contextlib.suppress(Exception):
                await asyncio.shield(writer.abort())
        raise


# --- manifest --------------------------------------------------------------------------------


async def read_manifest_at(store: ObjectStore, path: SegmentPath) -> SegmentManifest:
    key = path.manifest_key
    try:
        # HEAD before GET: the etag may be older than the bytes (a CAS then fails and retries),
        # never newer (which could let a CAS overwrite a change it never saw).
        info = await store.head(key)
        data = await store.get(key)
    except ObjectNotFound:
        raise SegmentNotFound(f"no segment at {path.prefix} (no {key})") from None
    manifest = SegmentManifest.from_json(data, prefix=path.prefix, etag=info.etag)
    _check_ids(manifest, path)
    return manifest


def _check_ids(m: SegmentManifest, path: SegmentPath) -> None:
    ids = (m.collection_id, m.partition_id, m.segment_id)
    if ids != (path.collection_id, path.partition_id, path.segment_id):
        raise SegmentCorrupt(f"manifest at {path.manifest_key} names segment {ids}")


async def read_manifest(
    store: ObjectStore, root: str, collection_id: int, partition_id: int, segment_id: int
) -> SegmentManifest:
    """The segment's manifest (with ``etag``); :class:`SegmentNotFound` if there is none."""
    return await read_manifest_at(store, SegmentPath(root, collection_id, partition_id, segment_id))


async def update_manifest(
    store: ObjectStore,
    root: str,
    collection_id: int,
    partition_id: int,
    segment_id: int,
    mutate: Callable[[SegmentManifest], SegmentManifest | None],
) -> SegmentManifest:
    """Compare-and-swap the manifest: ``mutate(current)`` (pure; may run several times) returns
    the new manifest, or None / an equal one for no change. Returns what is stored after."""
    path = SegmentPath(root, collection_id, partition_id, segment_id)
    for _ in range(CAS_ATTEMPTS):
        current = await read_manifest_at(store, path)
        new = mutate(current)
        if new is None or new == current:
            return current
        new = replace(new, format_version=FORMAT_VERSION, prefix=path.prefix)
        _check_ids(new, path)
        try:
            info = await store.put(path.manifest_key, new.to_json(), if_match=current.etag)
        except PreconditionFailed:
            continue  # someone else changed it (or deleted it): re-read
        return replace(new, etag=info.etag)
    raise PreconditionFailed(
        f"manifest {path.manifest_key}: gave up after {CAS_ATTEMPTS} conflicting updates"
    )


async def set_segment_state(
    store: ObjectStore, root: str, collection_id: int, partition_id: int, segment_id: int,
    state: str,
) -> SegmentManifest:  # fmt: skip
    """Set the manifest's ``state`` (``"flushed"`` or ``"dropped"``) with a CAS update."""
    if state not in STATES:
        raise InvalidArgument(f"state must be one of {STATES}, got {state!r}")
    return await update_manifest(
        store, root, collection_id, partition_id, segment_id, lambda m: replace(m, state=state)
    )


# --- listing and deleting ------------------------------------------------------------------------


async def list_segments(
    store: ObjectStore, root: str, collection_id: int, *, partition_id: int | None = None
) -> list[SegmentManifest]:
    """Manifests of every complete segment of the collection (or of one partition), in every
    state, sorted by (partition_id, segment_id). Prefixes without a manifest are skipped; a
    damaged manifest raises :class:`SegmentCorrupt`. Cost: one LIST page per 1000 objects
    under the prefix, plus one GET per segment."""
    prefix = collection_prefix(root, collection_id)
    if partition_id is not None:
        prefix += f"partitions/{partition_id}/"
    found: list[tuple[SegmentPath, str]] = []
    async for info in store.list(prefix):
        path = SegmentPath.from_manifest_key(root, info.key)
        if path is not None:
            found.append((path, info.etag))

    async def load(path: SegmentPath, etag: str) -> SegmentManifest | None:
        try:
            data = await store.get(path.manifest_key)
        except ObjectNotFound:
            return None  # deleted since the listing
        # The listed etag is never newer than these bytes, so a CAS with it is safe.
        manifest = SegmentManifest.from_json(data, prefix=path.prefix, etag=etag)
        _check_ids(manifest, path)
        return manifest

    loaded = await bounded([lambda p=p, e=e: load(p, e) for p, e in found], 16)
    manifests = [m for m in loaded if m is not None]
    return sorted(manifests, key=lambda m: (m.partition_id, m.segment_id))


async def delete_segment(
    store: ObjectStore, root: str, collection_id: int, partition_id: int, segment_id: int
) -> int:
    """Delete the manifest (readers stop seeing the segment), then every object under the
    segment's prefix (insert, delta and index files). Idempotent; returns objects deleted."""
    path = SegmentPath(root, collection_id, partition_id, segment_id)
    await store.delete(path.manifest_key)
    keys = [info.key async for info in store.list(path.prefix)]
    await bounded([lambda k=k: store.delete(k) for k in keys], 16)
    return len(keys)

"""Index builds of a sealed segment's vector field (the data node's work), and loading them.

Contracts of :func:`build_index`:

* Reads only the field's column (a projected range read of the insert files), builds in a worker
  thread (``asyncio.to_thread``; hnswlib uses every core), serialises with ``save_index`` to a
  temporary file, uploads it (one PUT; the S3 backend splits large bodies into a multipart
  upload) under a content-addressed name, then writes ``index.json`` last. Layout in
  ``cluster/storage/LAYOUT.md`` ("Index builds").
* Idempotent: if ``index.json`` already describes a build with the same build params from the
  same segment data and its files exist, nothing is built and that manifest is returned
  (``force=True`` rebuilds). A rebuild replaces the manifest by compare-and-swap and then deletes
  the files only the old one listed; a reader that loses that race re-reads the manifest.
* ``FLAT`` builds no files: the manifest alone records that the segment is searched exactly.
* ``progress(stage, fraction)`` is called with stages ``read``, ``build``, ``upload``, ``done``
  (from the event loop; ``build`` fractions come from the worker thread via the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from cluster.index.hnsw import ENGINE, HnswGraph, build_graph, vector_matrix
from cluster.index.layout import (
    INDEX_MANIFEST_NAME,
    IndexFile,
    IndexManifest,
    index_manifest_key,
    index_prefix,
    segment_source,
)
from cluster.index.spec import FLAT, HNSW, IndexSpec
from cluster.storage.errors import SegmentCorrupt
from cluster.storage.layout import SegmentManifest, SegmentPath
from cluster.storage.segment_files import CAS_ATTEMPTS
from cluster.storage.segment_reader import SegmentReader
from cluster.streaming.search import Metric
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import InvalidArgument, ObjectNotFound, PreconditionFailed
from woodpecker.objectstore.base import ObjectStore

Progress = Callable[[str, float], None]


async def read_index_manifest(
    store: ObjectStore, segment: SegmentManifest, field_id: int, index_id: int
) -> IndexManifest | None:
    """The segment's build of ``index_id`` on ``field_id``, or None if there is none."""
    key = index_manifest_key(segment, field_id, index_id)
    try:
        info = await store.head(key)
        data = await store.get(key)
    except ObjectNotFound:
        return None
    return IndexManifest.from_json(
        data, prefix=index_prefix(segment, field_id, index_id), etag=info.etag
    )


async def _files_exist(store: ObjectStore, m: IndexManifest) -> bool:
    try:
        sizes = await asyncio.gather(*(store.head(m.key(f.path)) for f in m.files))
    except ObjectNotFound:
        return False
    return all(s.size == f.size for s, f in zip(sizes, m.files, strict=True))


def _reusable(m: IndexManifest | None, spec: IndexSpec, source: dict[str, object]) -> bool:
    return m is not None and m.build_params == spec.build_params() and m.source == source


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def build_index(
    objects: ObjectStore,
    root: str,
    manifest: SegmentManifest,
    spec: IndexSpec,
    *,
    progress: Progress | None = None,
    force: bool = False,
    num_threads: int = -1,
    clock: Clock | None = None,
) -> IndexManifest:
    """Build ``spec`` over ``manifest``'s segment and return the stored index manifest (see the
    module docstring). ``root`` is the segments' root (checked against the manifest's prefix; a
    manifest without one gets it from ``root``). A field that is not a float32 vector column
    raises ``InvalidArgument``."""
    clock = clock or RealClock()
    where = SegmentPath(root, manifest.collection_id, manifest.partition_id, manifest.segment_id)
    if manifest.prefix and manifest.prefix != where.prefix:
        raise InvalidArgument(f"segment prefix {manifest.prefix!r} is not {where.prefix!r}")
    manifest = replace(manifest, prefix=where.prefix)
    if spec.field_name not in manifest.column_names:
        raise InvalidArgument(f"segment {manifest.segment_id} has no field {spec.field_name!r}")
    resolved = spec.resolve(manifest.row_count)
    source = segment_source(manifest)
    prefix = index_prefix(manifest, spec.field_id, spec.index_id)
    report = progress or (lambda stage, fraction: None)

    current = await read_index_manifest(objects, manifest, spec.field_id, spec.index_id)
    if not force and _reusable(current, resolved, source) and await _files_exist(objects, current):
        report("done", 1.0)
        return current  # type: ignore[return-value]

    report("read", 0.0)
    started = time.perf_counter()
    column = (await SegmentReader(objects, manifest).read([spec.field_name]))[spec.field_name]
    vectors = await asyncio.to_thread(vector_matrix, column)
    del column
    rows, dim = vectors.shape
    report("read", 1.0)

    files: tuple[IndexFile, ...] = ()
    if resolved.index_type == HNSW:
        loop = asyncio.get_running_loop()

        def on_build(fraction: float) -> None:
            loop.call_soon_threadsafe(report, "build", fraction)

        files = await _build_and_upload(
            objects, prefix, vectors, resolved, num_threads, on_build, report
        )
    elif resolved.index_type != FLAT:  # pragma: no cover - resolve() returns FLAT or HNSW
        raise InvalidArgument(f"cannot build {resolved.index_type}")
    del vectors

    built = IndexManifest(
        collection_id=manifest.collection_id,
        partition_id=manifest.partition_id,
        segment_id=manifest.segment_id,
        field_id=spec.field_id,
        field_name=spec.field_name,
        index_id=spec.index_id,
        index_type=resolved.index_type,
        requested_type=spec.index_type,
        metric_type=str(spec.metric),
        build_params=resolved.build_params(),
        dim=dim,
        rows=rows,
        source=source,
        files=files,
        engine=ENGINE if resolved.index_type == HNSW else "exact",
        build_seconds=round(time.perf_counter() - started, 3),
        created_at=clock.now(),
        prefix=prefix,
    )
    stored = await _publish(objects, prefix, built, current)
    report("done", 1.0)
    return stored


class BuildCancelled(Exception):
    """Raised inside the build thread to stop a build whose caller was cancelled."""


async def _build_and_upload(
    objects: ObjectStore,
    prefix: str,
    vectors: np.ndarray,
    spec: IndexSpec,
    num_threads: int,
    on_build: Callable[[float], None],
    report: Progress,
) -> tuple[IndexFile, ...]:
    with tempfile.TemporaryDirectory(prefix="canopy-index-") as tmp:
        path = Path(tmp) / "hnsw.bin"

        cancelled = threading.Event()

        def progress(fraction: float) -> None:
            if cancelled.is_set():
                raise BuildCancelled("the index build was cancelled")
            on_build(fraction)

        def build_and_save() -> str:
            graph = build_graph(
                vectors,
                spec.metric,
                spec.m,
                spec.ef_construction,
                num_threads=num_threads,
                progress=progress,
            )
            HnswGraph(graph, spec.metric).save(path)
            del graph
            return _sha256_file(path)

        try:
            digest = await asyncio.to_thread(build_and_save)
        except asyncio.CancelledError:
            # the thread cannot be interrupted: it stops at its next chunk, so a stopping
            # process is not held up for the rest of the build
            cancelled.set()
            raise
        report("upload", 0.0)
        name = f"hnsw-{digest[:16]}.bin"
        data = await asyncio.to_thread(path.read_bytes)
        try:
            await objects.put(prefix + name, data, if_none_match="*")
        except PreconditionFailed:
            pass  # content-addressed: the same name holds the same bytes
        report("upload", 1.0)
        return (IndexFile(name, len(data), digest),)


async def _publish(
    objects: ObjectStore, prefix: str, built: IndexManifest, current: IndexManifest | None
) -> IndexManifest:
    """Write ``index.json`` by CAS over ``current``; on a lost race keep an equivalent winner.
    Then delete the files only the replaced manifest listed (best effort)."""
    key = prefix + INDEX_MANIFEST_NAME
    data = built.to_json()
    for _ in range(CAS_ATTEMPTS):
        try:
            if current is None:
                info = await objects.put(key, data, if_none_match="*")
            else:
                info = await objects.put(key, data, if_match=current.etag)
        except PreconditionFailed:
            winner = await read_index_manifest_at(objects, prefix)
            if winner is not None and (
                winner.build_params == built.build_params and winner.source == built.source
            ):
                await _delete_unlisted(objects, built, winner)
                return winner
            current = winner
            continue
        if current is not None:
            await _delete_unlisted(objects, current, built)
        return replace(built, etag=info.etag)
    raise PreconditionFailed(f"{key}: gave up after {CAS_ATTEMPTS} conflicting updates")


async def read_index_manifest_at(objects: ObjectStore, prefix: str) -> IndexManifest | None:
    """The index manifest under a build ``prefix`` (``IndexManifest.prefix``), or None."""
    try:
        info = await objects.head(prefix + INDEX_MANIFEST_NAME)
        data = await objects.get(prefix + INDEX_MANIFEST_NAME)
    except ObjectNotFound:
        return None
    return IndexManifest.from_json(data, prefix=prefix, etag=info.etag)


async def _delete_unlisted(objects: ObjectStore, old: IndexManifest, new: IndexManifest) -> None:
    keep = {f.path for f in new.files}
    for f in old.files:
        if f.path not in keep:
            with contextlib.suppress(Exception):
                await objects.delete(old.key(f.path))


async def delete_index(
    objects: ObjectStore, segment: SegmentManifest, field_id: int, index_id: int
) -> int:
    """Delete a build: the manifest first (readers stop seeing it), then every object under the
    build prefix. Idempotent; returns objects deleted."""
    prefix = index_prefix(segment, field_id, index_id)
    await objects.delete(prefix + INDEX_MANIFEST_NAME)
    keys = [info.key async for info in objects.list(prefix)]
    for key in keys:
        await objects.delete(key)
    return len(keys)


def load_graph_file(path: str | os.PathLike[str], manifest: IndexManifest) -> HnswGraph:
    """Load the HNSW file of ``manifest`` from a local ``path`` (blocking: use a thread)."""
    graph = HnswGraph.load(path, Metric.parse(manifest.metric_type), manifest.dim)
    if graph.rows != manifest.rows:
        raise SegmentCorrupt(
            f"index {manifest.prefix}: graph has {graph.rows} rows, manifest says {manifest.rows}"
        )
    return graph


async def load_index(
    objects: ObjectStore,
    manifest: IndexManifest,
    *,
    fetch: Callable[[str], object] | None = None,
) -> HnswGraph | None:
    """The searchable graph of ``manifest`` (None for FLAT). Without ``fetch`` the file is
    downloaded from ``objects`` to a temporary file; the query node passes its cache instead
    (``fetch(key)`` returning an async context manager yielding a local path, e.g.
    ``LocalCache.lease``)."""
    if manifest.is_flat:
        return None
    (file,) = manifest.files
    key = manifest.key(file.path)
    if fetch is not None:
        async with fetch(key) as path:  # type: ignore[attr-defined]
            return await asyncio.to_thread(load_graph_file, path, manifest)
    try:
        data = await objects.get(key)
    except ObjectNotFound:
        raise SegmentCorrupt(f"index file {key} listed in its manifest is missing") from None
    with tempfile.TemporaryDirectory(prefix="canopy-index-") as tmp:
        path = Path(tmp) / file.path
        await asyncio.to_thread(path.write_bytes, data)
        del data
        return await asyncio.to_thread(load_graph_file, path, manifest)

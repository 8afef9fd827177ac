"""The sealed-segment storage format: Parquet insert and delta files plus a JSON manifest per
segment in object storage (layout and fields in ``cluster/storage/LAYOUT.md``).

Pure data and ObjectStore I/O; no cluster roles. Entry points: :func:`write_segment` /
:class:`SegmentWriter`, :func:`read_manifest`, :class:`SegmentReader` / :func:`read_segment`,
:func:`append_deltas`, :func:`read_deltas`, :func:`list_segments`, :func:`delete_segment`.
"""

from cluster.storage.deltas import FENCE_PROPERTY, append_deltas, read_deltas
from cluster.storage.errors import (
    SegmentCorrupt,
    SegmentDropped,
    SegmentExists,
    SegmentFenced,
    SegmentNotFound,
)
from cluster.storage.layout import (
    FORMAT_VERSION,
    STATE_DROPPED,
    STATE_FLUSHED,
    ColumnInfo,
    DeltaFile,
    InsertFile,
    SegmentManifest,
    SegmentPath,
)
from cluster.storage.parquet_io import ROW_ID, TS, ParquetOptions, schema_fingerprint
from cluster.storage.segment_files import (
    SegmentWriter,
    delete_segment,
    list_segments,
    read_manifest,
    set_segment_state,
    update_manifest,
    write_segment,
)
from cluster.storage.segment_reader import ReadStats, SegmentReader, read_segment

__all__ = [
    "FENCE_PROPERTY",
    "FORMAT_VERSION",
    "ROW_ID",
    "STATE_DROPPED",
    "STATE_FLUSHED",
    "TS",
    "ColumnInfo",
    "DeltaFile",
    "InsertFile",
    "ParquetOptions",
    "ReadStats",
    "SegmentCorrupt",
    "SegmentDropped",
    "SegmentExists",
    "SegmentFenced",
    "SegmentManifest",
    "SegmentNotFound",
    "SegmentPath",
    "SegmentReader",
    "SegmentWriter",
    "append_deltas",
    "delete_segment",
    "list_segments",
    "read_deltas",
    "read_manifest",
    "read_segment",
    "schema_fingerprint",
    "set_segment_state",
    "update_manifest",
    "write_segment",
]

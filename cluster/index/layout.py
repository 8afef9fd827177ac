"""Object keys and the manifest of one index build (format in ``cluster/storage/LAYOUT.md``,
section "Index builds"). Pure data, no I/O.

A build of index ``index_id`` over field ``field_id`` of a segment lives under the segment's
reserved ``index/{field_id}/{build_id}/`` prefix with ``build_id = index_id`` (one current build
per segment and index, so a reader finds it from the catalog's index id alone):

* ``.../index/{field_id}/{index_id}/{kind}-{sha256[:16]}.bin``: data files, named by content, so
  a key never changes its bytes (the query node's cache relies on that);
* ``.../index/{field_id}/{index_id}/index.json``: the :class:`IndexManifest`, written last.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from cluster.index.spec import FLAT, KINDS
from cluster.storage.errors import SegmentCorrupt
from cluster.storage.layout import SegmentManifest, SegmentPath, index_path

INDEX_FORMAT_VERSION = 1
INDEX_MANIFEST_NAME = "index.json"


def index_prefix(segment: SegmentManifest | SegmentPath, field_id: int, index_id: int) -> str:
    """``{segment prefix}index/{field_id}/{index_id}/``."""
    prefix = segment.prefix
    if not prefix:
        raise SegmentCorrupt("the segment manifest has no prefix (read it from a store first)")
    return prefix + index_path(field_id, index_id)


def index_manifest_key(segment: SegmentManifest | SegmentPath, field_id: int, index_id: int) -> str:
    return index_prefix(segment, field_id, index_id) + INDEX_MANIFEST_NAME


@dataclass(frozen=True, slots=True)
class IndexFile:
    """One data file of a build: ``path`` relative to the build prefix."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class IndexManifest:
    """The content of ``index.json``: what was built, from what, and where the files are.

    ``source`` identifies the segment data the build read (row count, schema fingerprint, insert
    files); a build whose ``build_params`` and ``source`` match a new request is reused.
    ``prefix`` and ``etag`` are not stored (filled in by whoever read or wrote it).
    """

    collection_id: int
    partition_id: int
    segment_id: int
    field_id: int
    field_name: str
    index_id: int
    index_type: str  # concrete: FLAT or HNSW
    requested_type: str  # as in the catalog: FLAT, HNSW or AUTOINDEX
    metric_type: str
    build_params: dict[str, object]
    dim: int
    rows: int
    source: dict[str, object]
    files: tuple[IndexFile, ...]
    engine: str
    build_seconds: float
    created_at: float
    format_version: int = INDEX_FORMAT_VERSION
    prefix: str = field(default="", compare=False)
    etag: str | None = field(default=None, compare=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def key(self, path: str) -> str:
        """Object key of a file listed here."""
        return self.prefix + path

    @property
    def is_flat(self) -> bool:
        return self.index_type == FLAT

    def to_json(self) -> bytes:
        doc = asdict(self)
        del doc["prefix"], doc["etag"]
        ordered = {"format_version": doc.pop("format_version"), **doc}
        return (json.dumps(ordered, indent=1, sort_keys=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, prefix: str = "", etag: str | None = None) -> IndexManifest:
        where = f"index manifest {prefix}{INDEX_MANIFEST_NAME}"
        try:
            doc = json.loads(data)
            version = doc["format_version"]
            if not isinstance(version, int) or version < 1:
                raise ValueError("bad format_version")
            if version > INDEX_FORMAT_VERSION:
                raise SegmentCorrupt(
                    f"{where} has format_version {version}; this reader supports up to "
                    f"{INDEX_FORMAT_VERSION}"
                )
            m = cls(
                **{
                    **doc,
                    "files": tuple(IndexFile(**f) for f in doc["files"]),
                    "prefix": prefix,
                    "etag": etag,
                }
            )
        except SegmentCorrupt:
            raise
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise SegmentCorrupt(f"{where} is malformed: {exc!r}") from None
        if m.index_type not in KINDS or m.rows < 0 or m.dim < 1:
            raise SegmentCorrupt(f"{where} is invalid: {m.index_type=}, {m.rows=}, {m.dim=}")
        if m.index_type != FLAT and not m.files:
            raise SegmentCorrupt(f"{where} lists no files for a {m.index_type} index")
        return m


def segment_source(manifest: SegmentManifest) -> dict[str, object]:
    """What identifies a segment's insert data (immutable once written)."""
    return {
        "row_count": manifest.row_count,
        "schema_fingerprint": manifest.schema_fingerprint,
        "insert_files": [[f.path, f.size] for f in manifest.insert_files],
    }

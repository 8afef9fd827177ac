"""Object keys and the manifest of a sealed segment (format described in ``LAYOUT.md``).

Pure data, no I/O. :class:`SegmentPath` names every object of one segment;
:class:`SegmentManifest` is the manifest's content, with :meth:`SegmentManifest.to_json` /
:meth:`SegmentManifest.from_json` as the only (de)serialisers. ``from_json`` raises
:class:`SegmentCorrupt` for anything it cannot validate, including a newer format version.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace

from cluster.storage.errors import SegmentCorrupt
from woodpecker.errors import InvalidArgument

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

STATE_FLUSHED = "flushed"  # complete and readable
STATE_DROPPED = "dropped"  # superseded (compaction, drop); readers skip it, GC deletes it
STATES = (STATE_FLUSHED, STATE_DROPPED)

PK_TYPES = ("int64", "string")

_MANIFEST_KEY = re.compile(
    r"collections/(\d+)/partitions/(\d+)/segments/(\d+)/" + re.escape(MANIFEST_NAME) + r"$"
)
_NUMBERED = re.compile(r"(?:insert|deltas)/(\d+)\.parquet$")


def _check_id(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative int, got {value!r}")
    return value


def _join(root: str, rest: str) -> str:
    root = root.strip("/")
    return f"{root}/{rest}" if root else rest


def collection_prefix(root: str, collection_id: int) -> str:
    """``{root}/collections/{collection_id}/``: every segment of the collection."""
    return _join(root, f"collections/{_check_id('collection_id', collection_id)}/")


@dataclass(frozen=True, slots=True)
class SegmentPath:
    """Where one segment's objects live: ``{root}/collections/{c}/partitions/{p}/segments/{s}/``."""

    root: str
    collection_id: int
    partition_id: int
    segment_id: int

    def __post_init__(self) -> None:
        _check_id("collection_id", self.collection_id)
        _check_id("partition_id", self.partition_id)
        _check_id("segment_id", self.segment_id)

    @property
    def prefix(self) -> str:
        return collection_prefix(self.root, self.collection_id) + (
            f"partitions/{self.partition_id}/segments/{self.segment_id}/"
        )

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_NAME

    def insert_key(self, n: int) -> str:
        return self.prefix + insert_path(n)

    def delta_key(self, n: int) -> str:
        return self.prefix + delta_path(n)

    def index_prefix(self, field_id: int, build_id: int) -> str:
        """``.../index/{field_id}/{build_id}/``: files of one index build (reserved)."""
        return self.prefix + index_path(field_id, build_id)

    @classmethod
    def from_manifest_key(cls, root: str, key: str) -> SegmentPath | None:
        """The segment whose manifest is ``key``, or None if ``key`` is not a manifest key."""
        prefix = _join(root, "")
        if not key.startswith(prefix):
            return None
        m = _MANIFEST_KEY.fullmatch(key[len(prefix) :])
        if m is None:
            return None
        return cls(root, int(m[1]), int(m[2]), int(m[3]))


def insert_path(n: int) -> str:
    """``insert/{n}.parquet``, relative to the segment prefix."""
    return f"insert/{_check_id('n', n)}.parquet"


def delta_path(n: int) -> str:
    """``deltas/{n}.parquet``, relative to the segment prefix."""
    return f"deltas/{_check_id('n', n)}.parquet"


def index_path(field_id: int, build_id: int) -> str:
    """``index/{field_id}/{build_id}/``, relative to the segment prefix (files of one build)."""
    return f"index/{_check_id('field_id', field_id)}/{_check_id('build_id', build_id)}/"


def file_number(path: str) -> int:
    """``n`` of ``insert/{n}.parquet`` or ``deltas/{n}.parquet``."""
    m = _NUMBERED.fullmatch(path)
    if m is None:
        raise SegmentCorrupt(f"not a numbered segment file path: {path!r}")
    return int(m[1])


# --- manifest --------------------------------------------------------------------------------

Pk = int | str


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A column of the insert files: its name and logical Arrow type (``str(pa.DataType)``)."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class InsertFile:
    """One ``insert/{n}.parquet``: rows ``rows`` with ``_ts`` in [min_ts, max_ts]."""

    path: str
    size: int
    rows: int
    row_groups: int
    min_ts: int
    max_ts: int
    min_pk: Pk
    max_pk: Pk


@dataclass(frozen=True, slots=True)
class DeltaFile:
    """One ``deltas/{n}.parquet``: ``rows`` deletes (pk, _ts) with _ts in [min_ts, max_ts]."""

    path: str
    size: int
    rows: int
    min_ts: int
    max_ts: int


@dataclass(frozen=True, slots=True)
class SegmentManifest:
    """The content of ``manifest.json``. Its presence means the segment is complete.

    ``prefix`` (the segment's key prefix) and ``etag`` (of the manifest object, for
    compare-and-swap updates) are not stored: they are filled in by whoever read or wrote it.
    """

    collection_id: int
    partition_id: int
    segment_id: int
    channel: str
    pk_field: str
    pk_type: str
    row_count: int
    min_pk: Pk
    max_pk: Pk
    min_ts: int
    max_ts: int
    schema_version: int
    schema_fingerprint: str
    columns: tuple[ColumnInfo, ...]
    insert_files: tuple[InsertFile, ...]
    delta_files: tuple[DeltaFile, ...] = ()
    state: str = STATE_FLUSHED
    created_at: float = 0.0
    properties: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    prefix: str = field(default="", compare=False)
    etag: str | None = field(default=None, compare=False)

    @property
    def delete_count(self) -> int:
        """Delete records in the delta files (a pk may be deleted more than once)."""
        return sum(d.rows for d in self.delta_files)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def key(self, path: str) -> str:
        """The object key of a file path listed in this manifest."""
        return self.prefix + path

    def next_delta_number(self) -> int:
        """One above the highest listed delta file number (0 when there is none)."""
        return max((file_number(d.path) for d in self.delta_files), default=-1) + 1

    def with_delta(self, delta: DeltaFile) -> SegmentManifest:
        """This manifest with ``delta`` appended (unchanged if it is already listed)."""
        if any(d.path == delta.path for d in self.delta_files):
            return self
        return replace(self, delta_files=(*self.delta_files, delta))

    def to_json(self) -> bytes:
        doc = asdict(self)
        del doc["prefix"], doc["etag"]
        ordered = {"format_version": doc.pop("format_version"), **doc}
        return (json.dumps(ordered, indent=1, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(
        cls, data: bytes, *, prefix: str = "", etag: str | None = None
    ) -> SegmentManifest:
        where = f"manifest {prefix}{MANIFEST_NAME}"
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SegmentCorrupt(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise SegmentCorrupt(f"{where} is not a JSON object")
        version = doc.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise SegmentCorrupt(f"{where} has no valid format_version")
        if version > FORMAT_VERSION:
            raise SegmentCorrupt(
                f"{where} has format_version {version}; this reader supports up to {FORMAT_VERSION}"
            )
        try:
            manifest = cls(
                **{
                    **doc,
                    "columns": tuple(ColumnInfo(**c) for c in doc["columns"]),
                    "insert_files": tuple(InsertFile(**f) for f in doc["insert_files"]),
                    "delta_files": tuple(DeltaFile(**d) for d in doc.get("delta_files", [])),
                    "properties": dict(doc.get("properties", {})),
                    "prefix": prefix,
                    "etag": etag,
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SegmentCorrupt(f"{where} is malformed: {exc!r}") from None
        _validate(manifest, where)
        return manifest


def _validate(m: SegmentManifest, where: str) -> None:
    problems = []
    if m.state not in STATES:
        problems.append(f"unknown state {m.state!r}")
    if m.pk_type not in PK_TYPES:
        problems.append(f"unknown pk_type {m.pk_type!r}")
    if not m.insert_files:
        problems.append("no insert files")
    if sum(f.rows for f in m.insert_files) != m.row_count:
        problems.append("row_count differs from the sum of insert file rows")
    for name in (m.pk_field, "_row_id", "_ts"):
        if name not in m.column_names:
            problems.append(f"column {name!r} is missing")
    for kind, files in (("insert/", m.insert_files), ("deltas/", m.delta_files)):
        for f in files:
            file_number(f.path)
            if not f.path.startswith(kind) or f.size <= 0 or f.rows <= 0 or f.min_ts > f.max_ts:
                problems.append(f"bad entry for {f.path}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in m.properties.items()):
        problems.append("properties must map strings to strings")
    if problems:
        raise SegmentCorrupt(f"{where} is invalid: " + "; ".join(problems))

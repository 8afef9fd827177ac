"""Unit tests for segment object keys and the manifest model (cluster/storage/layout.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cluster.storage import FORMAT_VERSION, SegmentCorrupt, SegmentManifest, SegmentPath
from cluster.storage.layout import (
    ColumnInfo,
    DeltaFile,
    InsertFile,
    collection_prefix,
    file_number,
)
from woodpecker.errors import InvalidArgument


def manifest(**changes: object) -> SegmentManifest:
    m = SegmentManifest(
        collection_id=7,
        partition_id=8,
        segment_id=9,
        channel="by-dev-rootcoord-dml_0_7v0",
        pk_field="id",
        pk_type="int64",
        row_count=10,
        min_pk=1,
        max_pk=10,
        min_ts=100,
        max_ts=200,
        schema_version=3,
        schema_fingerprint="sha256:abc",
        columns=(
            ColumnInfo("id", "int64"),
            ColumnInfo("_row_id", "int64"),
            ColumnInfo("_ts", "uint64"),
        ),
        insert_files=(InsertFile("insert/0.parquet", 1234, 10, 1, 100, 200, 1, 10),),
        delta_files=(DeltaFile("deltas/0.parquet", 99, 2, 150, 160),),
        created_at=1.5,
        properties={"compacted_from": "1,2"},
        prefix="r/collections/7/partitions/8/segments/9/",
        etag="e1",
    )
    return replace(m, **changes)


def test_paths() -> None:
    p = SegmentPath("root/", 7, 8, 9)
    assert p.prefix == "root/collections/7/partitions/8/segments/9/"
    assert p.manifest_key == p.prefix + "manifest.json"
    assert p.insert_key(0) == p.prefix + "insert/0.parquet"
    assert p.delta_key(12) == p.prefix + "deltas/12.parquet"
    assert p.index_prefix(101, 5) == p.prefix + "index/101/5/"
    assert SegmentPath("", 1, 2, 3).prefix == "collections/1/partitions/2/segments/3/"
    assert collection_prefix("a/b", 4) == "a/b/collections/4/"


@pytest.mark.parametrize("bad", [-1, True, "3", 1.0])
def test_paths_reject_bad_ids(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        SegmentPath("r", 1, 2, bad)  # type: ignore[arg-type]


def test_from_manifest_key() -> None:
    p = SegmentPath("r", 1, 2, 3)
    assert SegmentPath.from_manifest_key("r", p.manifest_key) == p
    assert SegmentPath.from_manifest_key("r", p.insert_key(0)) is None
    assert SegmentPath.from_manifest_key("other", p.manifest_key) is None
    assert SegmentPath.from_manifest_key("r", p.prefix + "x/manifest.json") is None


def test_file_number() -> None:
    assert file_number("insert/0.parquet") == 0
    assert file_number("deltas/17.parquet") == 17
    with pytest.raises(SegmentCorrupt):
        file_number("deltas/x.parquet")


def test_manifest_json_roundtrip_keeps_everything_but_runtime_fields() -> None:
    m = manifest()
    doc = json.loads(m.to_json())
    assert doc["format_version"] == FORMAT_VERSION
    assert "prefix" not in doc and "etag" not in doc
    assert next(iter(doc)) == "format_version"
    back = SegmentManifest.from_json(m.to_json(), prefix=m.prefix, etag="e2")
    assert back == m and back.etag == "e2" and back.prefix == m.prefix
    assert back.delete_count == 2
    assert back.key("insert/0.parquet") == m.prefix + "insert/0.parquet"


def test_string_pks_roundtrip() -> None:
    m = manifest(pk_type="string", min_pk="ä", max_pk="z")
    assert SegmentManifest.from_json(m.to_json()) == m


def test_next_delta_number_and_with_delta() -> None:
    m = manifest(delta_files=())
    assert m.next_delta_number() == 0
    d = DeltaFile("deltas/4.parquet", 10, 1, 1, 1)
    m2 = m.with_delta(d)
    assert m2.next_delta_number() == 5
    assert m2.with_delta(d) is m2  # idempotent


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1, 2]",
        b"{}",
        json.dumps({"format_version": 1}).encode(),
    ],
)
def test_malformed_manifests_are_corrupt(data: bytes) -> None:
    with pytest.raises(SegmentCorrupt):
        SegmentManifest.from_json(data)


def test_newer_format_version_is_refused() -> None:
    doc = json.loads(manifest().to_json())
    doc["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(SegmentCorrupt, match="format_version"):
        SegmentManifest.from_json(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "changes",
    [
        {"state": "growing"},
        {"pk_type": "float"},
        {"row_count": 11},
        {"pk_field": "nope"},
        {"insert_files": ()},
        {"delta_files": (DeltaFile("insert/1.parquet", 9, 1, 1, 1),)},
        {"insert_files": (InsertFile("insert/0.parquet", 0, 10, 1, 100, 200, 1, 10),)},
        {"columns": (ColumnInfo("id", "int64"),)},
    ],
)
def test_invalid_manifests_are_corrupt(changes: dict[str, object]) -> None:
    data = manifest(**changes).to_json()
    with pytest.raises(SegmentCorrupt):
        SegmentManifest.from_json(data)


def test_unknown_field_is_corrupt() -> None:
    doc = json.loads(manifest().to_json())
    doc["surprise"] = 1
    with pytest.raises(SegmentCorrupt):
        SegmentManifest.from_json(json.dumps(doc).encode())

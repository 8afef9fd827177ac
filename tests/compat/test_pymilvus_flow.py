"""The reusable pymilvus MilvusClient flow (``milvus_flow.py``: writes, then index, load and
reads from ``flow_reads.py``) against a real ``canopy standalone`` and a LocalCluster
(``flow_target`` in conftest.py).

The flow runs in-process with the pinned pymilvus (3.x); ``test_pymilvus26.py`` runs the same
script with pymilvus 2.6.x in its own venv and judges it with the same ``check_flow_result``.
Between the flush and the drops, ``snapshot_after_flush`` reads the collection's Parquet
segments and delete logs from the data directory, so the check also covers what was made
durable, not only what the server answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import flow_reads as reads
import grpc
import milvus_flow as flow
import numpy as np
import pymilvus
import pytest
from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc
from standalone_process import read_visible_rows

TSO_LOGICAL_BITS = 18
ROW_COLUMNS = ("id", "vec", "title", "meta", "tags", "$meta")

# name, DataType value, field id, type params
EXPECTED_FIELDS = [
    ("id", 5, 100, {}),
    ("vec", 101, 101, {"dim": flow.DIM}),
    ("title", 21, 102, {"max_length": flow.VARCHAR_MAX}),
    ("meta", 23, 103, {}),
    ("tags", 22, 104, {"max_capacity": flow.ARRAY_CAPACITY}),
]
REQUIRED_STEPS = [
    "connect",
    "cleanup",
    "create_collection",
    "describe_collection",
    "partitions",
    "insert_default",
    "insert_partition",
    "upsert",
    "delete",
    "flush",
    "describe_after_writes",
    "on_flushed",
    "invalid_requests",
    "create_index",
    "load_collection",
    "search",
    "query",
    "get",
    "delete_by_filter",
    "partition_search",
    "query_page",
    "strong_reads",
    "drop_partition",  # p1 is loaded: released first
    "release_partitions",
    "drop_partition",
    "drop_collection",
    "quick_setup",
    "quick_reads",
]
# rows flushed before create_index (inserts + upserts; deletes do not shrink a segment)
FLUSHED_ROWS = (
    len(flow.DEFAULT_IDS)
    + len(flow.PARTITION_IDS)
    + len(flow.UPSERT_CHANGED)
    + len(flow.UPSERT_NEW)
)


@dataclass
class FlushedSnapshot:
    """What object storage held right after the flow's flush."""

    collection_id: int
    partition_ids: dict[str, int]  # partition name -> id
    rows: dict[Any, dict[str, Any]]  # pk -> visible row (see read_visible_rows)


class FlowTarget(Protocol):
    """A Canopy under test: a standalone process or a LocalCluster (see conftest.py)."""

    uri: str  # for MilvusClient
    address: str  # host:port of a Milvus API endpoint
    objects_uri: str  # its object store (segments)


def snapshot_after_flush(target: FlowTarget, event: dict[str, Any]) -> FlushedSnapshot:
    assert event.get("event") == "flushed", event
    collection_id = int(event["collection_id"])
    channel = grpc.insecure_channel(target.address)
    try:
        reply = milvus_pb2_grpc.MilvusServiceStub(channel).ShowPartitions(
            milvus_pb2.ShowPartitionsRequest(collection_name=event["collection"]), timeout=10
        )
    finally:
        channel.close()
    assert reply.status.code == 0, reply.status
    partition_ids = dict(zip(reply.partition_names, reply.partitionIDs, strict=True))
    rows = read_visible_rows(target.objects_uri, collection_id, ROW_COLUMNS)
    return FlushedSnapshot(collection_id, partition_ids, rows)


def _physical_seconds(ts: int) -> float:
    return (ts >> TSO_LOGICAL_BITS) / 1000.0


def check_flow_result(
    result: dict[str, Any], snapshot: FlushedSnapshot | None, pymilvus_prefix: str
) -> None:
    """Everything the flow must observe, whichever pymilvus ran it."""
    fatal = result.get("fatal")
    assert fatal is None, (
        f"flow failed at {fatal['step']}: {fatal['message']}\n{fatal['traceback']}"
    )
    assert result["pymilvus_version"].startswith(pymilvus_prefix), result["pymilvus_version"]
    assert result["steps"] == REQUIRED_STEPS

    # DDL
    assert result["has_collection_before"] is False
    assert result["has_collection_after_create"] is True
    assert result["list_collections_after_create"] == [flow.COLLECTION]
    for key in ("described", "described_after_writes"):
        desc = result[key]
        assert desc["collection_name"] == flow.COLLECTION
        assert desc["enable_dynamic_field"] is True
        assert desc["auto_id"] is False
        assert desc["consistency_level"] == 0  # Strong, as requested
        got = [(f["name"], f["type"], f["field_id"], f["params"]) for f in desc["fields"]]
        assert got == EXPECTED_FIELDS, key
        assert [f["is_primary"] for f in desc["fields"]] == [True, False, False, False, False]
        assert desc["fields"][4]["element_type"] == 5  # ARRAY of INT64
    assert result["described"]["num_partitions"] == 1
    assert result["described_after_writes"]["num_partitions"] == 2
    collection_id = result["described"]["collection_id"]
    assert result["described_after_writes"]["collection_id"] == collection_id
    assert result["list_partitions"] == ["_default", flow.PARTITION]
    assert result["has_partition"] == {flow.PARTITION: True, "nope": False}

    # writes: counts, acknowledged primary keys, timestamps
    m = result["mutations"]
    assert (m["insert_default"]["count"], m["insert_default"]["ids"]) == (100, flow.DEFAULT_IDS)
    assert (m["insert_partition"]["count"], m["insert_partition"]["ids"]) == (
        50,
        flow.PARTITION_IDS,
    )
    upserted = flow.UPSERT_CHANGED + flow.UPSERT_NEW
    assert (m["upsert"]["count"], m["upsert"]["ids"]) == (len(upserted), upserted)
    assert m["delete"]["count"] == len(flow.DELETED)
    stamps = [m[k]["timestamp"] for k in ("insert_default", "insert_partition", "upsert", "delete")]
    assert all(isinstance(ts, int) and ts > 0 for ts in stamps), stamps
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps
    wall = result["wall_clock"]
    for ts in stamps:  # hybrid TSO timestamps: physical milliseconds << 18
        assert wall["started"] - 5 <= _physical_seconds(ts) <= wall["finished"] + 5, ts

    # what the flush made durable
    if snapshot is not None:
        assert snapshot.collection_id == collection_id
        assert set(snapshot.partition_ids) == {"_default", flow.PARTITION}
        expected = flow.expected_rows()
        assert sorted(snapshot.rows) == sorted(expected)
        for pk, (partition, sent) in expected.items():
            row = snapshot.rows[pk]
            assert row["partition_id"] == snapshot.partition_ids[partition], pk
            assert row["title"] == sent["title"], pk
            assert row["tags"] == sent["tags"], pk
            assert json.loads(row["meta"]) == sent["meta"], pk
            assert json.loads(row["$meta"]) == {"extra": sent["extra"]}, pk
            np.testing.assert_array_equal(
                np.asarray(row["vec"], np.float32), np.asarray(sent["vec"], np.float32)
            )

    # invalid requests get Milvus errors, not crashes or silent acceptance
    errors = result["errors"]
    assert errors["unknown_collection"]["raised"] is True
    assert errors["unknown_collection"]["code"] == 100
    assert "collection not found" in errors["unknown_collection"]["message"]
    for key in ("wrong_dimension", "varchar_too_long"):
        assert errors[key]["raised"] is True, (key, errors[key])
        assert errors[key]["code"] not in (None, 0), (key, errors[key])
    assert "dim" in errors["wrong_dimension"]["message"]
    assert "max length" in errors["varchar_too_long"]["message"]

    # drops
    assert result["list_partitions_after_drop"] == ["_default"]
    assert result["has_partition_after_drop"] is False
    assert result["has_collection_after_drop"] is False
    assert flow.COLLECTION not in result["list_collections_after_drop"]

    check_reads(result)

    # quick setup: CreateCollection + CreateIndex + Load, then reads of a fresh insert
    quick = result["quick_setup"]
    assert quick["skipped"] is False
    assert quick["ok"], f"quick setup failed: {quick.get('error')}"
    desc = quick["described"]
    assert desc["enable_dynamic_field"] is True
    assert [f["name"] for f in desc["fields"]] == ["id", "vector"]
    assert desc["fields"][1]["params"] == {"dim": flow.DIM}
    assert desc["consistency_level"] == 2  # Bounded, quick setup's default
    assert "Loaded" in quick["load_state"], quick["load_state"]
    assert quick["insert_count"] == 5
    check_quick_reads(quick["reads"])
    assert quick["has_collection_after_drop"] is False


# --- the reads -------------------------------------------------------------------------------


def expected_fields(row: reads.Row, output_fields: tuple[str, ...]) -> dict[str, Any]:
    """What a hit's entity / a query row holds for ``output_fields`` (``*``: every field)."""
    names = (*reads.ROW_FIELDS, reads.VECTOR_FIELD) if "*" in output_fields else output_fields
    return {name: row[name] for name in names}


def _without_pk(entity: dict[str, Any], pk: int) -> dict[str, Any]:
    """An entity minus its primary key (pymilvus adds it for ``*``), which must be ``pk``."""
    assert entity.get("id", pk) == pk, entity
    return {k: v for k, v in entity.items() if k != "id"}


def _l2(a: list[float], b: list[float]) -> float:
    diff = np.asarray(a, np.float32) - np.asarray(b, np.float32)
    return float(np.dot(diff, diff))


def check_search(
    hits_per_query: list[list[dict[str, Any]]], case: reads.SearchCase, rows: reads.Rows
) -> None:
    """Hits are eligible rows (filter, partitions, not deleted), unique, sorted by ascending
    squared L2 distance equal to the one computed here, with the newest row's output fields."""
    assert len(hits_per_query) == len(case.targets), case.name
    eligible = {
        pk
        for pk, (partition, row) in rows.items()
        if case.matches(row) and (case.partitions is None or partition in case.partitions)
    }
    for target, hits in zip(case.targets, hits_per_query, strict=True):
        query = rows[target][1][reads.VECTOR_FIELD]
        ids = [h["id"] for h in hits]
        assert len(hits) == min(reads.SEARCH_LIMIT, len(eligible)), (case.name, ids)
        assert len(set(ids)) == len(ids), (case.name, ids)
        assert set(ids) <= eligible, (case.name, sorted(set(ids) - eligible))
        distances = [h["distance"] for h in hits]
        assert distances == sorted(distances), (case.name, distances)
        for hit in hits:
            row = rows[hit["id"]][1]
            true = _l2(row[reads.VECTOR_FIELD], query)
            assert hit["distance"] == pytest.approx(true, rel=1e-4, abs=1e-5), (case.name, hit)
            got = _without_pk(hit["entity"], hit["id"])
            assert got == expected_fields(row, case.output_fields), (case.name, hit)
        if case.target_found_first:
            assert ids[0] == target, (case.name, target, ids)
            assert distances[0] == pytest.approx(0.0, abs=1e-5), (case.name, distances)


def _query_rows(rows: reads.Rows, output_fields: tuple[str, ...], pks: list[int]) -> list[Any]:
    return [{"id": pk, **expected_fields(rows[pk][1], output_fields)} for pk in sorted(pks)]


def check_reads(result: dict[str, Any]) -> None:
    """The read steps (``flow_reads.run_reads``) against the rows the writes left visible."""
    rows = flow.expected_rows()

    index = result["index"]
    assert index["list_indexes"] == [reads.VECTOR_FIELD]
    described = index["described"]
    assert not index["timed_out"], index
    assert {k: str(described.get(k)) for k in ("field_name", "index_type", "metric_type")} == {
        "field_name": reads.VECTOR_FIELD,
        "index_type": "HNSW",
        "metric_type": reads.INDEX_METRIC,
    }
    assert {k: str(described.get(k)) for k in reads.INDEX_PARAMS} == {
        k: str(v) for k, v in reads.INDEX_PARAMS.items()
    }
    assert described["state"] == "Finished", described
    assert described["indexed_rows"] == described["total_rows"], described
    assert len(rows) <= described["total_rows"] <= FLUSHED_ROWS, described
    assert described["pending_index_rows"] == 0, described
    assert "Loaded" in result["load_state"], result["load_state"]

    for case in reads.SEARCH_CASES:
        check_search(result["searches"][case.name], case, rows)
    for case in reads.QUERY_CASES:
        pks = [pk for pk, (_, row) in rows.items() if case.matches(row)]
        assert pks, f"query case {case.name} selects nothing"
        got = sorted(result["queries"][case.name], key=lambda r: r["id"])
        assert got == _query_rows(rows, case.output_fields, pks), case.name
    assert result["count"] == len(rows)
    present = [pk for pk in reads.get_ids(rows) if pk in rows]
    got = sorted(result["get"], key=lambda r: r["id"])
    assert got == _query_rows(rows, ("*",), present)

    remaining = dict(rows)
    for d in reads.FILTER_DELETES:
        doomed = [pk for pk, (_, row) in remaining.items() if d.matches(row)]
        assert doomed and result["filter_deletes"][d.name] == len(doomed), (d.name, doomed)
        for pk in doomed:
            del remaining[pk]
    assert remaining == reads.rows_after_filter_deletes(rows)
    assert result["count_after_filter_deletes"] == len(remaining)
    assert result["get_filter_deleted"] == []
    check_search(result["partition_search"], reads.PARTITION_SEARCH, remaining)
    page = sorted(remaining)[reads.PAGE_OFFSET : reads.PAGE_OFFSET + reads.PAGE_LIMIT]
    assert result["query_page"] == _query_rows(remaining, ("title",), page)

    strong_row = flow.flow_batches()["strong"][0]
    strong = result["strong"]
    assert strong["insert_count"] == 1
    assert strong["query"] == [
        {"id": strong_row["id"], **expected_fields(strong_row, reads.ROW_FIELDS)}
    ]
    [[hit]] = strong["search"]
    assert hit["id"] == strong_row["id"] and hit["entity"] == {"title": strong_row["title"]}
    assert hit["distance"] == pytest.approx(0.0, abs=1e-5)
    assert strong["count"] == len(remaining) + 1


def _cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def check_quick_reads(quick: dict[str, Any]) -> None:
    """Quick setup's index (COSINE) serves a Strong search of the rows inserted just before."""
    rows = reads.quick_rows(flow.DIM)
    assert quick["indexes"] == ["vector"]
    assert quick["index"]["metric_type"] == "COSINE", quick["index"]
    [hits] = quick["search"]
    target = rows[reads.QUICK_TARGET]["vector"]
    want = sorted(rows, key=lambda r: -_cosine(r["vector"], target))[: len(hits)]
    assert len(hits) == 3
    assert [h["id"] for h in hits] == [r["id"] for r in want]
    for hit, row in zip(hits, want, strict=True):
        assert hit["distance"] == pytest.approx(_cosine(row["vector"], target), abs=1e-5)
        assert hit["entity"] == {"color": row["color"]}
    assert quick["query"] == [{"id": r["id"], "color": "red"} for r in rows if r["color"] == "red"]


def test_flow_with_pinned_pymilvus(flow_target: FlowTarget) -> None:
    snapshots: list[FlushedSnapshot] = []
    result = flow.run_flow(
        flow_target.uri,
        quick_setup=True,
        on_flushed=lambda event: snapshots.append(snapshot_after_flush(flow_target, event)),
    )
    json.dumps(result)  # what the script writes must be JSON
    assert len(snapshots) == 1 or result["fatal"] is not None
    check_flow_result(
        result, snapshots[0] if snapshots else None, pymilvus_prefix=pymilvus.__version__
    )


def test_flow_script_runs_as_a_command(flow_target: FlowTarget, tmp_path: Path) -> None:
    """The command-line entry point writes the same result (no pause, no quick setup)."""
    out = tmp_path / "result.json"
    rc = flow.main(["--uri", flow_target.uri, "--out", str(out), "--no-quick-setup"])
    result = json.loads(out.read_text())
    assert rc == 0, result.get("fatal")
    assert result["quick_setup"] == {"skipped": True}
    assert result["fatal"] is None
    assert result["mutations"]["insert_default"]["count"] == 100

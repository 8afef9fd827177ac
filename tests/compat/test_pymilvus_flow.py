"""The reusable pymilvus write flow (``milvus_flow.py``) against a real ``canopy standalone`` and
a LocalCluster (``flow_target`` in conftest.py).

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

import grpc
import milvus_flow as flow
import numpy as np
import pymilvus
from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc
from standalone_process import read_visible_rows

# Quick setup (create_collection(name, dimension=d)) needs CreateIndex + LoadCollection, which
# are being built; until then code 3000 is accepted. Flip to True once they land.
QUICK_SETUP_REQUIRED = True

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
    "drop_partition",
    "drop_collection",
    "quick_setup",
]


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
    """Everything the write flow must observe, whichever pymilvus ran it."""
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

    # quick setup: works, or (until the read path lands) fails cleanly with code 3000
    quick = result["quick_setup"]
    assert quick["skipped"] is False
    if quick["ok"]:
        desc = quick["described"]
        assert desc["enable_dynamic_field"] is True
        assert [f["name"] for f in desc["fields"]] == ["id", "vector"]
        assert desc["fields"][1]["params"] == {"dim": flow.DIM}
        assert desc["consistency_level"] == 2  # Bounded, quick setup's default
        assert "Loaded" in quick["load_state"], quick["load_state"]
        assert quick["insert_count"] == 5
    else:
        assert not QUICK_SETUP_REQUIRED, f"quick setup failed: {quick['error']}"
        assert quick["error"]["code"] == 3000, quick["error"]
    assert quick["has_collection_after_drop"] is False


def test_write_flow_with_pinned_pymilvus(flow_target: FlowTarget) -> None:
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

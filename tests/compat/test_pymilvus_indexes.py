"""The official pymilvus ``MilvusClient`` against the Canopy proxy: indexes and load state.

Most tests use the setup of ``test_pymilvus_ddl.py`` (its :class:`BackgroundProxy`: a real
``grpc.aio`` server in a background thread over a memory catalog and an in-memory streaming
node, without index builds): indexes and loads as catalog metadata, which is what quick setup
(``create_collection(name, dimension=d)``) needs to complete. The last test runs a real
``canopy standalone`` process, whose data node builds HNSW indexes of flushed segments.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient, MilvusException
from pymilvus.client.types import LoadState
from standalone_process import StandaloneProcess


def explicit_schema(client: MilvusClient) -> object:
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("score", DataType.FLOAT)
    return schema


def test_quick_setup_indexes_and_loads(client: MilvusClient) -> None:
    client.create_collection("q", dimension=8)  # CreateIndex, DescribeIndex, Load, progress
    desc = client.describe_collection("q")
    assert [(f["name"], f["field_id"]) for f in desc["fields"]] == [("id", 100), ("vector", 101)]
    assert client.list_indexes("q") == ["vector"]
    assert client.list_indexes("q", field_name="id") == []
    index = client.describe_index("q", "vector")
    assert index is not None
    assert (index["index_type"], index["metric_type"]) == ("AUTOINDEX", "COSINE")
    assert (index["field_name"], index["index_name"], index["state"]) == (
        "vector",
        "vector",
        "Finished",
    )
    assert (index["total_rows"], index["indexed_rows"], index["pending_index_rows"]) == (0, 0, 0)
    assert client.get_load_state("q")["state"] == LoadState.Loaded

    with pytest.raises(MilvusException) as err:  # Milvus refuses this while loaded
        client.drop_index("q", "vector")
    assert err.value.code == 65535 and "please release it first" in err.value.message
    client.release_collection("q")
    assert client.get_load_state("q")["state"] == LoadState.NotLoad
    client.drop_index("q", "vector")
    assert client.list_indexes("q") == []
    assert client.describe_index("q", "vector") is None  # code 700: no such index
    with pytest.raises(MilvusException) as err:
        client.load_collection("q")
    assert (err.value.code, err.value.message) == (700, "index not found[collection=q]")
    client.drop_collection("q")
    assert not client.has_collection("q")


def test_create_index_with_explicit_hnsw_params(client: MilvusClient) -> None:
    client.create_collection("h", schema=explicit_schema(client))
    assert client.get_load_state("h")["state"] == LoadState.NotLoad
    params = client.prepare_index_params()
    params.add_index(
        "vec", index_type="HNSW", index_name="vec_idx", metric_type="L2", M=16, efConstruction=64
    )
    client.create_index("h", params)
    client.create_index("h", params)  # the same definition again: fine, as in Milvus
    index = client.describe_index("h", "vec_idx")
    assert index is not None
    assert (index["index_type"], index["metric_type"], index["field_name"]) == ("HNSW", "L2", "vec")
    assert (index["M"], index["efConstruction"]) == ("16", "64")
    client.load_collection("h")
    assert client.get_load_state("h")["state"] == LoadState.Loaded
    assert client.get_load_state("h", partition_name="_default")["state"] == LoadState.Loaded

    client.release_collection("h")
    client.load_partitions("h", ["_default"])
    assert client.get_load_state("h", partition_name="_default")["state"] == LoadState.Loaded
    client.release_partitions("h", ["_default"])
    assert client.get_load_state("h")["state"] == LoadState.NotLoad

    other = client.prepare_index_params()
    other.add_index("vec", index_type="HNSW", index_name="vec_idx", metric_type="L2", M=32)
    with pytest.raises(MilvusException) as err:
        client.create_index("h", other)
    assert err.value.code == 65535
    assert "at most one distinct index is allowed per field" in err.value.message


def test_index_errors(client: MilvusClient) -> None:
    client.create_collection("e", schema=explicit_schema(client))
    for index_type, field in (("IVF_FLAT", "vec"), ("INVERTED", "score"), ("NOT_AN_INDEX", "vec")):
        params = client.prepare_index_params()
        params.add_index(field, index_type=index_type, metric_type="L2")
        with pytest.raises(MilvusException) as err:
            client.create_index("e", params)
        assert err.value.code == 701, (index_type, err.value)
        assert f"index type not supported[indexType={index_type}]" in err.value.message
    bad_m = client.prepare_index_params()
    bad_m.add_index("vec", index_type="HNSW", metric_type="L2", M=1)
    with pytest.raises(MilvusException) as err:
        client.create_index("e", bad_m)
    assert err.value.code == 1100 and "param 'M' (1)" in err.value.message
    bad_metric = client.prepare_index_params()
    bad_metric.add_index("vec", index_type="FLAT", metric_type="JACCARD")
    with pytest.raises(MilvusException) as err:
        client.create_index("e", bad_metric)
    assert err.value.code == 1100
    assert client.describe_index("e", "missing") is None  # code 700
    with pytest.raises(MilvusException) as err:  # GetIndexState of a missing index: code 700
        client._get_connection().get_index_state("e", "missing")
    assert err.value.code == 700 and err.value.message == "index not found[indexName=missing]"
    with pytest.raises(MilvusException) as err:
        client.get_load_state("missing")
    assert err.value.code == 100
    client.drop_collection("e")
    assert client.list_collections() == []


def test_standalone_builds_hnsw_for_flushed_segments(tmp_path: Path) -> None:
    """20,000 rows of 128-d, flush, HNSW: ``create_index`` waits until the data node indexed
    the flushed segments, DescribeIndex then counts every row as indexed, and the graph files
    are in the data directory."""
    n, dim = 20_000, 128
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    with StandaloneProcess(tmp_path / "data") as proc:
        client = MilvusClient(uri=proc.uri)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        client.create_collection("big", schema=schema)
        cid = client.describe_collection("big")["collection_id"]
        for start in range(0, n, 5000):
            rows = [{"pk": i, "vec": vectors[i].tolist()} for i in range(start, start + 5000)]
            assert client.insert("big", rows)["insert_count"] == 5000
        client.flush("big")
        params = client.prepare_index_params()
        params.add_index("vec", index_type="HNSW", metric_type="L2", M=16, efConstruction=200)
        started = time.monotonic()
        client.create_index("big", params)  # returns once DescribeIndex says Finished
        waited = time.monotonic() - started
        index = client.describe_index("big", "vec")
        assert index is not None
        assert (index["state"], index["total_rows"]) == ("Finished", n)
        assert (index["indexed_rows"], index["pending_index_rows"]) == (n, 0)
        client.close()
        manifests = sorted(
            (proc.data_dir / "objects" / "collections" / str(cid)).rglob("index.json")
        )
        docs = [json.loads(m.read_text()) for m in manifests]
        assert docs and sum(d["rows"] for d in docs) == n
        for manifest, doc in zip(manifests, docs, strict=True):
            assert (doc["index_type"], doc["dim"], doc["build_params"]["M"]) == ("HNSW", dim, 16)
            (graph,) = doc["files"]
            assert (manifest.parent / graph["path"]).stat().st_size == graph["size"]
        built = sum(d["build_seconds"] for d in docs)
        print(
            f"\n{n} x {dim}-d rows in {len(docs)} segment(s): HNSW M16/efC200 build "
            f"{built:.1f} s (sum of build_seconds), create_index waited {waited:.1f} s"
        )

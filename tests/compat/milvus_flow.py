"""The pymilvus ``MilvusClient`` flow (writes and reads), as one reusable script.

Importable (``run_flow(uri)`` returns the observations as a dict) and runnable on its own::

    python tests/compat/milvus_flow.py --uri http://127.0.0.1:19530 --out result.json

It depends only on pymilvus, numpy and the standard library, so it also runs in a separate venv
with another pymilvus release (``tests/compat/test_pymilvus26.py`` runs it with 2.6.x). It
asserts nothing: it records what the server answered (described schema, counts, primary keys,
mutation timestamps, error codes, hits, rows) in a JSON-able dict, and ``check_flow_result`` in
``test_pymilvus_flow.py`` judges it.

The flow, on an explicit schema (INT64 pk, FLOAT_VECTOR dim 8, VARCHAR, JSON, ARRAY of INT64,
dynamic field on):

1. has/list/describe, create_partition/list_partitions/has_partition;
2. insert into ``_default`` and into partition ``p1``, upsert (changing ``UPSERT_CHANGED`` and
   adding ``UPSERT_NEW``), delete ``DELETED`` by ids, flush, describe again;
3. three invalid requests (unknown collection, wrong dimension, too-long VARCHAR);
4. the reads (``flow_reads.run_reads``): create_index HNSW and wait until every flushed row is
   indexed, load, filtered searches, queries over JSON and arrays, get, delete by filter,
   count(*), a partition search, a paged query, Strong reads of a row inserted just before;
5. release ``p1`` if it is loaded, drop it, drop the collection;
6. with ``--quick-setup`` (default on): ``create_collection(name, dimension=8)``, an insert and
   Strong reads of it; a failure to create is recorded, not raised.

With ``--pause-after-flush`` the script prints one JSON line ``{"event": "flushed", ...}`` to
stdout after the flush and waits for a line on stdin before dropping anything, so a caller can
inspect the server's storage in between (``run_flow(on_flushed=...)`` in-process).

The result has ``fatal`` = null when every required step succeeded; otherwise ``fatal`` names the
step and the error and the exit status is 1 (the partial result is still written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import flow_reads
import numpy as np
import pymilvus
from flow_reads import jsonable
from pymilvus import DataType, MilvusClient
from pymilvus.client import ts_utils

COLLECTION = "canopy_flow"
QUICK_COLLECTION = "canopy_flow_quick"
PARTITION = "p1"
DIM = 8
VARCHAR_MAX = 32
ARRAY_CAPACITY = 8

DEFAULT_IDS = list(range(0, 100))  # inserted into _default, title "a{i}"
PARTITION_IDS = list(range(100, 150))  # inserted into p1, title "p{i}"
UPSERT_CHANGED = list(range(0, 10))  # upserted into _default, title "u{i}"
UPSERT_NEW = [200, 201]  # upserted (new rows) into _default, title "u{i}"
DELETED = [20, 21, 22, 120]  # deleted by ids (120 lives in p1)
STRONG_ID = 300  # inserted after the reads began, read back at once with Strong consistency


def title(tag: str, pk: int) -> str:
    return f"{tag}{pk}"


def flow_batches(seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """The rows the flow writes, by step (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    return {
        "insert_default": make_rows(DEFAULT_IDS, "a", rng),
        "insert_partition": make_rows(PARTITION_IDS, "p", rng),
        "upsert": make_rows(UPSERT_CHANGED + UPSERT_NEW, "u", rng),
        "strong": make_rows([STRONG_ID], "s", rng),
    }


def expected_rows(seed: int = 7) -> dict[int, tuple[str, dict[str, Any]]]:
    """pk -> (partition name, row as sent) of the rows visible after the flow's writes."""
    batches = flow_batches(seed)
    rows = {r["id"]: ("_default", r) for r in batches["insert_default"]}
    rows.update({r["id"]: (PARTITION, r) for r in batches["insert_partition"]})
    rows.update({r["id"]: ("_default", r) for r in batches["upsert"]})
    for i in DELETED:
        rows.pop(i, None)
    return rows


def make_rows(ids: list[int], tag: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "vec": rng.random(DIM, dtype=np.float32).tolist(),
            "title": title(tag, i),
            "meta": {"i": i, "tag": tag, "codes": [i % 5, i % 3]},
            "tags": list(range(i, i + 1 + i % 3)),  # 1 to 3 elements
            "extra": i,  # not in the schema: goes to the dynamic field
        }
        for i in ids
    ]


# --- observation helpers ---------------------------------------------------------------------


def describe_error(exc: BaseException) -> dict[str, Any]:
    """What an exception says, in a version-neutral form."""
    return {
        "type": type(exc).__name__,
        "code": getattr(exc, "code", None),
        "message": str(getattr(exc, "message", "") or exc),
    }


def normalize_description(desc: dict[str, Any]) -> dict[str, Any]:
    """``describe_collection``'s dict with field types as ints and only JSON values."""
    fields = []
    for f in desc.get("fields", []):
        params = dict(f.get("params") or {})
        fields.append(
            {
                "name": f.get("name"),
                "type": int(f.get("type")),
                "field_id": f.get("field_id"),
                "is_primary": bool(f.get("is_primary", False)),
                "auto_id": bool(f.get("auto_id", False)),
                "is_dynamic": bool(f.get("is_dynamic", False)),
                "element_type": None
                if f.get("element_type") is None
                else int(f.get("element_type")),
                "params": jsonable(params),
            }
        )
    return {
        "collection_name": desc.get("collection_name"),
        "collection_id": desc.get("collection_id"),
        "auto_id": bool(desc.get("auto_id", False)),
        "enable_dynamic_field": bool(desc.get("enable_dynamic_field", False)),
        "consistency_level": desc.get("consistency_level"),
        "num_partitions": desc.get("num_partitions"),
        "num_shards": desc.get("num_shards"),
        "fields": fields,
    }


class TimestampRecorder:
    """Records every mutation timestamp pymilvus caches for Session consistency.

    pymilvus 2.6 and 3.x both call ``ts_utils.update_collection_ts(collection, ts, ...)``
    after an Insert/Upsert/Delete reply; wrapping that module attribute sees the reply's
    ``timestamp`` without touching the wire."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self._original: Callable[..., Any] | None = None

    def __enter__(self) -> TimestampRecorder:
        self._original = original = ts_utils.update_collection_ts

        def record(collection_name: str, ts: int, *args: Any, **kwargs: Any) -> Any:
            self.seen.append((collection_name, int(ts)))
            return original(collection_name, ts, *args, **kwargs)

        ts_utils.update_collection_ts = record  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._original is not None:
            ts_utils.update_collection_ts = self._original  # type: ignore[assignment]

    def take(self) -> int | None:
        """The newest timestamp recorded since the last call (None if there was none)."""
        if not self.seen:
            return None
        ts = self.seen[-1][1]
        self.seen.clear()
        return ts


# --- the flow --------------------------------------------------------------------------------


class _Flow:
    def __init__(self, uri: str, result: dict[str, Any]) -> None:
        self.uri = uri
        self.result = result
        self.step = "connect"
        self.client: MilvusClient | None = None

    def at(self, step: str) -> None:
        self.step = step
        self.result["steps"].append(step)

    def schema(self) -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
        schema.add_field("title", DataType.VARCHAR, max_length=VARCHAR_MAX)
        schema.add_field("meta", DataType.JSON)
        schema.add_field(
            "tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=ARRAY_CAPACITY
        )
        return schema


@contextlib.contextmanager
def _quiet_pymilvus() -> Iterator[None]:
    """pymilvus logs every failed RPC with a traceback at ERROR; expected failures stay quiet."""
    logger = logging.getLogger("pymilvus.decorators")
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def _expect_error(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        with _quiet_pymilvus():
            answer = fn()
    except Exception as exc:  # the error is the observation
        return {"raised": True, **describe_error(exc)}
    return {"raised": False, "answer": jsonable(answer)}


def _mutation(answer: dict[str, Any], count_key: str, ts: int | None) -> dict[str, Any]:
    ids = answer.get("ids")
    return {
        "count": answer.get(count_key),
        "ids": None if ids is None else [int(i) for i in ids],
        "timestamp": ts,
    }


def run_flow(
    uri: str,
    *,
    quick_setup: bool = True,
    on_flushed: Callable[[dict[str, Any]], None] | None = None,
    seed: int = 7,
) -> dict[str, Any]:
    """Run the whole flow against ``uri``; never raises for a server answer (see ``fatal``)."""
    result: dict[str, Any] = {
        "pymilvus_version": pymilvus.__version__,
        "uri": uri,
        "collection": COLLECTION,
        "partition": PARTITION,
        "dim": DIM,
        "steps": [],
        "fatal": None,
    }
    flow = _Flow(uri, result)
    started = time.time()
    try:
        with TimestampRecorder() as stamps:
            _run(flow, stamps, flow_batches(seed), on_flushed, expected_rows(seed))
            if quick_setup:
                _quick_setup(flow)
            else:
                result["quick_setup"] = {"skipped": True}
    except Exception as exc:
        result["fatal"] = {
            "step": flow.step,
            **describe_error(exc),
            "traceback": traceback.format_exc(),
        }
    finally:
        if flow.client is not None:
            try:
                flow.client.close()
            except Exception:  # closing a broken client must not hide the real error
                pass
    result["wall_clock"] = {"started": started, "finished": time.time()}
    return result


def _run(
    flow: _Flow,
    stamps: TimestampRecorder,
    batches: dict[str, list[dict[str, Any]]],
    on_flushed: Callable[[dict[str, Any]], None] | None,
    visible: dict[int, tuple[str, dict[str, Any]]],
) -> None:
    r = flow.result
    flow.at("connect")
    client = flow.client = MilvusClient(uri=flow.uri)
    flow.at("cleanup")
    for name in (COLLECTION, QUICK_COLLECTION):
        if client.has_collection(name):
            client.drop_collection(name)

    flow.at("create_collection")
    r["has_collection_before"] = client.has_collection(COLLECTION)
    client.create_collection(COLLECTION, schema=flow.schema(), consistency_level="Strong")
    r["has_collection_after_create"] = client.has_collection(COLLECTION)
    r["list_collections_after_create"] = sorted(client.list_collections())
    flow.at("describe_collection")
    r["described"] = normalize_description(client.describe_collection(COLLECTION))

    flow.at("partitions")
    client.create_partition(COLLECTION, PARTITION)
    r["list_partitions"] = sorted(client.list_partitions(COLLECTION))
    r["has_partition"] = {
        PARTITION: client.has_partition(COLLECTION, PARTITION),
        "nope": client.has_partition(COLLECTION, "nope"),
    }

    flow.at("insert_default")
    stamps.take()
    mutations: dict[str, Any] = {}
    answer = client.insert(COLLECTION, batches["insert_default"])
    mutations["insert_default"] = _mutation(answer, "insert_count", stamps.take())
    flow.at("insert_partition")
    answer = client.insert(COLLECTION, batches["insert_partition"], partition_name=PARTITION)
    mutations["insert_partition"] = _mutation(answer, "insert_count", stamps.take())
    flow.at("upsert")
    answer = client.upsert(COLLECTION, batches["upsert"])
    mutations["upsert"] = _mutation(answer, "upsert_count", stamps.take())
    flow.at("delete")
    answer = client.delete(COLLECTION, ids=DELETED)
    mutations["delete"] = _mutation(answer, "delete_count", stamps.take())
    r["mutations"] = mutations

    flow.at("flush")
    t0 = time.perf_counter()
    client.flush(COLLECTION)
    r["flush_seconds"] = time.perf_counter() - t0
    flow.at("describe_after_writes")
    r["described_after_writes"] = normalize_description(client.describe_collection(COLLECTION))
    if on_flushed is not None:
        flow.at("on_flushed")
        on_flushed(
            {
                "event": "flushed",
                "collection": COLLECTION,
                "collection_id": r["described"]["collection_id"],
            }
        )

    flow.at("invalid_requests")
    good = make_rows([9000], "x", np.random.default_rng(0))[0]
    r["errors"] = {
        "unknown_collection": _expect_error(lambda: client.insert("canopy_flow_missing", [good])),
        "wrong_dimension": _expect_error(
            lambda: client.insert(COLLECTION, [{**good, "vec": [0.0] * (DIM + 1)}])
        ),
        "varchar_too_long": _expect_error(
            lambda: client.insert(COLLECTION, [{**good, "title": "x" * (VARCHAR_MAX + 1)}])
        ),
    }

    flow_reads.run_reads(client, flow.at, r, COLLECTION, visible, batches["strong"][0])

    flow.at("drop_partition")
    state = client.get_load_state(COLLECTION, partition_name=PARTITION)["state"]
    r["partition_load_state"] = str(state)
    if "NotLoad" not in str(state):
        flow.at("release_partitions")
        client.release_partitions(COLLECTION, [PARTITION])
        flow.at("drop_partition")
    client.drop_partition(COLLECTION, PARTITION)
    r["list_partitions_after_drop"] = sorted(client.list_partitions(COLLECTION))
    r["has_partition_after_drop"] = client.has_partition(COLLECTION, PARTITION)

    flow.at("drop_collection")
    client.drop_collection(COLLECTION)
    r["has_collection_after_drop"] = client.has_collection(COLLECTION)
    r["list_collections_after_drop"] = sorted(client.list_collections())


def _quick_setup(flow: _Flow) -> None:
    """``create_collection(name, dimension=d)``: CreateCollection + CreateIndex + Load, an insert,
    Strong reads of it. A failure to create is recorded (``ok`` False), not raised."""
    client = flow.client
    assert client is not None
    flow.at("quick_setup")
    out: dict[str, Any] = {"skipped": False}
    try:
        with _quiet_pymilvus():
            client.create_collection(QUICK_COLLECTION, dimension=DIM)
    except Exception as exc:
        out.update(ok=False, error=describe_error(exc))
    else:
        out["ok"] = True
        out["described"] = normalize_description(client.describe_collection(QUICK_COLLECTION))
        out["load_state"] = str(client.get_load_state(QUICK_COLLECTION)["state"])
        rows = flow_reads.quick_rows(DIM)
        out["insert_count"] = client.insert(QUICK_COLLECTION, rows).get("insert_count")
        flow.at("quick_reads")
        out["reads"] = flow_reads.quick_reads(client, QUICK_COLLECTION, rows)
    out["created"] = client.has_collection(QUICK_COLLECTION)
    if out["created"]:
        client.drop_collection(QUICK_COLLECTION)
    out["has_collection_after_drop"] = client.has_collection(QUICK_COLLECTION)
    flow.result["quick_setup"] = out


# --- command line ----------------------------------------------------------------------------


def _pause(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)
    sys.stdin.readline()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the pymilvus MilvusClient flow against a Milvus-compatible server "
        "and write what it observed as JSON. Exit status 1 when a required step failed."
    )
    parser.add_argument("--uri", required=True, help="e.g. http://127.0.0.1:19530")
    parser.add_argument("--out", required=True, help="result JSON file ('-' for stdout)")
    parser.add_argument(
        "--quick-setup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also try create_collection(name, dimension=d) (default: on)",
    )
    parser.add_argument(
        "--pause-after-flush",
        action="store_true",
        help='print {"event": "flushed", ...} after the flush and wait for a line on stdin',
    )
    args = parser.parse_args(argv)
    result = run_flow(
        args.uri,
        quick_setup=args.quick_setup,
        on_flushed=_pause if args.pause_after_flush else None,
    )
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0 if result["fatal"] is None else 1


if __name__ == "__main__":
    sys.exit(main())

"""The read half of the pymilvus flow (``milvus_flow.py``): index, load, search, query, get,
delete by filter, count, pagination, Strong reads.

Like the write half it depends only on pymilvus, numpy and the standard library (it runs in the
pymilvus 2.6 venv too) and asserts nothing: :func:`run_reads` records what the server answered
into the result dict. The cases (filters with the Python predicate that must select the same
rows) live here so ``check_flow_result`` judges the answers against the same definitions.

Rows are the dicts the flow sent (``id``, ``vec``, ``title``, ``meta`` = ``{"i", "tag",
"codes"}``, ``tags`` = ARRAY of INT64, dynamic ``extra``); ``Rows`` maps a primary key to its
partition name and its newest row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymilvus import MilvusClient

Row = dict[str, Any]
Rows = dict[int, tuple[str, Row]]
Record = Callable[[str], None]

VECTOR_FIELD = "vec"
INDEX_PARAMS = {"M": 8, "efConstruction": 64}
INDEX_METRIC = "L2"
INDEX_WAIT_SECONDS = 120.0
INDEX_POLL_SECONDS = 0.2
SEARCH_LIMIT = 5
SEARCH_PARAMS = {"metric_type": INDEX_METRIC, "params": {"ef": 32}}
ROW_FIELDS = ("title", "meta", "tags", "extra")  # every field but the pk and the vector
GET_MISSING = 9999  # never written
PAGE_OFFSET, PAGE_LIMIT = 10, 5
STRONG = "Strong"


@dataclass(frozen=True)
class QueryCase:
    """``query(filter, output_fields)`` must answer exactly the rows ``matches`` selects."""

    name: str
    filter: str
    output_fields: tuple[str, ...]
    matches: Callable[[Row], bool]


@dataclass(frozen=True)
class SearchCase:
    """``search`` with the stored vectors of ``targets`` as queries; every hit must satisfy
    ``matches`` and lie in ``partitions`` (None: anywhere)."""

    name: str
    targets: tuple[int, ...]
    filter: str
    output_fields: tuple[str, ...]
    matches: Callable[[Row], bool]
    partitions: tuple[str, ...] | None = None
    target_found_first: bool = True  # each target satisfies the filter and partitions


@dataclass(frozen=True)
class FilterDelete:
    """``delete(filter=...)``: removes the rows ``matches`` selects."""

    name: str
    filter: str
    matches: Callable[[Row], bool]


def _tag(row: Row) -> str:
    return row["meta"]["tag"]


QUERY_CASES = (
    QueryCase("json_eq", 'meta["tag"] == "u"', ("title", "meta"), lambda r: _tag(r) == "u"),
    QueryCase(
        "json_range",
        'meta["i"] >= 140 and meta["i"] < 146',
        ("meta", "extra"),
        lambda r: 140 <= r["meta"]["i"] < 146,
    ),
    QueryCase(
        "json_contains",
        'json_contains(meta["codes"], 4) and id < 30',
        ("meta", "tags"),
        lambda r: 4 in r["meta"]["codes"] and r["id"] < 30,
    ),
    QueryCase(
        "json_contains_any",
        'json_contains_any(meta["codes"], [2, 7]) and id >= 130',
        ("title", "meta"),
        lambda r: bool({2, 7} & set(r["meta"]["codes"])) and r["id"] >= 130,
    ),
    QueryCase("array_contains", "array_contains(tags, 42)", ("tags",), lambda r: 42 in r["tags"]),
    QueryCase(
        "array_contains_all",
        "array_contains_all(tags, [104, 105])",
        ("tags", "title"),
        lambda r: {104, 105} <= set(r["tags"]),
    ),
    QueryCase(
        "array_length",
        "array_length(tags) == 3 and id >= 100 and id < 120",
        ("tags", "meta"),
        lambda r: len(r["tags"]) == 3 and 100 <= r["id"] < 120,
    ),
    QueryCase(
        "dynamic_and_varchar",
        'extra >= 195 or title like "a1_"',
        ("title", "extra"),
        lambda r: r["extra"] >= 195 or (len(r["title"]) == 3 and r["title"].startswith("a1")),
    ),
    QueryCase(
        "all_fields",
        "id in [5, 50, 130, 201]",
        ("*",),
        lambda r: r["id"] in (5, 50, 130, 201),
    ),
)

SEARCH_CASES = (
    SearchCase(
        "filtered",
        targets=(50, 5),  # 5 was upserted: its newest vector must be the one found
        filter='meta["tag"] in ["a", "u"] and extra >= 3',
        output_fields=ROW_FIELDS,
        matches=lambda r: _tag(r) in ("a", "u") and r["extra"] >= 3,
    ),
    SearchCase(
        "star",
        targets=(130,),
        filter='title like "p%"',
        output_fields=("*",),
        matches=lambda r: r["title"].startswith("p"),
    ),
)

FILTER_DELETES = (
    FilterDelete("like", 'title like "p11%"', lambda r: r["title"].startswith("p11")),
    FilterDelete("range", "id >= 90 and id < 95", lambda r: 90 <= r["id"] < 95),
)

# after the filter deletes: every hit must come from p1 although the query vector is in _default
PARTITION_SEARCH = SearchCase(
    "partition",
    targets=(50,),
    filter="",
    output_fields=("title", "extra"),
    matches=lambda r: True,
    partitions=("p1",),
    target_found_first=False,
)


def get_ids(rows: Rows) -> list[int]:
    """Ids for ``get``: an unchanged, an upserted (changed), an upserted (new), a p1 row, a
    deleted one and one never written."""
    deleted = 20
    assert deleted not in rows  # the write half deletes it
    return [50, 5, 201, 130, deleted, GET_MISSING]


def rows_after_filter_deletes(rows: Rows) -> Rows:
    return {pk: v for pk, v in rows.items() if not any(d.matches(v[1]) for d in FILTER_DELETES)}


# --- recording -------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """``value`` as JSON-able Python (numpy scalars and arrays, IntEnums, tuples unwrapped)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):  # also IntEnum (DataType)
        return int(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    return str(value)


def _hits(answer: Any) -> list[list[dict[str, Any]]]:
    return [
        [
            {
                "id": int(hit["id"]),
                "distance": float(hit["distance"]),
                "entity": jsonable(dict(hit["entity"])),
            }
            for hit in hits
        ]
        for hits in answer
    ]


def _rows(answer: Any) -> list[dict[str, Any]]:
    return [jsonable(dict(row)) for row in answer]


def _search(
    client: MilvusClient, collection: str, case: SearchCase, rows: Rows, **kwargs: Any
) -> list[list[dict[str, Any]]]:
    return _hits(
        client.search(
            collection,
            data=[rows[pk][1]["vec"] for pk in case.targets],
            filter=case.filter,
            limit=SEARCH_LIMIT,
            output_fields=list(case.output_fields),
            search_params=SEARCH_PARAMS,
            partition_names=None if case.partitions is None else list(case.partitions),
            anns_field=VECTOR_FIELD,
            **kwargs,
        )
    )


def _count(client: MilvusClient, collection: str, **kwargs: Any) -> int:
    answer = client.query(collection, filter="", output_fields=["count(*)"], **kwargs)
    return int(answer[0]["count(*)"])


def _index_step(client: MilvusClient, collection: str, out: dict[str, Any]) -> None:
    """create_index, then poll describe_index until every flushed row is indexed."""
    params = client.prepare_index_params()
    params.add_index(
        field_name=VECTOR_FIELD,
        index_type="HNSW",
        metric_type=INDEX_METRIC,
        params=dict(INDEX_PARAMS),
    )
    client.create_index(collection, params)
    out["list_indexes"] = sorted(client.list_indexes(collection))
    name = out["list_indexes"][0] if out["list_indexes"] else VECTOR_FIELD
    t0 = time.perf_counter()
    polls = 0
    while True:
        described = jsonable(client.describe_index(collection, name))
        polls += 1
        total, indexed = described.get("total_rows"), described.get("indexed_rows")
        done = bool(total) and indexed == total and not described.get("pending_index_rows")
        waited = time.perf_counter() - t0
        if done or waited > INDEX_WAIT_SECONDS:
            break
        time.sleep(INDEX_POLL_SECONDS)
    out.update(described=described, wait_seconds=waited, polls=polls, timed_out=not done)


def run_reads(
    client: MilvusClient,
    at: Record,
    r: dict[str, Any],
    collection: str,
    rows: Rows,
    strong_row: Row,
) -> None:
    """Record the read steps against ``collection`` holding ``rows`` (flushed, not loaded)."""
    at("create_index")
    r["index"] = index = {}
    _index_step(client, collection, index)

    at("load_collection")
    client.load_collection(collection)
    r["load_state"] = str(client.get_load_state(collection)["state"])

    at("search")
    r["searches"] = {c.name: _search(client, collection, c, rows) for c in SEARCH_CASES}
    at("query")
    r["queries"] = {
        c.name: _rows(
            client.query(collection, filter=c.filter, output_fields=list(c.output_fields))
        )
        for c in QUERY_CASES
    }
    r["count"] = _count(client, collection)

    at("get")
    r["get"] = _rows(client.get(collection, get_ids(rows), output_fields=["*"]))

    at("delete_by_filter")
    r["filter_deletes"] = {
        d.name: client.delete(collection, filter=d.filter).get("delete_count")
        for d in FILTER_DELETES
    }
    r["count_after_filter_deletes"] = _count(client, collection)
    deleted = sorted(set(rows) - set(rows_after_filter_deletes(rows)))
    r["get_filter_deleted"] = _rows(client.get(collection, deleted, output_fields=["title"]))

    at("partition_search")
    r["partition_search"] = _search(client, collection, PARTITION_SEARCH, rows)
    at("query_page")
    r["query_page"] = _rows(
        client.query(
            collection,
            filter="id >= 0",
            output_fields=["title"],
            offset=PAGE_OFFSET,
            limit=PAGE_LIMIT,
        )
    )

    at("strong_reads")
    _strong_step(client, collection, strong_row, r)


def _strong_step(client: MilvusClient, collection: str, row: Row, r: dict[str, Any]) -> None:
    """Insert one row, then read it back at once (no flush) with Strong consistency."""
    out: dict[str, Any] = {"insert_count": client.insert(collection, [row]).get("insert_count")}
    pk = row["id"]
    out["query"] = _rows(
        client.query(
            collection,
            filter=f"id == {pk}",
            output_fields=list(ROW_FIELDS),
            consistency_level=STRONG,
        )
    )
    out["search"] = _hits(
        client.search(
            collection,
            data=[row["vec"]],
            limit=1,
            output_fields=["title"],
            search_params=SEARCH_PARAMS,
            consistency_level=STRONG,
        )
    )
    out["count"] = _count(client, collection, consistency_level=STRONG)
    r["strong"] = out


# --- quick setup -----------------------------------------------------------------------------

QUICK_COLORS = ("red", "blue")
QUICK_TARGET = 3


def quick_rows(dim: int, seed: int = 11) -> list[Row]:
    """Rows for the quick-setup collection (``id``, ``vector``, dynamic ``color``)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "id": i,
            "vector": rng.random(dim, dtype=np.float32).tolist(),
            "color": QUICK_COLORS[i % 2],
        }
        for i in range(5)
    ]


def quick_reads(client: MilvusClient, collection: str, rows: list[Row]) -> dict[str, Any]:
    """Strong search and query right after the quick-setup insert (it auto-indexed and loaded)."""
    indexes = sorted(client.list_indexes(collection))
    return {
        "indexes": indexes,
        "index": jsonable(client.describe_index(collection, indexes[0])) if indexes else None,
        "search": _hits(
            client.search(
                collection,
                data=[rows[QUICK_TARGET]["vector"]],
                limit=3,
                output_fields=["color"],
                consistency_level=STRONG,
            )
        ),
        "query": _rows(
            client.query(
                collection,
                filter='color == "red"',
                output_fields=["color"],
                consistency_level=STRONG,
            )
        ),
    }

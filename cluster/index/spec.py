"""What to build for one vector field: :class:`IndexSpec`, from the catalog's index record.

Pure data, no I/O. ``IndexSpec.resolve(rows)`` turns ``AUTOINDEX`` into the concrete kind for a
segment of ``rows`` rows:

* below ``AUTOINDEX_FLAT_ROWS`` (10,000) rows: ``FLAT`` (exact search over the raw vectors).
  ``bench/index.py`` measures both at 10,000 clustered 128-d rows: exact search answers nq=1 in
  ~0.2 ms (p50) against ~0.1 ms for the graph, with recall 1.0 instead of 0.91 (ef=64), and
  needs no build (~2 s) and no index file (~6 MiB). Sealed segments are usually far larger, and
  compaction merges the small ones;
* otherwise ``HNSW`` with ``M=16``, ``efConstruction=200`` (hnswlib; recall@10 about 0.94 at
  ef=64 on the 100k clustered benchmark set).

``FLAT`` and ``HNSW`` resolve to themselves. Metrics are Milvus's: ``L2`` (squared Euclidean,
ascending), ``IP`` and ``COSINE`` (similarities, descending).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cluster.coordinator.records import (
    AUTOINDEX,
    HNSW_EF_CONSTRUCTION_RANGE,
    HNSW_M_RANGE,
    IndexInfo,
    parse_index_params,
)
from cluster.streaming.search import Metric
from woodpecker.errors import InvalidArgument

FLAT = "FLAT"
HNSW = "HNSW"
KINDS = (FLAT, HNSW)
AUTOINDEX_FLAT_ROWS = 10_000  # AUTOINDEX builds no graph for segments with fewer rows
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200


def _int(params: Mapping[str, str], key: str, default: int, bounds: tuple[int, int]) -> int:
    text = params.get(key)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"index param {key}={text!r} is not an integer") from None
    low, high = bounds
    if not low <= value <= high:
        raise InvalidArgument(f"index param {key}={value} is outside [{low}, {high}]")
    return value


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """One index of one float-vector field, as the catalog defines it.

    ``index_type`` is what the user asked for (``FLAT``, ``HNSW`` or ``AUTOINDEX``); ``m`` and
    ``ef_construction`` are the HNSW build params (defaults for ``AUTOINDEX``); ``params`` are
    the catalog's flat build params, kept for the record.
    """

    index_id: int
    field_id: int
    field_name: str
    index_type: str
    metric: Metric
    m: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.index_type not in (*KINDS, AUTOINDEX):
            raise InvalidArgument(f"index type {self.index_type!r} is not FLAT, HNSW or AUTOINDEX")
        if not HNSW_M_RANGE[0] <= self.m <= HNSW_M_RANGE[1]:
            raise InvalidArgument(f"HNSW M={self.m} is outside {HNSW_M_RANGE}")
        if not HNSW_EF_CONSTRUCTION_RANGE[0] <= self.ef_construction:
            raise InvalidArgument(f"HNSW efConstruction={self.ef_construction} must be >= 1")

    @classmethod
    def from_index_info(cls, info: IndexInfo) -> IndexSpec:
        """The spec of a catalog index record (``IndexInfo``); bad params raise
        ``InvalidArgument``."""
        return cls.from_params(
            info.index_id,
            info.field_id,
            info.field_name,
            {"index_type": info.index_type, "metric_type": info.metric_type, **info.params},
        )

    @classmethod
    def from_params(
        cls, index_id: int, field_id: int, field_name: str, raw: Mapping[str, str]
    ) -> IndexSpec:
        """The spec of CreateIndex-style flat params (``index_type``, ``metric_type``, ``M``,
        ``efConstruction``, ...), validated like the catalog does (:func:`parse_index_params`)."""
        try:
            index_type, metric, build = parse_index_params(raw)
        except Exception as exc:  # the catalog's Milvus-coded errors, as one error kind here
            raise InvalidArgument(str(exc)) from None
        return cls(
            index_id=index_id,
            field_id=field_id,
            field_name=field_name,
            index_type=index_type,
            metric=Metric.parse(metric),
            m=_int(build, "M", DEFAULT_M, HNSW_M_RANGE),
            ef_construction=_int(
                build, "efConstruction", DEFAULT_EF_CONSTRUCTION, HNSW_EF_CONSTRUCTION_RANGE
            ),
            params=dict(build),
        )

    def resolve(self, rows: int) -> IndexSpec:
        """This spec with ``index_type`` concrete (``FLAT`` or ``HNSW``) for ``rows`` rows; an
        ``AUTOINDEX`` HNSW uses the default M / efConstruction."""
        if self.index_type != AUTOINDEX:
            return self
        if rows < AUTOINDEX_FLAT_ROWS:
            return replace(self, index_type=FLAT)
        return replace(self, index_type=HNSW, m=DEFAULT_M, ef_construction=DEFAULT_EF_CONSTRUCTION)

    def build_params(self) -> dict[str, Any]:
        """What determines the built files (stored in the index manifest, compared on
        rebuild): kind, metric and, for HNSW, M and efConstruction."""
        out: dict[str, Any] = {"index_type": self.index_type, "metric_type": str(self.metric)}
        if self.index_type == HNSW:
            out.update(M=self.m, efConstruction=self.ef_construction)
        return out

    def describe(self) -> str:
        return json.dumps(self.build_params(), sort_keys=True)

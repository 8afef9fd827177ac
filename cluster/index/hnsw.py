"""HNSW graphs with hnswlib: build, save, load, search. CPU only, no I/O beyond local files.

Contracts:

* Labels are row offsets in the segment (``0..n-1``).
* Spaces: ``L2`` -> hnswlib ``"l2"`` (squared Euclidean); ``IP`` -> ``"ip"``; ``COSINE`` ->
  ``"ip"`` over L2-normalised vectors (queries are normalised the same way; a zero vector stays
  zero and scores 0, as in exact search).
* :meth:`HnswGraph.search` returns Milvus scores: L2 squared distances ascending, IP / COSINE
  similarities descending (hnswlib reports ``1 - ip`` for ``"ip"``; converted back).
* hnswlib keeps one ``ef`` per index, so a search sets it and queries under a lock; concurrent
  searches of one graph serialise, different graphs run in parallel (hnswlib releases the GIL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np
import pyarrow as pa

from cluster.streaming.search import Metric
from woodpecker.errors import InvalidArgument

ENGINE = f"hnswlib {getattr(hnswlib, '__version__', '0.8')}"
BUILD_CHUNKS = 20  # add_items calls per build at least (progress granularity)
BUILD_CHUNK_ROWS = 10_000  # at most per call: a cancelled build stops within one chunk


class ShortResult(RuntimeError):
    """hnswlib found fewer than ``k`` results (a filter left too few reachable rows)."""


def space_of(metric: Metric) -> str:
    return "l2" if metric is Metric.L2 else "ip"


def vector_matrix(column: pa.ChunkedArray | pa.Array, dim: int | None = None) -> np.ndarray:
    """A ``fixed_size_list<float32>[dim]`` column as one C-contiguous ``(n, dim)`` float32
    matrix (one copy at most). Nulls and other value types raise ``InvalidArgument``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_fixed_size_list(column.type):
        raise InvalidArgument(f"not a vector column: {column.type}")
    if not pa.types.is_float32(column.type.value_type):
        raise InvalidArgument(f"only float32 vectors are indexed, not {column.type.value_type}")
    if column.null_count:
        raise InvalidArgument("vector column has nulls")
    d = column.type.list_size
    if dim is not None and d != dim:
        raise InvalidArgument(f"vector column has dim {d}, expected {dim}")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(-1, d), dtype=np.float32)


def normalized(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a new array); zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def build_graph(
    vectors: np.ndarray,
    metric: Metric,
    m: int,
    ef_construction: int,
    *,
    num_threads: int = -1,
    seed: int = 100,
    progress: Callable[[float], None] | None = None,
) -> hnswlib.Index:
    """An hnswlib index over ``vectors`` (labels = row numbers). Runs for seconds to minutes:
    call it in a worker thread. ``progress(fraction)`` is called after each chunk (at least 20,
    at most :data:`BUILD_CHUNK_ROWS` rows each); an exception it raises stops the build there,
    which is how a cancelled build ends early."""
    n, dim = vectors.shape
    data = normalized(vectors) if metric is Metric.COSINE else vectors
    index = hnswlib.Index(space=space_of(metric), dim=dim)
    index.init_index(max_elements=max(n, 1), ef_construction=ef_construction, M=m, random_seed=seed)
    step = max(1, min(-(-n // BUILD_CHUNKS), BUILD_CHUNK_ROWS))
    for start in range(0, n, step):
        stop = min(n, start + step)
        index.add_items(data[start:stop], np.arange(start, stop), num_threads=num_threads)
        if progress is not None:
            progress(stop / n)
    return index


class HnswGraph:
    """A loaded graph of one segment's field, searchable from several threads."""

    def __init__(self, index: hnswlib.Index, metric: Metric) -> None:
        self.index = index
        self.metric = metric
        self.dim = int(index.dim)
        self.rows = int(index.element_count)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, metric: Metric, dim: int) -> HnswGraph:
        """Read a graph written by ``save`` (the whole file into memory)."""
        index = hnswlib.Index(space=space_of(metric), dim=dim)
        index.load_index(str(path))
        return cls(index, metric)

    def save(self, path: str | Path) -> None:
        self.index.save_index(str(path))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        ef: int,
        *,
        allow: np.ndarray | None = None,
        num_threads: int = -1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(labels int64 (nq, k), scores float32 (nq, k))``, best first, in Milvus scores.
        ``allow`` (bool per row) restricts results through hnswlib's filter callback (one
        Python call per visited node, single-threaded). Raises :class:`ShortResult` when
        fewer than ``k`` rows were found."""
        q = queries
        if self.metric is Metric.COSINE:
            q = normalized(q)
        flt = None
        if allow is not None:
            flt = allow.__getitem__  # numpy bool -> C++ bool; no Python list needed
            num_threads = 1
        with self._lock:
            self.index.set_ef(max(ef, k))
            try:
                labels, dist = self.index.knn_query(q, k=k, num_threads=num_threads, filter=flt)
            except RuntimeError as exc:
                raise ShortResult(str(exc)) from None
        labels = labels.astype(np.int64, copy=False)
        if self.metric is not Metric.L2:
            dist = (1.0 - dist).astype(np.float32, copy=False)
        return labels, dist

"""Exact (brute-force) top-k vector search over row blocks, with numpy only.

Used for growing segments and for sealed segments that have no index yet. Contract of
:func:`exact_search`:

* The base is a sequence of ``(start, matrix)`` blocks covering rows ``0..n-1`` in order; each
  ``matrix`` is ``(rows, dim)`` float32 (views into Arrow buffers are fine: nothing is written).
* Scores come from matrix products, ``||x||^2 - 2 q.x`` for L2 with the row norms cached by the
  caller (:func:`row_norms`), never from an ``nq x N x dim`` difference array. The only
  temporary proportional to ``N`` is an ``N x g`` float32 score matrix for a group of ``g``
  queries, with ``g`` chosen so it stays under ``budget`` floats (16 MiB by default).
* ``mask`` (bool, ``n``) selects the candidate rows; the others are never returned. When fewer
  than a quarter of the rows are candidates, only those rows are gathered and scored.
* ``k`` is capped at the number of candidates, so every query gets the same ``k' = min(k,
  candidates)`` hits and no padding: results are ``(offsets, distances)``, both ``(nq, k')``,
  best first. L2 distances are squared Euclidean distances, ascending; IP and COSINE are
  similarities, descending (COSINE of a zero vector is 0). Ties are broken arbitrarily.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

__all__ = ["DEFAULT_BUDGET", "Metric", "exact_search", "row_norms"]

DEFAULT_BUDGET = 1 << 22  # floats in one score matrix (16 MiB)
_SPARSE_FRACTION = 0.25  # gather candidate rows below this share of candidates


class Metric(StrEnum):
    L2 = "L2"
    IP = "IP"
    COSINE = "COSINE"

    @classmethod
    def parse(cls, value: str | Metric) -> Metric:
        try:
            return cls(str(value).upper())
        except ValueError:
            raise ValueError(f"metric type {value!r} not supported (L2, IP, COSINE)") from None

    @property
    def higher_is_better(self) -> bool:
        return self is not Metric.L2


def row_norms(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(squared norms, inverse norms)`` of each row, float32; a zero row's inverse norm is 0."""
    norm2 = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32)
    inv = np.zeros_like(norm2)
    np.sqrt(norm2, out=inv, where=norm2 > 0)
    np.divide(1.0, inv, out=inv, where=inv > 0)
    return norm2, inv


def exact_search(
    blocks: Sequence[tuple[int, np.ndarray]],
    queries: np.ndarray,
    k: int,
    metric: Metric | str,
    *,
    n: int,
    norm2: np.ndarray | None = None,
    inv_norm: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    budget: int = DEFAULT_BUDGET,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows of the first ``n`` base rows for each query (see the module docstring).
    ``norm2`` is required for L2 and ``inv_norm`` for COSINE (both ``n`` long at least)."""
    metric = Metric.parse(metric)
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise ValueError(f"queries must be (nq, dim), got shape {q.shape}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    nq = q.shape[0]
    if mask is None:
        candidates = n
        rows = None
    else:
        mask = mask[:n]
        candidates = int(np.count_nonzero(mask))
        rows = np.flatnonzero(mask) if candidates < n * _SPARSE_FRACTION else None
    k_eff = min(k, candidates)
    if k_eff == 0 or nq == 0:
        return np.empty((nq, 0), np.int64), np.empty((nq, 0), np.float32)
    if metric is Metric.L2:
        if norm2 is None:
            raise ValueError("L2 search needs the row norms")
        row_term = norm2[:n] if rows is None else norm2[rows]
    elif metric is Metric.COSINE:
        if inv_norm is None:
            raise ValueError("COSINE search needs the inverse row norms")
        row_term = inv_norm[:n] if rows is None else inv_norm[rows]
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.divide(q, qn, out=np.zeros_like(q), where=qn > 0)
    else:
        row_term = None
    m = n if rows is None else len(rows)
    group = max(1, min(nq, budget // max(m, 1)))
    out_offsets = np.empty((nq, k_eff), np.int64)
    out_scores = np.empty((nq, k_eff), np.float32)
    for g0 in range(0, nq, group):
        qg = q[g0 : g0 + group]
        scores = _scores(blocks, np.ascontiguousarray(qg.T), n, rows)  # (m, g), q.x
        if metric is Metric.L2:
            scores *= -2.0
            scores += row_term[:, None]
        else:
            if metric is Metric.COSINE:
                scores *= row_term[:, None]
            np.negative(scores, out=scores)  # lower is better from here on
        if rows is None and mask is not None and candidates < n:
            scores[~mask] = np.inf
        part, vals = _smallest(scores.T, k_eff)
        out_offsets[g0 : g0 + group] = part if rows is None else rows[part]
        out_scores[g0 : g0 + group] = vals
    if metric is Metric.L2:
        out_scores += np.einsum("ij,ij->i", q, q)[:, None]
        np.maximum(out_scores, 0.0, out=out_scores)
    else:
        np.negative(out_scores, out=out_scores)
    return out_offsets, out_scores


def _scores(
    blocks: Sequence[tuple[int, np.ndarray]], qt: np.ndarray, n: int, rows: np.ndarray | None
) -> np.ndarray:
    """``x . q`` for every base row (or every row in ``rows``): an ``(m, g)`` float32 matrix."""
    g = qt.shape[1]
    if rows is None:
        scores = np.empty((n, g), np.float32)
        for start, matrix in blocks:
            if start >= n:
                break
            stop = min(start + len(matrix), n)
            np.matmul(matrix[: stop - start], qt, out=scores[start:stop])
        return scores
    scores = np.empty((len(rows), g), np.float32)
    for start, matrix in blocks:
        lo, hi = np.searchsorted(rows, (start, start + len(matrix)))
        if lo < hi:
            np.matmul(matrix[rows[lo:hi] - start], qt, out=scores[lo:hi])
    return scores


def _smallest(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` smallest entries of each row, ascending."""
    scores = np.ascontiguousarray(scores)
    if k < scores.shape[1]:
        part = np.argpartition(scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)

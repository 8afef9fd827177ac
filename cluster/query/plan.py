"""How to search one sealed segment: exact, HNSW, or HNSW with a filter. Pure, no I/O.

With a filter (an expression's mask, deletes, an old read timestamp) only ``candidates`` of the
``rows`` rows may be returned. Three ways, measured by ``bench/index.py`` on 100k clustered
128-d rows (hnswlib M16/efC200, k=10, ef=64, one BLAS thread; QPS at nq=1 / nq=100, recall@10
in parentheses):

============  ======================  ======================  ======================
selectivity   exact over candidates   post-filter             allow-list
============  ======================  ======================  ======================
1 %           6,420 / 103,700 (1.0)   104 / 138 (0.997)       89 / 96 (0.996)
10 %          929 / 10,940 (1.0)      764 / 1,085 (0.945)     544 / 758 (0.946)
50 %          299 / 522 (1.0)         3,081 / 8,188 (0.946)   2,926 / 3,197 (0.944)
============  ======================  ======================  ======================

* ``EXACT`` (:func:`cluster.streaming.search.exact_search` over the candidates): recall 1.0,
  cost ``candidates * (GATHER + nq)``; wins when few rows pass, and at 10 % once queries come
  in batches.
* ``POST_FILTER``: ask the graph for ``ef / selectivity`` neighbours (``ef`` raised to match)
  and keep the first ``k`` candidates. It explores as much of the graph as an allow-list search
  with ``ef`` does, so recall is the same, but in C++ with every core: never slower than the
  allow-list, and up to 2.6x faster at nq=100.
* ``ALLOW_LIST``: hnswlib's ``filter`` callback, one Python call per visited node under the GIL
  (single-threaded). Only the fallback for queries whose post-filter kept fewer than ``k``
  candidates (and can be forced); if even that comes up short, those queries go exact.

:func:`choose` compares estimated costs in units of one exact distance evaluation: the graph
costs ``HNSW_UNIT`` per unit of effective ``ef`` per query. Without a filter the graph is
searched directly (``HNSW``); without a graph the search is ``EXACT``.
"""

from __future__ import annotations

import math
from enum import StrEnum

HNSW_UNIT = 200.0  # one unit of effective ef ~ 165-220 exact distance evaluations (measured)
GATHER = 11.0  # copying one candidate row for exact search, in distance evaluations
SPARSE_FRACTION = 0.25  # exact_search gathers candidates below this share (else scans all rows)
DEFAULT_EF = 64  # search ef when the request gives none (raised to k when k is larger)


class Strategy(StrEnum):
    EXACT = "exact"
    HNSW = "hnsw"
    POST_FILTER = "post-filter"
    ALLOW_LIST = "allow-list"


def post_filter_fetch(rows: int, candidates: int, ef: int) -> int:
    """Neighbours to fetch so that about ``ef`` of them are candidates: ``ef / selectivity``."""
    if candidates <= 0:
        return 0
    return min(rows, max(ef, math.ceil(ef * rows / candidates)))


def exact_cost(rows: int, candidates: int, nq: int) -> float:
    if candidates < rows * SPARSE_FRACTION:
        return candidates * (GATHER + nq)
    return float(rows * nq)


def graph_cost(rows: int, candidates: int, nq: int, ef: int) -> float:
    return nq * post_filter_fetch(rows, candidates, ef) * HNSW_UNIT


def choose(rows: int, candidates: int, nq: int, ef: int, *, has_graph: bool) -> Strategy:
    """The cheapest strategy for ``nq`` queries over ``rows`` rows of which ``candidates``
    may be returned (``ef`` already at least ``k``)."""
    if not has_graph:
        return Strategy.EXACT
    if candidates >= rows:
        return Strategy.HNSW
    if exact_cost(rows, candidates, nq) <= graph_cost(rows, candidates, nq, ef):
        return Strategy.EXACT
    return Strategy.POST_FILTER

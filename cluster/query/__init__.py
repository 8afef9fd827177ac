"""The query node's building blocks: the local SSD cache (:class:`LocalCache`), loaded sealed
segments (:class:`SealedSegment`: lazy columns, MVCC deletes, search, query), the per-request
search plan (:mod:`cluster.query.plan`) and the row bookkeeping (:mod:`cluster.query.rows`).
"""

from cluster.query.cache import CachedStore, CacheMetrics, LocalCache
from cluster.query.plan import Strategy
from cluster.query.rows import Deletes, PkIndex
from cluster.query.segment import SealedSegment, SearchResult

__all__ = [
    "CacheMetrics",
    "CachedStore",
    "Deletes",
    "LocalCache",
    "PkIndex",
    "SealedSegment",
    "SearchResult",
    "Strategy",
]

"""Vector index builds of sealed segments (the data node's work) and loading them.

Entry points: :class:`IndexSpec` (from the catalog's ``IndexInfo``; ``AUTOINDEX`` resolved per
segment size), :func:`build_index`, :func:`read_index_manifest`, :func:`load_index`,
:func:`delete_index`, :class:`HnswGraph`. Layout in ``cluster/storage/LAYOUT.md`` ("Index
builds").
"""

from cluster.index.build import (
    build_index,
    delete_index,
    load_graph_file,
    load_index,
    read_index_manifest,
    read_index_manifest_at,
)
from cluster.index.hnsw import HnswGraph, ShortResult, vector_matrix
from cluster.index.layout import (
    INDEX_FORMAT_VERSION,
    IndexFile,
    IndexManifest,
    index_manifest_key,
    index_prefix,
)
from cluster.index.spec import AUTOINDEX_FLAT_ROWS, FLAT, HNSW, IndexSpec

__all__ = [
    "AUTOINDEX_FLAT_ROWS",
    "FLAT",
    "HNSW",
    "INDEX_FORMAT_VERSION",
    "HnswGraph",
    "IndexFile",
    "IndexManifest",
    "IndexSpec",
    "ShortResult",
    "build_index",
    "delete_index",
    "index_manifest_key",
    "index_prefix",
    "load_graph_file",
    "load_index",
    "read_index_manifest",
    "read_index_manifest_at",
    "vector_matrix",
]

"""The pure (no I/O) Milvus data layer the proxy builds on.

* :mod:`cluster.milvus.status` — the one mapping from our errors to Milvus ``common_pb2.Status``.
* :mod:`cluster.milvus.validate` — name rules and the vectorised checks on insert columns.
* :mod:`cluster.milvus.columns` — ``FieldData`` <-> Arrow: decode Insert/Upsert requests into a
  :class:`~cluster.milvus.columns.RowBatch`, encode query/search result columns.
* :mod:`cluster.milvus.shard` — stable primary-key -> shard hashing (Milvus' own functions).

The schema model itself lives in :mod:`cluster.schema`.

This package ``__init__`` imports nothing on purpose: :mod:`cluster.schema` imports
:mod:`cluster.milvus.validate`, and :mod:`cluster.milvus.columns` imports :mod:`cluster.schema`;
an eager import here would make that a cycle.
"""

"""The data node: builds indexes of sealed segments and compacts them (merges small ones,
purges deleted rows: :mod:`cluster.datanode.compaction`); garbage collection comes later.

:class:`~cluster.datanode.worker.IndexBuildWorker` claims index builds from a
:class:`~cluster.datanode.worker.BuildSource` (the coordinator in-process, or a
``BuildQueue`` over the MetaStore in ``canopy data-node``), builds them with
:mod:`cluster.index` and reports the result. The build records and their state machine are the
coordinator's (``cluster/coordinator/index_builds.py``).
"""

from cluster.datanode.worker import BuildSource, IndexBuildWorker, WorkerStats

__all__ = ["BuildSource", "IndexBuildWorker", "WorkerStats"]

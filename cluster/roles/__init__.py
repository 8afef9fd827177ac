"""One role of a distributed Canopy deployment per process: ``canopy coordinator``,
``canopy proxy``, ``canopy streaming-node``, ``canopy data-node``, ``canopy query-node``.

Each role is a :class:`~cluster.roles.base.Role`: ``start()`` returns once it serves,
``wait()`` returns (or raises) when it fails, ``stop()`` shuts it down in reverse order.
:func:`~cluster.roles.base.serve` runs one until SIGINT/SIGTERM. Roles reach each other only
through the gRPC clients of :mod:`cluster.rpc` and the sessions and channel records in the meta
store (discovery).
"""

from cluster.roles.base import Role, serve
from cluster.roles.coordinator import CoordinatorRole
from cluster.roles.datanode import DataNodeRole
from cluster.roles.proxy import ProxyRole
from cluster.roles.querynode import QueryNodeRole
from cluster.roles.streaming import StreamingRole

__all__ = [
    "CoordinatorRole",
    "DataNodeRole",
    "ProxyRole",
    "QueryNodeRole",
    "Role",
    "StreamingRole",
    "serve",
]

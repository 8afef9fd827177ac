"""The proxy role: the Milvus gRPC API in front of the coordinator and the streaming nodes.

* :class:`ProxyServicer` (:mod:`.servicer`) -- the ``MilvusServiceServicer``; DDL in
  :mod:`.ddl`, writes in :mod:`.dml`, the never-raise wrapper and metadata in :mod:`.rpc`.
* :class:`ProxyServer` (:mod:`.server`) -- the ``grpc.aio`` server around it.
* :class:`StreamingRouter` (:mod:`.routing`) -- vchannel -> the owning ``StreamingService``.
* :mod:`.testing` -- in-memory doubles (streaming service, coordinator) for tests.
"""

from cluster.proxy.routing import MappingRouter, StaticRouter, StreamingRouter
from cluster.proxy.server import ProxyServer
from cluster.proxy.servicer import ProxyServicer

__all__ = ["MappingRouter", "ProxyServer", "ProxyServicer", "StaticRouter", "StreamingRouter"]

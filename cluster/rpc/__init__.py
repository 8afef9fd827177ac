"""gRPC implementations of the service interfaces between roles (``cluster/interfaces.py``).

Each service has a servicer (server side, wrapping the in-process implementation) and a client
(implementing the same Protocol), over the messages of :mod:`cluster.proto` (``canopy.v1``):

- :mod:`cluster.rpc.coordinator`: ``CoordinatorServicer`` / ``CoordinatorClient`` (with
  ``RemoteCatalog`` as ``client.catalog``);
- :mod:`cluster.rpc.streaming`: ``StreamingServicer`` / ``StreamingClient``;
- :mod:`cluster.rpc.server`: ``RpcServer`` hosting servicers, the clients' ``RpcChannel``;
- :mod:`cluster.rpc.errors`: exceptions and transport failures across the wire.
"""

from cluster.rpc.coordinator import CoordinatorClient, CoordinatorServicer, RemoteCatalog
from cluster.rpc.errors import RemoteError
from cluster.rpc.server import RpcServer
from cluster.rpc.streaming import StreamingClient, StreamingServicer

__all__ = [
    "CoordinatorClient",
    "CoordinatorServicer",
    "RemoteCatalog",
    "RemoteError",
    "RpcServer",
    "StreamingClient",
    "StreamingServicer",
]

"""The data scientist's side: a client, its link to a worker, and pointer tensors.

- :mod:`.client`: :class:`Client` and :func:`connect` (search, send, get, sync, pipelined ops)
- :mod:`.link`: the client's socket (handshake, heartbeats, batches, reply matching)
- :mod:`.pointer`: :class:`PointerTensor`, torch's ``__torch_function__`` protocol
- :mod:`.inference`: a result's shape and dtype from meta tensors, with no round trip
"""
from .client import Client, SearchResult, live_clients
from .connecting import connect
from .pointer import PointerTensor

__all__ = ["Client", "PointerTensor", "SearchResult", "connect", "live_clients"]

"""The data owner's side: a worker that serves shared tensors and decides who gets values.

- :mod:`.worker`: :class:`Worker`, its lifecycle and the owner's API (share, approve, deny)
- :mod:`.serving`: the serving loop and its message handlers (one background thread)
- :mod:`.store`: the object registry (ids, tags, owners, lineage)
- :mod:`.policy`: who may get values (:class:`Policy`, :class:`GetRequest`, the request book)
- :mod:`.allowlist`: which ops the worker runs
- :mod:`.writes`: which arguments an op writes into (the owner's data is read-only)
- :mod:`.sessions`: one authenticated client link
- :mod:`.logs`: the command log (``--verbose`` lines, ``--log`` JSON lines)
- :mod:`.switch`: the shorter thread switch interval while a worker runs
"""
from .allowlist import Allowlist
from .policy import (
           ClosedPolicy,
           GetRequest,
           OpenPolicy,
           Policy,
           RequestBook,
           ReviewPolicy,
)
from .worker import Worker, live_workers

__all__ = ["Allowlist", "ClosedPolicy", "GetRequest", "OpenPolicy", "Policy", "RequestBook", "ReviewPolicy",
           "Worker", "live_workers"]

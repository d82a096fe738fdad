"""syft_magics: remote tensors for Jupyter. Data stays with its owner; computation travels to it.

Public surface::

    from syft_magics import Worker, connect
    bob = Worker("Bob", port=3000).start(); bob.share(x, "#X")      # data owner
    client = connect("Bob"); x = client.search("#X")[0]              # data scientist
    (x + 1).get()

In IPython: ``%load_ext syft_magics``, then ``%syft_worker``, ``%syft_connect``...
"""
import logging

from . import data, federated  # (syft_magics.data.DataLoader, syft_magics.federated.fedavg after `import syft_magics`)
from .config import defaults
from .errors import (
    AuthenticationError,
    CrossWorkerError,
    GetTimeout,
    OpNotAllowed,
    PermissionDenied,
    PointerFreed,
    PortInUse,
    ProtocolError,
    QuotaExceeded,
    ReadOnlyError,
    RemoteError,
    ReplyTimeout,
    SessionExpired,
    ShapeUnknown,
    StaleConnectionFile,
    SyftError,
    TagError,
    UnknownObject,
    UnknownWorker,
    WithheldError,
    WorkerRestarted,
    WorkerStopped,
    WorkerUnreachable,
)
from .events import Event, EventStream
from .owner.allowlist import Allowlist
from .owner.policy import ClosedPolicy, GetRequest, OpenPolicy, Policy, ReviewPolicy
from .owner.quotas import Quotas
from .owner.worker import Worker
from .scientist.client import Client, SearchResult
from .scientist.connecting import connect
from .scientist.pointer import PointerTensor
from .scientist.remote_module import RemoteModule

__version__ = "0.1.0"

# a library's logger: silent unless the application configures logging (logging.getLogger("syft_magics"))
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Allowlist", "Client", "ClosedPolicy", "Event", "EventStream", "GetRequest", "OpenPolicy", "PointerTensor",
    "RemoteModule", "data", "federated",
    "Policy", "Quotas", "ReviewPolicy", "SearchResult", "Worker", "connect", "defaults", "load_ipython_extension",
    "unload_ipython_extension",
    "AuthenticationError", "CrossWorkerError", "GetTimeout", "OpNotAllowed", "PermissionDenied", "PointerFreed",
    "PortInUse", "ProtocolError", "QuotaExceeded", "ReadOnlyError", "RemoteError", "ReplyTimeout", "SessionExpired",
    "ShapeUnknown", "StaleConnectionFile", "SyftError", "TagError", "UnknownObject", "UnknownWorker",
    "WithheldError", "WorkerRestarted", "WorkerStopped", "WorkerUnreachable",
]


def load_ipython_extension(ipython) -> None:  # pragma: no cover - exercised in kernel tests
    """``%load_ext syft_magics``: register the magics."""
    from .ui.magics import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:  # pragma: no cover
    """``%unload_ext syft_magics``: stop this kernel's workers and connections, remove the magics."""
    from .ui.magics import unload

    unload(ipython)

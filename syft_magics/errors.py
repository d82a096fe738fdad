"""Every exception syft_magics raises, so callers can catch exactly what went wrong.

All derive from :class:`SyftError`. Several also derive from the matching
builtin (``ConnectionError``, ``TimeoutError``, ``ValueError``, ``LookupError``)
so code that already handles those keeps working.
"""
from __future__ import annotations

from typing import Optional


class SyftError(Exception):
    """Base class of every syft_magics error."""


class WorkerUnreachable(SyftError, ConnectionError):
    """No worker answered at the address within the timeout."""


class ReplyTimeout(WorkerUnreachable, TimeoutError):
    """The worker was reached once but stopped answering within the timeout."""


class WorkerStopped(WorkerUnreachable):
    """The worker said goodbye: it was stopped by its owner."""


class WorkerRestarted(SyftError):
    """The worker at this address is a new one: pointers made before are invalid."""


class SessionExpired(SyftError):
    """The worker freed this session (no heartbeat for too long)."""


class AuthenticationError(SyftError):
    """The worker refused the link: wrong or missing key."""


class ProtocolError(SyftError):
    """A message did not follow the wire schema."""


class UnknownWorker(SyftError, LookupError):
    """No running worker of that name was found on this machine."""


class StaleConnectionFile(UnknownWorker):
    """A connection file names a worker whose process is gone."""


class PortInUse(SyftError, OSError):
    """The worker's port is held by another process."""


class TagError(SyftError, ValueError):
    """A tag is malformed (tags look like ``#X``)."""


class CrossWorkerError(SyftError, ValueError):
    """One operation mixed pointers that live on different workers."""


class PointerFreed(SyftError):
    """The pointer was deleted (``.delete()``) and can no longer be used."""


class PermissionDenied(SyftError, PermissionError):
    """The owner's policy refused the request."""


class GetTimeout(SyftError, TimeoutError):
    """The owner did not decide on a get request in time; it stays pending."""


class RemoteError(SyftError):
    """An operation failed on the worker.

    Raised at the next sync point (``.get()``, ``client.sync()``) for pipelined
    ops; names the op, the worker's message and the user's line that issued it.
    """

    def __init__(
        self,
        message: str,
        *,
        op: Optional[str] = None,
        remote_type: Optional[str] = None,
        remote_message: Optional[str] = None,
        line: Optional[str] = None,
        code: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.op = op
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.line = line
        self.code = code


class OpNotAllowed(RemoteError):
    """The op is not on the allowlist (of this client or of the worker)."""


class ReadOnlyError(RemoteError, PermissionDenied):
    """An in-place op targeted the owner's shared data (or a view of it)."""


class UnknownObject(RemoteError, LookupError):
    """The worker holds no object with that id (freed, or never existed)."""

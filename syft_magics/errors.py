"""Every exception syft_magics raises, so callers can catch exactly what went wrong.

All derive from :class:`SyftError`. Several also derive from the matching
builtin (``ConnectionError``, ``TimeoutError``, ``ValueError``, ``LookupError``)
so code that already handles those keeps working.
"""
from __future__ import annotations

import sys
from enum import Enum
from typing import Dict, List, Optional, Tuple, Type


class WireEnum(str, Enum):
    """A name that travels on the wire: its members are ``str`` (compare, hash and format as their value),
    so a received plain string finds its member in a dict and ``f"{member}"`` reads as the wire text.
    The encoder packs a member as its value (msgpack's strict types would refuse the subclass)."""

    __hash__ = str.__hash__
    __str__ = str.__str__
    __format__ = str.__format__  # type: ignore[assignment]


class ErrorCode(WireEnum):
    """The ``code`` of an ``err`` reply: which exception the client raises (:data:`ERROR_CLASSES`)."""

    ERROR = "error"  # anything else that failed on the worker (a torch error, ...)
    PROTOCOL = "protocol"
    VERSION = "version"
    UNAUTHENTICATED = "unauthenticated"
    UNKNOWN_SESSION = "unknown_session"
    OP_NOT_ALLOWED = "op_not_allowed"
    READ_ONLY = "read_only"
    UNKNOWN_OBJECT = "unknown_object"
    FAILED_INPUT = "failed_input"
    DENIED = "denied"
    BAD_TAG = "bad_tag"
    BAD_ARGS = "bad_args"
    BAD_ID = "bad_id"
    QUOTA = "quota"  # over one of the client's quotas (bytes, objects, message size, queue, op time budget)
    WITHHELD = "withheld"  # an op on the owner's data failed; its message waits for the owner's release
    NOT_RUN = "not_run"  # not run: an earlier pipelined op of the client failed (owner/halts.py)


class SyftError(Exception):
    """Base class of every syft_magics error."""

    def _render_traceback_(self) -> List[str]:
        """How IPython shows this error (its hook, as ipyparallel's errors use it): the user's frames
        and the message, without the client's, the link's and torch's frames it passed through."""
        from .traces import user_traceback

        return user_traceback(self)


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
    """The worker refused the link: wrong or missing key, no invitation, or a revoked one."""


class InsecureBind(SyftError, ValueError):
    """A worker was asked to serve a network interface without encryption (CurveZMQ)."""


class EncryptionUnavailable(SyftError, RuntimeError):
    """An encrypted link was needed, but this libzmq was built without CurveZMQ."""


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


class WithheldError(RemoteError):
    """An op on the owner's data failed on the worker; its message could tell values, so only its
    kind (``remote_type``, e.g. ``IndexError``) is shown until the owner releases the full text.

    ``withheld`` is the worker's number for it; :meth:`request_message` asks the owner for the text
    (like a get: under ``review`` it waits for the owner's approval).
    """

    withheld: Optional[int] = None
    client: object = None

    def request_message(self, timeout: Optional[float] = None) -> str:
        """The full error text, once the owner approves (it waits like ``.get()``)."""
        if self.client is None or self.withheld is None:
            raise RuntimeError("this error did not come from a worker")
        return self.client.error_message(self.withheld, timeout=timeout)  # type: ignore[attr-defined]


class ShapeUnknown(SyftError, RuntimeError):
    """The pointer's shape depends on the owner's values and is unknown until the owner releases it
    (``ptr.request_shape()``, or an approved ``.get()``)."""


class OpNotAllowed(RemoteError):
    """The op is not on the allowlist (of this client or of the worker)."""


class ReadOnlyError(RemoteError, PermissionDenied):
    """An in-place op targeted the owner's shared data (or a view of it)."""


class UnknownObject(RemoteError, LookupError):
    """The worker holds no object with that id (freed, or never existed)."""


class QuotaExceeded(RemoteError):
    """The worker refused a request that would take the client over one of its quotas (bytes held,
    objects, message size, queued messages, or an op's time budget); the message names the limit and
    the usage. Other clients are not affected; freeing objects (``del ptr``) makes room again."""


#: The exception a client raises for each error code (codes not listed: :class:`RemoteError`).
#: :class:`RemoteError` subclasses also name the op and the user's line; the others carry the worker's text.
ERROR_CLASSES: Dict[ErrorCode, Type[SyftError]] = {
    ErrorCode.PROTOCOL: ProtocolError,
    ErrorCode.VERSION: ProtocolError,
    ErrorCode.UNAUTHENTICATED: AuthenticationError,
    ErrorCode.UNKNOWN_SESSION: AuthenticationError,
    ErrorCode.OP_NOT_ALLOWED: OpNotAllowed,
    ErrorCode.READ_ONLY: ReadOnlyError,
    ErrorCode.UNKNOWN_OBJECT: UnknownObject,
    ErrorCode.DENIED: PermissionDenied,
    ErrorCode.BAD_TAG: TagError,
    ErrorCode.QUOTA: QuotaExceeded,
    ErrorCode.WITHHELD: WithheldError,
}


def error_class(code: object) -> Type[SyftError]:
    """The exception class for an ``err`` reply's ``code`` (any value a worker may send)."""
    return ERROR_CLASSES.get(code, RemoteError) if isinstance(code, str) else RemoteError  # type: ignore[call-overload]


#: The built-in exceptions a failed op's error also is, by the name the worker sends (``etype``): what torch
#: raises locally, so that ``except RuntimeError`` catches a remote "backward through the graph a second time"
#: as it catches the local one. Other names (a worker's own classes) add none.
BUILTIN_KINDS: Dict[str, Type[Exception]] = {e.__name__: e for e in (
    RuntimeError, ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, NotImplementedError,
    AssertionError, OverflowError, ArithmeticError, LookupError)}
_typed: Dict[Tuple[type, type], type] = {}
#: torch's own exceptions a failed op's error also is, by name (``except torch.linalg.LinAlgError`` catches a
#: singular matrix's remote failure as the local one: helper-79), looked up in torch once it is imported
TORCH_KINDS = {"_LinAlgError": "linalg.LinAlgError", "OutOfMemoryError": "OutOfMemoryError"}


def _torch_kind(name: str) -> Optional[Type[Exception]]:
    path = TORCH_KINDS.get(name)
    torch = sys.modules.get("torch")
    if path is None or torch is None:
        return None
    found: object = torch
    for part in path.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, type) and issubclass(found, Exception) else None


def typed(cls: Type[RemoteError], remote_type: object) -> Type[RemoteError]:
    """``cls`` that is also the built-in exception ``remote_type`` names (e.g. a ``WithheldError`` that is an
    ``IndexError``), else ``cls`` itself. One class per pair, made once."""
    kind = BUILTIN_KINDS.get(remote_type) or _torch_kind(remote_type) if isinstance(remote_type, str) else None
    if kind is None or issubclass(cls, kind):
        return cls
    made = _typed.get((cls, kind))
    if made is None:
        try:
            made = type(cls.__name__, (cls, kind), {"__module__": cls.__module__, "__doc__": cls.__doc__})
        except TypeError:  # (a class that is an OSError already cannot be a RuntimeError too)
            made = cls
        _typed[(cls, kind)] = made
    return made

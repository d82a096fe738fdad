"""What a worker answers besides values: refusals and their error replies.

A :class:`Reject` is a request the worker refuses on purpose; its :class:`ErrorCode` tells the
client which exception to raise. :func:`error_reply` turns any failure into an ``err`` message.
"""
from __future__ import annotations

import logging
from typing import Any, List

from ..errors import ErrorCode, ProtocolError
from ..wire import limits
from ..wire.protocol import Kind, encode
from .provenance import Withheld

log = logging.getLogger(__name__)


class Reject(Exception):
    """A request the worker refuses; ``code`` tells the client which error to raise."""

    def __init__(self, code: ErrorCode, message: str, public: bool = True, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        #: whether the text tells only public facts (else it is withheld like a torch error's)
        self.public = public
        self.extra = extra


class Replies(list):
    """The replies to the messages of one batch, in order."""


def error_reply(exc: Exception) -> List[Any]:
    """The ``err`` message for a failed message: a code the client maps to an exception, and the text
    (for an error withheld from the client, its type and number only: see :mod:`.provenance`)."""
    code = exc.code if isinstance(exc, Reject) else ErrorCode.WITHHELD if isinstance(exc, Withheld) else \
        ErrorCode.PROTOCOL if isinstance(exc, ProtocolError) else ErrorCode.ERROR
    extra = exc.extra if isinstance(exc, Reject) else {"w": exc.n} if isinstance(exc, Withheld) else {}
    etype = exc.etype if isinstance(exc, Withheld) else type(exc).__name__
    try:
        return encode({"t": Kind.ERR, "s": getattr(exc, "seq", None), "code": code, **extra,
                       "etype": etype, "msg": limits.clip(exc)})
    except Exception:
        log.warning("an error reply could not be encoded", exc_info=True)
        return encode({"t": Kind.ERR, "s": None, "code": ErrorCode.ERROR, "etype": "Exception",
                       "msg": "unprintable error"})

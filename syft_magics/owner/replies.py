"""What a worker answers besides values: refusals and their error replies, results described.

A :class:`Reject` is a request the worker refuses on purpose; its :class:`ErrorCode` tells the
client which exception to raise. :func:`error_reply` turns any failure into an ``err`` message.
A data-dependent op's result goes back described (:func:`describe_result`), not inferred.
"""
from __future__ import annotations

import logging
from typing import Any, Iterator, List

import torch

from ..display import dtype_text
from ..errors import ErrorCode, ProtocolError
from ..wire import limits
from ..wire.protocol import Kind, encode

log = logging.getLogger(__name__)


class Reject(Exception):
    """A request the worker refuses; ``code`` tells the client which error to raise."""

    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class Replies(list):
    """The replies to the messages of one batch, in order."""


def error_reply(exc: Exception) -> List[Any]:
    """The ``err`` message for a failed message: a code the client maps to an exception, and the text."""
    code = exc.code if isinstance(exc, Reject) else \
        ErrorCode.PROTOCOL if isinstance(exc, ProtocolError) else ErrorCode.ERROR
    extra = exc.extra if isinstance(exc, Reject) else {}
    try:
        return encode({"t": Kind.ERR, "s": getattr(exc, "seq", None), "code": code, **extra,
                       "etype": type(exc).__name__, "msg": limits.clip(exc)})
    except Exception:
        log.warning("an error reply could not be encoded", exc_info=True)
        return encode({"t": Kind.ERR, "s": None, "code": ErrorCode.ERROR, "etype": "Exception",
                       "msg": "unprintable error"})


def flatten(result: Any) -> List[Any]:
    """The leaves of a result (nested tuples and lists), in order."""
    if isinstance(result, (tuple, list)):
        leaves: List[Any] = []
        for item in result:
            leaves.extend(flatten(item))
        return leaves
    return [result]


def describe_result(result: Any, ids: Iterator[Any]) -> Any:
    """The shape of a result for a client that could not infer it (data-dependent ops)."""
    if isinstance(result, (tuple, list)):
        return ["L", type(result).__name__, [describe_result(r, ids) for r in result]]
    oid = next(ids)
    if isinstance(result, torch.Tensor):
        return ["T", oid, list(result.shape), dtype_text(result.dtype), result.requires_grad]
    return ["V", None]

"""Big tensors in chunks: streamed ``send`` and ``get`` with credit-based flow control.

A tensor of at least ``defaults.stream_min_bytes`` that would travel over TCP (not the same-host
path) crosses the link as a **stream**: a declaration that names its dtype, shape and total size,
then **chunks** (``chunk`` messages, each a byte range of the tensor as one raw frame), each answered
by a **credit** from the receiver (the bytes it now holds). The sender keeps at most ``window``
chunks unanswered. Why:

- **Small ops are not stuck behind it.** Between two messages of one link at most ``window``
  chunks are queued, so an op sent during a 1 GiB transfer waits for a few MiB, not for the GiB; an
  upload keeps one chunk in flight while other messages share the link
  (:data:`syft_magics.scientist.transfers.SHARED_SECONDS`).
- **Memory stays about 1x the tensor on each side.** The sender sends views of its tensor (no copy,
  except where today's single-frame path copies too); the receiver allocates the whole tensor once
  (the declared size, nothing more) and copies each chunk into it, so at most ``window`` chunk
  frames exist besides the tensor.
- **It can be cancelled.** Either side stops at a chunk boundary: the scientist sends ``cancel``
  (after a keyboard interrupt), the worker drops the partial upload or stops sending; chunks still on
  their way are dropped on arrival. The link stays usable.
- **Progress is visible.** The client counts bytes as credits or chunks arrive (the progress bar).

Messages (fields in the header; ``s`` is the request's sequence number, which names the stream):

============  ========  ==================================================================
kind          from      fields
============  ========  ==================================================================
``put``       client    declares an upload: ``id`` (fresh object id), ``d`` dtype, ``sh`` shape,
                        ``n`` total bytes, ``c`` chunk bytes, ``tags``, ``rg``; answered by a
                        ``credit`` of 0 (accepted) or ``err``
``get``       client    as always, plus ``c``: ``[chunk bytes, window]`` (the client takes streams)
``value``     worker    a streamed value: ``x`` is None and ``z`` is ``[dtype, shape, n, chunk]``
``chunk``     both      ``o`` offset, ``x`` the bytes (a uint8 tensor, one raw frame)
``credit``    both      ``o``: bytes received so far; the last chunk of an upload is answered
                        by ``ok`` instead (the object is stored)
``cancel``    client    stop the stream ``s`` and forget its partial state
============  ========  ==================================================================

Chunks arrive in order (one ZeroMQ pipe per link); a receiver accepts only the next offset, at most
the declared chunk size, and never past the declared total. The worker bounds what a peer can make
it hold (:mod:`syft_magics.wire.limits`): uploads per session, declared bytes per session, and an idle
timeout after which a partial upload or a stalled download is dropped.
"""
from __future__ import annotations

import math
import time
from typing import Any, List, Optional, Sequence, Tuple

import torch

from ..errors import ProtocolError
from . import buffers, limits
from .protocol import DTYPES, Kind, dtype_name


def byte_view(tensor: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of ``tensor``'s bytes (a copy only if it is not contiguous on the CPU)."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    return t.reshape(-1).view(torch.uint8)


def check_plan(chunk: Any, window: Any) -> Tuple[int, int]:
    """A peer's chunk size and window, checked against the bounds (``ProtocolError`` otherwise)."""
    if type(chunk) is not int or not limits.MIN_CHUNK_BYTES <= chunk <= limits.MAX_CHUNK_BYTES:
        raise ProtocolError(f"chunk size must be {limits.MIN_CHUNK_BYTES}-{limits.MAX_CHUNK_BYTES} bytes, "
                            f"got {chunk!r}")
    if type(window) is not int or not 1 <= window <= limits.MAX_CHUNK_WINDOW:
        raise ProtocolError(f"chunk window must be 1-{limits.MAX_CHUNK_WINDOW}, got {window!r}")
    return chunk, window


def check_layout(dname: Any, shape: Any, nbytes: Any) -> Tuple[torch.dtype, List[int]]:
    """A declared stream's dtype and shape, checked to hold exactly ``nbytes``."""
    if dname not in DTYPES:
        raise ProtocolError(f"unknown dtype {dname!r}")
    if not isinstance(shape, list) or len(shape) > limits.MAX_NDIM or \
            any(type(n) is not int or not 0 <= n < 1 << 62 for n in shape):
        raise ProtocolError("a streamed tensor's shape must be a list of at most 64 non-negative integers")
    dtype = DTYPES[dname]
    if type(nbytes) is not int or nbytes != math.prod(shape) * dtype.itemsize:
        raise ProtocolError(f"declared size {nbytes!r} does not match shape {shape} of {dname}")
    return dtype, shape


class Outgoing:
    """The sending side of one stream: chunks of a tensor, released as the receiver's credit allows.

    ``copy=True`` sends copies of the chunks (where the single-frame path would copy too: the bytes
    must be the ones of this moment, not of the moment ZeroMQ's I/O thread reads them).
    """

    __slots__ = ("seq", "source", "flat", "total", "chunk", "window", "sent", "acked", "copy", "version",
                 "touched", "meta", "held")

    def __init__(self, seq: Any, tensor: torch.Tensor, chunk: int, window: int, copy: bool = False,
                 meta: Any = None) -> None:
        self.seq = seq
        #: what the sender keeps with the stream (the worker: the id of the object it sends, and in ``held`` what
        #: of it ZeroMQ still holds)
        self.meta: Any = meta
        self.held: Any = None
        self.source = tensor
        self.flat = byte_view(tensor)
        self.total = self.flat.numel()
        self.chunk, self.window = chunk, window
        self.sent = self.acked = 0
        self.copy = copy
        self.version = tensor._version
        self.touched = time.monotonic()

    @property
    def done(self) -> bool:
        """Every chunk has been handed to the socket."""
        return self.sent >= self.total

    def credit(self, received: Any) -> None:
        """The receiver holds ``received`` bytes (never more than was sent, never fewer than before)."""
        if type(received) is not int or not self.acked <= received <= self.sent:
            raise ProtocolError(f"credit of {received!r} bytes for a stream with {self.sent} sent, {self.acked} acked")
        self.acked = received
        self.touched = time.monotonic()

    def due(self, window: Optional[int] = None) -> List[dict]:
        """The chunk messages the window allows now (headers; their ``x`` is a view or copy of the bytes);
        ``window``: chunks in flight at most this time, if fewer than the stream's own (0: none)."""
        out = []
        limit = self.chunk * (self.window if window is None else min(window, self.window))
        while self.sent < self.total and self.sent - self.acked < limit:
            if self.source._version != self.version:
                raise ProtocolError("the tensor changed while it was being sent; the transfer stopped "
                                    "(ask again for the new value)")
            end = min(self.total, self.sent + self.chunk)
            piece = self.flat[self.sent:end]
            if self.copy:  # (numpy copies on this thread; torch's copy_ wakes its thread pool per chunk)
                piece = torch.from_numpy(piece.numpy().copy())
            out.append({"t": Kind.CHUNK, "s": self.seq, "o": self.sent, "x": piece})
            self.sent = end
        return out


class Incoming:
    """The receiving side of one stream: a tensor allocated once at the declared size, filled in order."""

    __slots__ = ("tensor", "flat", "total", "chunk", "received", "touched", "meta")

    flat: Any

    def __init__(self, dtype: torch.dtype, shape: Sequence[int], chunk: int, meta: Any = None, key: Any = None,
                 room: Optional[int] = None) -> None:
        self.tensor = buffers.empty(shape, dtype, key, room)  # (memory kept for this receiver: see .buffers)
        # numpy's copies run on this thread; torch's copy_ would wake its thread pool for every chunk
        self.flat = self.tensor.reshape(-1).view(torch.uint8).numpy()
        self.total = self.flat.size
        self.chunk = chunk
        self.received = 0
        self.touched = time.monotonic()
        #: what the owner of the stream keeps with it (the worker: the upload's id and tags)
        self.meta = meta

    @property
    def done(self) -> bool:
        return self.received >= self.total

    def write(self, offset: Any, data: Any) -> None:
        """Copy one chunk in: only the next offset, at most one chunk, never past the declared total."""
        if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or data.dim() != 1:
            raise ProtocolError("a chunk must carry raw bytes")
        n = data.numel()
        if offset != self.received or type(offset) is not int:
            raise ProtocolError(f"chunk at offset {offset!r}, expected {self.received}")
        if n == 0 or n > self.chunk or offset + n > self.total:
            raise ProtocolError(f"chunk of {n} bytes at {offset} does not fit a stream of {self.total} bytes "
                                f"in chunks of {self.chunk}")
        self.flat[offset:offset + n] = data.numpy()
        self.received = offset + n
        self.touched = time.monotonic()


def declaration(tensor: torch.Tensor) -> Tuple[str, List[int], int]:
    """``(dtype name, shape, bytes)`` of a tensor about to be streamed."""
    return dtype_name(tensor.dtype), list(tensor.shape), tensor.numel() * tensor.element_size()


def idle(stream: Any, now: Optional[float] = None) -> bool:
    """Whether ``stream`` (an :class:`Incoming` or :class:`Outgoing`) saw no progress for
    :data:`limits.STREAM_IDLE_SECONDS`."""
    return (now if now is not None else time.monotonic()) - stream.touched > limits.STREAM_IDLE_SECONDS

"""The scientist's side of streamed transfers (:mod:`syft_magics.wire.chunks`): big ``send`` and ``get``
travel in chunks, show a progress bar when they are slow, and stop cleanly on a keyboard interrupt.

A :class:`Watch` goes with every request that may stream (a ``get``, a streamed upload's ``put``). While
the caller waits for the reply it runs between polls (:meth:`Link.wait`'s ``tick``): an upload sends the
chunks the worker's credit allows (one at a time while other messages share the link:
:data:`SHARED_SECONDS`); a download (filled in by :func:`receive` as chunks arrive, whichever
thread reads the socket) reports its bytes. Either updates its :class:`~.progress.Bar`.

Interrupts: while a stream runs on the main thread, SIGINT (Ctrl-C, a Jupyter kernel interrupt) only
sets a flag, so it never lands in the middle of a multipart send or a socket read; the next tick raises
``KeyboardInterrupt`` at a chunk boundary, the watch sends ``cancel`` (the worker drops a partial upload or
stops sending a value) and the caller sees the ``KeyboardInterrupt``. The link stays usable: chunks still
on their way are dropped on arrival.
"""
from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING, Any, List, Optional

import torch

from ..config import defaults
from ..errors import ProtocolError
from ..wire import chunks
from ..wire.protocol import ErrorCode, Kind, encode
from .progress import Bar

if TYPE_CHECKING:
    from .transport import LinkBase as Link

#: While other messages go out on the link during an upload (ops from another thread: requests numbered since
#: its last tick, the last within this many seconds), the upload keeps one chunk in flight instead of its
#: window, so that they wait behind one chunk at most. Measured on 2 cores, an op's round trip during a 256 MiB
#: send: 0.46-0.54 ms (2.6-2.8x idle) against 0.71-1.26 ms with the whole window (4 chunks) in flight, and
#: 0.79-0.85 ms with 2; the upload then takes 0.24-0.27 s instead of 0.12-0.17. An upload alone keeps its
#: whole window.
SHARED_SECONDS = 0.05


def plan() -> List[int]:
    """The ``c`` field of a ``get``: chunk bytes, window, and the smallest value worth streaming."""
    return [defaults.chunk_bytes, defaults.chunk_window, defaults.stream_min_bytes]


def put_header(oid: bytes, tensor: torch.Tensor, tags: List[str]) -> dict:
    """The declaration of a streamed upload of ``tensor`` as object ``oid``."""
    dname, shape, nbytes = chunks.declaration(tensor)
    header = {"t": Kind.PUT, "id": oid, "d": dname, "sh": shape, "n": nbytes, "c": defaults.chunk_bytes,
              "tags": tags}
    if tensor.requires_grad:
        header["rg"] = True
    return header


def receive(link: "Link", seq: Any, header: dict) -> None:
    """A stream message for request ``seq`` (with ``link.lock`` held, by whichever thread read it): a
    streamed value's start or one of its chunks (answered with a credit), or the worker's credit for an
    upload. A value is filed as the reply once its last chunk is in."""
    kind = header["t"]
    if kind == Kind.CREDIT:
        o = header.get("o")
        link.credits[seq] = o if type(o) is int else -1  # (checked by the upload's Outgoing: -1 fails)
        return
    try:
        if kind == Kind.VALUE:
            z = header["z"]
            if not isinstance(z, list) or len(z) != 4:
                raise ProtocolError("bad streamed value")
            dtype, shape = chunks.check_layout(*z[:3])
            link.streams[seq] = chunks.Incoming(dtype, shape, chunks.check_plan(z[3], 1)[0], meta=header)
            return
        stream = link.streams.get(seq)
        if stream is None:
            raise ProtocolError("a chunk of a value that was not announced")
        stream.write(header.get("o"), header.get("x"))
    except ProtocolError as exc:
        link.streams.pop(seq, None)
        link.say({"t": Kind.CANCEL, "s": seq})
        link.replies[seq] = {"t": Kind.ERR, "s": seq, "code": ErrorCode.PROTOCOL, "etype": "ProtocolError",
                             "msg": f"the worker's streamed value could not be read: {exc}"}
        return
    if stream.done:
        del link.streams[seq]
        stream.meta["x"] = stream.tensor
        link.replies[seq] = stream.meta
    else:
        link.say({"t": Kind.CREDIT, "s": seq, "o": stream.received})


class Watch:
    """Progress, chunk sending and interrupts for one request that may stream (see the module docstring).

    ``upload`` is the tensor of a streamed ``send`` (whose ``put`` is ``header``); without it the request
    is a ``get``, which streams only if the worker answers with a streamed value.
    """

    def __init__(self, link: "Link", header: dict, label: str, upload: Optional[torch.Tensor] = None) -> None:
        self.link = link
        self.seq = header["s"]
        self.header = header
        self.label = label
        self.out = chunks.Outgoing(self.seq, upload, header["c"], defaults.chunk_window) if upload is not None \
            else None
        self.bar: Optional[Bar] = None
        self.moved = -1
        self._seq_seen: Optional[int] = None  # (an upload: the link's last request number at its last tick)
        self._shared_until = 0.0  # (... and until when other messages share the link)
        self.interrupted = False
        self._saved: Any = None

    def __enter__(self) -> "Watch":
        if self.out is not None:
            self._defer()
        return self

    def tick(self) -> bool:
        """Send what the window allows, show progress; True if bytes moved since the last tick."""
        if self.interrupted:
            raise KeyboardInterrupt
        out = self.out
        if out is not None:
            credit = self.link.credits.get(self.seq)
            if credit is None:
                return False  # the worker has not accepted the upload yet
            if credit != out.acked:
                out.credit(credit)
            # (other messages share the link: they wait behind one chunk at most, see SHARED_SECONDS)
            now, seq = time.monotonic(), self.link.last_seq
            if self._seq_seen is not None and seq != self._seq_seen:  # (requests since the last tick: others')
                self._shared_until = now + SHARED_SECONDS
            self._seq_seen = seq
            for message in out.due(1 if now < self._shared_until else None):
                self.link.send(encode(message), flush=True, awaited=True, alone=True)
            done, total = out.acked, out.total
        else:
            stream = self.link.streams.get(self.seq)
            if stream is None:
                return False
            self._defer()
            done, total = stream.received, stream.total
        if self.bar is None:
            self.bar = Bar(total, f"{'send' if out is not None else 'get'} {self.label}")
        self.bar.update(done)
        moved, self.moved = done != self.moved, done
        return moved

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._restore()
        if self.bar is not None:
            if exc_type is None:
                self.bar.update(self.bar.total)
            self.bar.close()
        if exc_type is not None:
            if self.out is not None or self.seq in self.link.streams:
                self.link.cancel(self.seq)  # the worker drops the partial upload / stops sending
            return
        if self.interrupted:  # Ctrl-C as the last chunk came in: honour it, undo what was done
            if self.out is not None:
                self.link.free_queue.append(self.header["id"])
            raise KeyboardInterrupt

    # -- SIGINT becomes a flag while a stream runs on the main thread --------------------------------
    def _defer(self) -> None:
        if self._saved is not None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return  # someone else handles SIGINT: leave it to them

        def interrupted(signum: int, frame: Any) -> None:
            self.interrupted = True

        self._saved = signal.signal(signal.SIGINT, interrupted)

    def _restore(self) -> None:
        if self._saved is not None:
            signal.signal(signal.SIGINT, self._saved)
            self._saved = None

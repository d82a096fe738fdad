"""A client's requests that wait for the worker's answer, and how its errors reach the user.

Ops are pipelined (:meth:`.client.Client.run` returns pointers at once); a request that waits (``.get()``,
``sync()``, ``search()``, a shape, an error's text) is where the worker's answers are read: an owner's pending
decision is announced and waited for, a big value streams with a progress bar (:mod:`.transfers`), and the
first pipelined op that failed since the last wait is raised as a :class:`~syft_magics.errors.RemoteError`
naming the op and the user's line that issued it.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional, Tuple

import torch

from ..config import defaults
from ..errors import GetTimeout, RemoteError, ReplyTimeout, WithheldError, error_class, typed
from ..events import EventStream
from ..traces import describe, user_site
from ..wire import limits, samehost
from ..wire.names import short_name
from ..wire.protocol import ErrorCode, Kind, encode
from . import transfers
from .transport import LinkBase


class Requests:
    """Mixed into :class:`~.client.Client`: requests that wait, and the errors of ops, raised where the user
    waits, naming the line that issued the op."""

    name: str
    events: EventStream
    _link: LinkBase
    #: each op in flight whose failure would name it: its sequence number -> (op, the user's line)
    _origins: Dict[int, Tuple[str, Optional[Tuple[str, int]]]]

    def _request(self, header: dict, timeout: Optional[float] = None, *, approval_timeout: float = 0.0,
                 what: Optional[str] = None, op: Optional[str] = None,
                 pool: Optional[samehost.Pool] = None, upload: Optional[torch.Tensor] = None) -> dict:
        link = self._link
        link.check()  # before a large tensor is encoded for a link that cannot take it
        seq = link.next_seq()
        header["s"] = seq
        if op is not None:
            self._origins[seq] = (op, user_site())
        link.expect(seq)
        answered = False
        # a get or a streamed send may stream: progress, chunks, interrupts (scientist/transfers.py)
        watch = transfers.Watch(link, header, (what or "a value").removeprefix("get of "), upload) \
            if "c" in header or upload is not None else None
        tick = watch.tick if watch is not None else None
        try:
            with watch if watch is not None else contextlib.nullcontext():
                link.send(encode(header, pool), flush=True, awaited=True)
                reply = link.wait(seq, timeout if timeout is not None else defaults.reply_timeout, tick)
                if reply["t"] == Kind.PENDING:
                    n = reply.get("n")
                    why = reply.get("why")
                    print(f"waiting for {self.name} to approve request #{n} ({what or 'a value'})"
                          + (f": {limits.clip(why)}" if isinstance(why, str) else ""), flush=True)
                    self.events.emit("waiting", n=n)
                    try:
                        reply = link.wait(seq, approval_timeout, tick)
                    except ReplyTimeout:
                        raise GetTimeout(f"{self.name} has not decided on request #{n} within "
                                         f"{approval_timeout:g} s; the request stays pending: call .get() again "
                                         "to keep waiting") from None
            answered = True
        finally:
            link.done(seq, abandoned=not answered)
        origin = self._origins.pop(seq, None)  # (its own: _settled forgets those up to it)
        self._settled(seq, reply)
        if reply["t"] == Kind.ERR:
            if origin is not None:  # (helper-79: a failed request lost its op name and the user's line)
                self._origins[seq] = origin
            self._emit_error(reply)
            if reply.get("code") == ErrorCode.NOT_RUN:  # (its first failure's own reply never came)
                self._told(reply.get("first"))
            raise self._error(reply)
        return reply

    @property
    def unsettled(self) -> bool:
        """Whether ops sent since the last wait may still fail, or a failure of them is not raised yet, on a link
        that can still ask (a worker gone or stopped is raised by the next use, once)."""
        link = self._link
        return not link.closed and link.broken is None and bool(self._origins or link.errors)

    def settled(self, seq: int) -> bool:
        """Whether the op sent as ``seq`` is known to have run (a later request was answered)."""
        return seq not in self._origins

    def _settled(self, seq: int, reply: Optional[dict] = None) -> None:
        """Everything up to ``seq`` has run (``reply``: the worker's answer to it): raise the first error among
        those ops, forget their origins; the worker, which ran nothing of ours since that failure, runs our ops
        again from here (:meth:`_told`)."""
        self._link.settled(seq)
        errors = self._link.errors
        error = None
        if errors:
            first = min(errors, key=_seq)  # (a refusal at once may come before a queued op's earlier failure)
            stopped = reply if reply is not None and reply.get("code") == ErrorCode.NOT_RUN else {}
            skipped = stopped.get("n")
            error = self._error(first, more=len(errors) - 1, skipped=skipped if type(skipped) is int else 0)
            self._told(stopped.get("first", first.get("s")))
            errors.clear()
        for old in [s for s in self._origins if s <= seq]:
            del self._origins[old]
        if error is not None:
            raise error

    def _told(self, first: object) -> None:
        """Tell the worker that the failure numbered ``first`` is being raised here: it runs our ops again (it
        stopped them at that failure: ``owner/halts.py``). Queued: it goes before anything sent after it."""
        if type(first) is int and not self._link.closed and self._link.broken is None:
            self._link.send(encode({"t": Kind.TOLD, "first": first}))

    def _emit_error(self, header: dict) -> None:
        """Tell subscribers (a panel) that the worker answered ``err``."""
        self.events.emit("error", seq=header.get("s"), code=header.get("code"), message=str(header.get("msg")))

    def _error(self, header: dict, more: int = 0, skipped: int = 0) -> Exception:
        code = header.get("code") or ErrorCode.ERROR
        cls = error_class(code)
        msg = str(header.get("msg"))
        if not issubclass(cls, RemoteError):  # not an op's failure: the worker's text says it all
            return cls(msg)
        seq = header.get("s")
        op, site = self._origins.pop(seq, (None, None)) if seq is not None else (None, None)
        text = f"{short_name(op) if op else 'an op'} failed on {self.name}: {msg}"
        line = None
        if site is not None:
            line = describe(site)
            text += f"\n  issued at {line}"
        if more:
            text += f"\n  ({more} more op{'s' if more > 1 else ''} failed since; fix this one first)"
        if skipped:
            text += (f"\n  ({skipped} later op{'s' if skipped > 1 else ''} or send{'s' if skipped > 1 else ''} "
                     f"{'were' if skipped > 1 else 'was'} not run: the worker runs nothing after a failure until "
                     "it has been raised here)")
        etype = header.get("etype")
        exc = typed(cls, etype)(text, op=op, remote_type=etype, remote_message=msg, line=line, code=code)
        if isinstance(exc, WithheldError) and isinstance(header.get("w"), int):
            exc.withheld, exc.client = header["w"], self  # err.request_message() asks the owner for the text
        return exc


def _seq(header: dict) -> int:
    seq = header.get("s")
    return seq if type(seq) is int else 1 << 62  # (an error naming no request: after those that do)

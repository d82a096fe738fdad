"""The worker's side of streamed transfers (:mod:`syft_magics.wire.chunks`): uploads it receives in chunks
for a client's ``send``, downloads it sends in chunks for a client's ``get``.

Every stream belongs to one session (:class:`Streams`, held by the :class:`~.sessions.Session`) and is
bounded by :mod:`syft_magics.wire.limits`: an upload is declared whole before any chunk and allocated
once at that size, a session has a few streams at most, and a stream with no progress for
``STREAM_IDLE_SECONDS`` is dropped (``expire``), as are all of a session's when it ends. A partial
upload is never stored: the object exists only once its last byte has arrived.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import torch

from ..errors import ProtocolError
from ..wire import chunks, limits, samehost
from ..wire.names import check_tag
from ..wire.protocol import ErrorCode, Kind, encode, field
from . import quotas
from .replies import Reject, Replies, Tracked, Unread

if TYPE_CHECKING:
    from .serving import Server
    from .sessions import Session
    from .store import Entry


class Streams:
    """One session's streams in progress, by the sequence number of the request that opened them."""

    def __init__(self) -> None:
        #: partial uploads: the tensor being filled, with the object's id, tags and requires_grad in ``meta``
        self.uploads: Dict[Any, chunks.Incoming] = {}
        #: downloads still sending chunks
        self.downloads: Dict[Any, chunks.Outgoing] = {}

    def __len__(self) -> int:
        return len(self.uploads) + len(self.downloads)

    def declared(self) -> int:
        """Bytes the partial uploads hold (allocated whole when declared)."""
        return sum(u.total for u in self.uploads.values())

    def expire(self, now: Optional[float] = None) -> int:
        """Drop the streams that made no progress for ``limits.STREAM_IDLE_SECONDS``; how many."""
        now = time.monotonic() if now is None else now
        stale = [s for s, u in self.uploads.items() if chunks.idle(u, now)]
        for seq in stale:
            del self.uploads[seq]
        gone = [s for s, d in self.downloads.items() if chunks.idle(d, now)]
        for seq in gone:
            del self.downloads[seq]
        return len(stale) + len(gone)

    def end_downloads_of(self, ids: List[bytes]) -> None:
        """End the downloads of objects just freed: a stream held its object's memory, uncharged, for as long as its
        client sent a credit now and then (helper-55)."""
        if self.downloads:
            gone = set(ids)
            for seq in [s for s, d in self.downloads.items() if d.meta in gone]:
                del self.downloads[seq]

    def clear(self) -> None:
        """Forget every stream (the session ended): partial uploads are freed, never stored."""
        self.uploads.clear()
        self.downloads.clear()


def download(session: "Session", header: dict, tensor: Any, copy: bool, oid: bytes = b"") -> Optional[Replies]:
    """The start of a streamed value for a ``get`` whose client takes streams (its ``c`` field): the
    ``value`` header and the first window of chunks (:func:`_chunks`). None where the value goes as one frame:
    the client did not ask, the value is small or not a tensor, it takes the same-host path, or the session
    already has :data:`limits.MAX_DOWNLOADS` streams out. ``oid``: the object sent (its stream ends if it is
    freed)."""
    plan = header.get("c")
    if not isinstance(plan, list) or len(plan) != 3 or not isinstance(tensor, torch.Tensor):
        return None
    chunk, window = chunks.check_plan(plan[0], plan[1])
    nbytes = tensor.numel() * tensor.element_size()
    busy = len(session.streams.downloads) >= limits.MAX_DOWNLOADS
    if type(plan[2]) is not int or nbytes < max(plan[2], chunk) or busy:
        return None
    if session.pool is not None and nbytes <= samehost.POOL_MAX_BYTES:
        return None
    seq = header.get("s")
    out = chunks.Outgoing(seq, tensor, chunk, window, copy=copy, meta=oid)
    out.held = Unread(parent=session.unread)
    dname, shape, n = chunks.declaration(tensor)
    replies = Replies([encode({"t": Kind.VALUE, "s": seq, "x": None, "z": [dname, shape, n, chunk]})])
    replies.extend(_chunks(session, out))
    if not out.done:
        session.streams.downloads[seq] = out
    return replies


def _chunks(session: "Session", out: chunks.Outgoing) -> Replies:
    """The chunks of a download its window allows now, each counted as its client's unread bytes until ZeroMQ has
    written it (as a value sent in one frame is), and no more of them than ``max_unread_bytes`` leaves room for
    (one, when ZeroMQ holds none of this stream's: else it could stall). A client that never read its socket made
    the worker hold every chunk of any number of streamed values, past both quotas (helper-55: +480 MiB of 16 MiB
    gets under 64 MB quotas); "none in flight" is ZeroMQ's word, not the client's credit, which may name chunks it
    never read (helper-56: 240 MiB under 64 MB)."""
    window = max(0, int(session.quotas.max_unread_bytes) - session.unread.nbytes()) // out.chunk
    if not window and not out.held.nbytes():
        window = 1
    return Replies(Tracked(encode(m), out.held, m["x"].numel()) for m in out.due(window))


def on_credit(server: "Server", session: "Session", header: dict, used: List["Entry"]) -> Optional[Replies]:
    """The client holds ``o`` bytes of a download: send the chunks the window now allows."""
    seq = header.get("s")
    out = session.streams.downloads.get(seq)
    if out is None:
        return None  # a credit for a stream that ended or was cancelled: nothing to send
    try:
        out.credit(header.get("o"))
        due = _chunks(session, out)
    except ProtocolError:
        del session.streams.downloads[seq]
        raise
    if out.done:
        del session.streams.downloads[seq]
    return due


def within_quotas(server: "Server", session: "Session", count: int, nbytes: int, what: str, pending_objects: int = 0,
                  pending_bytes: int = 0) -> int:
    """Refuse ``what`` (``count`` objects of ``nbytes`` in all) if it would take ``session`` over its quotas, what
    is on its way counted as held: its partial uploads, and ``pending_objects`` and ``pending_bytes`` (a move's
    open tickets); the bytes so held, else."""
    q, sid = session.quotas, session.ident
    try:
        quotas.check_objects(q, session.label, server.store.session_count(sid) + pending_objects, count)
        held = server.held_by(session) + pending_bytes
        quotas.check_bytes(q, session.label, held, nbytes, what)
    except Reject:
        server.refuse("over a quota or time budget")
        raise
    return held


def on_put(server: "Server", session: "Session", header: dict, used: List["Entry"]) -> List[Any]:
    """A client declares a streamed upload: checked against the limits and allocated whole, now."""
    seq = header.get("s")
    oid = field(header, "id", bytes)
    if len(oid) != 16 or oid in server.store:
        raise Reject(ErrorCode.BAD_ID, "sent objects need a fresh 16-byte id")
    tags = tuple(check_tag(t) for t in field(header, "tags", list))
    dtype, shape = chunks.check_layout(header.get("d"), header.get("sh"), header.get("n"))
    chunk, _ = chunks.check_plan(header.get("c"), 1)
    nbytes = header["n"]
    uploads = session.streams.uploads
    if type(seq) is not int or seq in uploads:
        raise ProtocolError("a streamed upload needs a sequence number of its own")
    if len(uploads) >= limits.MAX_UPLOADS or session.streams.declared() + nbytes > limits.MAX_UPLOAD_BYTES:
        raise Reject(ErrorCode.BAD_ARGS, f"{server.name} takes at most {limits.MAX_UPLOADS} uploads of "
                                         f"{limits.MAX_UPLOAD_BYTES >> 20} MiB in all at once from one client")
    # the client's quotas, before the tensor is allocated (its partial uploads count as held)
    held = within_quotas(server, session, 1, nbytes, "this upload", len(uploads))
    try:  # (memory kept unused for this client's uploads stays within its quota too: helper-35)
        inc = chunks.Incoming(dtype, shape, chunk, meta={"id": oid, "tags": tags, "rg": bool(header.get("rg"))},
                              key=session.ident, room=int(session.quotas.max_bytes) - held)
    except RuntimeError as exc:  # out of memory
        raise Reject(ErrorCode.ERROR, f"{server.name} cannot hold {nbytes >> 20} MiB more: {exc}") from None
    uploads[seq] = inc
    return encode({"t": Kind.CREDIT, "s": seq, "o": 0})


def on_chunk(server: "Server", session: "Session", header: dict, used: List["Entry"]) -> Any:
    """One chunk of an upload: copied in place; the last one stores the object (and is answered ``ok``)."""
    seq = header.get("s")
    inc = session.streams.uploads.get(seq)
    if inc is None:
        raise ProtocolError(f"no upload in progress for request {seq!r} (cancelled, timed out, or never declared)")
    try:
        inc.write(header.get("o"), header.get("x"))
    except ProtocolError:
        del session.streams.uploads[seq]  # a broken stream is dropped whole
        raise
    if not inc.done:
        return encode({"t": Kind.CREDIT, "s": seq, "o": inc.received})
    del session.streams.uploads[seq]
    meta = inc.meta
    return server.HANDLERS[Kind.SEND](server, session, {"t": Kind.SEND, "s": seq, "id": meta["id"], "x": inc.tensor,
                                                         "tags": list(meta["tags"]), "rg": meta["rg"], "ack": True},
                                      used)


def on_cancel(server: "Server", session: "Session", header: dict, used: List["Entry"]) -> None:
    """The client stopped a stream (e.g. a keyboard interrupt): drop what it left half done."""
    seq = header.get("s")
    session.streams.uploads.pop(seq, None)
    session.streams.downloads.pop(seq, None)
    return None


#: the handlers of the stream messages, merged into the serving loop's
HANDLERS = {Kind.PUT: on_put, Kind.CHUNK: on_chunk, Kind.CREDIT: on_credit, Kind.CANCEL: on_cancel}

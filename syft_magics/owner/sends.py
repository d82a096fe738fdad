"""A client's send in one message: its tensor into the store as its own object, within its quota.

``client.send(t)`` (and every tensor an op is given that is not on the worker yet) arrives here; a big one
arrives in chunks instead (:mod:`.streams`), and one from another worker as a move (:mod:`.moves`).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, List, Optional

import torch

from ..wire import limits
from ..wire.names import check_tag
from ..wire.protocol import ErrorCode, Kind, encode, field
from . import quotas
from .replies import Reject
from .store import Entry

if TYPE_CHECKING:
    from .serving import Server
    from .sessions import Session


def on_send(server: "Server", session: "Session", header: dict, used: List[Entry]) -> Optional[List[Any]]:
    """Store the tensor of a ``send`` message under the fresh id its client chose (``rg``: it requires grad, as
    the client's did; ``ack``: answer once stored)."""
    oid = field(header, "id", bytes)
    tensor = field(header, "x", torch.Tensor)
    tags = tuple(check_tag(t) for t in (header.get("tags") or ())[:limits.MAX_TAGS + 1])
    if len(tags) > limits.MAX_TAGS:
        raise Reject(ErrorCode.BAD_TAG, f"an object takes at most {limits.MAX_TAGS} tags")
    if len(oid) != 16 or oid in server.store:
        raise Reject(ErrorCode.BAD_ID, "sent objects need a fresh 16-byte id")
    size = tensor.numel() * tensor.element_size()
    server.stats["bytes_in"] += size
    try:
        quotas.check_objects(session.quotas, session.label, server.store.session_count(session.ident), 1)
        quotas.check_bytes(session.quotas, session.label, server.store.held_bytes(session.ident), size, "this send")
    except Reject as exc:  # its pointer reads as failed, with this reason, at the client's next use
        server.refuse("over a quota or time budget")
        server._fail(session, "send", [oid], [], exc, time.perf_counter())
        raise
    tensor = server.worker.place(tensor)
    if header.get("rg") and (tensor.is_floating_point() or tensor.is_complex()):
        tensor.requires_grad_(True)  # send keeps requires_grad
    server.store.put(Entry(oid, tensor, tags=tags, origin=session.label, session=session.ident, op=""))
    server.events.emit("command", client=session.label, op="send", inputs=(), out=[oid], duration=0.0, status="ok")
    return encode({"t": Kind.OK, "s": header.get("s")}) if header.get("ack") else None

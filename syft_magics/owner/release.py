"""Whether an object may leave the worker: one decision for every way out (a get, a move to another worker).

A move out is a get by another party: it goes through the same steps, in the same order, as a get
(an approval already given for this very object, version and action; the open policy; the owner's
rules for training; the policy's decision; else a request the owner reviews in the panel, shown
with its action, e.g. "move z to Alice"). An approval is for one action: approving a move to Alice
does not let the scientist get the value itself.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ..display import short_id
from ..errors import ErrorCode
from ..wire.protocol import Kind, encode
from .policy import ALLOW, DENY, GetRequest, OpenPolicy
from .replies import Reject
from .sessions import Session
from .store import Entry

if TYPE_CHECKING:
    from .serving import Server

GET = "get"


def decide(server: "Server", session: Session, entry: Entry, seq: Any, action: str = GET) -> Optional[List[Any]]:
    """None if ``entry`` may leave now for ``action``; else the ``pending`` reply (the owner decides later).
    Raises :class:`Reject` (``denied``) if the policy refuses."""
    worker = server.worker
    version = entry.version
    if server.requests.take_grant(session.ident, entry.id, version, action):
        return None
    if type(worker.policy).decide is OpenPolicy.decide:  # allows everything: no request to describe
        return None
    rule = worker.policy.rules.match(entry.kind, entry.shape, action) if worker.policy.rules else None
    what = "" if action == GET else f" ({action})"
    if rule is not None:  # an owner's rule for training (allow_get): decided without a click, and logged
        server.events.emit("get", client=session.label, id=entry.hex, status=f"auto-allowed ({rule}){what}")
        return None
    fields: Dict[str, Any] = dict(client=session.label, object_id=entry.hex, shape=entry.shape, dtype=entry.dtype,
                                  lineage=server.store.lineage(entry), tags=entry.tags, action=action)
    decision = worker.policy.decide(GetRequest(n=0, **fields))
    if decision == ALLOW:
        return None
    if decision == DENY:
        server.events.emit("get", client=session.label, id=entry.hex, status=f"denied{what}")
        raise Reject(ErrorCode.DENIED, f"{server.name} refused to release {entry.label}{what}: "
                                       f"{worker.policy.deny_reason(GetRequest(n=0, **fields))}")
    req, opened = server.requests.ask(session.ident, entry.id, seq, version=version, **fields)
    if req is None:  # the owner approved while this request was on its way
        return None
    if opened:
        server.events.emit("request", n=req.n, client=session.label, id=entry.hex, lineage=req.lineage,
                           action=action)
    return encode({"t": Kind.PENDING, "s": seq, "n": req.n, "name": server.name})


def entry_for(server: "Server", session: Session, oid: bytes) -> Entry:
    """The object ``session`` may ask to release: its own or the owner's (another client's reads as none)."""
    entry = server.store.get(oid)
    if entry is None or (entry.session is not None and entry.session != session.ident):
        raise Reject(ErrorCode.UNKNOWN_OBJECT,
                     f"{server.name} holds no object {short_id(oid)} (it was freed, or never existed)")
    if entry.error is not None:
        raise Reject(ErrorCode.FAILED_INPUT, f"{entry.label} came from an op that failed: {entry.error}")
    return entry

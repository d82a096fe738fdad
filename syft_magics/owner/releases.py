"""Gets: what a client asks the owner to release, and the owner's decision on it.

A client may ask for an object's ``value``, for its ``shape`` when that shape is withheld (it
depends on the owner's values: see :mod:`syft_magics.owner.provenance`), or for the text of an
``error`` withheld from it. Each goes through the same decision: an approval already given, the
``open`` policy, the owner's rules, the policy's ``decide``, else a request the owner approves or
denies (``worker.approve(n)``), shown with the object's history.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List

from ..display import short_id
from ..errors import ErrorCode
from ..wire.protocol import Kind, encode, field
from .policy import ALLOW, DENY, GetRequest, OpenPolicy
from .provenance import of_entry
from .replies import Reject

if TYPE_CHECKING:
    from .serving import Server
    from .sessions import Session

WHATS = ("value", "shape", "error")


def on_get(server: "Server", session: "Session", header: dict) -> List[Any]:
    """The reply to a ``get``: the value (shape, error text), a pending request, or a refusal."""
    seq = header.get("s")
    what = header.get("what", "value")
    if what not in WHATS:
        raise Reject(ErrorCode.BAD_ARGS, f"a get asks for one of {', '.join(WHATS)}")
    if what == "error":
        return _error_text(server, session, seq, field(header, "n", int))
    oid = field(header, "id", bytes)
    entry = server.store.get(oid)
    if entry is None or (entry.session is not None and entry.session != session.ident):
        raise Reject(ErrorCode.UNKNOWN_OBJECT,
                     f"{server.name} holds no object {short_id(oid)} (it was freed, or never existed)")
    if entry.error is not None:
        raise Reject(ErrorCode.FAILED_INPUT, f"{entry.label} came from an op that failed: {entry.error}")
    entry.last_access = time.time()

    def fields() -> Dict[str, Any]:  # what the owner is shown: built only when a decision needs it
        return dict(client=session.label, object_id=entry.hex, shape=entry.shape, dtype=entry.dtype,
                    lineage=server.store.lineage(entry), tags=entry.tags, label=entry.label)

    def released() -> None:  # the client now knows its shape
        entry.provenance = entry.provenance.released()

    if what == "shape":
        def shape() -> List[Any]:
            released()
            server.events.emit("get", client=session.label, id=entry.hex, status="shape sent")
            return encode({"t": Kind.VALUE, "s": seq, "x": list(entry.shape)})

        if not (of_entry(entry).hidden and server.disclosure.guarded):
            return shape()
        def shape_fields() -> Dict[str, Any]:
            shown = fields()
            shown["lineage"] = f"shape of {shown['lineage']} ({of_entry(entry).rule})"
            return shown

        return decide(server, session, seq, oid, entry.version, "shape", shape_fields, shape)

    def value() -> List[Any]:
        released()
        return server.send_value(session, header, entry)

    policy = server.worker.policy
    rule = policy.rules.match(entry.kind, entry.shape) if policy.rules else None
    if rule is not None and type(policy).decide is not OpenPolicy.decide \
            and not server.requests.take_grant(session.ident, oid, entry.version):
        # an owner's rule for training (allow_get): decided without a click, and logged
        server.events.emit("get", client=session.label, id=entry.hex, status=f"auto-allowed ({rule})")
    return decide(server, session, seq, oid, entry.version, "value", fields, value, auto=rule is not None)


def _error_text(server: "Server", session: "Session", seq: Any, n: int) -> List[Any]:
    withheld = server.disclosure.errors.get(n)
    if withheld is None or withheld[0] != session.ident:
        raise Reject(ErrorCode.UNKNOWN_OBJECT, f"{server.name} has no withheld error #{n} of this session")
    _, op, text = withheld

    def send() -> List[Any]:
        server.events.emit("get", client=session.label, id=f"error #{n}", status="error text sent")
        return encode({"t": Kind.VALUE, "s": seq, "x": text})

    key = b"error#%d" % n
    def fields() -> Dict[str, Any]:
        return dict(client=session.label, object_id=f"error #{n}", shape=(), dtype="-",
                    lineage=f"the message of an error in {op}: {text}")

    return decide(server, session, seq, key, None, "error", fields, send)


def decide(server: "Server", session: "Session", seq: Any, key: bytes, version: Any, what: str,
           describe: Callable[[], Dict[str, Any]], send: Callable[[], List[Any]], auto: bool = False) -> List[Any]:
    """Release through ``send()`` what the owner allows now, else open (or renew) a request; ``describe()``
    gives what the policy and the owner are shown of it (built only when they are asked)."""
    if auto or server.requests.take_grant(session.ident, key, version, what):
        return send()
    policy = server.worker.policy
    if type(policy).decide is OpenPolicy.decide:  # allows everything: no request to describe
        return send()
    fields = describe()
    label = fields.pop("label", None)
    decision = policy.decide(GetRequest(n=0, what=what, **fields))
    if decision == ALLOW:
        return send()
    if decision == DENY:
        server.events.emit("get", client=session.label, id=fields["object_id"], status="denied")
        label = label or fields["object_id"]
        raise Reject(ErrorCode.DENIED, f"{server.name} refused to release "
                                       f"{label if what == 'value' else f'the {what} of {label}'}: "
                                       f"{policy.deny_reason(GetRequest(n=0, what=what, **fields))}")
    req, opened = server.requests.ask(session.ident, key, seq, version=version, what=what, **fields)
    if req is None:  # the owner approved while this get was on its way
        return send()
    if opened:
        server.events.emit("request", n=req.n, client=session.label, id=fields["object_id"], lineage=req.lineage)
    return encode({"t": Kind.PENDING, "s": seq, "n": req.n, "name": server.name})

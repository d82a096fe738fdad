"""Releases: what a client asks the owner to let leave the worker, and the owner's one decision on it.

A client may ask for an object's ``value``, for its ``shape`` when that shape is withheld (it
depends on the owner's values: see :mod:`syft_magics.owner.provenance`), for the text of an
``error`` withheld from it, or to ``move`` the value to another worker (``ptr.move(alice)``: a
release of the value to another party, :mod:`syft_magics.owner.moves`). Each goes through the same
decision (:func:`decide`): an approval already given for this object, version, kind of release and
target, the ``open`` policy, the owner's rules, the policy's ``decide``, else a request the owner
approves or denies (``worker.approve(n)``), shown with the object's history and, for a move, where
it would go. An approval lets exactly that release through: approving a move to Alice lets neither
a get nor a move to anyone else.
"""
from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch

from ..display import short_id
from ..errors import ErrorCode
from ..wire.protocol import Kind, encode, field
from . import guests, quotas, streams, trained
from .blocks import version_of
from .lineage import shown_tags, sources_text
from .models import export
from .policy import ALLOW, DENY, MAX_PENDING_PER_SESSION, GetRequest, OpenPolicy, TooManyRequests
from .provenance import of_entry
from .replies import TRACK_BYTES, Reject, Tracked
from .rules import GetRule, Target
from .sizes import bounds_of

if TYPE_CHECKING:
    from .serving import Server
    from .sessions import Session
    from .store import Entry

WHATS = ("value", "shape", "error")


def stamp(entry: "Entry") -> Tuple[int, Any]:
    """What a request and its approval bind: which object (its id is its client's choice: freed, it may name
    another object, even one at the same version) and its version counter (a write voids an approval); a
    model's, the counters of its weights and buffers (helper-36: a write into a weight left a model's approval
    standing, and #X left as the model's weight)."""
    if isinstance(entry.tensor, torch.nn.Module):
        return entry.serial, tuple(version_of(t) for t in entry.tensor.state_dict().values())
    return entry.serial, entry.version


def entry_for(server: "Server", session: "Session", oid: bytes) -> "Entry":
    """The object ``session`` may ask to release: its own or the owner's (another client's reads as none)."""
    entry = server.store.get(oid)
    if entry is None or (entry.session is not None and entry.session != session.ident):
        raise Reject(ErrorCode.UNKNOWN_OBJECT,
                     f"{server.name} holds no object {short_id(oid)} (it was freed, or never existed)")
    if entry.error is not None:
        raise Reject(ErrorCode.FAILED_INPUT, f"{entry.label} came from an op that failed: {entry.error}")
    return entry


def on_get(server: "Server", session: "Session", header: dict) -> Optional[List[Any]]:
    """The reply to a ``get``: the value (shape, error text), a pending request, or a refusal."""
    seq = header.get("s")
    what = header.get("what", "value")
    if what not in WHATS:
        raise Reject(ErrorCode.BAD_ARGS, f"a get asks for one of {', '.join(WHATS)}")
    if what == "error":
        return _error_text(server, session, seq, field(header, "n", int))
    oid = field(header, "id", bytes)
    entry = entry_for(server, session, oid)
    entry.last_access = time.time()
    fields = functools.partial(_shown, server, session, entry)  # what the owner is shown: built when asked

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

        return decide(server, session, seq, oid, stamp(entry), "shape", shape_fields, shape)

    def value() -> List[Any]:
        released()
        return value_reply(server, session, header, entry)

    policy = server.worker.policy
    # (an owner's rule of sizes reads a withheld shape's public bound: its match must not tell the real one)
    found = policy.rules.match(entry.kind, _counted(entry, bounds_of(entry))) if policy.rules else None
    untrained = _untrained(server, entry, found)
    rule = _rule(server, session, entry, found, untrained)
    if rule is not None and type(policy).decide is not OpenPolicy.decide \
            and not server.requests.take_grant(session.ident, oid, stamp(entry)):
        # an owner's rule for training (allow_get): decided without a click, and logged
        server.events.emit("get", client=session.label, id=entry.hex, status=f"auto-allowed ({rule})")
    # (why a model rule did not apply is told the scientist too: which of their own ops did it, no value)
    return decide(server, session, seq, oid, stamp(entry), "value", fields, value, auto=rule is not None,
                  note=f"{server.name}'s rule for trained models does not apply: {untrained}" if untrained else "")


def _untrained(server: "Server", entry: "Entry", rule: Optional[GetRule]) -> Optional[str]:
    """Why ``rule`` may not release the model ``entry`` (a weight holds the owner's data put there other than by
    training: see .trained); None if it may, or there is no rule to ask about."""
    return trained.why_not(server.store, entry) if rule is not None and entry.kind == "model" else None


def _counted(entry: "Entry", shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The shape an owner's rule of sizes counts: a complex number is two (helper-61: ``x[i:i+4].view(complex128)``
    is one element, four float32 values of ``#X``, and ``max_numel=1`` let it go)."""
    t = entry.tensor
    return (*shape, 2) if isinstance(t, torch.Tensor) and t.is_complex() else tuple(shape)


def _shown(server: "Server", session: "Session", entry: "Entry") -> Dict[str, Any]:
    """What the policy and the owner are shown of a release of ``entry``'s value (its request's fields)."""
    return dict(client=session.label, object_id=entry.hex, shape=entry.shape, dtype=entry.dtype,
                lineage=trained.warning(server.store, entry) + server.store.lineage(entry)
                + trained.weights_text(server.store, entry),
                tags=shown_tags(entry.tags), label=entry.label)


def _rule(server: "Server", session: "Session", entry: "Entry", rule: Optional[GetRule],
          untrained: Optional[str]) -> Optional[GetRule]:
    """``rule``, unless ``entry`` derives from another owner's data released for this worker only (this owner's
    rules speak for its own data: see .guests), or is a model holding the owner's data put there other than by
    training (``untrained`` says how: a model rule releases trained weights, see .trained); then None, and the
    owner's panel says why."""
    if rule is None:
        return None
    if untrained is not None:
        server.events.emit("get", client=session.label, id=entry.hex, status=f"rule {rule} not applied: {untrained}")
        return None
    held = guests.held(of_entry(entry).sources)
    if not held:
        return rule
    server.events.emit("get", client=session.label, id=entry.hex,
                       status=f"rule {rule} not applied: {entry.label} derives from another owner's data "
                              f"({held[0]})")
    return None


def move_out(server: "Server", session: "Session", seq: Any, entry: "Entry", target: Target,
             send: Callable[[bool], None]) -> Optional[List[Any]]:
    """A move of ``entry``'s value to the worker ``target``: the owner's decision, as for a get by another
    party (a rule ``to=`` applies only to the worker it pins: see :mod:`.rules`). ``send(held)`` hands the value
    to the courier when allowed (then ``None``: the courier answers later; ``held``: released for that worker
    only, by a rule ``to=`` or a click, not as a get would be: see .guests); else the pending reply, or
    :class:`Reject` if refused."""
    if of_entry(entry).hidden and server.disclosure.guarded:  # the ticket's declared shape would test it
        raise Reject(ErrorCode.DENIED, f"the shape of {entry.label} is withheld (it depends on {server.name}'s "
                                       "data): ask for it first (ptr.request_shape()), then move it")
    entry.last_access = time.time()
    to = f"{target.name} at {target.address}"
    fields = functools.partial(_shown, server, session, entry)
    policy = server.worker.policy
    found = policy.rules.match(entry.kind, _counted(entry, entry.shape), to=target) if policy.rules else None
    rule = _rule(server, session, entry, found, _untrained(server, entry, found))
    if found is None and any(r.to == target.name for r in policy.rules):  # named, but not the worker pinned
        server.events.emit("get", client=session.label, id=entry.hex,
                           status=f"rule to {target.name} not applied: {target.address} is not the {target.name} "
                                  "it pins (key, or this machine's connection file)")
    if rule is not None and type(policy).decide is not OpenPolicy.decide \
            and not server.requests.take_grant(session.ident, entry.id, stamp(entry), "move", to):
        server.events.emit("get", client=session.label, id=entry.hex, status=f"auto-allowed ({rule}) (move to {to})")

    held = type(policy).decide is not OpenPolicy.decide and (rule is None or rule.to is not None)
    return decide(server, session, seq, entry.id, stamp(entry), "move", fields, functools.partial(send, held),
                  auto=rule is not None, to=to)


def _error_text(server: "Server", session: "Session", seq: Any, n: int) -> Optional[List[Any]]:
    withheld = server.disclosure.failures.errors.get(n)
    if withheld is None or withheld[0] != session.serial:  # (that session's, not its routing id's: helper-36)
        raise Reject(ErrorCode.UNKNOWN_OBJECT, f"{server.name} has no withheld error #{n} of this session")
    _, op, text, sources = withheld
    came = f" (from {sources_text(sources)})" if sources else ""

    def send() -> List[Any]:
        server.events.emit("get", client=session.label, id=f"error #{n}", status="error text sent")
        return encode({"t": Kind.VALUE, "s": seq, "x": text})

    key = b"error#%d" % n
    def fields() -> Dict[str, Any]:
        return dict(client=session.label, object_id=f"error #{n}", shape=(), dtype="-",
                    lineage=f"the message of an error in {op}{came}: {text}")

    return decide(server, session, seq, key, None, "error", fields, send)


def decide(server: "Server", session: "Session", seq: Any, key: bytes, version: Any, what: str,
           describe: Callable[[], Dict[str, Any]], send: Callable[[], Optional[List[Any]]], auto: bool = False,
           to: str = "", note: str = "") -> Optional[List[Any]]:
    """Release through ``send()`` what the owner allows now, else open (or renew) a request; ``describe()``
    gives what the policy and the owner are shown of it (built only when they are asked). ``to`` names a
    move's target: part of the request, and of any approval; ``note`` tells the client why it waits."""
    if auto or server.requests.take_grant(session.ident, key, version, what, to):
        return send()
    policy = server.worker.policy
    if type(policy).decide is OpenPolicy.decide:  # allows everything: no request to describe
        return send()
    fields = describe()
    label = fields.pop("label", None)
    decision = policy.decide(GetRequest(n=0, what=what, to=to, **fields))
    if decision == ALLOW:
        return send()
    if decision == DENY:
        server.events.emit("get", client=session.label, id=fields["object_id"],
                           status=f"denied (move to {to})" if to else "denied")
        label = label or fields["object_id"]
        told = label if what == "value" else f"{label} to {to}" if what == "move" else f"the {what} of {label}"
        raise Reject(ErrorCode.DENIED, f"{server.name} refused to {'move' if what == 'move' else 'release'} {told}: "
                                       f"{policy.deny_reason(GetRequest(n=0, what=what, to=to, **fields))}")
    try:
        req, opened = server.requests.ask(session.ident, key, seq, version=version, what=what, to=to, **fields)
    except TooManyRequests:
        raise Reject(ErrorCode.QUOTA, f"{server.name}'s owner has {MAX_PENDING_PER_SESSION} requests of this client "
                                      "to decide already: wait for those") from None
    if req is None:  # the owner approved while this get was on its way
        return send()
    if opened:
        server.events.emit("request", n=req.n, client=session.label, id=fields["object_id"], lineage=req.lineage)
    return encode({"t": Kind.PENDING, "s": seq, "n": req.n, "name": server.name, **({"why": note} if note else {})})


def value_reply(server: "Server", session: "Session", header: dict, entry: "Entry") -> Any:
    """The ``value`` reply carrying ``entry``'s tensor (the owner allowed it); big values stream."""
    seq = header.get("s")
    nbytes = entry.nbytes
    if nbytes >= TRACK_BYTES:  # a client that does not read must not pile values up here
        unread = session.unread.nbytes()
        if unread + nbytes > session.quotas.max_unread_bytes:
            server.refuse("values not read, over a quota")
            quotas.check_unread(session.quotas, session.label, unread, nbytes, entry.label)
    server.stats["bytes_out"] += nbytes
    server.events.emit("get", client=session.label, id=entry.hex, status="sent", bytes=nbytes)
    tensor = export(entry.tensor)  # a model leaves as a copy of its state dict
    # inproc:// passes the frame's memory itself: the client would hold the store's tensor (the owner's
    # data) and could change it in place; and a frame is sent zero-copy, later, from ZeroMQ's I/O thread:
    # a client's next op could write into its object before the bytes leave (other values than approved)
    copy = (session.peer == "inproc" and tensor is entry.tensor) or (
        entry.session is not None and isinstance(tensor, torch.Tensor)
        and type(server.worker.policy).decide is not OpenPolicy.decide)
    streamed = streams.download(session, header, tensor, copy, entry.id)  # big values: in chunks, copies if copy
    if streamed is not None:
        return streamed
    if session.pool is not None:
        session.pool.written.clear()
    reply = encode({"t": Kind.VALUE, "s": seq, "x": tensor.detach().clone() if copy else tensor}, session.pool)
    return Tracked(reply, session.unread, nbytes) if nbytes >= TRACK_BYTES else reply

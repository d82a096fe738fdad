"""Receiving a moved object: one-time tickets, and the courier of another worker that redeems one.

``ptr.move(alice)`` never passes the value through the scientist (see :mod:`syft_magics.scientist.moves`):

1. the scientist asks Alice for a **ticket** (:func:`on_ticket`), declaring what will arrive (a tensor's
   shape and dtype, or a model's tensors) and from which worker. Alice's policy decides here whether she
   accepts it (``alice.policy.accept_moves(...)``; by default a connected scientist may move objects
   into its own session). The ticket is a random id and a 256-bit secret, valid for one delivery,
   for :data:`TICKET_SECONDS`, bound to the scientist's session (the object becomes that session's).
2. Bob's courier (:mod:`syft_magics.owner.courier`) connects to Alice and proves it holds the secret
   by the same HMAC handshake as a client's key (:func:`handshake`); Alice proves it too, so the courier
   knows it reached the worker that issued the ticket. The ticket is then used up.
   On an encrypted worker the ticket also carries a one-time CurveZMQ key pair for the courier (and
   the worker's public key): the worker's ZAP handler admits that key while the ticket is open, so
   the courier's link is encrypted and reaches the handshake like an invited client's, and nothing else.
3. The courier sends one ``deliver`` message (:func:`deliver`): bounded by the declared size, checked
   against the declared shapes and dtypes, no references to Alice's objects. A courier is never a
   session: it can deliver once and do nothing else.
"""
from __future__ import annotations

import collections
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Optional, Tuple

import torch

from ..errors import ErrorCode, ProtocolError
from ..wire import auth, discovery, limits
from ..wire.protocol import DTYPES, Kind, decode, encode
from ..wire.protocol import field as header_field
from . import guests, streams
from .models import ModelWeights
from .policy import MoveIn
from .provenance import Provenance
from .replies import Reject
from .sessions import Session
from .store import Entry

if TYPE_CHECKING:
    from .serving import Server

#: How long a ticket waits for its courier.
TICKET_SECONDS = 60.0
#: Open tickets per session, and in all (the oldest give way).
MAX_TICKETS_PER_SESSION = 16
MAX_TICKETS = 256
#: What a delivery may carry beyond the declared tensors (a model's architecture, the header).
SPEC_SLACK_BYTES = 1 << 20
MAX_MODEL_TENSORS = 10_000


@dataclass
class Ticket:
    """What one delivery may bring, into whose session, and the secret that redeems it."""

    tid: bytes
    secret: bytes
    session: bytes
    client: str
    source: str
    kind: str  # "tensor" or "model"
    out: List[bytes]
    shapes: List[Tuple[int, ...]]
    dtypes: List[str]
    grads: List[bool]
    names: List[str] = field(default_factory=list)
    path: str = ""  # a model's: "worker" (rebuilt from its spec) or "client" (its weights only)
    max_bytes: int = 0
    expires: float = 0.0
    #: on an encrypted worker: the courier's one-time CurveZMQ public key (Z85), admitted while the ticket is open
    curve: Optional[str] = None

    @property
    def key(self) -> str:
        return self.secret.hex()


class Tickets:
    """A worker's open tickets, the couriers in their handshake and those allowed to deliver (serving thread)."""

    def __init__(self) -> None:
        self.open: Dict[bytes, Ticket] = {}
        #: courier routing id -> (ticket, our nonce, connection token, when)
        self.pending: Dict[bytes, Tuple[Ticket, bytes, int, float]] = {}
        #: courier routing id -> (ticket, connection token, when, proven: it proved it is the ticket's source worker):
        #: may send one delivery
        self.couriers: Dict[bytes, Tuple[Ticket, int, float, bool]] = {}
        #: the CurveZMQ keys of open tickets, read by the ZAP handler's thread (replaced whole, never changed)
        self.curve_keys: FrozenSet[str] = frozenset()

    def admits(self, public: Any) -> bool:
        """Whether a courier's CurveZMQ key (Z85, text or bytes) belongs to an open ticket (ZAP thread)."""
        if isinstance(public, bytes):
            public = public.decode("ascii", "replace")
        return public in self.curve_keys

    def _keys_changed(self) -> None:
        self.curve_keys = frozenset(t.curve for t in self.open.values() if t.curve is not None)

    def prune(self, now: float) -> None:
        for tid, ticket in list(self.open.items()):
            if ticket.expires < now:
                del self.open[tid]
        for ident in [i for i, item in self.pending.items() if item[3] + TICKET_SECONDS < now]:
            del self.pending[ident]
        for ident in [i for i, item in self.couriers.items() if item[2] + TICKET_SECONDS < now]:
            del self.couriers[ident]
        self._keys_changed()

    def add(self, ticket: Ticket) -> None:
        """Open ``ticket``; past the bounds the oldest of its session's gives way, or, past :data:`MAX_TICKETS`, the
        oldest of the session holding the most (helper-47: one client's 17 sessions evicted another's tickets in
        the middle of its round)."""
        mine = [t for t in self.open.values() if t.session == ticket.session]
        if len(mine) >= MAX_TICKETS_PER_SESSION:
            del self.open[mine[0].tid]
        while len(self.open) >= MAX_TICKETS:
            counts = collections.Counter(t.session for t in self.open.values())
            most = max(counts, key=lambda s: counts[s])
            del self.open[next(t.tid for t in self.open.values() if t.session == most)]
        self.open[ticket.tid] = ticket
        self._keys_changed()

    def use(self, tid: bytes) -> Optional[Ticket]:
        """Take ticket ``tid`` out of the open ones (it is redeemed: one delivery); None if not open."""
        ticket = self.open.pop(tid, None)
        self._keys_changed()
        return ticket


def _shape(value: Any) -> Tuple[int, ...]:
    if not isinstance(value, list) or len(value) > limits.MAX_NDIM or \
            any(type(s) is not int or s < 0 for s in value):
        raise Reject(ErrorCode.BAD_ARGS, f"bad shape in a move ticket: {limits.clip(repr(value), 60)}")
    return tuple(value)


def on_ticket(server: "Server", session: Session, header: dict, used: List[Entry]) -> List[Any]:
    """The scientist asks to move an object here: the owner's accept rule decides; a ticket if accepted."""
    kind = header.get("kind")
    source = header_field(header, "from", str)
    if not limits.is_name(source) or not discovery.plain_or_known(source):
        raise Reject(ErrorCode.BAD_ARGS, "a move ticket names its source worker as this machine names it, exactly, or "
                                         f"with letters, digits and _.@+- only, unlike any of its workers: not "
                                         f"{source!r}")
    out = header_field(header, "o", list)
    shapes = [_shape(s) for s in header_field(header, "shapes", list)[:MAX_MODEL_TENSORS]]
    dtypes = header_field(header, "dtypes", list)
    grads = [bool(g) for g in header_field(header, "rg", list)]
    names: List[str] = []
    path = ""
    if kind == "model":
        names = header_field(header, "names", list)
        path = header.get("path", "")
        if path not in ("worker", "client") or not all(isinstance(n, str) and len(n) < 1000 for n in names):
            raise Reject(ErrorCode.BAD_ARGS, "a model's move ticket needs its path and tensor names")
        count = len(names)
    elif kind == "tensor":
        count = 1
    else:
        raise Reject(ErrorCode.BAD_ARGS, "a move ticket is for a 'tensor' or a 'model'")
    if not (len(shapes) == len(dtypes) == len(grads) == count) or \
            len(out) != count + (kind == "model") or not all(d in DTYPES for d in dtypes):
        raise Reject(ErrorCode.BAD_ARGS, "a move ticket needs one shape, dtype and requires_grad per tensor")
    for oid in out:
        if not isinstance(oid, bytes) or len(oid) != 16 or oid in server.store:
            raise Reject(ErrorCode.BAD_ID, "result ids must be fresh 16-byte ids")
    nbytes = sum(math.prod(s) * DTYPES[d].itemsize for s, d in zip(shapes, dtypes))
    _within_quotas(server, session, len(out), nbytes)
    move = MoveIn(client=session.label, source=source, kind=kind, shapes=shapes, dtypes=dtypes, nbytes=nbytes)
    accepted, reason = server.worker.policy.accepts(move)
    if not accepted:
        server.refuse("move refused")
        server.events.emit("command", client=session.label, op=f"move from {source}", inputs=(), out=[],
                           duration=0.0, status=f"refused: {reason}")
        raise Reject(ErrorCode.DENIED, f"{server.name} does not accept this move from {source}: {reason}")
    now = time.monotonic()
    book: Tickets = server.tickets
    book.prune(now)
    worker = server.worker
    curve = auth.new_keypair() if worker.server_key is not None else None  # the courier's, for this ticket
    ticket = Ticket(tid=os.urandom(16), secret=os.urandom(32), session=session.ident, client=session.label,
                    source=source, kind=kind, out=list(out), shapes=shapes, dtypes=list(dtypes), grads=grads,
                    names=names, path=path, max_bytes=nbytes + SPEC_SLACK_BYTES, expires=now + TICKET_SECONDS,
                    curve=curve[0] if curve is not None else None)
    book.add(ticket)
    reply = {"t": Kind.OK, "s": header.get("s"), "tid": ticket.tid, "secret": ticket.secret,
             "address": worker.address, "instance": worker.instance, "name": server.name}
    if curve is not None:
        reply["curve"] = [worker.server_key, *curve]
    return encode(reply)


def _within_quotas(server: "Server", session: Session, count: int, nbytes: int) -> None:
    """Refuse a move in that would take its session over its quotas, what its open tickets will bring counted as
    held, like partial uploads (helper-36: tickets the scientist delivered itself stored 96 MiB in 12 objects
    under a 1 MiB, 10-object quota)."""
    mine = [t for t in server.tickets.open.values() if t.session == session.ident]
    streams.within_quotas(server, session, count, nbytes, "this move", sum(len(t.out) for t in mine),
                          sum(t.max_bytes - SPEC_SLACK_BYTES for t in mine))


def handshake(server: "Server", ident: bytes, header: dict) -> List[Any]:
    """A courier's hello (naming its ticket) or its proof of the ticket's secret."""
    book: Tickets = server.tickets
    now = time.monotonic()
    book.prune(now)
    refused = Reject(ErrorCode.UNAUTHENTICATED, f"{server.name} refused the courier: no such ticket "
                                                "(expired, used, or never issued)")
    if header["t"] == Kind.HELLO:
        ticket = book.open.get(header.get("ticket"))  # type: ignore[arg-type]
        theirs = header.get("cn")
        if ticket is None or type(theirs) is not bytes or len(theirs) != 16:
            server.refuse("bad ticket")
            raise refused
        nonce = auth.new_nonce()
        while len(book.pending) >= limits.MAX_PENDING_HANDSHAKES:
            book.pending.pop(next(iter(book.pending)))
        book.pending[ident] = (ticket, nonce, server._conn, now)
        # we prove we hold the secret too: the courier reached the worker that issued the ticket; and the key of our
        # connection file, if any: a courier that found it at our address asks (see courier.Destination.file_key)
        challenge = {"t": Kind.CHALLENGE, "nonce": nonce, "instance": server.worker.instance, "name": server.name,
                     "tp": worker_proof(ticket.key, theirs, ident)}
        key = file_key(server)
        if key is not None:
            challenge["kp"] = auth.proof_of(key, b"owner", theirs, ident)
        return encode(challenge)
    pending = book.pending.pop(ident, None)
    mac = header.get("mac")
    if pending is None or pending[2] != server._conn or type(mac) is not bytes or \
            not auth.verify(pending[0].key, pending[1], ident, mac) or book.use(pending[0].tid) is None:
        server.refuse("bad ticket")
        raise refused
    proven = _proves_source(pending[0].source, header.get("sp"), pending[1], str(server.worker.address), ident)
    book.couriers[ident] = (pending[0], server._conn, now, proven)  # the ticket is used up: one delivery
    return encode({"t": Kind.WELCOME, "instance": server.worker.instance, "name": server.name})


def worker_proof(key: str, theirs: bytes, ident: bytes) -> bytes:
    """A worker's proof, to the courier ``ident`` that sent the nonce ``theirs``, that it issued the ticket of secret
    ``key`` (checked by :class:`~.courier.Courier`)."""
    return auth.proof_of(key, b"worker", theirs, ident)


def _proves_source(source: str, mac: Any, nonce: bytes, address: str, ident: bytes) -> bool:
    """Whether a courier proved it is the worker ``source`` its ticket names (the scientist's claim): the key of
    this machine's connection file of that worker (none: not proven; see .guests), over our nonce and our address
    (a proof a courier gave a listener elsewhere, relaying our nonce, proves nothing here)."""
    if type(mac) is not bytes:
        return False
    return any(info.name == source and info.alive
               and auth.verify_of(info.key, mac, b"source", nonce, address.encode(), ident)
               for info in discovery.all_files())


def file_key(server: "Server") -> Optional[str]:
    """The key this worker's connection file holds (None: it wrote none)."""
    conn = server.worker._conn
    return conn.key if conn is not None else None


def _no_refs(oid: bytes) -> Any:
    raise ProtocolError("a delivery cannot refer to objects of the receiving worker")


def deliver(server: "Server", ident: bytes, parts: List[Any]) -> List[Any]:
    """The courier's one message: the object, checked against its ticket, stored for the scientist's session."""
    ticket, conn, _, proven = server.tickets.couriers.pop(ident)
    t0 = time.perf_counter()
    size = sum(len(p) for p in parts)
    if conn != server._conn:
        raise Reject(ErrorCode.UNAUTHENTICATED, f"{server.name} refused the delivery: another connection")
    if size > ticket.max_bytes:
        raise Reject(ErrorCode.BAD_ARGS, f"the delivery of {size} bytes exceeds its ticket's {ticket.max_bytes}")
    header = decode(parts, _no_refs, max_header=ticket.max_bytes)
    if header.get("t") != Kind.DELIVER:
        raise ProtocolError("a courier can only deliver")
    seq = header.get("s")
    session = server.sessions.get(ticket.session)
    if session is None:
        raise Reject(ErrorCode.UNKNOWN_SESSION, f"the scientist's session on {server.name} has ended; "
                                                "nobody would own the moved object")
    try:
        _within_quotas(server, session, len(ticket.out), ticket.max_bytes - SPEC_SLACK_BYTES)
        made = _store(server, ticket, header, proven)
    except Reject as exc:
        setattr(exc, "seq", seq)
        raise
    except Exception as exc:
        reject = Reject(ErrorCode.BAD_ARGS, f"{server.name} could not take the moved {ticket.kind}: {exc}")
        setattr(reject, "seq", seq)
        raise reject from None
    server.stats["bytes_in"] += ticket.max_bytes - SPEC_SLACK_BYTES
    server.events.emit("command", client=ticket.client, op=f"move from {ticket.source}", inputs=(), out=made,
                       duration=time.perf_counter() - t0, status="ok")
    return encode({"t": Kind.OK, "s": seq})


def _checked(ticket: Ticket, i: int, value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != ticket.shapes[i] or \
            str(value.dtype).removeprefix("torch.") != ticket.dtypes[i]:
        raise Reject(ErrorCode.BAD_ARGS, f"the delivered {what} is not the {ticket.dtypes[i]} "
                                         f"tensor of shape {list(ticket.shapes[i])} the ticket declared")
    return value


def _store(server: "Server", ticket: Ticket, header: dict, proven: bool) -> List[bytes]:
    place = server.worker.place
    origin = f"{ticket.client} (moved from {ticket.source})"
    op = f"move from {ticket.source}"
    objects: List[Any]
    if ticket.kind == "tensor":
        x = place(_checked(ticket, 0, header.get("x"), "tensor"))
        if ticket.grads[0] and (x.is_floating_point() or x.is_complex()):
            x.requires_grad_(True)
        objects = [x]
    else:
        state = header.get("state")
        if not isinstance(state, dict) or len(state) != len(ticket.names) or set(state) != set(ticket.names):
            raise Reject(ErrorCode.BAD_ARGS, "the delivered model's tensors are not the ones its ticket named")
        state = {n: place(_checked(ticket, i, state[n], n)) for i, n in enumerate(ticket.names)}
        if ticket.path == "worker":  # rebuilt from the spec, of allowlisted layers only, on the worker's device
            objects = list(server.worker.devices.ops()["syft.build_module"](header.get("spec"), state,
                                                                           list(ticket.names)))
        else:
            tensors = [t.requires_grad_(g) if t.is_floating_point() else t
                       for t, g in zip(state.values(), ticket.grads)]
            objects = [ModelWeights(dict(zip(ticket.names, tensors))), *tensors]
    now = time.time()
    for oid, obj in zip(ticket.out, objects):
        if oid in server.store:
            raise Reject(ErrorCode.BAD_ID, "result ids must be fresh 16-byte ids")
    # another owner's data, released to this worker: treated here like this owner's own (shapes that depend
    # on its values and error text from it are withheld, see .provenance), never as the scientist's; released for
    # this worker only, this worker's rules do not release it (see .guests)
    source = guests.label(ticket.source, header.get("held") is not False, proven)
    prov = Provenance(True, (source,), False, source)
    for oid, obj in zip(ticket.out, objects):
        server.store.put(Entry(oid, obj, origin=origin, session=ticket.session, op=op, created=now, last_access=now,
                               provenance=prov, untrained=op if ticket.kind == "tensor" else ""))
    return list(ticket.out)


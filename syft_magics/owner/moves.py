"""Sending an object to another worker for a scientist (``ptr.move(alice)``): the source's side.

A move out is a release of the value to another party: :func:`syft_magics.owner.releases.move_out`
decides it by the same decision as a get (the owner's rules, policy and approvals), as the kind of
release ``move`` with its target named ("Alice at tcp://..."); the owner's panel shows the request as
"wants to move z to Alice at ...". An approval of the move lets only that move, to that worker, through
(not a get). Once allowed, the value is copied (the scientist's later ops cannot
change what leaves) and a courier thread (:mod:`syft_magics.owner.courier`) takes it to the target
with the one-time ticket the target issued; the scientist's waiting ``move`` is answered when the
target has stored it (or with the reason it did not). Nothing passes through the scientist.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import torch
import torch.nn as nn

from ..errors import ErrorCode
from ..wire import auth, discovery, limits
from ..wire import modules as spec_format
from ..wire.protocol import field
from . import releases, streams
from .courier import Courier, Destination
from .models import ModelWeights
from .replies import Reject
from .rules import Target
from .sessions import Session
from .store import Entry

if TYPE_CHECKING:
    from .serving import Server

#: The longest a courier may wait for the target to answer its hello (the scientist's ``timeout``).
MAX_CONNECT_SECONDS = 60.0
#: Couriers on their way at once, per client and in all: each is a thread, a ZeroMQ context and a copy of what it
#: carries (helper-49: 400 moves to an address nobody answers took every file descriptor for a minute).
MAX_COURIERS_PER_SESSION = 4
MAX_COURIERS = 32


def on_move(server: "Server", session: Session, header: dict, used: List[Entry]) -> Optional[List[Any]]:
    """The scientist asks to move one of its objects (or the owner's, as the policy allows) to another worker."""
    seq = header.get("s")
    entry = releases.entry_for(server, session, field(header, "id", bytes))
    dest = known(destination(header))
    if entry.kind == "object":
        raise Reject(ErrorCode.BAD_ARGS, f"{entry.label} is an optimizer or scheduler: only tensors and models move")
    _room(server, session, entry)

    def send(held: bool) -> None:  # allowed: the courier answers the scientist when the target has the object
        payload = {**_payload(entry.tensor), "held": held}  # (released for the target only: .guests)
        server.stats["bytes_out"] += entry.nbytes
        server.events.emit("get", client=session.label, id=entry.hex, status=f"moving to {dest.name}",
                           bytes=entry.nbytes)
        _start(server, Courier(server, session.ident, seq, dest, payload, entry.nbytes))

    target = Target(dest.name, dest.address, dest.instance, dest.curve.server if dest.curve else None)
    return releases.move_out(server, session, seq, entry, target, send)


def destination(header: dict) -> Destination:
    """Where to, checked and bounded: an address, the target's name and instance, its ticket."""
    address = field(header, "to", str)
    name = field(header, "name", str)
    instance = field(header, "instance", str)
    tid, secret = field(header, "tid", bytes), field(header, "secret", bytes)
    wait = header.get("w")
    curve = header.get("curve")  # an encrypted target's key and the courier's one-time key pair (Z85)
    if curve is not None and (not isinstance(curve, list) or len(curve) != 3
                              or not all(isinstance(k, str) and len(k) == 40 for k in curve)):
        raise Reject(ErrorCode.BAD_ARGS, "a move's CurveZMQ keys are three 40-character Z85 keys")
    if not (address.startswith("tcp://") or address.startswith("inproc://")) or len(address) > 300:
        raise Reject(ErrorCode.BAD_ARGS, "a move needs the target's tcp:// address")
    if not limits.is_name(name) or not limits.is_name(instance) or len(tid) != 16 or len(secret) != 32 \
            or not address.isprintable():
        raise Reject(ErrorCode.BAD_ARGS, "a move needs the target's name and instance (printable, at most "
                                         f"{limits.MAX_NAME_CHARS} characters), address and ticket")
    if wait is not None and (not isinstance(wait, (int, float)) or not 0 < wait <= MAX_CONNECT_SECONDS):
        raise Reject(ErrorCode.BAD_ARGS, f"a move's timeout must be within (0, {MAX_CONNECT_SECONDS:g}] seconds")
    return Destination(address=address, name=name, instance=instance, tid=tid, secret=secret,
                       wait=float(wait) if wait is not None else 5.0,
                       curve=auth.CurveKeys(*curve) if curve is not None else None)


def known(dest: Destination) -> Destination:
    """``dest`` as this machine's connection files know it. A worker one knows, by the address the scientist gave (any
    form of it) or else by its name, is dialled at the address its file names, where it listens, and must prove the
    file's key; a name that is not the one the file at that address gives is refused. So the owner's request and
    the courier both name the worker this machine knows (helper-46: a listener of the scientist's at a look-alike
    address, Carol's port on 127.0.0.2; helper-48: the same, relaying Carol's proof from the real Carol; helper-49:
    'Carol' at another known worker's address, or at 127.2, a form of 127.0.0.2 no parser here reads as loopback)."""
    info = discovery.find_by_address(dest.address) if dest.address.startswith("tcp://") else None
    if info is not None and info.name != dest.name:
        raise Reject(ErrorCode.BAD_ARGS, f"the worker at {dest.address} is {info.name}, not {dest.name}")
    if not discovery.plain_or_known(dest.name):
        raise Reject(ErrorCode.BAD_ARGS, f"a move's target is named as a worker of this machine is, exactly, or with "
                                         f"letters, digits and _.@+- only, unlike any of them: not {dest.name!r}")
    info = info or discovery.find_by_name(dest.name)
    return replace(dest, address=info.address, file_key=info.key) if info is not None else dest


def _payload(obj: Any) -> Dict[str, Any]:
    """What the courier carries: a copy of the tensor, or a model's architecture and a copy of its weights."""
    if isinstance(obj, torch.Tensor):
        return {"x": obj.detach().cpu().clone()}
    if isinstance(obj, ModelWeights):  # a custom module's weights (its forward runs on the client)
        return {"spec": None, "state": {n: t.detach().cpu().clone() for n, t in obj.state_dict().items()}}
    if isinstance(obj, nn.Module):  # built here from allowlisted layers: its spec describes it again
        state = {n: t.detach().cpu().clone() for n, t in
                 {**dict(obj.named_parameters()), **dict(obj.named_buffers())}.items()}
        return {"spec": spec_format.describe(obj), "state": state}
    raise Reject(ErrorCode.BAD_ARGS, f"a {type(obj).__name__} cannot move")


def _room(server: "Server", session: Session, entry: Entry) -> None:
    """Refuse a move beyond the couriers allowed on their way at once, or whose copy would take its client over its
    quota, counting what its couriers on their way carry as held (a copy each, until delivered)."""
    flying = list(server.__dict__.get("couriers", ()))  # (a snapshot: couriers leave the set from their threads)
    mine = [c for c in flying if c.session == session.ident]
    if len(mine) >= MAX_COURIERS_PER_SESSION or len(flying) >= MAX_COURIERS:
        raise Reject(ErrorCode.QUOTA, f"{server.name} has {len(mine)} of this client's moves on their way "
                                      f"({len(flying)} in all; at most {MAX_COURIERS_PER_SESSION} and "
                                      f"{MAX_COURIERS}): wait for them")
    streams.within_quotas(server, session, 0, entry.nbytes, "this move", 0, sum(c.nbytes for c in mine))


def _start(server: "Server", courier: "Courier") -> None:
    couriers = server.__dict__.setdefault("couriers", set())
    couriers.add(courier)
    courier.on_done = couriers.discard
    threading.Thread(target=courier.run, name=f"syft-courier-{server.name}", daemon=True).start()

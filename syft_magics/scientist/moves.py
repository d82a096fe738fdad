"""``ptr.move(alice)``: a tensor or model goes from its worker straight to another, never through here.

The scientist only arranges it, in two requests:

1. to the target (Alice): a one-time **ticket** for what will arrive (shape and dtype of each tensor,
   the worker it comes from, the ids it will have). Alice's policy decides here whether she accepts
   it (``alice.policy.accept_moves(...)``); a refusal raises ``PermissionDenied`` at once.
2. to the source (Bob): **move** that object to Alice's address, naming Alice's instance and the
   ticket. Bob's policy decides as for a get by another party (his panel shows "wants to move z to
   Alice"; under ``review`` this waits for his approval like ``.get()``); once allowed, Bob's courier
   connects to Alice, both prove the ticket's secret, and it delivers. The reply comes when Alice
   has stored the object.

The result is a pointer on Alice (a :class:`RemoteModule` for a model) owned by this session. The
original stays on Bob, and its pointer still works (delete it to free it there).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ..config import defaults
from ..wire.protocol import Kind, dtype_name
from .pointer import PointerTensor

if TYPE_CHECKING:
    from .client import Client


def move(obj: Any, target: "Client", timeout: Optional[float] = None) -> Any:
    """Move ``obj`` (a pointer or a :class:`RemoteModule`) to ``target``'s worker; returns its pointer there.

    ``timeout`` bounds how long the source worker waits for the target's first answer (default
    ``defaults.connect_timeout``) and how long this waits for the source owner's approval
    (default ``defaults.approval_timeout``).
    """
    from .client import Client
    from .remote_module import RemoteModule

    if not isinstance(target, Client):
        raise TypeError(f"move() takes the client of the target worker (e.g. alice), not {type(target).__name__}")
    if isinstance(obj, RemoteModule):
        source = obj.client
        tensors = [obj.state_dict()[n] for n in obj.move_names]
        handle = obj.handle
    elif isinstance(obj, PointerTensor):
        source, tensors, handle = obj.client, [obj], obj
    else:
        raise TypeError(f"move() moves a pointer or a remote model, not {type(obj).__name__}")
    source._check_pointer(handle)
    if target.closed or not target.connected:
        raise ConnectionError(f"the link to {target.name} is closed; connect again before moving to it")
    if target is source or target._link.instance == source._link.instance:
        raise ValueError(f"this object is already on {target.name}")
    out = [target._new_id() for _ in range(len(tensors) + (handle is not obj))]
    ask: Dict[str, Any] = {"t": Kind.TICKET, "from": source.name, "o": out,
                           "shapes": [list(t.shape) for t in tensors], "dtypes": [dtype_name(t.dtype) for t in tensors],
                           "rg": [bool(t.requires_grad) for t in tensors]}
    if isinstance(obj, RemoteModule):
        ask.update(kind="model", path=obj.path, names=list(obj.move_names))
    else:
        ask["kind"] = "tensor"
    ticket = target._request(ask, op="move")
    order: Dict[str, Any] = {"t": Kind.MOVE, "id": handle.oid, "to": ticket["address"], "name": ticket["name"],
                             "instance": ticket["instance"], "tid": ticket["tid"], "secret": ticket["secret"],
                             "w": float(timeout if timeout is not None else defaults.connect_timeout)}
    approval = timeout if timeout is not None else defaults.approval_timeout
    while True:
        reply = source._request(dict(order), approval_timeout=approval, what=handle, op="move")
        if reply["t"] == Kind.OK:
            break
        # "approved": Bob's owner said yes; ask again, and the courier leaves
    source.events.emit("move", id=handle.oid, to=target.name)
    target.events.emit("moved_in", id=out[0], source=source.name)
    if isinstance(obj, RemoteModule):
        return obj.moved_to(target, out)
    return PointerTensor(target, out[0], tuple(obj.shape), obj.dtype, requires_grad=obj.requires_grad, owned=True)


def moved_pointers(target: "Client", tensors: List[PointerTensor], ids: List[bytes]) -> List[PointerTensor]:
    """Pointers on ``target`` standing for ``tensors`` moved there under ``ids``."""
    return [PointerTensor(target, oid, tuple(t.shape), t.dtype, requires_grad=t.requires_grad, owned=True)
            for t, oid in zip(tensors, ids)]

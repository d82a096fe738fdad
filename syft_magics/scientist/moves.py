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
    return Move(obj, target, timeout).run()


class Move:
    """One move in its two steps: :meth:`ticket` (asks the target) then :meth:`order` (asks the source).

    :func:`syft_magics.federated.fedavg` takes every ticket first, then orders the moves concurrently
    (one thread per source worker), so that a round takes about as long as the slowest source.
    """

    def __init__(self, obj: Any, target: "Client", timeout: Optional[float] = None) -> None:
        from .client import Client
        from .remote_module import RemoteModule

        if not isinstance(target, Client):
            raise TypeError(f"move() takes the client of the target worker (e.g. alice), not {type(target).__name__}")
        if isinstance(obj, RemoteModule):
            self.source = obj.client
            self.tensors = [obj.state_dict()[n] for n in obj.move_names]
            self.handle = obj.handle
        elif isinstance(obj, PointerTensor):
            self.source, self.tensors, self.handle = obj.client, [obj], obj
        else:
            raise TypeError(f"move() moves a pointer or a remote model, not {type(obj).__name__}")
        self.source._check_pointer(self.handle)
        if target.closed or not target.connected:
            raise ConnectionError(f"the link to {target.name} is closed; connect again before moving to it")
        if target is self.source or target._link.instance == self.source._link.instance:
            raise ValueError(f"this object is already on {target.name}")
        self.obj, self.target, self.timeout = obj, target, timeout
        self.out: List[bytes] = []
        self._ticket: Optional[dict] = None

    def run(self) -> Any:
        self.ticket()
        return self.order()

    def ticket(self) -> None:
        """Ask the target for a one-time ticket (its owner's accept rule decides here)."""
        from .remote_module import RemoteModule

        obj, target, tensors = self.obj, self.target, self.tensors
        self.out = [target._new_id() for _ in range(len(tensors) + (self.handle is not obj))]
        ask: Dict[str, Any] = {"t": Kind.TICKET, "from": self.source.name, "o": self.out,
                               "shapes": [list(t.shape) for t in tensors],
                               "dtypes": [dtype_name(t.dtype) for t in tensors],
                               "rg": [bool(t.requires_grad) for t in tensors]}
        if isinstance(obj, RemoteModule):
            ask.update(kind="model", path=obj.path, names=list(obj.move_names))
        else:
            ask["kind"] = "tensor"
        self._ticket = target._request(ask, op="move")

    def order(self) -> Any:
        """Ask the source to send it (its owner's policy decides, as for a get); the pointer on the target."""
        from .remote_module import RemoteModule

        ticket, source, target, timeout = self._ticket, self.source, self.target, self.timeout
        if ticket is None:
            raise RuntimeError("ticket() first")
        order: Dict[str, Any] = {"t": Kind.MOVE, "id": self.handle.oid, "to": ticket["address"],
                                 "name": ticket["name"], "instance": ticket["instance"], "tid": ticket["tid"],
                                 "secret": ticket["secret"],
                                 **({"curve": ticket["curve"]} if "curve" in ticket else {}),
                                 "w": float(timeout if timeout is not None else defaults.connect_timeout)}
        approval = timeout if timeout is not None else defaults.approval_timeout
        while True:
            reply = source._request(dict(order), approval_timeout=approval, op="move",
                                    what=f"move of {self.handle._label()} to {target.name}")
            if reply["t"] == Kind.OK:
                break
            # "approved": the source's owner said yes; ask again, and the courier leaves
        source.events.emit("move", id=self.handle.oid, to=target.name)
        target.events.emit("moved_in", id=self.out[0], source=source.name)
        if isinstance(self.obj, RemoteModule):
            return self.obj.moved_to(target, self.out)
        obj = self.obj
        return PointerTensor(target, self.out[0], tuple(obj.shape), obj.dtype, requires_grad=obj.requires_grad,
                             owned=True)


def moved_pointers(target: "Client", tensors: List[PointerTensor], ids: List[bytes]) -> List[PointerTensor]:
    """Pointers on ``target`` standing for ``tensors`` moved there under ``ids``."""
    return [PointerTensor(target, oid, tuple(t.shape), t.dtype, requires_grad=t.requires_grad, owned=True)
            for t, oid in zip(tensors, ids)]

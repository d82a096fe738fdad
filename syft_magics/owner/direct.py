"""The worker's in-process door: clients in the worker's own process, served on their own thread.

A client in the same process (``connect(worker)``, an ``inproc://`` address) shares the worker's
GIL: handing each message to the serving thread through a socket makes both threads pay for it
(ZeroMQ, msgpack both ways, a thread switch per batch) and halves a chain of ops. Instead its
link calls :meth:`DirectPort.call`, which runs the same handler the serving thread would
(:meth:`Server._answer`: handshake, policy, the owner-data guard, the command log, events) on the
caller's thread, under :attr:`lock`, which the serving thread also holds while it handles a
message or an owner's decision. Only the transport differs: messages are still packed headers
whose tensor frames the link copied (so nothing is shared with the caller's memory), decoded by
the worker's bounded decoder; values leave as copies (see ``Server._value``).

What the serving thread sends on its own (an approval, the goodbye when the worker stops) goes to
the link's ``deliver`` callback instead of the socket (:meth:`DirectPort.to`).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, ContextManager, Dict, List

import torch
import zmq
from torch.utils._python_dispatch import _disable_current_modes

from ..wire.protocol import Kind, encode
from ..wire.sockets import send_parts
from .replies import TRACK_BYTES, Replies, Tracked
from .spin import Spin

#: The connection token of direct links: a session made by one is served only through this door (a
#: socket peer presenting its routing id is refused, as one on another connection).
DIRECT = -1

#: A direct link's inbox: called with a reply's parts ``[header, *frames]`` (from the serving thread).
Deliver = Callable[[List[Any]], None]


def _as_serving_thread() -> ContextManager[Any]:
    """The torch state of the serving thread, for a handler run on a caller's thread: the caller's
    thread-local modes (inference mode, autocast, its own torch-function or dispatch modes) must not
    change what the worker computes or stores. Grad mode travels in each op's header, as over a socket, and
    the worker turns it off for an op sent under ``no_grad``: on, as on the serving thread, whatever the thread
    that hands the ops over (a ``sync()`` under ``no_grad`` runs ops issued before it with grad on).
    Checked first, so the usual caller pays a few flag reads, not a stack of context managers."""
    if torch.is_grad_enabled() and not (torch.is_inference_mode_enabled() or _autocast_cpu()
                                        or torch._C._is_torch_function_mode_enabled()
                                        or torch._C._len_torch_dispatch_stack()):
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.enable_grad())
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.autocast("cpu", enabled=False))
    stack.enter_context(_disable_current_modes())
    stack.enter_context(torch._C.DisableTorchFunction())
    return stack


def _autocast_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


class DirectPort:
    """A mix-in of :class:`~syft_magics.owner.serving.Server`: messages from links in this process."""

    lock: threading.Lock
    _spin: Spin
    _conn: int
    _running: bool

    def _answer(self, ident: bytes, parts: List[Any], batched: bool = False) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _init_direct(self) -> None:
        #: held while a message or an owner's decision is handled, by whichever thread handles it
        self.lock = threading.Lock()
        self._direct: Dict[bytes, Deliver] = {}
        self._spin = Spin()

    def open_direct(self, ident: bytes, deliver: Deliver) -> None:
        """Register a link of this process (it then says hello and proves the key, as over a socket)."""
        with self.lock:
            self._direct[ident] = deliver

    def close_direct(self, ident: bytes) -> None:
        """The link closed: nothing more is delivered to it (its goodbye ended the session)."""
        with self.lock:
            self._direct.pop(ident, None)

    def call(self, ident: bytes, parts: List[Any]) -> List[List[Any]]:
        """Handle one message of the link ``ident`` on the caller's thread; its replies, in order."""
        return self.call_many(ident, [parts])

    def call_many(self, ident: bytes, messages: List[List[Any]]) -> List[List[Any]]:
        """Handle the messages of the link ``ident``, in order, on the caller's thread; their replies, in order.

        A worker that is stopping answers as its serving thread does when it stops: goodbye.
        """
        replies: List[List[Any]] = []
        with self.lock, _as_serving_thread():
            for parts in messages:
                if not self._running or ident not in self._direct:
                    replies.append(encode({"t": Kind.BYE}))
                    break
                self._conn = DIRECT  # sessions made here are bound to this door
                reply = self._answer(ident, parts)
                if reply is not None:
                    replies.extend(reply) if type(reply) is Replies else replies.append(reply)
        return replies

    def poll_unlocked(self, poller: zmq.Poller, timeout_ms: int, spin: float = 0.0) -> Dict[Any, int]:
        """The serving thread waits for messages without holding :attr:`lock` (direct links go then);
        ``spin``: seconds to look without sleeping first (see :mod:`.spin`)."""
        self.lock.release()
        try:
            return dict(self._spin.poll(poller, timeout_ms, spin))
        finally:
            self.lock.acquire()

    def to(self, router: zmq.Socket, ident: bytes, parts: List[Any]) -> None:
        """Send ``parts`` to the client ``ident`` from the serving thread: over the socket, or to a
        direct link's inbox."""
        deliver = self._direct.get(ident)
        if deliver is None:
            if type(parts) is Tracked:  # a large value: its frame counts as unread until ZeroMQ lets it go
                parts.unread.add(send_parts(router, [ident, *parts], flags=0, track=True, track_from=TRACK_BYTES),
                                 parts.nbytes)
            else:
                send_parts(router, [ident, *parts], flags=0)
        else:
            deliver(parts)

"""The pointer card: one remote object at a glance, in any widget front end, with a Request value button.

A :class:`~syft_magics.PointerTensor` displayed in a cell (the last expression, ``display(z)`` or
``%syft_inspect z``) shows a card: the variable's name, where the tensor lives, its id there, shape,
dtype, its state, how it was made (its lineage, a few ops deep), and what the owner's policy says
about getting it. **Request value** issues the get from a background thread, so the notebook stays
usable while the owner decides; the card says which request waits, then shows the value (a preview
with statistics and a histogram for large float tensors) or the owner's refusal and reason.

Nothing here runs until a card is displayed: the pointer's ``_repr_mimebundle_`` imports this
module. Outside a kernel (a terminal, a log) the pointer stays one line of text. The card reads
what the client already knows (its events, its pointers); the only message it sends is the get.
Built from ipywidgets' own widgets (HTML, Button), so it renders in JupyterLab 4, Notebook 7,
Voila and VS Code without a CDN or a front-end build.
"""
from __future__ import annotations

import threading
import weakref
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

import ipywidgets as widgets
import torch

from ..display import TextRepr, dtype_text, short_id
from ..errors import PermissionDenied
from .panels import _html as H
from .preview import preview_html

__all__ = ["PointerCard", "STATES", "mimebundle", "policy_text"]

#: What a card can say about its object.
STATES = ("shared", "sent", "queued", "computed", "failed", "freed", "waiting", "approved", "denied")
_BADGE = {"shared": "", "sent": "", "queued": "warn", "computed": "good", "failed": "bad", "freed": "",
          "waiting": "warn", "approved": "good", "denied": "bad"}
_WATCHED = frozenset({"error", "delete", "disconnect", "get", "waiting"})
LINEAGE_DEPTH = 3
MAX_CARDS = 50  # live cards per process; displaying more closes the oldest (each watches its client)

_CARDS: Deque["PointerCard"] = deque()
_HOOKED: Dict[int, Any] = {}  # id(shell) -> shell whose post_run_cell refreshes the cards


def policy_text(worker: str, policy: str) -> str:
    """What a worker's policy means for a get, in a sentence."""
    if policy == "open":
        return f"{worker}'s policy is open: a get returns the value at once."
    if policy == "review":
        return f"{worker} reviews each get: the value comes back once {worker} approves the request."
    if policy == "closed":
        return f"{worker}'s policy is closed: no value leaves {worker}; compute on the pointer instead."
    return f"{worker}'s policy {policy!r} decides each get (it may allow, refuse or ask {worker})."


class PointerCard(TextRepr, widgets.VBox):
    """A card for one pointer; ``card.request_value()`` is what its button does."""

    def __init__(self, ptr: Any, name: Optional[str] = None) -> None:
        super().__init__()
        self._ref = weakref.ref(ptr)
        self.client = ptr.client
        self.oid: bytes = ptr.oid
        self._ptr_shape = ptr.known_shape  # None while the owner withholds it
        self.dtype = dtype_text(ptr.dtype)
        self.tags: Tuple[str, ...] = tuple(ptr.tags)
        self.owned = ptr.owned
        self.name = name or _find_name(ptr)
        self.request_n: Optional[int] = None
        self.value: Optional[torch.Tensor] = None
        self.refusal = ""
        self.problem = ""  # a get that failed for another reason (timeout, worker gone)
        self._asking = False
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._lock = threading.RLock()

        self.header = widgets.HTML()
        self.details = widgets.HTML()
        self.request_button = widgets.Button(description="Request value", icon="download",
                                             tooltip="ask the owner for this value (the notebook stays usable)",
                                             layout=widgets.Layout(width="150px"))
        self.status = widgets.HTML()
        self.preview = widgets.HTML()
        self.request_button.on_click(lambda _: self.request_value())
        for w, cls in ((self.header, "syft-card-header"), (self.details, "syft-card-details"),
                       (self.request_button, "syft-card-request"), (self.status, "syft-card-status"),
                       (self.preview, "syft-card-value")):
            w.add_class(cls)
        self.children = [self.header, self.details,
                         widgets.HBox([self.request_button, self.status], layout=widgets.Layout(align_items="center")),
                         self.preview]
        self.add_class("syft-card")
        self.layout = widgets.Layout(border="1px solid #c9d3e3", padding="6px 10px", margin="4px 0",
                                     max_width="760px")
        self._unsubscribe = self.client.events.subscribe(self._on_event)
        _register(self)
        self.refresh()

    # -- what the card knows -------------------------------------------------------------------
    @property
    def pointer(self) -> Any:
        """The pointer, or ``None`` once it was garbage-collected (the card does not keep it alive)."""
        return self._ref()

    def _op_index(self) -> Dict[bytes, Any]:
        """result id -> the op event that made it, from the client's recent events."""
        index: Dict[bytes, Any] = {}
        for e in list(self.client.events.recent):
            if e.kind == "op":
                for o in e.data.get("out", ()):
                    index[o] = e
        return index

    def _failure(self, seq: Optional[int]) -> str:
        if seq is None:
            return ""
        for e in reversed(list(self.client.events.recent)):
            if e.kind == "error" and e.data.get("seq") == seq:
                return str(e.data.get("message") or "failed")
        return ""

    @property
    def state(self) -> str:
        """One of :data:`STATES`."""
        with self._lock:
            if self.value is not None:
                return "approved"
            if self.refusal:
                return "denied"
            if self._asking and self.request_n is not None:
                return "waiting"
        ptr = self._ref()
        if ptr is None or ptr.freed:
            return "freed"
        made = self._op_index().get(self.oid)
        if made is not None:
            seq = made.data.get("seq")
            if self._failure(seq):
                return "failed"
            return "queued" if not self.client.settled(seq) else "computed"
        if not self.owned:
            return "shared"
        return "sent" if not self.problem else "failed"

    def lineage(self, depth: int = LINEAGE_DEPTH) -> str:
        """How the object was made, e.g. ``add(#X, #Y)``, up to ``depth`` ops deep."""
        index = self._op_index()
        labels = self._labels()

        def text(oid: bytes, level: int) -> str:
            made = index.get(oid)
            if made is None or level >= depth:
                return labels.get(oid, short_id(oid))
            args = ", ".join(text(i, level + 1) for i in made.data.get("inputs", ()))
            return f"{str(made.data.get('op', '?')).lstrip('.')}({args})"

        if self.oid not in index:
            if not self.owned:
                return f"{self.client.name}'s data" + (f" ({' '.join(self.tags)})" if self.tags else "")
            return "sent from this notebook"
        return text(self.oid, 0)

    def _labels(self) -> Dict[bytes, str]:
        out: Dict[bytes, str] = {}
        for p in self.client.pointers:
            if p.tags and p.oid not in out:
                out[p.oid] = " ".join(p.tags)
        return out

    # -- the button ----------------------------------------------------------------------------
    def request_value(self) -> None:
        """Ask the worker for the value from a background thread; the card follows the request."""
        ptr = self._ref()
        with self._lock:
            if self._asking or ptr is None:
                return
            self._asking = True
            self.request_n, self.refusal, self.problem = None, "", ""
            self._thread = threading.Thread(target=self._get, args=(ptr,), name="syft-card-get", daemon=True)
        self._thread.start()
        self.refresh()

    def _get(self, ptr: Any) -> None:
        try:
            value = self.client.get(ptr)
            with self._lock:
                self.value = value
        except PermissionDenied as exc:
            with self._lock:
                self.refusal = str(exc)
        except Exception as exc:  # a timeout, the worker gone, the op failed: say so on the card
            with self._lock:
                self.problem = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._asking = False
            del ptr
            self.refresh()

    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait until a requested value arrived or was refused (for scripts and tests)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _on_event(self, event: Any) -> None:
        if event.kind not in _WATCHED:
            return
        if event.kind == "waiting" and threading.current_thread() is self._thread:
            with self._lock:
                self.request_n = event.data.get("n")
        self.refresh()

    # -- rendering -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-render from what the client knows now (cheap: a scan of its recent events)."""
        if self._closed:
            return
        state = self.state
        who = self.client.name
        title = H.esc(self.name or "pointer")
        self.header.value = (H.STYLE + f'<div><span class="syft-title">{title}</span>'
                             f'<span class="syft-badge syft-card-state syft-state-{state} syft-{_BADGE[state]}">'
                             f'{state}</span><span class="syft-muted" style="font-size:12px">on '
                             f'<b>{H.esc(who)}</b></span></div>')
        rows = [("location", who), ("id@loc", self.oid.hex()), ("shape", self.shape_text), ("dtype", self.dtype)]
        if self.tags:
            rows.append(("tags", " ".join(self.tags)))
        rows.append(("made by", self.lineage()))
        if state == "failed":
            made = self._op_index().get(self.oid)
            rows.append(("error", self._failure(made.data.get("seq")) if made is not None else self.problem))
        rows.append(("policy", policy_text(who, self.client.policy)))
        self.details.value = ('<table class="syft-tbl syft-card-table" style="width:auto">'
                              + "".join(f'<tr class="syft-card-{k.replace("@", "-at-").replace(" ", "-")}">'
                                        f'<th style="position:static">{H.esc(k)}</th><td style="white-space:normal">'
                                        f'{H.esc(v)}</td></tr>' for k, v in rows) + "</table>")
        with self._lock:
            asking, n, value, refusal, problem = self._asking, self.request_n, self.value, self.refusal, self.problem
        if state == "freed":
            status = "freed: this pointer was deleted or its connection closed; the value cannot be requested"
        elif asking and n is not None:
            status = f"waiting for {who} to approve request #{n}"
        elif asking:
            status = f"asking {who}…"
        elif value is not None:
            status = f"{who} let the value through"
        elif refusal:
            status = refusal
        elif problem:
            status = problem
        else:
            status = ""
        cls = "syft-bad" if (refusal or problem) and not asking else ""
        self.status.value = f'<span class="syft-card-note {cls}" style="font-size:12px">{H.esc(status)}</span>'
        self.request_button.disabled = asking or state in ("freed", "failed")
        self.request_button.description = "Request value" if value is None else "Request again"
        if value is not None:
            self.preview.value = H.STYLE + preview_html(value)

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop following the client and close the widgets (a pending request keeps waiting)."""
        if getattr(self, "_closed", True):
            return super().close()
        self._closed = True
        try:
            self._unsubscribe()
        except Exception:
            pass
        try:
            _CARDS.remove(self)
        except ValueError:
            pass
        for child in [self.header, self.details, self.request_button, self.status, self.preview,
                      *self.children]:
            child.close()
        super().close()

    @property
    def shape(self) -> Optional[Tuple[int, ...]]:
        """The pointer's shape as the client knows it (``None`` while the owner withholds it)."""
        ptr = self._ref()
        return ptr.known_shape if ptr is not None else self._ptr_shape

    @property
    def shape_text(self) -> str:
        shape = self.shape
        return f"unknown until {self.client.name} approves" if shape is None else str(shape)

    def text(self) -> str:
        """The card as plain text."""
        value = "" if self.value is None else f"\n  value: {self.value!r}"
        return (f"{self.name or 'pointer'} on {self.client.name}: {self.state}, shape {self.shape_text}, {self.dtype}, "
                f"made by {self.lineage()}{value}")



def _find_name(ptr: Any) -> Optional[str]:
    from .panels._names import find_names, user_namespace

    names = find_names(user_namespace(), [ptr]).get(ptr.id)
    return names[0] if names else None


def _register(card: PointerCard) -> None:
    _CARDS.append(card)
    while len(_CARDS) > MAX_CARDS:
        _CARDS[0].close()
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover
        shell = None
    if shell is not None and id(shell) not in _HOOKED:
        _HOOKED[id(shell)] = shell
        shell.events.register("post_run_cell", _after_cell)


def _after_cell(*_: Any) -> None:
    """A cell finished: ops it issued may have run, pointers may have died; cards catch up."""
    for card in list(_CARDS):
        try:
            card.refresh()
        except Exception:
            pass


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython

        return getattr(get_ipython(), "kernel", None) is not None
    except ImportError:  # pragma: no cover
        return False


def mimebundle(ptr: Any, include: Any = None, exclude: Any = None) -> Dict[str, Any]:
    """What a pointer shows in a cell: its card in a kernel (widget front ends), always its text too."""
    text = repr(ptr)
    if not _in_kernel():
        return {"text/plain": text}
    card = PointerCard(ptr)
    data: Any = card._repr_mimebundle_(include=include, exclude=exclude)
    if isinstance(data, tuple):
        data = data[0]
    data = dict(data or {})
    data["text/plain"] = text
    return data


def cards() -> List[PointerCard]:
    """The cards now open in this process."""
    return list(_CARDS)

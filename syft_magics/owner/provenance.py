"""Where each object of a worker comes from, and what about it may leave without the owner.

Every object the worker holds carries a :class:`Provenance`: whether it is derived from the
owner's data, from which of the owner's objects, and whether its shape is withheld (and why).
This module decides, once for every op and every reply, what the client may learn:

* under the ``open`` policy, everything (nothing is private);
* otherwise, about an object derived from the owner's data:

  - its **shape** only where it follows from public metadata alone. The op is traced again
    under torch's ``FakeTensorMode`` with a ``ShapeEnv``, where the inputs whose shape is
    withheld have unbacked symbolic sizes and no tensor has values: a result dimension that
    comes out as a plain integer depends on no value; one that comes out symbolic (``nonzero``,
    ``masked_select``, ``unique``, ``bincount``, ``repeat_interleave``, sizes read from a
    tensor: ``new_zeros(n)``, ``eye(n)``, ``arange(n)``...) is withheld, and so is the whole
    result when torch cannot even trace its structure without the values (``split(x, n)``).
    A withheld shape stays withheld in everything computed from it, until the owner releases
    it (an approved get of the value, or of the shape: ``ptr.request_shape()``);
  - the **text of an error** raised by an op that read it: the client gets the exception's
    type and a generic message with a number; the owner's log and panel get the full text,
    and the owner may release it like a value (``err.request_message()``).

Errors the worker raises on purpose (:class:`~syft_magics.owner.replies.Reject`: not on the
allowlist, a write into the owner's data, an unknown object) are about public facts and keep
their text. What we do not hide: whether an op on the owner's data failed, and how long it
took (see SECURITY.md, "The timing channel").
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch
from torch.utils import _pytree as pytree

from ..errors import ErrorCode
from ..wire import limits
from ..wire.results import autograd_leaf, describe, flatten, quiet_tracing
from .aggregate import average_models
from .models import model_weights
from .optimizers import set_option, settings
from .policy import OpenPolicy

if TYPE_CHECKING:
    from .store import Entry
    from .worker import Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provenance:
    """What an object is derived from, and under which rule its metadata may leave."""

    #: derived from the owner's data (directly or through any chain of ops)
    owner: bool = False
    #: the owner's objects it derives from, by label (``#X``), at most :data:`MAX_SOURCES`
    sources: Tuple[str, ...] = ()
    #: its shape depends on the owner's values: unknown to the client until the owner releases it
    hidden: bool = False
    #: why it is hidden (for the owner's request and the log)
    rule: str = ""

    def released(self) -> "Provenance":
        """The same object once the owner released its shape (or its value)."""
        return Provenance(self.owner, self.sources, False, "released by the owner") if self.hidden else self


#: Ops over models whose results' shapes are their models' parameters' (an average of models, a model's weights
#: grouped): public, though no trace can tell it (a model's state is not traced).
SHAPES_OF_MODELS = frozenset({average_models, model_weights})

#: Ops whose results follow from what the client chose alone, whatever they are computed over: an optimizer's
#: options (plain numbers it gave, moved by its schedulers' step counts: optimizers.settings). Their results
#: (text) travel in the reply that describes them (wire.results.describe), with no get to approve.
VALUES_OF_CLIENT = frozenset({settings})

#: Ops whose own refusals (a ``Reject`` raised by the op's code) tell only what the client sent, checked plain
#: before it is named: their text is shown whatever the op ran on. Any other op's refusal is withheld like a
#: torch error when its inputs derive from the owner's data (ops.Ops._call), since its text may name them.
PUBLIC_REFUSALS = frozenset({set_option})

#: A client's own object (sent, or computed from its own objects): nothing to withhold.
CLIENT = Provenance()
MAX_SOURCES = 4


def of_entry(entry: "Entry") -> Provenance:
    """The provenance of a stored object (the owner's shared objects are their own source)."""
    if entry.session is None:
        return _shared(entry.label)[0]
    return entry.provenance


def _shared(label: str) -> Tuple[Provenance, Provenance]:
    """The provenance of the owner's object ``label``, and that of a result computed from it alone
    (made once per label: every op on the owner's data asks)."""
    provs = _SHARED.get(label)
    if provs is None:
        if len(_SHARED) >= 4096:
            _SHARED.clear()
        provs = _SHARED[label] = (Provenance(True, (label,), False, "shared by the owner"), Provenance(True, (label,)))
    return provs


_SHARED: Dict[str, Tuple[Provenance, Provenance]] = {}


class Disclosure:
    """A worker's decisions about what leaves: result shapes, error text, and the owner's releases."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        #: withheld error texts: number -> (session, op, full text); the oldest are forgotten
        self.errors: "OrderedDict[int, Tuple[bytes, str, str]]" = OrderedDict()
        self._next_error = 1
        self._traced: Dict[Any, Any] = {}

    @property
    def guarded(self) -> bool:
        """Whether anything is withheld: every policy but ``open``."""
        return type(self.worker.policy).decide is not OpenPolicy.decide

    # -- results ---------------------------------------------------------------------------
    def of_inputs(self, used: List["Entry"]) -> Provenance:
        """What an op's result derives from, before it runs (``hidden`` from the inputs alone)."""
        found = None
        for entry in used:
            if entry.session is None:
                prov = _shared(entry.label)[1]
            elif entry.provenance.owner:
                prov = entry.provenance
            else:
                continue
            if found is None:
                found = prov
            elif prov is not found:
                break
        else:
            if found is None:  # only the client's own objects (the common case): nothing to withhold
                return CLIENT
            if not found.hidden and not found.rule:  # one source (or the same twice): as the general case below
                return found
        owner = False
        sources: List[str] = []
        hidden = None
        for entry in used:
            prov = of_entry(entry)
            if prov.owner:
                owner = True
                for s in prov.sources:
                    if s not in sources and len(sources) < MAX_SOURCES:
                        sources.append(s)
                if prov.hidden and hidden is None:
                    hidden = f"computed from {entry.label}, whose shape is withheld"
        if not owner:
            return CLIENT
        return Provenance(True, tuple(sources), hidden is not None, hidden or "")

    def of_result(self, op: str, fn: Any, args: Any, kwargs: Any, used: List["Entry"],
                  result: Any) -> Tuple[Provenance, Optional[List[bool]]]:
        """The provenance of an op's result, and which of its leaves have a shape the client may see
        (``None``: all of them; an empty list: not even the result's structure may be told)."""
        if fn in VALUES_OF_CLIENT:
            return CLIENT, None
        prov = self.of_inputs(used)
        if not prov.owner or not self.guarded:
            return prov, None
        if fn in SHAPES_OF_MODELS:  # (shapes set by the models' architectures, never by values)
            return Provenance(True, prov.sources), None
        public = self._public_leaves(fn, args, kwargs, used, result)
        if public is not None and all(public):
            return Provenance(True, prov.sources), None
        rule = prov.rule or f"the size of {op}'s result depends on the values"
        return Provenance(True, prov.sources, True, rule), public or []

    def _public_leaves(self, fn: Any, args: Any, kwargs: Any, used: List["Entry"],
                       result: Any) -> Optional[List[bool]]:
        """Trace ``fn`` on values-free stand-ins: which result leaves have a shape that follows from
        public metadata alone (and equals the real one). ``None``: the structure itself is not public."""
        hidden_ids = {id(e.tensor) for e in used if of_entry(e).hidden}
        if any(not isinstance(e.tensor, torch.Tensor) for e in used):
            return None  # a model or an optimizer: its state cannot be traced without side effects
        leaves, spec = pytree.tree_flatten((args, kwargs))
        try:
            key = (fn, spec, tuple(_signature(x, id(x) in hidden_ids) for x in leaves))
            hash(key)
        except TypeError:
            key = None
        traced = self._traced.get(key) if key is not None else None
        if traced is None:
            traced = _trace(fn, leaves, spec, hidden_ids)
            if key is not None:
                if len(self._traced) > 4096:
                    self._traced.clear()
                self._traced[key] = traced
        if traced is False:
            return None
        fake_spec, fake_shapes = traced
        real, real_spec = flatten(result)
        if real_spec != fake_spec:
            return None
        return [not isinstance(x, torch.Tensor) or (s is not None and tuple(x.shape) == s)
                for x, s in zip(real, fake_shapes)]

    @staticmethod
    def leaf(prov: Provenance, shown: Optional[List[bool]], i: int) -> Provenance:
        """The provenance of the ``i``-th leaf of a result (see :meth:`of_result`)."""
        if shown is not None and i < len(shown) and shown[i]:
            return Provenance(True, prov.sources)
        return prov

    def taint(self, used: List["Entry"], written: List["Entry"]) -> None:
        """After an op: the clients' objects it wrote (and the models and optimizers it used, whose
        state it may have changed) now derive from whatever it read."""
        touched = [*written, *(e for e in used if not isinstance(e.tensor, torch.Tensor))]
        if not touched:  # (most ops: they wrote nothing and used tensors only)
            return
        prov = self.of_inputs(used)
        if not prov.owner:
            return
        for entry in touched:
            if entry.session is not None and not (entry.provenance.owner and
                                                  entry.provenance.hidden >= prov.hidden):
                entry.provenance = prov

    def grads_before(self, session: bytes, used: List["Entry"]) -> Optional[Tuple[Provenance, list]]:
        """Before an op that writes gradients (a backward, ``ptr.grad = g``) over the owner's data: what
        gradient each object of the client's ``session`` holds now (see :meth:`grads_written`). None when
        there is nothing to withhold."""
        if not self.guarded:
            return None
        prov = self.of_inputs(used)
        if not prov.owner:
            return None
        return prov, [(e, _grads(e.tensor)) for e in self.worker.store.of_session(session)]

    @staticmethod
    def grads_written(before: Optional[Tuple[Provenance, list]]) -> None:
        """After it: the objects whose gradient it wrote (a tensor's ``.grad``, a model's or an optimizer's
        parameters') now derive from the owner's data: the gradient itself, what an optimizer step computes
        from it. Their inputs never named them, so :meth:`taint` alone did not see it (a probe read ``#X``
        back through ``t.grad`` of ``(t * X).sum().backward()``, by shapes, with no approval)."""
        if before is None:
            return
        prov, seen = before
        for entry, grads in seen:
            if not entry.provenance.owner and _grads(entry.tensor) != grads:
                entry.provenance = Provenance(True, prov.sources)

    def describe(self, result: Any, ids: List[Optional[bytes]], shown: Optional[List[bool]], fn: Any = None) -> list:
        """The reply to a client that asked what an op returned (see :mod:`syft_magics.wire.results`): with
        the text its op ``fn`` returned, if its values are the client's (:data:`VALUES_OF_CLIENT`)."""
        if shown is not None and not shown and not flatten(result)[1].is_leaf():
            from .replies import Reject

            raise Reject(ErrorCode.BAD_ARGS, "how many tensors this op returns depends on a shape the owner "
                                             "withholds; request that shape first (ptr.request_shape())")
        return describe(result, ids, shown, text=fn in VALUES_OF_CLIENT)

    # -- errors ----------------------------------------------------------------------------
    def failure(self, session: Any, op: str, prov: Provenance, exc: Exception) -> Exception:
        """The error the client may see for ``exc``, raised by ``op`` on objects of provenance ``prov``:
        ``exc`` itself, or a :class:`Withheld` with its type and a generic message."""
        from .replies import Reject

        if isinstance(exc, Withheld) or (isinstance(exc, Reject) and exc.public) \
                or not prov.owner or not self.guarded:
            return exc
        n = self._next_error
        self._next_error += 1
        full = limits.clip(exc)
        self.errors[n] = (session.ident, op, full)
        while len(self.errors) > 1000:
            self.errors.popitem(last=False)
        log.info("worker %s withheld the message of error #%d (%s in %s) from %s: %s",
                 self.worker.name, n, type(exc).__name__, op, session.label, full)
        return Withheld(n, type(exc).__name__, op, self.worker.name)


class Withheld(Exception):
    """An op on the owner's data failed; the client sees its type and number, not its text."""

    def __init__(self, n: int, etype: str, op: str, owner: str) -> None:
        super().__init__(f"{etype} in {op} on {owner}'s data; the message is withheld (error #{n}: "
                         f"err.request_message() asks {owner} to release it)")
        self.n, self.etype = n, etype


_warming = threading.Lock()


def warm_up() -> Optional[threading.Thread]:
    """Trace one op in a background thread (returned; None if one ran already) at worker start: the first
    trace imports torch's symbolic shapes (sympy; seconds), which would otherwise hold the serving thread
    on a client's first op."""
    if not _warming.acquire(blocking=False):
        return None
    x = torch.zeros(2)
    # not a daemon: a daemon thread still importing when the interpreter exits crashes it
    thread = threading.Thread(target=_trace, args=(torch.nonzero, [x], pytree.tree_flatten(((x,), {}))[1], set()),
                              name="torch-trace-warm-up", daemon=False)
    thread.start()
    return thread


def _signature(x: Any, hidden: bool) -> Any:
    if isinstance(x, torch.Tensor):
        if hidden:
            return ("H", x.dim(), x.dtype, x.requires_grad)
        return ("T", tuple(x.shape), x.stride(), x.dtype, x.requires_grad)
    if isinstance(x, slice):
        return ("s", x.start, x.stop, x.step)
    return (type(x), x)


def _trace(fn: Any, leaves: List[Any], spec: Any, hidden_ids: set) -> Any:
    """``(structure, shapes)`` of ``fn``'s result on value-free stand-ins (a shape is ``None`` where it
    depends on a value), or ``False`` when torch cannot trace it without the values."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    env = ShapeEnv()
    try:
        with quiet_tracing(), FakeTensorMode(shape_env=env, allow_non_fake_inputs=True) as mode:
            fakes = []
            for x in leaves:
                if isinstance(x, torch.Tensor):
                    if id(x) in hidden_ids:
                        f = torch.empty([env.create_unbacked_symint() for _ in range(x.dim())], dtype=x.dtype)
                        if x.requires_grad:
                            f.requires_grad_(True)
                    else:
                        f = mode.from_tensor(x, static_shapes=True)
                    fakes.append(f)
                else:
                    fakes.append(x)
            args, kwargs = pytree.tree_unflatten(fakes, spec)
            with torch.no_grad():
                out = fn(*args, **kwargs)
            out_leaves, out_spec = flatten(out)
            shapes = [_static(o.shape) if isinstance(o, torch.Tensor) else () for o in out_leaves]
    except Exception:
        return False
    return out_spec, shapes


def _static(shape: Any) -> Optional[Tuple[int, ...]]:
    if all(type(d) is int for d in shape):
        return tuple(shape)
    return None


def _grads(value: Any) -> Any:
    """Which gradient ``value`` holds now (None if none), its parameters' for a model or an optimizer: each as
    ``(id, version)``, which any write into it changes."""
    if isinstance(value, torch.Tensor):
        leaf = autograd_leaf(value)  # (None: a view torch answers no autograd question about)
        # (a non-leaf has a .grad only if it retains it; torch warns when one is read otherwise)
        g = value.grad if value.requires_grad and (leaf or leaf is False and value.retains_grad) else None
        return None if g is None else (id(g), g._version)
    if isinstance(value, torch.nn.Module):
        return tuple(_grads(p) for p in value.parameters())
    if isinstance(value, torch.optim.Optimizer):
        return tuple(_grads(p) for group in value.param_groups for p in group["params"])
    return None

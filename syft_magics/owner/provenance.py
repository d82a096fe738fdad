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
  - its **size**, through quotas, only as a public upper bound: a result of an op that reads
    or makes a withheld shape is charged by the bound the same trace gives (``nonzero(x)``:
    ``x.numel()`` rows), and an owner's rule of sizes (``allow_get(max_numel=1)``) reads that
    bound; a result torch cannot bound is refused, and no autograd graph is built over a
    withheld shape (what it saves would be charged by its real size);
  - the **text of an error** raised by an op that read it: the client gets the exception's
    type and a generic message with a number; the owner's log and panel get the full text,
    and the owner may release it like a value (``err.request_message()``).

Errors the worker raises on purpose (:class:`~syft_magics.owner.replies.Reject`: not on the
allowlist, a write into the owner's data, an unknown object) are about public facts and keep
their text. What we do not hide: whether an op on the owner's data failed, and how long it
took (see SECURITY.md, "The timing channel").
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union, cast

import torch
from torch.utils import _pytree as pytree

from ..errors import ErrorCode
from ..wire.results import describe, flatten
from . import autograd, guests, sizes
from .aggregate import average_models
from .failures import Failures, Withheld
from .fake_trace import (
    EDGE_SECONDS,
    MAX_WITHHELD_DIMS,
    Bounds,
    Trace,
    Untraced,
    trace,
    trace_key,
)
from .models import model_weights
from .optimizers import set_option, settings
from .policy import OpenPolicy
from .replies import Reject

if TYPE_CHECKING:
    from .store import Entry
    from .worker import Worker



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
    #: a hidden shape's public upper bound, dimension by dimension (see :mod:`.fake_trace`): what the client
    #: is charged for and what an owner's rule of sizes reads, instead of the real shape
    bounds: Bounds = None
    #: which of its dimensions are withheld (the others' bounds are their sizes, which the client knows)
    free: Tuple[int, ...] = ()
    #: what identifies each withheld size: equal keys, equal sizes (see :mod:`.sizes`)
    keys: Tuple[Any, ...] = ()

    def released(self) -> "Provenance":
        """The same object once the owner released its shape (or its value)."""
        return Provenance(self.owner, self.sources, False, "released by the owner") if self.hidden else self

    def merged(self, prov: "Provenance") -> "Provenance":
        """This object's provenance once written by an op over objects of provenance ``prov`` (``prov.owner``):
        its values derive from what the op read too, sources added (the owner's request names them: see
        :mod:`.lineage`); its shape, public until now, stays so, and its memory is its own, charged as before."""
        if not self.owner:
            return Provenance(True, prov.sources) if prov.hidden else prov
        sources = tuple(dict.fromkeys(self.sources + prov.sources))  # (in order, each once: O(n), helper-53)
        return self if sources == self.sources else replace(self, sources=_bounded(sources))

    def hiding(self, bounds: Bounds, free: Tuple[int, ...], keys: Tuple[Any, ...] = ()) -> "Provenance":
        """The same provenance for one object whose withheld shape is bounded by ``bounds`` (its dimensions
        ``free`` withheld, the others public; ``keys``: their sizes' keys)."""
        return Provenance(self.owner, self.sources, True, self.rule, bounds, free, keys)


class Disclosed(NamedTuple):
    """What :meth:`Disclosure.of_result` decided about an op's result."""

    #: what the result derives from (``hidden``: from an input whose shape is withheld)
    prov: Provenance
    #: which leaves have a shape the client may see (None: all of them; empty: not even the structure)
    shown: Optional[List[bool]] = None
    #: the op reads or makes a withheld shape: its results are charged by :attr:`trace` (public facts alone),
    #: not by their memory, which would tell the withheld sizes
    withheld: bool = False
    #: the op traced on value-free stand-ins (None: torch cannot trace or bound it without the values)
    trace: Optional[Trace] = None
    #: the keys of each leaf's withheld sizes (see :mod:`.sizes`)
    keys: Optional[List[Tuple[Any, ...]]] = None

    def charge(self, i: int) -> Optional[int]:
        """The public charge of leaf ``i`` (None: it has none, and cannot be kept)."""
        t = self.trace
        return t.charges[i] if t is not None and i < len(t.charges) else None

    def leaf(self, i: int) -> Provenance:
        """The provenance of the ``i``-th leaf."""
        shown, t = self.shown, self.trace
        if shown is not None and i < len(shown) and shown[i]:
            return Provenance(True, self.prov.sources)
        if shown is not None and t is not None and i < len(t.bounds):
            return self.prov.hiding(t.bounds[i], t.free[i], self.keys[i] if self.keys and i < len(self.keys) else ())
        return self.prov


#: Ops over models whose results' shapes are their models' parameters' (an average of models, a model's weights
#: grouped): public, though no trace can tell it (a model's state is not traced).
SHAPES_OF_MODELS = frozenset({average_models, model_weights})

#: Ops whose results have the shapes of tensors they are given (gradients, ``torch.autograd.grad``'s ``inputs``):
#: public when no input's shape is withheld, though torch cannot trace them on stand-ins (no graph there).
SHAPES_OF_INPUTS = frozenset({autograd.grad})

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
#: Other owners' data (moved here) an object's sources name at most; this owner's own, at most
#: :data:`MAX_OWN_SOURCES`, then how many more (cut to 8 in all, a value of 8 other shares and then ``#X`` read as
#: derived from the 8 alone: helper-52; uncut, 8,000 shares made a request of 160 KB and an op over two such
#: objects 3 s of the serving thread: helper-53).
MAX_SOURCES = 8
MAX_OWN_SOURCES = 64
#: In an object's sources: other owners' data it derives from was more than :data:`MAX_SOURCES`.
MORE_SOURCES = "…"
#: ... this owner's objects were more than :data:`MAX_OWN_SOURCES`.
MORE_OWN = "…+"


_OF_CLIENT = Disclosed(CLIENT)
#: A trace not remembered yet (see :meth:`Disclosure.remembered`).
PENDING: Any = object()
_DISCLOSED: Dict[int, Disclosed] = {}


def _disclosed(prov: Provenance) -> Disclosed:
    """``Disclosed(prov)``, made once per provenance (most are shared: one per owner's object, see _shared)."""
    found = _DISCLOSED.get(id(prov))
    if found is None or found.prov is not prov:
        if len(_DISCLOSED) >= 4096:
            _DISCLOSED.clear()
        found = _DISCLOSED[id(prov)] = Disclosed(prov)
    return found


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

#: Arguments the remembered traces' keys may hold in all (about 100 bytes each) before they are forgotten.
MAX_TRACED_ITEMS = 1 << 18


class Disclosure:
    """A worker's decisions about what leaves: result shapes, error text, and the owner's releases."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        #: the errors withheld from clients (their texts, for the owner's release), and each client's budget of them
        self.failures = Failures(worker)
        self._traced: Dict[Any, Any] = {}
        self._traced_items = 0

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
        sources: Dict[str, None] = {}  # (in order, each once)
        hidden = None
        for entry in used:
            prov = of_entry(entry)
            if prov.owner:
                owner = True
                sources.update(dict.fromkeys(prov.sources))
                if prov.hidden and hidden is None:
                    hidden = f"computed from {entry.label}, whose shape is withheld"
        if not owner:
            return CLIENT
        return Provenance(True, _bounded(list(sources)), hidden is not None, hidden or "")

    def of_result(self, op: str, fn: Any, args: Any, kwargs: Any, used: List["Entry"], result: Any,
                  known: Any = PENDING) -> Disclosed:
        """The provenance of an op's result, which of its leaves have a shape the client may see, and, where
        the op reads or makes a withheld shape, the public bounds its results are charged by (``known``: its
        trace, as :meth:`remembered` found it before it ran)."""
        if fn in VALUES_OF_CLIENT:
            return _OF_CLIENT
        prov = self.of_inputs(used)
        if prov is CLIENT:  # (the common case: the client's own objects)
            return _OF_CLIENT
        if not prov.owner or not self.guarded:
            return _disclosed(prov)
        if fn in SHAPES_OF_MODELS:  # (the models' architectures', never values': models.MODEL_FACTORIES)
            if fn is average_models:  # (an aggregate of other owners' models is this worker's own: .guests)
                return Disclosed(Provenance(True, guests.averaged(args[0] if args else None, args[2:],
                                                                  {id(e.tensor): of_entry(e).sources for e in used},
                                                                  prov.sources)))
            return Disclosed(Provenance(True, prov.sources))
        if fn in SHAPES_OF_INPUTS and not prov.hidden:
            return Disclosed(Provenance(True, prov.sources))
        found = self.trace(fn, args, kwargs, used, known)
        traced = found if isinstance(found, Trace) else None
        public = _public_leaves(traced, result)
        if public is not None and all(public) and not prov.hidden:
            if any(e.withheld_bytes for e in used):  # (a released shape's memory is still charged publicly)
                return Disclosed(Provenance(True, prov.sources), public, True, traced)
            return Disclosed(Provenance(True, prov.sources))
        rule = prov.rule or f"the size of {op}'s result depends on the values"
        # (a trace whose structure is not the result's bounds nothing of it)
        if public is None or traced is None:
            return Disclosed(Provenance(True, prov.sources, True, rule), [], True)
        return Disclosed(Provenance(True, prov.sources, True, rule), public, True, traced,
                         self._keys(traced, args, kwargs, used))

    @staticmethod
    def _keys(traced: Trace, args: Any, kwargs: Any, used: List["Entry"]) -> List[Tuple[Any, ...]]:
        """The keys of the withheld sizes of an op's results (see :mod:`.sizes`)."""
        by_number = sizes.withheld_inputs(used)[1]
        leaves = pytree.tree_flatten((args, kwargs))[0]
        entries = {id(e.tensor): e for e in used}

        def counted(j: int) -> Any:
            entry = entries.get(id(leaves[j])) if j < len(leaves) else None
            return sizes.count_key(entry) if entry is not None else None

        return [sizes.result_keys(o, by_number, counted) for o in traced.origins]

    def trace(self, fn: Any, args: Any, kwargs: Any, used: List["Entry"],
              known: Any = PENDING) -> Union[Trace, Untraced, None]:
        """``fn`` traced on value-free stand-ins (see :mod:`.fake_trace`), remembered by what it depends on;
        :class:`Untraced` where torch cannot trace it without the values or it fails at a withheld size of 0
        or 1; None: not traced (a model's or an optimizer's state). ``known``: what :meth:`remembered` found
        for this op already (the serving thread's hot path)."""
        if known is not PENDING:
            return cast(Union[Trace, Untraced, None], known)
        if any(not isinstance(e.tensor, (torch.Tensor, torch.nn.Module)) for e in used):
            return None  # an optimizer: its state cannot be traced without side effects
        withheld, key, traced = self._lookup(fn, args, kwargs, used)
        if traced is PENDING:
            from .writes import writes_nothing  # (writes imports store, which imports this module)

            leaves, spec = pytree.tree_flatten((args, kwargs))
            owned = sizes.owned_inputs(used, withheld)
            traced = trace(fn, leaves, spec, withheld, owned, not writes_nothing(fn, kwargs))
            if key is not None and not (isinstance(traced, Untraced) and traced.late):
                # (bounded by what its keys hold, an item per argument, not by their count alone: a probe grew
                # the worker by 32 MB per 1 KB message with long keys)
                self._traced_items += len(leaves)
                if len(self._traced) > 4096 or self._traced_items > MAX_TRACED_ITEMS:
                    self._traced.clear()
                    self._traced_items = len(leaves)
                self._traced[key] = traced
        return cast(Union[Trace, Untraced], traced)

    def remembered(self, fn: Any, args: Any, kwargs: Any, used: List["Entry"]) -> Any:
        """The trace :meth:`of_result` will use for ``fn``, if remembered (a :class:`Trace`; None: torch cannot
        trace it, or nothing is traced for this op), else :data:`PENDING`: tracing it takes milliseconds of sympy
        (more for a withheld shape), so such an op runs on its client's lane, never on the serving thread
        (varied shapes, each traced once, would hold it for everyone)."""
        return self._lookup(fn, args, kwargs, used)[-1] if self._traces(fn, used) else None

    def _lookup(self, fn: Any, args: Any, kwargs: Any, used: List["Entry"]) -> Tuple[Any, Any, Any]:
        """``(withheld, key, remembered trace or PENDING)`` of ``fn`` over ``args``, ``kwargs``."""
        withheld = sizes.withheld_inputs(used)[0]
        key = trace_key(fn, args, kwargs, withheld, sizes.owned_inputs(used, withheld))
        return withheld, key, self._traced.get(key, PENDING) if key is not None else PENDING

    def _traces(self, fn: Any, used: List["Entry"], owner: Optional[bool] = None) -> bool:
        """Whether :meth:`of_result` traces ``fn`` over ``used``: an op over the owner's tensors or models, under
        a policy that withholds shapes (``owner``: whether ``used`` derive from the owner's data, if known)."""
        return self.guarded and fn not in VALUES_OF_CLIENT and fn not in SHAPES_OF_MODELS \
            and not (fn in SHAPES_OF_INPUTS and not any(of_entry(e).hidden for e in used)) \
            and (self.of_inputs(used).owner if owner is None else owner) \
            and all(isinstance(e.tensor, (torch.Tensor, torch.nn.Module)) for e in used)

    @staticmethod
    def standins(args: Any, kwargs: Any, used: List["Entry"]) -> Tuple[Any, Any]:
        """``(args, kwargs)`` as an op's price sees them: a tensor whose shape is withheld stands as an empty
        'meta' tensor of its public bound (the price of the op at its largest), so that neither an estimate
        nor a refusal tells the real size (``args`` themselves when none is withheld: most ops)."""
        for e in used:
            if e.provenance.hidden:
                break
        else:  # (the hot path: one look per input)
            return args, kwargs
        withheld = {id(e.tensor): e for e in used if e.provenance.hidden and isinstance(e.tensor, torch.Tensor)}
        if sum(len(sizes.withheld_of(e)[1]) for e in withheld.values()) > MAX_WITHHELD_DIMS:
            raise Reject(ErrorCode.DENIED, f"an op over more than {MAX_WITHHELD_DIMS} dimensions whose sizes the "
                                           "owner withholds is not run (each makes working out its result's "
                                           "size slower); ask for a shape first (ptr.request_shape())")

        def standin(x: torch.Tensor) -> torch.Tensor:
            entry = withheld.get(id(x))
            if entry is None:
                return x
            s = torch.empty(sizes.bounds_of(entry), dtype=x.dtype, device="meta", requires_grad=x.requires_grad)
            setattr(s, "standing_for", x.device)  # (read by costs.fakes)
            return s

        return pytree.tree_map_only(torch.Tensor, standin, (args, kwargs))

    def unbounded(self, op: str, fn: Any, args: Any, kwargs: Any, used: List["Entry"], owner: bool,
                  known: Any = PENDING) -> Optional[Exception]:
        """Before an op runs: the refusal to raise (None: it runs). Its results could not be kept (see
        :meth:`unbounded_text`: its real allocation would happen before the refusal); or torch cannot trace it
        over a withheld shape (:meth:`untraced_text`), where whether it fails, or what it writes, could tell
        that shape. Untraced over public shapes it runs, and says; its results cannot be kept.

        The failure budget (held by ``Ops._bounded`` before this) holds for every op whose failure would be
        withheld (:meth:`failure`), traced or not (helper-68: ``torch.autograd.grad``, whose shapes are public and
        not traced, failed 354 times past a spent budget, each failure a bit of ``#X`` through a seed the client
        chose). ``owner``: whether ``used`` derive from the owner's data (``of_inputs``, which the caller asked)."""
        if not self.guarded or not owner or not self._traces(fn, used, owner):
            return None
        traced = self.trace(fn, args, kwargs, used, known)
        if isinstance(traced, Trace):
            return Reject(ErrorCode.DENIED, self.unbounded_text(op)) if None in traced.charges else None
        if traced is None or not any(of_entry(e).hidden for e in used):
            return None
        if traced.error is not None:  # (a failure public facts tell: said as torch's)
            return Reject(ErrorCode.ERROR, self.untraced_text(op, traced), etype=traced.error[0])
        return Reject(ErrorCode.DENIED, self.untraced_text(op, traced))

    def untraced_text(self, op: str, untraced: Untraced) -> str:
        """Why ``op``, over a shape the owner withholds, is not run (see :class:`~.fake_trace.Untraced`)."""
        owner = self.worker.name
        if untraced.edge is not None:
            when = {0: "no row", 1: "exactly one row"}.get(untraced.edge, f"{untraced.edge} rows")
            return (f"{op} fails when a size {owner} withholds is {untraced.edge} (as when {when} passed a "
                    "filter), so whether it "
                    f"ran would tell that size: it is not run; ask for the shape first (ptr.request_shape()), or "
                    "compute over the whole tensor with a mask (torch.where(mask[:, None], x, fill) rather than "
                    "x[mask])")
        if untraced.late:
            return (f"working out whether {op} runs at every size {owner} withholds took longer than "
                    f"{EDGE_SECONDS:g} s (the worker is busy, or the op is large); try again, or ask for the shape "
                    "first (ptr.request_shape())")
        if untraced.error is not None:
            etype, text = untraced.error
            return f"{op} fails whatever {owner}'s data (torch says so from public shapes alone): {etype}: {text}"
        return (f"torch cannot work out {op}'s result over a shape {owner} withholds without knowing that shape "
                "(whether it runs, or the size it makes, may depend on it), so it is not run; ask for the shape "
                "first (ptr.request_shape())")

    def unbounded_text(self, op: str, untraced: bool = False) -> str:
        """Why the results of ``op`` cannot be kept: one has a withheld size that no public fact bounds
        (``untraced``: torch cannot even work it out without the values)."""
        owner = self.worker.name
        if untraced:
            return (f"torch cannot work out the size of {op}'s result without reading {owner}'s values (e.g. an "
                    "index read from them: write x[i.view(1)] rather than x[i]), so it cannot be charged to your "
                    f"quota without telling it")
        return (f"the size of {op}'s result depends on {owner}'s data and has no bound that follows from public "
                f"facts, so {owner} cannot charge it to your quota without telling it; compute it with sizes "
                "you choose (e.g. F.one_hot(y, num_classes=n).sum(0) for bincount(y)), or ask for the shape of "
                "its input first (ptr.request_shape())")

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
            if entry.session is not None:
                entry.provenance = entry.provenance.merged(prov)

    def describe(self, result: Any, ids: List[Optional[bytes]], shown: Optional[List[bool]], fn: Any = None) -> list:
        """The reply to a client that asked what an op returned (see :mod:`syft_magics.wire.results`): with
        the text its op ``fn`` returned, if its values are the client's (:data:`VALUES_OF_CLIENT`)."""
        if shown is not None and not shown and not flatten(result)[1].is_leaf():
            raise Reject(ErrorCode.BAD_ARGS, "how many tensors this op returns depends on a shape the owner "
                                             "withholds; request that shape first (ptr.request_shape())")
        return describe(result, ids, shown, text=fn in VALUES_OF_CLIENT)

    # -- errors ----------------------------------------------------------------------------
    def failure(self, session: Any, op: str, prov: Provenance, exc: Exception) -> Exception:
        """The error the client may see for ``exc``, raised by ``op`` on objects of provenance ``prov``:
        ``exc`` itself, or a :class:`~.failures.Withheld` with its type and a number (see :mod:`.failures`)."""
        if isinstance(exc, Withheld) or (isinstance(exc, Reject) and exc.public) \
                or not prov.owner or not self.guarded:
            return exc
        return self.failures.withhold(session, op, exc, prov.sources)


def _bounded(sources: Sequence[str]) -> Tuple[str, ...]:
    """At most :data:`MAX_OWN_SOURCES` of this owner's objects among ``sources`` (then :data:`MORE_OWN`), then at most
    :data:`MAX_SOURCES` of other owners' data moved here, those released for this worker only first (this owner's
    rules look for one), then :data:`MORE_SOURCES` if there were more: the owner is told there were."""
    if len(sources) <= MAX_SOURCES and MORE_OWN not in sources and MORE_SOURCES not in sources:
        return tuple(sources)
    own = [s for s in sources if not s.startswith(guests.PREFIX) and s not in (MORE_OWN, MORE_SOURCES)]
    moved = [s for s in sources if s.startswith(guests.PREFIX)]
    held = guests.held(moved)
    kept = [*held, *(s for s in moved if s not in held)]
    more_own = (MORE_OWN,) if len(own) > MAX_OWN_SOURCES or MORE_OWN in sources else ()
    more = (MORE_SOURCES,) if len(kept) > MAX_SOURCES or MORE_SOURCES in sources else ()
    return (*own[:MAX_OWN_SOURCES], *more_own, *kept[:MAX_SOURCES], *more)


def _public_leaves(traced: Optional[Trace], result: Any) -> Optional[List[bool]]:
    """Which leaves of ``result`` have the shape ``traced`` found from public facts alone (None: not even its
    structure is public)."""
    if traced is None:
        return None
    real, real_spec = flatten(result)
    if real_spec != traced.spec:
        return None
    return [not isinstance(x, torch.Tensor) or (s is not None and tuple(x.shape) == s)
            for x, s in zip(real, traced.shapes)]

"""After an op ran: what it wrote, recorded where the owner and the worker's rules look.

:func:`changed` finds the objects an op wrote: by their version counters (:func:`.writes.changed`), and the client's
objects holding memory it wrote without naming it (:mod:`.side_writes`). :func:`writes` records those writes: in
each object's history (a request shows it), the autograd work and depth they added, what they derive from now
(:mod:`.provenance`), the gradients they wrote (:func:`.side_writes.grads_written`) and whether the owner's data
reached them other than by training (:mod:`.trained`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from . import graphs, lineage, side_writes, train_costs, trained
from . import writes as guard
from .autograd import set_data_
from .side_writes import Watch

if TYPE_CHECKING:
    from .ops import Ops
    from .sessions import Session
    from .store import Entry, ObjectStore


def changed(store: "ObjectStore", session: "Session", call: Tuple[Any, Any, Any], op: str, used: List["Entry"],
            before: List[Tuple["Entry", int]], watch: Optional[Watch]) -> List["Entry"]:
    """After op ``op`` (``call``) over ``used``: the objects it wrote; those it wrote without naming them derive from
    what it read. A model's forward that wrote its weights (not its running statistics: an embedding's ``max_norm``)
    wrote them other than by training, and so did ``w.grad = g`` and a backward seeded with the data (helper-58)."""
    written = guard.changed(before)
    if getattr(call[0], "__name__", "") == "module_to":  # (a model's tensors on another device: new memory)
        store.rebind(store.sharing([e for e in used if e.kind == "model"]))
    elif call[0] is set_data_ and call[1]:  # (``t.data = d`` of another device: new memory for ``t``)
        store.rebind(store.sharing([e for e in used if e.tensor is call[1][0]]))
    if watch is None:
        return written
    named = {id(e) for e in written}
    written += [e for e in store.holding(session.ident, watch.written()) if id(e) not in named]
    for entry in written:  # (what the op read: its inputs, and what it read through them, see .side_writes)
        if entry.session is not None:
            entry.provenance = entry.provenance.merged(watch.prov)
    if watch.weights_written:
        trained.forward_wrote(store, session.ident, used, watch.weights_written)
    if watch.regraded:
        trained.grads_set(store, call, op, used, watch.regraded)
    return written


def writes(ops: "Ops", session: "Session", call: Tuple[Any, Any, Any], op: str, used: List["Entry"],
           written: Optional[List["Entry"]], spent: float = 0.0, grad: bool = True) -> None:
    """Record the writes op ``op`` (``call``: its function and arguments) made: into a client's object, in its
    history (an approval shows it), with the autograd work it added (``spent``: its estimate); into the owner's data
    (the guard failed to foresee it), reported loudly. ``None``: it writes nothing, by its schema."""
    if written is None:
        return
    store = ops.store
    named = {id(e) for e in used}
    for entry in written:
        if guard.owner_view(store, entry):
            ops.refuse("unforeseen write into the owner's data")
            ops.events.emit("owner_write", client=session.label, op=op, id=entry.hex, label=entry.label)
        lineage.record(entry, op, lineage.inputs_of(used, but=entry))
        entry.seen_version = entry.version
        if graphs.has_graph(entry.tensor) and id(entry) in named:  # written in place into a graph: it grew
            others = [e for e in used if e is not entry]
            entry.work = train_costs.work_of(spent + (entry.work or 0.0), others)
            if grad:  # (a write under the client's no_grad adds no node)
                entry.depth = graphs.depth_of(used, check=False)  # (used holds the entry: one deeper than it)
                graphs.written_through(entry.tensor, entry.depth)
    # (through a view: its base and the other views hold what it wrote too, and derive from it)
    shared = store.sharing(written) if written else written
    ops.disclosure.taint(used, shared)
    if shared:
        for entry in shared:  # (requires_grad_ made it one)
            store.note_grads(entry)
        shared = [*shared, *side_writes.grads_written(ops.disclosure, session.ident, used, shared)]
    trained.written(store, call, op, used, shared)  # (what a model rule releases)

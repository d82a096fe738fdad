"""The results of an op that reads or makes a withheld shape: charged to its client by public facts alone.

Such a result's memory would tell the withheld sizes (its bytes against the client's quota), so it is charged
by the public bound :mod:`.fake_trace` gives, and kept read-only where a write would reach, or miss, memory of
withheld size (see :mod:`.provenance`). :func:`charged_publicly` is the part of :meth:`.ops.Ops._finish` that
decides it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, AbstractSet, Any, List, Optional, Set, Tuple

import torch

from ..errors import ErrorCode
from . import graphs, quotas
from .blocks import Block
from .optimizers import STORED_TYPES
from .provenance import Disclosed
from .replies import Reject
from .sessions import Session
from .store import Entry

if TYPE_CHECKING:
    from .ops import Ops


def charged_publicly(ops: "Ops", session: Session, op: str, disclosed: Disclosed, out: list, leaves: List[Any],
                     used: List[Entry], seen: Set[int]) -> Tuple[list, AbstractSet[bytes]]:
    """The results of an op that reads or makes a withheld shape, charged by public facts alone (see
    :mod:`.fake_trace`). One whose shape is withheld: its public bound, in a block of its own while it
    lives; the memory it keeps alive, of withheld size, is held at no charge of its own. One whose shape
    is public: its memory, once that is its own (a view into memory of withheld size is copied: the size
    would tell, and the memory would outlive its charge). The withheld ones and the copies are read-only
    (a write would reach, or miss, memory of withheld size). Refused if one has no bound, or an autograd
    graph (what the graph saved was charged by its real size)."""
    kept: List[Tuple[int, bytes, Any, Tuple[int, Optional[List[Block]]]]] = []
    frozen: Set[bytes] = set()  # (the read-only ones)
    sid, copies = session.ident, 0  # (copies: bytes of the copies made so far)
    withheld: Set[int] = set()  # (the memory of this op's withheld results)
    # (a view may keep a withheld input's memory alive: charged at least what that input is)
    kept_alive = max((e.withheld_bytes for e in used), default=0)
    for i, (oid, leaf) in enumerate(zip(out, leaves)):
        if oid is None or not isinstance(leaf, STORED_TYPES):
            continue
        if not isinstance(leaf, torch.Tensor):  # a model or an optimizer: its architecture's size, public
            kept.append((i, oid, leaf, ops.store.charge(leaf, sid, seen)))
            continue
        if graphs.has_graph(leaf):
            raise Reject(ErrorCode.DENIED, no_graph_text(ops.name, op))
        if disclosed.shown and i < len(disclosed.shown) and disclosed.shown[i]:
            # a view by the trace is a copy, read-only (public facts decide); so is one torch made a view of
            # withheld memory where the trace saw a copy (reshape), writable
            view = disclosed.trace is not None and disclosed.trace.views[i]
            if view or ops.store.in_withheld_memory(leaf, sid, withheld):
                # (within the client's quota before the copy is made: a probe copied a 1 GB view 8 times)
                copies += leaf.numel() * leaf.element_size()
                quotas.check_bytes(session.quotas, session.label, ops.held_by(session), copies,
                                   f"{op}'s result")
                with torch.no_grad():  # (it has no graph; a view made under no_grad must not be cloned with one)
                    leaf = leaf.detach().clone(memory_format=torch.contiguous_format)
            if view:
                frozen.add(oid)
            kept.append((i, oid, leaf, ops.store.charge(leaf, sid, seen)))
            continue
        public = disclosed.charge(i)
        if public is None:
            raise Reject(ErrorCode.DENIED, ops.disclosure.unbounded_text(op, disclosed.trace is None))
        if not leaf.is_contiguous():  # (as the edge check's stand-ins are: rows.t().view(-1) ran at 0 or 1 rows)
            copies += max(public, kept_alive)  # (within the quota first, by its public charge: helper-33)
            quotas.check_bytes(session.quotas, session.label, ops.held_by(session), copies, f"{op}'s result")
            leaf = leaf.detach().contiguous()
        withheld.update(ops.store.storage_keys(leaf))
        frozen.add(oid)
        kept.append((i, oid, leaf, ops.store.charge_public(leaf, sid, seen, max(public, kept_alive))))
    return kept, frozen


def no_graph_text(worker: str, op: str) -> str:
    return (f"{op} would build an autograd graph over a tensor computed over a shape {worker} withholds: "
            "what the graph saves would be charged to your quota by its real size, which would tell that "
            "size; ask for the shape (ptr.request_shape()) and train on a copy (ptr.clone()), or compute "
            "under torch.no_grad()")

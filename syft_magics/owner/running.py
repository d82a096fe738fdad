"""Running a client's op once it is checked and priced: its write guard, its graph, its turn at random numbers.

A mix-in of :class:`~syft_magics.owner.ops.Ops` (the serving thread, or the client's lane). Most ops write
into nothing, by their torch schema (:func:`.writes.writes_nothing`), and run as they are; any other runs
on copies of the owner's tensors or under the write guard (:mod:`.writes`), with what it may write beside
its arguments watched (:mod:`.side_writes`) and what it wrote recorded (:mod:`.recorded`). The tensors its
autograd graph saves are charged to its client (:mod:`.graphs`). Under a guarding policy it draws random
numbers in its turn (:mod:`.randomness`); an op whose result is sized by values runs within the room its
client's quota leaves (:mod:`.checked`).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, TypeVar

import torch

from ..wire.protocol import ErrorCode
from ..wire.results import flatten
from . import autograd, checked, graphs, public_charges, randomness, recorded, side_writes, writes
from .provenance import PUBLIC_REFUSALS, Disclosure
from .replies import Reject
from .sessions import Session
from .sizes import withheld_shape
from .store import Entry, ObjectStore

if TYPE_CHECKING:
    from .worker import Worker


class Running:
    """``_call`` and ``_run`` of :class:`~.ops.Ops`."""

    worker: "Worker"
    name: str
    store: ObjectStore
    disclosure: Disclosure

    def held_by(self, session: Session) -> int:  # pragma: no cover - Ops'
        raise NotImplementedError

    def _call(self, session: Session, op: str, fn: Callable[..., Any], args: Any, kwargs: Dict[str, Any], grad: bool,
              used: List[Entry], wait: bool = False) -> Tuple[Any, Optional[List[Entry]]]:
        """:meth:`_run`, under a guarded policy in its turn to draw random numbers (:mod:`.randomness`; ``wait``
        False, on the serving thread: :class:`~.randomness.Busy` rather than wait for it); an op whose result's size
        is read from values, within the room its client's quota leaves, and no integer argument beyond it
        (:mod:`.checked`)."""
        guarded = self.disclosure.guarded
        owners = guarded and self.disclosure.of_inputs(used).owner  # (over the owner's data, under a guarding policy)
        # (such results are charged by public bounds: no room, whose refusal the values would decide)
        sized = fn in checked.VALUE_SIZED and not owners
        with checked.room(session.quotas, session.label, self.held_by(session)) if sized else _ANY_ROOM, \
                checked.bounded(args, kwargs, int(session.quotas.max_bytes)):
            if not guarded:
                return self._run(session, op, fn, args, kwargs, grad, used)
            with randomness.section(owners, self.worker.devices.generators, wait):
                return self._run(session, op, fn, args, kwargs, grad, used)

    def _run(self, session: Session, op: str, fn: Callable[..., Any], args: Any, kwargs: Dict[str, Any], grad: bool,
             used: List[Entry]) -> Tuple[Any, Optional[List[Entry]]]:
        """Run the op under the write guard; its result and the entries it wrote into (None: it writes
        nothing, by its schema). Raises :class:`Ran` (the error and the writes made before it) if the
        op failed after it may have written. What its autograd graph saved is charged to its client from
        here on, whatever becomes of its results (an in-place op or a backward leaves it on objects that
        already exist: see :mod:`.graphs`)."""
        recorder = graphs.Recorder() if grad and fn not in autograd.SAVES_NOTHING \
            and graphs.builds_graph(used) else None
        if recorder is not None and any(withheld_shape(e) or e.withheld_bytes for e in used):
            raise Reject(ErrorCode.DENIED, public_charges.no_graph_text(self.name, op))
        try:
            if writes.writes_nothing(fn, kwargs):  # by its schema (most ops): no guard, no write to look for
                try:
                    if recorder is None:
                        if grad:
                            return fn(*args, **kwargs), None
                        with torch.no_grad():  # (the client's op ran under torch.no_grad())
                            return fn(*args, **kwargs), None
                    with recorder:
                        result = fn(*args, **kwargs)
                except Reject as exc:
                    raise _own_refusal(fn, exc)
                self._keep_leaves(session, used, result, None)
                return result, None
            if recorder is not None:  # (it may deepen a graph in place: refused before it runs if too deep)
                graphs.depth_of(used)
            before = writes.versions(used)
            watch = side_writes.watch(self.disclosure, session.ident, fn, args, kwargs, used)
            copies = writes.copies_for(self.store, used, fn)  # (the owner's data copied, or the guard)
            try:
                with writes.guard(self.store, used) if copies is None else contextlib.nullcontext(), \
                        contextlib.nullcontext() if grad else torch.no_grad(), recorder or contextlib.nullcontext():
                    result = fn(*args, **kwargs) if copies is None else copies.call(op, fn, args, kwargs)
            except Exception as exc:
                wrote = recorded.changed(self.store, session, (fn, args, kwargs), op, used, before, watch)
                raise Ran(_own_refusal(fn, exc), wrote) from None
            written = recorded.changed(self.store, session, (fn, args, kwargs), op, used, before, watch)
            if recorder is not None and watch is not None and watch.forced:  # (versions the worker moved: .graphs)
                recorder.rebase(watch.forced)
            if fn in autograd.WRITES_GRADS and self.disclosure.guarded:  # (objects it gave a gradient: helper-44)
                for entry in self.store.of_session(session.ident):
                    self.store.note_grads(entry)
            if recorder is not None:
                self._keep_leaves(session, used, result, written)
            return result, written
        finally:
            if recorder is not None and recorder.saved:
                self.store.keep_saved(session.ident, recorder.graph, recorder.saved)

    def _keep_leaves(self, session: Session, used: List[Entry], result: Any, written: Optional[List[Entry]]) -> None:
        """Keep the op's leaf inputs charged while the graph it left on its results and on what it wrote into
        points to them (see :mod:`.graphs`)."""
        leaves = [e for e in used if e.session == session.ident and graphs.is_leaf_input(e.tensor)]
        if leaves:
            graph = graphs.Graph()
            if graphs.keep_with_nodes(flatten(result)[0], [e.tensor for e in written or ()], graph):
                self.store.keep_leaves(session.ident, graph, leaves)


_ANY_ROOM = contextlib.nullcontext()

E = TypeVar("E", bound=BaseException)


def _own_refusal(fn: Any, exc: E) -> E:
    """An error the op's own code raised: a refusal of its (a ``Reject``) is public only for the ops that vet
    their refusals' text (``provenance.PUBLIC_REFUSALS``); any other is withheld as a torch error is, when the
    op's inputs derive from the owner's data (its text may name them: a pointer's repr is the owner's tensor)."""
    if isinstance(exc, Reject) and fn not in PUBLIC_REFUSALS:
        exc.public = False
    return exc


class Ran(Exception):
    """An op that failed after it started: its error and the objects it wrote into before failing."""

    def __init__(self, error: Exception, written: List[Entry]) -> None:
        super().__init__(str(error))
        self.error, self.written = error, written

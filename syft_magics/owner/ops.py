"""Running a client's op: checks, its cost, where it runs (now or on the client's lane), its results.

A mix-in of :class:`~syft_magics.owner.serving.Server` (same serving thread, same tables). An op is
checked (allowlist, fresh result ids, no write into the owner's data), priced from its signature
(:mod:`~syft_magics.owner.costs`), refused up front if it would take its client over a quota or its
time budget (:mod:`~syft_magics.owner.quotas`), then run at once if it is known to be cheap, else on
the client's lane (:mod:`~syft_magics.owner.lanes`) while the serving thread serves everyone else.
Its results are stored, charged to the client and described on the serving thread in both cases.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, AbstractSet, Any, Callable, Dict, List, NoReturn, Optional, Set, Tuple

import torch
import zmq

from ..errors import ProtocolError
from ..events import EventStream
from ..wire import limits
from ..wire.names import is_inplace, short_name
from ..wire.protocol import ErrorCode, Kind, encode, field
from ..wire.results import MAX_LEAVES as MAX_RESULTS
from ..wire.results import flatten
from . import (
    autograd,
    checked,
    costs,
    graphs,
    halts,
    lineage,
    plain,
    public_charges,
    quotas,
    randomness,
    recorded,
    train_costs,
    trained,
    writes,
)
from .allowlist import hint as allowlist_hint
from .models import makes_model
from .optimizers import OPTIMIZER_FACTORIES, STORED_TYPES, check_handles
from .provenance import PENDING, Disclosed, Disclosure, Provenance
from .replies import Reject, error_reply, forget_frames
from .running import Ran, Running
from .sessions import Session
from .sizes import withheld_shape
from .store import Block, Entry, ObjectStore, new_id, withheld_charge

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)


class Ops(Running):
    """The ``op`` handler and what it needs (the serving thread only)."""

    worker: "Worker"
    name: str
    store: ObjectStore
    events: EventStream
    stats: Dict[str, Any]
    sessions: Dict[bytes, Session]
    disclosure: Disclosure

    def refuse(self, reason: str) -> None:  # pragma: no cover - the server's
        raise NotImplementedError

    def call_soon(self, fn: Callable[[zmq.Socket], None]) -> None:  # pragma: no cover - the server's
        raise NotImplementedError

    def _drain(self, session: Session, router: zmq.Socket) -> None:  # pragma: no cover - the server's
        raise NotImplementedError

    def to(self, router: zmq.Socket, ident: bytes, parts: List[Any]) -> None:  # pragma: no cover - the server's
        raise NotImplementedError

    def _on_op(self, session: Session, header: dict, used: List[Entry]) -> Optional[List[Any]]:
        held: List[quotas.FailureBudget] = []  # (a failure an op run here holds: released once it is counted)
        try:
            return self._op(session, header, used, held)
        finally:
            for budget in held:
                budget.release()

    def _op(self, session: Session, header: dict, used: List[Entry], held: List[quotas.FailureBudget]
            ) -> Optional[List[Any]]:
        t0 = time.perf_counter()
        name = field(header, "f", str)
        if len(name) > limits.MAX_OP_NAME_CHARS:
            raise Reject(ErrorCode.OP_NOT_ALLOWED,
                         f"op name of {len(name)} characters is not on {self.name}'s allowlist")
        args = header.get("a", ())
        kwargs = header.get("k") or {}
        out = header.get("o") or []
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict) or not isinstance(out, list) \
                or any(type(k) is not str or len(k) > limits.MAX_NAME_CHARS for k in kwargs):
            raise ProtocolError("op arguments must be a list, keyword arguments a map of names of at most "
                                f"{limits.MAX_NAME_CHARS} characters, outputs a list")
        if len(out) > MAX_RESULTS:
            raise ProtocolError(f"an op returns at most {MAX_RESULTS} results, not {len(out)}")
        self.stats["commands"] += 1
        grad = bool(header.get("g", True))  # False: the client's op ran under torch.no_grad()
        op = short_name(name)
        ran = False
        spent: Optional[float] = None  # the op's estimate, for the autograd work behind its results
        try:
            fn = self.worker.allowlist.lookup(name)
            if fn is None:
                raise Reject(ErrorCode.OP_NOT_ALLOWED, f"{op} is not on {self.name}'s allowlist of ops"
                                                       + allowlist_hint(name))
            if "out" in kwargs or writes.positional_out(fn, args):
                raise Reject(ErrorCode.BAD_ARGS, "out= is not supported on pointers")
            for oid in out:
                if oid is not None and (not isinstance(oid, bytes) or len(oid) != 16 or oid in self.store):
                    raise Reject(ErrorCode.BAD_ID, "result ids must be fresh 16-byte ids")
            if is_inplace(name) and args:  # named in place (add_, requires_grad_): refused before it runs
                target = next((e for e in used if e.tensor is args[0]), None)
                if target is not None and target.read_only:
                    raise writes.WithheldWrite(op, "self", target.label)
                if any(e.tensor is args[0] and writes.owner_view(self.store, e) for e in used):
                    # (whatever it dispatches to)
                    raise writes.OwnerDataWrite(op, "self", next(e.label for e in used if e.tensor is args[0]))
            if makes_model(fn) and any(withheld_shape(e) or e.withheld_bytes for e in used):
                # (its tensors would hold memory of withheld size, charged as a model's, by their real size)
                raise Reject(ErrorCode.DENIED, f"a model cannot be made of a tensor computed over a shape "
                                               f"{self.name} withholds; ask for the shape (ptr.request_shape()), "
                                               "then use a copy (ptr.clone())")
            check_handles(fn, op, used)  # (an optimizer or scheduler: only for the ops that take one)
            plain.check_flags(fn, op, args, kwargs)  # (a flag is a bool, never the truth of a tensor)
            if fn in OPTIMIZER_FACTORIES:  # (its steps would write into the tensors it is given)
                owned = next((e for e in used if writes.owner_view(self.store, e) or e.read_only), None)
                if owned is not None:
                    refusal = writes.WithheldWrite if owned.read_only else writes.OwnerDataWrite
                    raise refusal(op, "params", owned.label)
            guarded = self.disclosure.guarded  # (withheld shapes: every policy but open)
            # (priced as the client can know it: a withheld shape at its public bound)
            pargs, pkwargs = self.disclosure.standins(args, kwargs, used) if guarded else (args, kwargs)
            key = costs.signature(name, pargs, pkwargs, grad)
            if fn in train_costs.THROUGH_GRAPH:  # a backward: priced per call from the graph it goes through
                key, cost = None, train_costs.of_graph(used)
            else:
                cost = costs.cached(key)  # the hot path: a known cheap op costs this look-up, no fake run
            # (slow work no price covers: a first trace of its result, a look at every object for gradients)
            known = self.disclosure.remembered(fn, args, kwargs, used) if guarded else None
            slow = guarded and ((fn in autograd.WRITES_GRADS and self.store.session_count(session.ident) > GRADS_INLINE)
                                or known is PENDING)
            if cost is None and key is not None and not costs.warm() and costs.small(pargs) \
                    and not session.lane.busy and not slow:
                # (the first seconds after start: small ops at once, unpriced)
                if guarded:
                    self._bounded(session, op, fn, args, kwargs, used, held, known)
                result, written = self._call(session, op, fn, args, kwargs, grad, used)
                ran = True
            elif cost is not None and cost.priced:
                q, sid = session.quotas, session.ident
                if cost.seconds > q.op_seconds or cost.peak_bytes + self.held_by(session) > q.max_bytes \
                        or len(out) + self.store.session_count(sid) > q.max_objects:  # (checks inlined: hot path)
                    self._check_cost(session, op, cost, len(out))
                if cost.seconds <= costs.INLINE_SECONDS and not session.lane.busy and not slow:
                    if guarded:
                        self._bounded(session, op, fn, args, kwargs, used, held, known)
                    t1 = time.perf_counter()
                    try:
                        result, written = self._call(session, op, fn, args, kwargs, grad, used)
                    finally:
                        took = time.perf_counter() - t1
                        if cost.slow or took > 2 * cost.seconds + costs.SLOW_SECONDS:  # (observe's test, inlined)
                            costs.observe(key, cost, took)
                    ran, spent = True, cost.seconds
        except randomness.Busy:  # (it did not start: run it on its lane, in its turn)
            assert fn is not None  # (Busy comes from _call, after the look-up)
        except Exception as exc:
            self._failed(session, name, out, used, exc, t0)
        if ran:  # (outside the try: _finish records its own failures)
            if spent is None:  # (unpriced: what it took)
                spent = time.perf_counter() - t0
            if written is not None:
                recorded.writes(self, session, (fn, args, kwargs), op, used, written, spent, grad)
            return self._finish(session, header, name, (fn, args, kwargs), result, out, used, t0, spent=spent,
                                known=known)

        on_lane: List[quotas.FailureBudget] = []  # (released in done(), once a failure is counted)

        def work() -> Tuple[Any, Optional[List[Entry]], float, float, Any]:
            estimate = cost
            if estimate is None and key is not None and costs.warm():
                try:
                    estimate = costs.scaled(train_costs.estimate(fn, pargs, pkwargs, grad), key)
                except costs.Unestimable:
                    estimate = costs.UNPRICED  # runs unpriced; its results are still charged before they are kept
                costs.remember(key, estimate)
            if estimate is not None and estimate.priced:
                self._check_cost(session, op, estimate, len(out))
            else:  # (unpriced: at least not past the quota already)
                quotas.check_bytes(session.quotas, session.label, self.held_by(session), 0, op)
            self._bounded(session, op, fn, args, kwargs, used, on_lane)  # (what could not be kept: refused first)
            if estimate is not None and not estimate.priced and fn not in checked.VALUE_SIZED \
                    and not name.startswith("syft.") and checked.numbers_in_tensors(args, kwargs):  # (torch's ops)
                raise Reject(ErrorCode.BAD_ARGS, f"{op} cannot be priced with a number given as a one-element integer "
                                                 "tensor (a size, a count: helper-66): give it as a Python number")
            t1 = time.perf_counter()
            try:
                result, written = self._call(session, op, fn, args, kwargs, grad, used, wait=True)
            finally:
                if estimate is not None and estimate.priced:
                    costs.observe(key, estimate, time.perf_counter() - t1)
            seconds = time.perf_counter() - t1
            spent = estimate.seconds if estimate is not None and estimate.priced else seconds
            # what the result discloses, traced here too (off the serving thread: it may take milliseconds)
            return result, written, seconds, spent, self.disclosure.of_result(op, fn, args, kwargs, used, result)

        def done(router: zmq.Socket, value: Any, error: Optional[BaseException], _seconds: float) -> None:
            try:
                answered = answer(router, value, error)
            finally:
                for budget in on_lane:
                    budget.release()
            if answered:  # (its session's ops queued behind it, once its failure is no longer held)
                self._drain(session, router)

        def answer(router: zmq.Socket, value: Any, error: Optional[BaseException]) -> bool:
            session.lane.busy = False
            if self.sessions.get(session.ident) is not session:  # it ended meanwhile: nobody to answer
                return False
            reply: Optional[List[Any]] = None
            try:
                if error is not None:
                    try:
                        self._failed(session, name, out, used, error, t0)
                    finally:
                        forget_frames(error)  # (raised outside its except: not the context of what _failed raises)
                result, written, seconds, spent, disclosed = value
                recorded.writes(self, session, (fn, args, kwargs), op, used, written, spent, grad)
                if seconds > session.quotas.op_seconds:  # a kernel cannot be stopped: reported, counted
                    self.refuse("op ran over its time budget")
                    self.events.emit("overran", client=session.label, op=op, seconds=round(seconds, 3),
                                     budget=session.quotas.op_seconds)
                reply = self._finish(session, header, name, (fn, args, kwargs), result, out, used, t0, disclosed,
                                     spent)
            except Exception as failed:  # (recorded by _failed or _finish)
                setattr(failed, "seq", header.get("s"))
                if log.isEnabledFor(logging.DEBUG):  # (as Server._answer logs the failures of ops run at once)
                    log.debug("worker %s answers %s with an error", self.name, session.ident.hex()[:8], exc_info=True)
                halts.stopped(session, header)
                reply = error_reply(failed)
                forget_frames(failed)
            if reply is not None:
                try:
                    self.to(router, session.ident, reply)
                except zmq.ZMQError:
                    pass  # the client is gone; the worker serves on
            return True

        session.lane.run(work, done, self.call_soon)
        return None

    def _bounded(self, session: Session, op: str, fn: Any, args: Any, kwargs: Any, used: List[Entry],
                 held: List[quotas.FailureBudget], known: Any = PENDING) -> None:
        """Refuse, before it runs, an op :meth:`.Disclosure.unbounded` refuses, or one on the owner's data of a
        client whose failures are spent; else the op holds one of them (in ``held``) until its caller releases it,
        once the op ended (see :class:`~.quotas.FailureBudget`)."""
        disclosure = self.disclosure
        if not disclosure.guarded:
            return
        owner = disclosure.of_inputs(used).owner
        if owner:
            held.append(disclosure.failures.reserve(session))
        refusal = disclosure.unbounded(op, fn, args, kwargs, used, owner, known)
        if refusal is not None:
            raise refusal

    def held_by(self, session: Session) -> int:
        """The bytes ``session``'s quota counts as held: its objects' and graphs', and its partial uploads' (allocated
        whole when declared: helper-36 held 4 MiB of objects and a 4 MiB upload under a 4 MiB quota)."""
        return self.store.held_bytes(session.ident) + session.streams.declared()

    def _check_cost(self, session: Session, op: str, cost: costs.Cost, n_out: int) -> None:
        """Refuse, before it runs, an op over the client's time budget, bytes or objects."""
        q = session.quotas
        quotas.check_seconds(q, session.label, op, cost.seconds)
        quotas.check_bytes(q, session.label, self.held_by(session), cost.peak_bytes,
                           f"{op} (allocating)")
        quotas.check_objects(q, session.label, self.store.session_count(session.ident), n_out)

    def _failed(self, session: Session, name: str, out: list, used: List[Entry], exc: BaseException,
                t0: float) -> NoReturn:
        """Record a failed op and raise what its client may see (see :meth:`_fail`): writes it made are
        recorded, a write into the owner's data reads as read-only, a refusal over a quota is counted."""
        op = short_name(name)
        if isinstance(exc, Ran):
            recorded.writes(self, session, (self.worker.allowlist.lookup(name), (), {}), op, used, exc.written)
            exc = exc.error
        if isinstance(exc, writes.WithheldWrite):
            self.refuse("write into a read-only result")
            exc = Reject(ErrorCode.READ_ONLY, f"{op} writes into {exc.label}, a result computed over a shape "
                                              f"{self.name} withholds: such results are read-only (a write would "
                                              "reach, or miss, memory whose size is withheld); compute out of "
                                              f"place instead ({_out_of_place(op)})")
        elif isinstance(exc, writes.OwnerDataWrite):
            self.refuse("write into the owner's data")
            exc = Reject(ErrorCode.READ_ONLY, f"{exc.label} is {self.name}'s data (or a view of it) and cannot be "
                                              f"changed ({op} writes into it); compute on a copy "
                                              "instead, e.g. ptr.clone()")
        elif isinstance(exc, Reject) and exc.code == ErrorCode.QUOTA:
            self.refuse("over a quota or time budget")
        if not isinstance(exc, Exception):
            exc = RuntimeError(repr(exc))
        self._fail(session, name, out, used, exc, t0)

    def _finish(self, session: Session, header: dict, name: str, call: Tuple[Any, Any, Any], result: Any,
                out: list, used: List[Entry], t0: float,
                disclosed: Optional[Disclosed] = None,
                spent: float = 0.0, known: Any = PENDING) -> Optional[List[Any]]:
        """Store an op's results for its client (charged to its quota, with their provenance: see
        :mod:`.provenance`, and the autograd work behind them: see :mod:`.train_costs`) and describe them
        if asked. ``call``: ``(fn, args, kwargs)`` of the op; ``disclosed``: what
        :meth:`Disclosure.of_result` says of it, if already known; ``spent``: its part of the autograd
        work behind its results (its estimate, else what it took); ``known``: its trace, as
        :meth:`Disclosure.remembered` found it before it ran."""
        op = short_name(name)
        leaves = flatten(result)[0]
        disclosed = disclosed or self.disclosure.of_result(op, *call, used, result, known)
        prov, shown = disclosed.prov, disclosed.shown
        try:
            if header.get("m"):
                out = [new_id() if isinstance(leaf, torch.Tensor) else None for leaf in leaves]
                reply = self.disclosure.describe(result, out, shown, call[0])
            elif len(out) != len(leaves):
                raise Reject(ErrorCode.BAD_ARGS, f"{op} returned {len(leaves)} results, the client expected "
                                                 f"{len(out)}", public=not prov.hidden)
            seen: Set[int] = set()  # the memory blocks of this op's results: each charged once
            # each result's charge (its memory blocks the client does not hold yet: see ObjectStore.put) and blocks
            kept, frozen = ([(i, oid, leaf, self.store.charge(leaf, session.ident, seen))
                             for i, (oid, leaf) in enumerate(zip(out, leaves))
                             if oid is not None and isinstance(leaf, STORED_TYPES)], _NONE) \
                if not disclosed.withheld else \
                public_charges.charged_publicly(self, session, op, disclosed, out, leaves, used, seen)
            if any(k[1] in self.store for k in kept):  # (taken while it ran on its lane: another client's now)
                raise Reject(ErrorCode.BAD_ID, "result ids must be fresh 16-byte ids")
            # the work and depth behind results with a graph (the op's inputs'); too deep: refused (.graphs)
            graph = (train_costs.work_of(spent, used), graphs.depth_of(used)) \
                if any(graphs.has_graph(k[2]) for k in kept) else (None, 0)
            if kept:
                q, sid = session.quotas, session.ident
                count, held = self.store.session_count(sid), self.held_by(session)
                more = sum(k[3][0] for k in kept)
                if count + len(kept) > q.max_objects or held + more > q.max_bytes:
                    self.refuse("over a quota or time budget")
                    quotas.check_objects(q, session.label, count, len(kept))
                    quotas.check_bytes(q, session.label, held, more, f"{op}'s result")
        except Exception as exc:
            self._fail(session, name, [] if header.get("m") else out, used, exc, t0, prov)
        inputs, mark = lineage.inputs_of(used), trained.of_result(call, op, used)
        now = time.time()
        guarded = self.disclosure.guarded
        for i, oid, leaf, (charge, blocks) in kept:
            work, depth = graph if graphs.has_graph(leaf) else (None, 0)
            prov = disclosed.leaf(i)
            if guarded and blocks and charge < sum(block[1] for block in blocks):  # (memory its client holds)
                prov = self._aliased(session, blocks, prov)
            self.store.put(Entry(oid, leaf, origin=session.label, session=session.ident, op=op, inputs=inputs,
                                 created=now, last_access=now, provenance=prov,
                                 work=work, depth=depth, withheld_bytes=withheld_charge(blocks) if frozen else 0,
                                 read_only=oid in frozen, untrained=mark),  # (see public_charges)
                           charge=charge, blocks=blocks)
        self.events.emit("command", client=session.label, op=op, inputs=inputs, out=[k[1] for k in kept],
                         duration=time.perf_counter() - t0, status="ok")
        return encode({"t": Kind.OK, "s": header.get("s"), "r": reply}) if header.get("m") else None

    def _aliased(self, session: Session, blocks: List[Block], prov: Provenance) -> Provenance:
        """A result in memory other objects of its client hold derives from what they derive from too (helper-38:
        ``syft.grad(w)`` is the tensor a pointer ``g = w.grad`` filled with ``#X``, whatever ``w`` derives from)."""
        for other in self.store.holding(session.ident, [block[0] for block in blocks]):
            if other.provenance.owner:
                prov = prov.merged(other.provenance)
        return prov

    def _fail(self, session: Session, name: str, out: list, used: List[Entry], exc: Exception, t0: float,
              prov: Optional[Provenance] = None) -> NoReturn:
        """Record a failed op (its results exist, failed) and raise what the client may see of ``exc``:
        its text, or only its type and a number when it came from the owner's data (see .provenance)."""
        self.stats["errors"] += 1
        # (a name not checked yet, e.g. of a message that could not be read: bounded before it is kept, helper-78)
        op = limits.clip(short_name(name), limits.MAX_OP_NAME_CHARS)
        shown = self.disclosure.failure(session, op, prov or self.disclosure.of_inputs(used), exc)
        # its results exist, failed (a later op on them names this error), within the client's objects quota
        room = session.quotas.max_objects - self.store.session_count(session.ident)
        error = f"{op}: {limits.clip(shown)}"  # (one string, however many results)
        for oid in out[:max(0, min(room, MAX_RESULTS))]:
            if isinstance(oid, bytes) and len(oid) == 16 and oid not in self.store:
                self.store.put(Entry(oid, None, origin=session.label, session=session.ident, op=op, error=error))
        self.events.emit("command", client=session.label, op=op, inputs=lineage.inputs_of(used),
                         out=[], duration=time.perf_counter() - t0, status=f"error: {limits.clip(exc)}")
        if shown is exc:
            raise exc
        raise shown from None


_NONE: AbstractSet[bytes] = frozenset()

#: An op that writes gradients over the owner's data looks at every object of its client for the gradients it
#: wrote (side_writes.watch): with more objects than this, on its lane, not the serving thread
#: (80,000 parameters held it 0.6 s per op, for everyone: a probe).
GRADS_INLINE = 1024


def _out_of_place(op: str) -> str:
    """How to write ``op`` out of place: ``z.mul(...) rather than z.mul_(...)``."""
    name = op.lstrip(".")
    if name.endswith("_") and not name.endswith("__"):
        return f"z.{name[:-1]}(...) rather than z.{name}(...)"
    return "e.g. z + 1 rather than z.add_(1)"

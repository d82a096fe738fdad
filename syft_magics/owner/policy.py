"""The owner's rules for letting values leave the worker, and the requests they create.

A :class:`Policy` decides each get: ``"allow"``, ``"deny"`` or ``"review"``
(ask the owner). Richer rules subclass :class:`Policy` and override
:meth:`Policy.decide`. Requests under review wait in a :class:`RequestBook`
until the owner calls ``worker.approve(n)`` or ``worker.deny(n, reason)``.

Values, including ``.item()`` and ``.tolist()``, need approval. So do, under ``review``
and ``closed``, the shape of a result that depends on the owner's values and the text of an
error raised on the owner's data (see :mod:`syft_magics.owner.provenance`); other metadata
(shape, dtype) is known to the client.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from ..display import table
from .rules import GetRule, RuleBook

ALLOW, DENY, REVIEW = "allow", "deny", "review"


@dataclass
class GetRequest:
    """A scientist asked for a value; the owner decides."""

    n: int
    client: str
    object_id: str
    shape: Tuple[int, ...]
    dtype: str
    lineage: str
    tags: Tuple[str, ...] = ()
    created: float = field(default_factory=time.time)
    status: str = "pending"  # pending | approved | denied | cancelled
    reason: str = ""
    decided: Optional[float] = None
    #: which session asked (its routing id), for which object (its 16-byte id)
    session: bytes = field(default=b"", repr=False, compare=False)
    oid: bytes = field(default=b"", repr=False, compare=False)
    #: the seq of the client's waiting get, answered when the owner decides
    seq: Optional[int] = field(default=None, repr=False, compare=False)
    #: the object and its version counter when asked (``releases.stamp``): an approval lets exactly that through
    version: Any = field(default=None, repr=False, compare=False)
    #: what is asked for: the object's ``value``, its ``shape`` (withheld: it depends on the owner's
    #: values), the text of an ``error`` withheld from the client, or a ``move`` of the value to
    #: another worker (:mod:`syft_magics.owner.moves`)
    what: str = "value"
    #: for a ``move``, the worker it would go to ("Alice at tcp://..."); an approval is for that target only
    to: str = ""

    @property
    def release(self) -> Tuple[str, str]:
        """The kind of release and its target: an approval lets exactly this one through."""
        return self.what, self.to

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def describe(self) -> str:
        what = " ".join(self.tags) or self.object_id[:8]
        if self.what == "shape":
            what = f"the shape of {what}"
        elif self.what == "error":
            what = f"the message of {self.object_id}"
        elif self.what == "move":
            what = f"to move {what} to {self.to}"
        return (f"request #{self.n}: {self.client} wants {what} = {self.lineage} "
                f"(shape {tuple(self.shape)}, {self.dtype})")


@dataclass
class MoveIn:
    """A scientist asks this worker to accept an object moved from another worker (``ptr.move(alice)``)."""

    client: str
    source: str  # the worker it comes from (as the scientist names it)
    kind: str  # "tensor" or "model"
    shapes: List[Tuple[int, ...]]
    dtypes: List[str]
    nbytes: int


class Policy:
    """Decides gets. The base class reviews everything; subclasses refine :meth:`decide`."""

    name = "review"

    def decide(self, request: GetRequest) -> str:
        """Return ``"allow"``, ``"deny"`` or ``"review"`` for this request (``request.what`` says
        whether it asks for a ``value``, a withheld ``shape`` or a withheld ``error`` text)."""
        return REVIEW

    def deny_reason(self, request: GetRequest) -> str:
        return f"the worker's policy is '{self.name}'"

    @property
    def rules(self) -> RuleBook:
        """Gets allowed without a click (see :mod:`syft_magics.owner.rules`)."""
        book = self.__dict__.get("_rules")
        if book is None:
            book = self.__dict__["_rules"] = RuleBook()
        return book

    def allow_get(self, *, max_numel: Optional[int] = None, kind: Optional[str] = None,
                  to: Optional[str] = None, key: Optional[str] = None) -> GetRule:
        """Allow, without review, gets of tensors of at most ``max_numel`` elements and/or of ``kind``
        (``"model"``: a trained model's weights). E.g. ``bob.policy.allow_get(max_numel=1)`` for losses.
        With ``to="Carol"`` the rule allows only moves to the worker Carol (a trusted aggregator), never a
        get by the scientist. The scientist names a move's target, so the rule applies only to the Carol
        it pins: ``key=carol.server_key`` (an encrypted Carol, on any machine), or without a key the Carol
        whose connection file this machine holds (same user); any other target follows the policy. A rule
        releases this owner's data only: another owner's, moved here for this worker only, leaves by a click or
        in an aggregate (see :mod:`syft_magics.owner.guests`)."""
        return self.rules.add(GetRule(max_numel=max_numel, kind=kind, to=to, key=key))

    def accept_moves(self, rule: Union[bool, Callable[[MoveIn], bool]] = True) -> None:
        """Which objects other workers may move here for a scientist (``ptr.move(alice)``): ``True`` (the
        default: a connected scientist may move objects into its own session), ``False`` (none), or a
        function of the :class:`MoveIn` request, e.g. ``lambda m: m.nbytes < 1e8`` (``m.source`` is the worker
        the scientist names; its courier proves it only afterwards, and only with this machine's connection file of
        that worker: see :mod:`syft_magics.owner.guests`)."""
        if not (isinstance(rule, bool) or callable(rule)):
            raise TypeError("accept_moves takes True, False or a function of the move request")
        self.__dict__["_accept"] = rule

    def accepts(self, move: MoveIn) -> Tuple[bool, str]:
        """Whether this worker takes ``move``, and if not, why."""
        rule = self.__dict__.get("_accept", True)
        if rule is True:
            return True, ""
        if rule is False:
            return False, "the owner accepts no moves from other workers"
        try:
            ok = bool(rule(move))
        except Exception as exc:  # the owner's rule failed: refuse, and say so
            return False, f"the owner's accept rule failed ({type(exc).__name__})"
        return ok, "" if ok else "the owner's accept rule refuses it"

    @property
    def summary(self) -> str:
        """The policy's name and its rules, as the panels show them."""
        return f"{self.name}; auto-allow {self.rules}" if self.rules else self.name

    def __repr__(self) -> str:
        return f"<Policy {self.summary}>"


class OpenPolicy(Policy):
    """Every get is allowed (for teaching and for data that is not private)."""

    name = "open"

    def decide(self, request: GetRequest) -> str:
        return ALLOW


class ReviewPolicy(Policy):
    """Every get waits for the owner's decision (the default)."""

    name = "review"


class ClosedPolicy(Policy):
    """No value ever leaves; only computation on pointers is possible."""

    name = "closed"

    def decide(self, request: GetRequest) -> str:
        return DENY

    def deny_reason(self, request: GetRequest) -> str:
        return "the worker's policy is 'closed': no value leaves it"


POLICIES = {p.name: p for p in (OpenPolicy, ReviewPolicy, ClosedPolicy)}


def make_policy(policy: "str | Policy") -> Policy:
    """A Policy from its name (``open``, ``review``, ``closed``) or an instance."""
    if isinstance(policy, Policy):
        return policy
    try:
        return POLICIES[policy]()
    except KeyError:
        raise ValueError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}") from None


#: Requests one client may have waiting for the owner at once: every other object, and every target of a move,
#: is another request, and each new one was matched against all those kept (a client could fill the owner's
#: list, and the serving thread's time, without bound).
MAX_PENDING_PER_SESSION = 64
#: Decided requests kept for the panel and the history (the oldest go first).
MAX_DECIDED = 10_000


class TooManyRequests(Exception):
    """A client already has :data:`MAX_PENDING_PER_SESSION` requests waiting for the owner."""


class RequestBook:
    """All get requests of one worker: pending ones and the decided history (the latest :data:`MAX_DECIDED`).

    An approval is a grant for one get of that object by that session, recorded under the
    book's lock in the same step as the decision: a get that arrives from then on is let
    through, whichever thread decided (:meth:`take_grant`).
    """

    def __init__(self) -> None:
        self._by_n: Dict[int, GetRequest] = {}
        self._grants: Dict[Tuple[bytes, bytes, Tuple[str, str]], GetRequest] = {}
        self._next = 1
        self._lock = threading.Lock()

    def open(self, **fields) -> GetRequest:
        with self._lock:
            req = GetRequest(n=self._next, **fields)
            self._next += 1
            self._by_n[req.n] = req
            return req

    def get(self, n: int) -> GetRequest:
        """Request number ``n`` (as the panel and the log number it: ``#3``)."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"requests are looked up by their number (bob.requests[3] is request #3), not by "
                            f"{type(n).__name__}; for several, use bob.requests.pending, .history or "
                            "list(bob.requests)")
        try:
            return self._by_n[n]
        except KeyError:
            raise KeyError(f"no request #{n} (requests: {', '.join(f'#{k}' for k in self._by_n) or 'none'})") from None

    def decide(self, n: int, status: str, reason: str = "") -> GetRequest:
        with self._lock:
            req = self.get(n)
            if not req.pending:
                raise ValueError(f"request #{n} was already {req.status}")
            req.status, req.reason, req.decided = status, reason, time.time()
            if status == "approved":
                self._grants[(req.session, req.oid, req.release)] = req
            return req

    def take_grant(self, session: bytes, oid: bytes, version: Any = None, what: str = "value",
                   to: str = "") -> bool:
        """Whether an approval lets this release of ``oid`` (now at ``version``: its ``releases.stamp``) through (it
        is used up). An approval of another version (the object was written after the owner saw it, or its id
        now names another object) is void; one of
        another kind or target (a move to Alice, not a get; not a move to Eve) lets nothing else through."""
        with self._lock:
            return self._take(session, oid, version, (what, to))

    def _take(self, session: bytes, oid: bytes, version: Any, release: Tuple[str, str]) -> bool:
        req = self._grants.pop((session, oid, release), None)
        if req is None:
            return False
        if req.version != version:
            req.reason = "void: the object was written (or its id used for another object) after this approval"
            return False
        return True

    def ask(self, session: bytes, oid: bytes, seq: Any, **fields: Any) -> Tuple[Optional[GetRequest], bool]:
        """A get of ``oid`` that needs the owner: ``(None, False)`` if an approval lets it through after
        all, else its pending request (answered at ``seq`` when decided) and whether it is new. One step
        under the lock, so a decision made meanwhile on another thread is never missed. A pending
        request for an older version of the object is cancelled: the owner would decide on what
        is no longer there."""
        version = fields.get("version")
        release = (fields.get("what", "value"), fields.get("to", ""))
        with self._lock:
            if self._take(session, oid, version, release):
                return None, False
            waiting = 0  # (this client's other requests still pending)
            for req in self._by_n.values():
                if not req.pending or req.session != session:
                    continue
                if req.oid == oid and req.release == release:
                    if req.version == version:
                        req.seq = seq
                        return req, False
                    req.status, req.reason, req.decided = ("cancelled", "the object was written (or its id used for "
                                                           "another object) meanwhile", time.time())
                else:
                    waiting += 1
            if waiting >= MAX_PENDING_PER_SESSION:
                raise TooManyRequests()
            req = GetRequest(n=self._next, session=session, oid=oid, seq=seq, **fields)
            self._next += 1
            self._by_n[req.n] = req
            if len(self._by_n) > MAX_DECIDED + MAX_PENDING_PER_SESSION:
                decided = [n for n, r in self._by_n.items() if not r.pending]
                for n in decided[:len(decided) - MAX_DECIDED]:
                    del self._by_n[n]
            return req, True

    def end_session(self, session: bytes, reason: str) -> List[GetRequest]:
        """The session ended: cancel its pending requests and drop its unused approvals."""
        with self._lock:
            self._grants = {k: r for k, r in self._grants.items() if k[0] != session}
            cancelled = [r for r in self._by_n.values() if r.pending and r.session == session]
            for req in cancelled:
                req.status, req.reason, req.decided = "cancelled", reason, time.time()
            return cancelled

    @property
    def pending(self) -> List[GetRequest]:
        return [r for r in self if r.pending]

    @property
    def history(self) -> List[GetRequest]:
        return [r for r in self if not r.pending]

    def __iter__(self) -> Iterator[GetRequest]:
        return iter(list(self._by_n.values()))

    def __len__(self) -> int:
        return len(self._by_n)

    def __getitem__(self, n: int) -> GetRequest:
        return self.get(n)

    def __repr__(self) -> str:
        rows = [(f"#{r.n}", r.status, r.client, _what(r), r.lineage,
                 str(tuple(r.shape)), r.reason) for r in self]
        if not rows:
            return "no get requests"
        return table(("n", "status", "client", "object", "lineage", "shape", "reason"), rows)


def _what(req: GetRequest) -> str:
    """The object a request is about, and where it would go if it is not a get."""
    what = " ".join(req.tags) or req.object_id[:8]
    return f"{what} (move to {req.to})" if req.what == "move" else what

"""What a client learns when its op on the owner's data fails, and how often that may happen.

An op that read the owner's data and failed could carry values in its error's text (``index 99 is out of
bounds``): its client sees the exception's type and a number (:class:`Withheld`, a ``WithheldError`` on its
side), the owner's log and panel the whole text, kept here until the owner releases it (see
:mod:`.releases`). That it failed is reported (hiding it would make pipelined ops fail silently), and can tell
a bit of the values the op read; so failures are rationed per client (:class:`~.quotas.FailureBudget`):
once its budget is spent, its ops on the owner's data are refused before they run (:meth:`Failures.check`).
:mod:`.provenance` decides which failures are withheld.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Dict, Tuple

from ..wire import limits
from . import quotas  # (a module: quotas imports replies, which imports this one)

if TYPE_CHECKING:
    from .sessions import Session
    from .worker import Worker

log = logging.getLogger(__name__)

#: Withheld error texts kept for the owner's release (the oldest are forgotten).
MAX_KEPT = 1000


class Withheld(Exception):
    """An op on the owner's data failed; the client sees its type and number, not its text."""

    def __init__(self, n: int, etype: str, op: str, owner: str) -> None:
        super().__init__(f"{etype} in {op} on {owner}'s data; the message is withheld (error #{n}: "
                         f"err.request_message() asks {owner} to release it)")
        self.n, self.etype = n, etype


class Failures:
    """A worker's withheld errors, by number, and each client's budget of failures."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        #: withheld error texts: number -> (the session's serial, op, full text, the owner's data the op read)
        self.errors: "OrderedDict[int, Tuple[int, str, str, Tuple[str, ...]]]" = OrderedDict()
        self._next = 1
        self._budgets: Dict[str, quotas.FailureBudget] = {}

    def reserve(self, session: "Session") -> quotas.FailureBudget:
        """Hold one failure of ``session``'s client for an op on the owner's data about to run, and return the
        budget to :meth:`~.quotas.FailureBudget.release` it to when the op ends; refuse the op
        (:class:`~.replies.Reject`, a quota) while the client's failures are spent or held by its running ops."""
        budget = self._budget(session)
        # (the clients of the worker's key, without an invitation, share one: helper-76's client with no failure of
        # its own read "its ops" failed)
        quotas.reserve_failure(session.quotas, session.label, self.worker.name, budget, shared=not _principal(session))
        return budget

    def _budget(self, session: Any) -> quotas.FailureBudget:
        who = _principal(session)
        budget = self._budgets.get(who)
        if budget is None:
            if len(self._budgets) >= 4096:  # (names of clients that left: their budgets start afresh)
                self._budgets.clear()
            budget = self._budgets.setdefault(who, quotas.FailureBudget(session.quotas.failed_ops_per_hour))
        return budget

    def withhold(self, session: Any, op: str, exc: BaseException, sources: Tuple[str, ...] = ()) -> Withheld:
        """Keep ``exc``'s text for the owner, with the owner's data the failed op read (``sources``: its request
        names them, as a value's does), count it against its client's budget, and say what the client may see
        of it."""
        self._budget(session).spend()
        n = self._next
        self._next += 1
        full = limits.clip(exc)
        self.errors[n] = (session.serial, op, full, sources)
        while len(self.errors) > MAX_KEPT:
            self.errors.popitem(last=False)
        log.info("worker %s withheld the message of error #%d (%s in %s) from %s: %s",
                 self.worker.name, n, type(exc).__name__, op, session.label, full)
        return Withheld(n, type(exc).__name__, op, self.worker.name)


def _principal(session: Any) -> str:
    """Whom a client's failure budget belongs to: its invitation's name, or every holder of the worker's key."""
    return session.client or ""

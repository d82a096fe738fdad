"""Per-client quotas: how much of the owner's machine one client may take.

A worker serves untrusted clients from the owner's own machine (often a laptop), so each client
gets bounded memory (bytes and objects it holds), message size, messages queued behind its running
op, and a time budget per op. :class:`Quotas` holds the limits; the worker's are the defaults
(``Worker(..., quotas=Quotas(max_bytes="512MB"))``, ``%syft_worker Bob --max-bytes 512MB``), and the
owner can give one client other limits by name (``worker.set_quotas("alice", Quotas(...))``, which an
invitation uses). A request over a quota is refused before anything is allocated, with
:class:`~syft_magics.errors.QuotaExceeded` naming the limit and the usage; other clients go on.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Optional, Union

from ..display import human_bytes
from ..wire.protocol import ErrorCode
from .replies import Reject

Size = Union[int, str]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40,
          "TIB": 1 << 40}


def parse_size(value: Size) -> int:
    """Bytes from ``2GB``, ``512 MiB``, ``1e6`` or an int (binary units: 1 KB = 1024 bytes)."""
    if isinstance(value, bool):
        raise ValueError(f"a size must be a number of bytes or a text such as '2GB', not {value!r}")
    if isinstance(value, (int, float)):
        n = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).upper() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"cannot read {value!r} as a size; write e.g. 2GB, 512MB or 1048576")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ValueError(f"a size must be positive, not {value!r}")
    return n


@dataclass(frozen=True)
class Quotas:
    """Limits on what one client may hold and ask of a worker (sizes take ``int`` bytes or ``"2GB"``).

    The defaults protect a laptop: a client may hold 2 GiB in at most 100,000 objects, send messages
    of up to 1 GiB, queue 10,000 messages behind a running op, run ops of up to 20 s each (an op
    estimated longer is refused before it runs; one that takes longer anyway is reported), and leave
    up to 1 GiB of values sent to it unread in the worker's memory.
    """

    #: Bytes of tensors the client's objects may hold (results and sent tensors; the owner's data and
    #: views of it do not count).
    max_bytes: int = 2 << 30  # (or a text such as "2GB", read by parse_size)
    #: Objects (results, sent tensors) the client may hold at once.
    max_objects: int = 100_000
    #: Largest message (all its frames) the client may send.
    max_message_bytes: int = 1 << 30
    #: Messages the client may queue behind its op that runs in the background.
    max_queued: int = 10_000
    #: Time budget of one op, in seconds (estimated from its inputs before it runs).
    op_seconds: float = 20.0
    #: Bytes of values sent to the client that it has not read yet (held in the worker's memory).
    max_unread_bytes: int = 1 << 30
    #: Ops on the owner's data that may fail per hour (a burst of as many, then one per 3600/N s): whether an op
    #: failed can tell a bit of the values it read (an index built from them), so failures are rationed
    #: (:class:`FailureBudget`).
    failed_ops_per_hour: int = 120

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_message_bytes", "max_unread_bytes"):
            object.__setattr__(self, name, parse_size(getattr(self, name)))
        for name in ("max_objects", "max_queued", "failed_ops_per_hour"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if isinstance(self.op_seconds, bool) or not isinstance(self.op_seconds, (int, float)) \
                or not self.op_seconds > 0:
            raise ValueError(f"op_seconds must be a positive number of seconds, not {self.op_seconds!r}")

    def with_(self, **changes: Any) -> "Quotas":
        """A copy with some limits changed (``None`` values are ignored, as from a command line)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self) -> str:
        """One line for the owner: ``2.0 GiB, 100,000 objects, messages 1.0 GiB, ...``."""
        return (f"{human_bytes(int(self.max_bytes))} in {self.max_objects:,} objects, messages up to "
                f"{human_bytes(int(self.max_message_bytes))}, {self.max_queued:,} queued, "
                f"{self.op_seconds:g} s per op, {self.failed_ops_per_hour:,} failed ops per hour")


QUOTA_FIELDS = tuple(f.name for f in fields(Quotas))


class ClientQuotas:
    """The owner's side, mixed into :class:`~syft_magics.owner.worker.Worker`: the limits every client
    is held to (``quotas``) and those the owner set for one client by name."""

    #: every client's limits (bytes, objects, message size, queue, op time budget), unless set per client
    quotas: Quotas
    _client_quotas: Dict[str, Quotas]

    def set_quotas(self, client: str, quotas: Optional[Quotas]) -> None:
        """Hold the client named ``client`` to ``quotas`` from its next connection (None: the worker's).
        An invitation (one key per client) makes the name the client's own; with the worker's shared
        key, a name is what the client says it is."""
        if quotas is None:
            self._client_quotas.pop(client, None)
        elif not isinstance(quotas, Quotas):
            raise TypeError(f"set_quotas takes a Quotas, not {type(quotas).__name__}")
        else:
            self._client_quotas[client] = quotas

    def quotas_for(self, client: str, invite: Any = None) -> Quotas:
        """The quotas a client of this name is held to (the owner's for it, else the worker's), with
        the limits of the invitation (:class:`~.invites.Invite`) it connected with on top."""
        base = self._client_quotas.get(client, self.quotas)
        return base.with_(**invite.limits) if invite is not None and invite.limits else base

#: The command-line flags of ``%syft_worker`` and ``python -m syft_magics worker`` (flag, field, metavar, help).
FLAGS = (
    ("--max-bytes", "max_bytes", "SIZE", "bytes each client may hold, e.g. 512MB (default: 2GB)"),
    ("--max-objects", "max_objects", "N", "objects each client may hold (default: 100000)"),
    ("--max-message", "max_message_bytes", "SIZE", "largest message a client may send, e.g. 64MB (default: 1GB)"),
    ("--op-seconds", "op_seconds", "S", "time budget of one op, in seconds (default: 20)"),
    ("--failed-ops-per-hour", "failed_ops_per_hour", "N",
     "ops on the owner's data each client may have fail per hour (default: 120)"),
)


def from_flags(values: Any) -> Quotas:
    """The worker's quotas from parsed ``FLAGS`` (attributes named as the fields); ValueError if one is bad."""
    changes: Dict[str, Any] = {}
    for _flag, name, _metavar, _help in FLAGS:
        value = getattr(values, name, None)
        if value is not None:
            changes[name] = int(value) if name in ("max_objects", "failed_ops_per_hour") \
                else float(value) if name == "op_seconds" else value
    return Quotas().with_(**changes)


def exceeded(client: str, limit: str, usage: str) -> Reject:
    """The refusal of a request over a quota: names the client's limit and what it would use."""
    return Reject(ErrorCode.QUOTA, f"over {client}'s quota: {usage}, the limit is {limit}; "
                                   "free objects you no longer need (del ptr), or ask the owner for a larger quota")


def check_bytes(quotas: Quotas, client: str, held: int, more: int, what: str) -> None:
    """Refuse ``what`` if it would take the client's held bytes over ``max_bytes``, or if they are over it
    already (an op whose allocation could not be foreseen, such as a backward, ran past it: see .graphs)."""
    if held + more > int(quotas.max_bytes):
        usage = f"{what} would add {human_bytes(more)} to the {human_bytes(held)} it holds" if more > 0 else \
            f"it holds {human_bytes(held)} already, so {what} cannot run"
        raise exceeded(client, f"{human_bytes(int(quotas.max_bytes))} held (max_bytes)", usage)


def check_objects(quotas: Quotas, client: str, held: int, more: int) -> None:
    """Refuse a request that would take the client's object count over ``max_objects``."""
    if more > 0 and held + more > quotas.max_objects:
        raise exceeded(client, f"{quotas.max_objects:,} objects (max_objects)",
                       f"{more} more object(s) on top of the {held:,} it holds")


def check_message(quotas: Quotas, client: str, size: int) -> None:
    """Refuse a message larger than ``max_message_bytes``."""
    if size > int(quotas.max_message_bytes):
        raise exceeded(client, f"messages of {human_bytes(int(quotas.max_message_bytes))} (max_message_bytes)",
                       f"a message of {human_bytes(size)}")


def check_queued(quotas: Quotas, client: str, queued: int) -> None:
    """Refuse a message beyond ``max_queued`` waiting behind the client's background op."""
    if queued >= quotas.max_queued:
        raise exceeded(client, f"{quotas.max_queued:,} messages queued (max_queued)",
                       f"{queued:,} messages already wait behind its op that runs in the background")


def check_unread(quotas: Quotas, client: str, unread: int, more: int, what: str) -> None:
    """Refuse a value that would take the bytes sent to the client and not yet read over ``max_unread_bytes``."""
    if unread + more > int(quotas.max_unread_bytes):
        raise exceeded(client, f"{human_bytes(int(quotas.max_unread_bytes))} of values not yet read "
                               "(max_unread_bytes)",
                       f"{what} ({human_bytes(more)}) on top of {human_bytes(unread)} sent and not yet read")


def check_seconds(quotas: Quotas, client: str, op: str, seconds: float) -> None:
    """Refuse an op whose estimated time is over the client's per-op budget."""
    if seconds > quotas.op_seconds:
        raise exceeded(client, f"{quotas.op_seconds:g} s per op (op_seconds)",
                       f"{op} is estimated to take {seconds:,.3g} s on this worker")


class FailureBudget:
    """How many more ops on the owner's data one client may have fail: ``failed_ops_per_hour`` at once, then
    refilled at that rate. A failed op on the owner's data is reported to its client (a ``WithheldError``:
    its type and number; hiding it would make pipelined ops fail silently), and whether it failed can tell a
    bit of the values it read: an index built from them, out of range or not, bisects a value in ~30 ops.
    With the budget spent, the client's ops on the owner's data are refused before they run, until it refills:
    such a read costs hours, in the owner's log and panel. Kept per client name where keys are per client
    (invitations), else one for every holder of the worker's key (a new connection must not reset it).

    An op that may fail holds one failure of the budget while it runs (:meth:`reserve`, :meth:`release` when it
    ends, after its failure was counted): ops of several sessions running at once on their lanes each count
    before any of them failed (helper-69: 20 ran at once, and failed, against a budget of 3)."""

    def __init__(self, per_hour: int) -> None:
        self.per_hour = per_hour
        self._left = float(per_hour)
        self._at = time.monotonic()
        self._lock = threading.Lock()  # (lanes reserve, the serving thread spends)
        #: failures held by ops that are running
        self.reserved = 0

    def _refill(self) -> float:
        now = time.monotonic()
        self._left = min(float(self.per_hour), self._left + (now - self._at) * self.per_hour / 3600.0)
        self._at = now
        return self._left

    def spend(self) -> None:
        """One failure."""
        with self._lock:
            self._refill()
            self._left -= 1.0

    def wait(self) -> float:
        """Seconds until one more failure is allowed (0: now), counting those the running ops hold."""
        with self._lock:
            return self._wait()

    def reserve(self) -> float:
        """Hold one failure for an op about to run: 0 when held, else :meth:`wait`'s seconds (nothing held)."""
        with self._lock:
            wait = self._wait()
            if not wait:
                self.reserved += 1
            return wait

    def _wait(self) -> float:
        left = self._refill() - self.reserved
        return 0.0 if left >= 1.0 else (1.0 - left) * 3600.0 / self.per_hour

    def release(self) -> None:
        """The op that held a failure ended (its failure, if it failed, already spent)."""
        with self._lock:
            self.reserved -= 1


def reserve_failure(quotas: Quotas, client: str, owner: str, budget: FailureBudget, shared: bool = False) -> None:
    """Hold one failure of the client's :class:`FailureBudget` for an op on ``owner``'s data about to run; refuse
    the op while the budget is spent (or held by its running ops). ``shared``: the budget of every client of the
    worker's key (no invitation), not of this one alone."""
    wait = budget.reserve()
    if wait > 0:
        n, whose = quotas.failed_ops_per_hour, "the ops of the clients of this worker's key" if shared else "its ops"
        raise Reject(ErrorCode.QUOTA, f"over {client}'s quota: {n:,} of {whose} on {owner}'s data failed within "
                                      f"the hour or run now, the limit is {n:,} per hour (failed_ops_per_hour: whether "
                                      f"an op fails can tell a bit of the values it read); ops on {owner}'s data run "
                                      f"again in {wait:.0f} s, or ask the owner for a larger quota")

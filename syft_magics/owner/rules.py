"""Owner rules that allow some gets without a click: what training needs back, and nothing more.

``bob.policy.allow_get(max_numel=1)`` lets scalar losses and metrics through; ``allow_get(kind="model")``
lets trained weights (a model's state dict) through. Every other get follows the worker's policy
(``review``, ``closed``...). Each automatic decision is an event (``get`` with ``status`` naming the
rule), so it shows in the owner's panel and logs.

A rule ``to="Carol"`` lets objects move to the worker Carol only. The scientist names the target of a
move (its address, its ticket), so the name alone proves nothing: a scientist could run a worker of its
own called Carol. A ``to=`` rule therefore applies only to a target whose identity is pinned
(:meth:`GetRule.pins`): by ``key=`` (Carol's CurveZMQ public key: the courier's encrypted link then
reaches only the holder of Carol's secret key), or, without a key, by this machine's connection file of
the worker Carol (same user, 0600 runtime folder) naming the target's address and instance. Any other
target falls to the worker's policy (review, closed...), like a move without a rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Tuple

from ..wire import discovery

KINDS = ("tensor", "model")


class Target(NamedTuple):
    """The worker a move goes to, as the scientist's request names it."""

    name: str
    address: str
    instance: str
    #: its CurveZMQ public key, when the courier's link to it is encrypted
    server_key: Optional[str] = None


@dataclass(frozen=True)
class GetRule:
    """Allow gets of tensors with at most ``max_numel`` elements, and/or of objects of ``kind``; with ``to``,
    only moves to that worker (``allow_get(kind="model", to="Carol")``: trained weights go to the trusted
    aggregator Carol, and nowhere else without review), pinned by its ``key`` (CurveZMQ public key) or,
    without one, by this machine's connection file of Carol."""

    max_numel: Optional[int] = None
    kind: Optional[str] = None
    to: Optional[str] = None
    key: Optional[str] = None

    def __post_init__(self) -> None:
        if self.max_numel is None and self.kind is None:
            raise ValueError("allow_get() needs max_numel=... and/or kind=... (allowing every get is policy='open')")
        if self.max_numel is not None and (not isinstance(self.max_numel, int) or self.max_numel < 0):
            raise ValueError(f"max_numel must be a non-negative int, not {self.max_numel!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.to is not None and (not isinstance(self.to, str) or not self.to):
            raise ValueError(f"to= names a worker, e.g. 'Carol', not {self.to!r}")
        if self.key is not None and (self.to is None or not isinstance(self.key, str) or len(self.key) != 40):
            raise ValueError("key= pins the worker to= names by its CurveZMQ public key (40 characters, "
                             "e.g. carol.server_key)")

    def pins(self, target: Target) -> bool:
        """Whether ``target`` is the worker this rule names: its pinned key, else this machine's connection
        file of that worker at that address, that instance (and that key, if it encrypts)."""
        if target.name != self.to:
            return False
        if self.key is not None:
            if target.address.startswith("inproc://"):  # (no CurveZMQ there: the worker of this process itself)
                from .worker import live_workers

                here = [w for w in live_workers() if w.inproc_address == target.address]
                return bool(here) and here[0].name == self.to and here[0].server_key == self.key
            return target.address.startswith("tcp://") and target.server_key == self.key
        info = discovery.find_by_address(target.address) if target.address.startswith("tcp://") else None
        return info is not None and info.name == self.to \
            and info.instance == target.instance and (info.server_key or None) == target.server_key

    def matches(self, kind: str, shape: Sequence[int], to: Optional[Target] = None) -> bool:
        """Whether this rule allows a get (``to`` None) or a move to the worker ``to``."""
        if self.to is not None and (to is None or not self.pins(to)):
            return False
        if self.kind is not None and kind != self.kind:
            return False
        if self.max_numel is not None and (kind != "tensor" or math.prod(shape) > self.max_numel):
            return False
        return True

    def __str__(self) -> str:
        parts = []
        if self.kind is not None:
            parts.append(f"kind={self.kind}")
        if self.max_numel is not None:
            parts.append(f"numel<={self.max_numel}")
        if self.to is not None:
            parts.append(f"to {self.to} only" if self.key is None else f"to {self.to} (key {self.key[:8]}...) only")
        return " ".join(parts)


class RuleBook:
    """The rules of one policy, in the order the owner added them."""

    def __init__(self) -> None:
        self._rules: Tuple[GetRule, ...] = ()

    def add(self, rule: GetRule) -> GetRule:
        if rule not in self._rules:
            self._rules = self._rules + (rule,)
        return rule

    def remove(self, rule: GetRule) -> None:
        self._rules = tuple(r for r in self._rules if r != rule)

    def match(self, kind: str, shape: Sequence[int], to: Optional[Target] = None) -> Optional[GetRule]:
        """The first rule that allows a get (or, with ``to``, a move to that worker) of ``kind`` and ``shape``."""
        for rule in self._rules:
            if rule.matches(kind, shape, to):
                return rule
        return None

    def __iter__(self):
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __str__(self) -> str:
        return ", ".join(str(r) for r in self._rules)

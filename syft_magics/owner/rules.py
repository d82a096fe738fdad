"""Owner rules that allow some gets without a click: what training needs back, and nothing more.

``bob.policy.allow_get(max_numel=1)`` lets scalar losses and metrics through; ``allow_get(kind="model")``
lets trained weights (a model's state dict) through. Every other get follows the worker's policy
(``review``, ``closed``...). Each automatic decision is an event (``get`` with ``status`` naming the
rule), so it shows in the owner's panel and logs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

KINDS = ("tensor", "model")


@dataclass(frozen=True)
class GetRule:
    """Allow gets of tensors with at most ``max_numel`` elements, and/or of objects of ``kind``; with ``to``,
    only moves to that worker (``allow_get(kind="model", to="Carol")``: trained weights go to the trusted
    aggregator Carol, and nowhere else without review)."""

    max_numel: Optional[int] = None
    kind: Optional[str] = None
    to: Optional[str] = None

    def __post_init__(self) -> None:
        if self.max_numel is None and self.kind is None:
            raise ValueError("allow_get() needs max_numel=... and/or kind=... (allowing every get is policy='open')")
        if self.max_numel is not None and (not isinstance(self.max_numel, int) or self.max_numel < 0):
            raise ValueError(f"max_numel must be a non-negative int, not {self.max_numel!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.to is not None and (not isinstance(self.to, str) or not self.to):
            raise ValueError(f"to= names a worker, e.g. 'Carol', not {self.to!r}")

    def matches(self, kind: str, shape: Sequence[int], to: Optional[str] = None) -> bool:
        """Whether this rule allows a get (``to`` None) or a move to the worker named ``to``."""
        if self.to is not None and to != self.to:
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
            parts.append(f"to {self.to} only")
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

    def match(self, kind: str, shape: Sequence[int], to: Optional[str] = None) -> Optional[GetRule]:
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

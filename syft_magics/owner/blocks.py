"""How the worker names the memory objects live in and its state: a storage's key, the blocks a client's object
keeps alive, a tensor's version counter."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

#: One memory block a client's object keeps alive: ``(key, bytes, what holds it)`` (see ``ObjectStore.blocks_of``).
Block = Tuple[int, int, Any]


def withheld_charge(blocks: Optional[List[Block]]) -> int:
    """The charge of the block of its own a result of ``ObjectStore.charge_public`` carries (0: none)."""
    return blocks[-1][1] if blocks and blocks[-1][2] is None else 0


def storage_key(t: torch.Tensor) -> int:
    """Identifies the memory a tensor lives in, so views of shared data can be recognised."""
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


def version_of(t: Any) -> int:
    """A tensor's version counter: it moves with every write, through any view (-1: not a tensor, or an
    inference tensor, which has none)."""
    try:
        return t._version if isinstance(t, torch.Tensor) else -1
    except RuntimeError:
        return -1

"""How the worker names the memory objects live in: a storage's key, and the blocks a client's object keeps alive."""
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

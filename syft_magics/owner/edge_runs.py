"""The edge check's real runs: whether an op runs on real kernels when the owner's tensors are zeros of their public
shapes, each withheld size at a given value (0, 1, or 2 for "unknown").

:mod:`.fake_trace` asks this of every op over a withheld shape, at each mix of the edges (its
``_at_the_edges``): torch's value-free kernels do not check everything (``max(0)`` of no rows, an index past the
end), and an op that fails only at a size of 0 or 1 would tell, by failing, whether any row passed a filter. The
answer depends on public facts alone: every tensor of the owner's, and every weight of a model, stands as zeros.
"""
from __future__ import annotations

import copy
import itertools
import math
import warnings
from typing import TYPE_CHECKING, AbstractSet, Any, Dict, List, Optional

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

from ..wire.results import quiet_tracing
from . import checked, randomness

if TYPE_CHECKING:
    from .fake_trace import HiddenShape

#: Bytes of zeros the edge check makes for the owner's tensors, at most; past them, a stand-in is one zero
#: expanded to its shape (no memory, but strides of its own: a view of it may fail where the real one would not,
#: and the op is then refused).
STANDIN_BYTES = 64 << 20


def runs_at(fn: Any, leaves: List[Any], spec: Any, withheld: Dict[int, HiddenShape], at: Dict[int, int],
             owned: AbstractSet[int], may_write: bool) -> Optional[bool]:
    """Whether ``fn`` runs on real tensors with each withheld size of symbol ``k`` at ``at[k]`` (at most its
    bound): every one of the owner's tensors, and every weight of a model, stands as zeros of its public (or
    that) shape, so that the answer depends on public facts alone (one stand-in per tensor, within
    :data:`STANDIN_BYTES`; a model is a copy made of stand-ins, never the live one, whose state its forward
    could change); the client's own tensors are themselves, or copies if the op may write into them (None: more
    than the room would be copied, and nothing is asked). Random draws come from a fresh state, as an op's over
    the owner's data do (:mod:`.randomness`: saving and putting back the state here, on its own, put back
    another op's fresh state, drawn from since, which told how many rows that op drew for: helper-33)."""
    made: Dict[int, Any] = {}
    room = [STANDIN_BYTES]

    def zeros(x: torch.Tensor, shape: List[int]) -> torch.Tensor:
        nbytes = math.prod(shape) * x.element_size()
        if nbytes <= room[0]:
            room[0] -= nbytes
            return torch.zeros(shape, dtype=x.dtype, device=x.device)
        return torch.zeros((), dtype=x.dtype, device=x.device).expand(shape)

    standins: List[Any] = []
    for x in leaves:
        if isinstance(x, (torch.Tensor, nn.Module)):
            s = made.get(id(x))
            if s is None:
                hidden = withheld.get(id(x)) if isinstance(x, torch.Tensor) else None
                if isinstance(x, nn.Module):
                    memo: Dict[int, Any] = {}
                    for t in itertools.chain(x.parameters(), x.buffers()):
                        z = zeros(t, list(t.shape))
                        memo[id(t)] = nn.Parameter(z, t.requires_grad) if isinstance(t, nn.Parameter) else z
                    s = copy.deepcopy(x, memo)  # (the weights stand in; nothing else of them is copied)
                elif hidden is not None or id(x) in owned:
                    s = zeros(x, sizes_at(hidden, at) if hidden is not None else list(x.shape))
                elif may_write:  # (a copy it may write into, within the room: else it is not asked, and refused)
                    nbytes = x.numel() * x.element_size()
                    if nbytes > room[0]:
                        return None
                    room[0] -= nbytes
                    s = x.detach().clone()
                else:
                    s = x.detach()
                made[id(x)] = s
            x = s
        standins.append(x)
    args, kwargs = pytree.tree_unflatten(standins, spec)
    bounded = checked.edge_run(args, kwargs)  # (no integer beyond any size: helper-66's crashed kernels)
    try:
        with quiet_tracing(), warnings.catch_warnings(), torch.no_grad(), randomness.apart(), bounded:
            warnings.simplefilter("ignore")  # (the real op warns, if it does, when it runs)
            fn(*args, **kwargs)
    except Exception:
        return False
    return True


def sizes_at(hidden: HiddenShape, at: Dict[int, Any]) -> List[Any]:
    """A withheld shape's sizes with the size of each symbol ``k`` in ``at`` (at most its bound; one not in
    ``at`` stays its bound)."""
    bounds, free, symbols = hidden
    sizes: List[Any] = list(bounds)
    for i, k in zip(free, symbols):
        if k in at:
            v = at[k]
            sizes[i] = min(v, bounds[i]) if type(v) is int else v
    return sizes

"""Torch functions whose CPU kernels trust their arguments, run on the worker only after the checks torch skips.

The worker runs torch's kernels on arguments its clients chose; a kernel that does not check them is a crash of
the worker (the owner's kernel, for a client in its process) or a read of its heap into a result. Found by probes,
each reproduced in plain torch 2.13, one idea per module:

- :mod:`.kernels` (helper-64, -65, -66): ``torch._weight_norm`` with a ``g`` of another shape (a fused kernel sized
  its output by it and read it per slice of ``v``: a crash, or heap pointers in a result a rule of sizes released);
  ``F.ctc_loss`` with a target outside ``[0, C)``; ``F.embedding_bag`` with offsets outside the input, or
  ``include_last_offset`` with one; ``F.grid_sample`` over a grid not finite (its backward crashed); ``F.pdist`` of
  no rows (its backward crashed); ``F.pad(mode="circular")`` whose negative pads leave nothing to wrap (an output of
  uninitialised memory); ``fractional_max_pool2d/3d`` with a kernel below 1 (indices past the input);
  ``linalg.eigvals`` of NaN or infinite entries; ``matrix_power(m, -2**63)`` (endless, its price too);
- :mod:`.value_sized`: ops whose result's size is read from values, so that no price foresees it (``bincount``,
  ``F.one_hot``, ``repeat_interleave``, ``nonzero``, ``argwhere``, ``masked_select``, ``unique``,
  ``unique_consecutive``; ``repeat_interleave(tensor([2**31]))``, 40 bytes, allocated 16 GiB under a 2 GiB quota
  before its refusal), and ``combinations``, whose kernel makes ``n ** r`` elements whatever its result (helper-67):
  :data:`VALUE_SIZED`, run inside :func:`room`, refuse what would not fit the room the client's quota leaves before
  they make it;
- :mod:`.integers` (helper-67, -69): integer division of a dtype's smallest integer by -1 (``div`` in ``trunc``
  mode, and the operators ``/``, ``/=`` that take that mode too; ``lcm``), which traps (SIGFPE);
- :mod:`.beyond`: any torch operator given an integer (a size, a kernel, a stride, an offset) beyond the bytes the
  client may hold is refused (:func:`bounded`): such numbers overflowed ``max_pool1d``, ``unfold`` and the adaptive
  pools (helper-66).

Each checked function replaces torch's on the default allowlist (:func:`ops`); it checks, then calls torch's,
reading integers as torch does (a bool or a one-element tensor is one: helper-66 passed the first checks so).
Value-free stand-ins (the fake tensors of a trace or a price) are not checked: no kernel runs on them. Tables keyed by
torch's functions look through a checked one to the function it checks (:func:`unwrapped`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict

import torch
import torch.nn.functional as F

from .. import quotas as quota_rules
from .beyond import bounded, numbers_in_tensors
from .common import room
from .integers import (
    div,
    lcm,
    tensor_div,
    tensor_div_,
    tensor_div_operator,
    tensor_idiv,
    tensor_itruediv,
    tensor_lcm,
    tensor_lcm_,
    tensor_truediv,
)
from .kernels import (
    ctc_loss,
    eigvals,
    embedding_bag,
    fractional_max_pool2d,
    fractional_max_pool3d,
    grid_sample,
    matrix_power,
    pad,
    pdist,
    weight_norm,
)
from .value_sized import (
    argwhere,
    bincount,
    combinations,
    masked_select,
    nonzero,
    one_hot,
    repeat_interleave,
    unique,
    unique_consecutive,
)

__all__ = ["VALUE_SIZED", "STANDS_FOR", "bounded", "edge_run", "numbers_in_tensors", "ops", "room", "unwrapped",
           "argwhere", "bincount", "nonzero"]


def edge_run(args: Any, kwargs: Any) -> ContextManager[Any]:
    """The bounds of a trace's real runs at withheld sizes of 0, 1 and 2 (:mod:`..edge_runs`), whose client is not
    known there: :func:`bounded` by the default quota, in its room (the owner's tensors stand as zeros)."""
    stack = contextlib.ExitStack()
    stack.enter_context(room(quota_rules.Quotas(), "a client", 0))
    stack.enter_context(bounded(args, kwargs))
    return stack


#: The ops whose result's size (or work) is read from values or shapes no price sees: run inside :func:`room`.
VALUE_SIZED = frozenset({repeat_interleave, bincount, one_hot, nonzero, argwhere, masked_select, unique,
                         unique_consecutive, combinations})

#: The torch function each checked one stands for: tables keyed by torch's functions (whether an op writes into
#: its arguments, by its schema; which ops count nonzero elements) look through a checked one (:func:`unwrapped`).
STANDS_FOR: Dict[Callable[..., Any], Callable[..., Any]] = {
    weight_norm: torch._weight_norm, ctc_loss: F.ctc_loss, embedding_bag: F.embedding_bag,
    repeat_interleave: torch.repeat_interleave, bincount: torch.bincount, one_hot: F.one_hot, nonzero: torch.nonzero,
    argwhere: torch.argwhere, masked_select: torch.masked_select, unique: torch.unique,
    unique_consecutive: torch.unique_consecutive, combinations: torch.combinations, eigvals: torch.linalg.eigvals,
    matrix_power: torch.matrix_power, grid_sample: F.grid_sample, pdist: F.pdist, pad: F.pad,
    fractional_max_pool2d: F.fractional_max_pool2d, fractional_max_pool3d: F.fractional_max_pool3d,
    div: torch.div, tensor_div: torch.Tensor.div, tensor_div_: torch.Tensor.div_,
    tensor_truediv: torch.Tensor.__truediv__, tensor_itruediv: torch.Tensor.__itruediv__,
    tensor_div_operator: torch.Tensor.__div__, tensor_idiv: torch.Tensor.__idiv__,
    lcm: torch.lcm, tensor_lcm: torch.Tensor.lcm, tensor_lcm_: torch.Tensor.lcm_}


def unwrapped(fn: Any) -> Any:
    """The torch function ``fn`` stands for, if it is a checked one; else ``fn``."""
    try:
        return STANDS_FOR.get(fn, fn)
    except TypeError:  # unhashable
        return fn


def ops() -> Dict[str, Callable[..., Any]]:
    """The checked functions, by the names clients send (replacing torch's own on the allowlist)."""
    return {"torch._weight_norm": weight_norm,
            "torch.nn.functional.ctc_loss": ctc_loss,
            "torch.nn.functional.embedding_bag": embedding_bag,
            "torch.repeat_interleave": repeat_interleave, "Tensor.repeat_interleave": repeat_interleave,
            "torch.bincount": bincount, "Tensor.bincount": bincount, "torch.nn.functional.one_hot": one_hot,
            "torch.nonzero": nonzero, "Tensor.nonzero": nonzero, "torch.argwhere": argwhere,
            "Tensor.argwhere": argwhere, "torch.masked_select": masked_select, "Tensor.masked_select": masked_select,
            "torch.unique": unique, "Tensor.unique": unique,
            "torch.unique_consecutive": unique_consecutive, "Tensor.unique_consecutive": unique_consecutive,
            "torch.combinations": combinations,
            "torch.linalg.eigvals": eigvals,
            "torch.linalg.matrix_power": matrix_power, "torch.matrix_power": matrix_power,
            "Tensor.matrix_power": matrix_power,
            "torch.nn.functional.grid_sample": grid_sample,
            "torch.nn.functional.pdist": pdist,
            "torch.nn.functional.pad": pad,
            "torch.nn.functional.fractional_max_pool2d": fractional_max_pool2d,
            "torch.nn.functional.fractional_max_pool3d": fractional_max_pool3d,
            "torch.div": div, "torch.divide": div, "Tensor.div": tensor_div, "Tensor.divide": tensor_div,
            "Tensor.div_": tensor_div_, "Tensor.divide_": tensor_div_, "Tensor.__truediv__": tensor_truediv,
            "Tensor.__itruediv__": tensor_itruediv, "Tensor.__div__": tensor_div_operator,
            "Tensor.__idiv__": tensor_idiv,
            "torch.lcm": lcm, "Tensor.lcm": tensor_lcm, "Tensor.lcm_": tensor_lcm_}

"""More of torch on the default allowlist, decided from the op schemas rather than by hand.

Candidates are the public functions of ``torch.linalg``, ``torch.fft`` and ``torch.special``, and the
``torch`` / ``torch.nn.functional`` functions modern models use (attention, normalisation, shape helpers).
A candidate is allowed when:

* its ATen operator exists and no overload writes into a positional argument
  (``alias_info.is_write`` in the schema; the keyword-only ``out=`` outputs are refused separately),
  or, for a Python composite of ``torch.nn.functional`` with no ATen operator of its own, it has no
  ``inplace`` switch;
* its name says nothing of files, storage, devices, raw memory or uninitialised memory
  (:data:`_FORBIDDEN`).

``out=`` is refused separately, for every op.
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F

from ..wire.names import wire_name

_FORBIDDEN = ("empty", "storage", "file", "save", "load", "ptr", "device", "cuda", "pin", "share", "set_",
              "resize", "as_strided", "unsafe", "from_", "hash", "_backward", "sparse", "nested", "native_",
              "quantize", "print")

#: ``torch.<name>`` candidates beyond the standard vocabulary (shape helpers, linear algebra, attention pieces).
_TORCH = """
addbmm addr broadcast_tensors block_diag combinations cartesian_prod cholesky cholesky_inverse cholesky_solve
conj_physical diagonal_scatter frexp geqrf gradient lu_unpack matrix_exp meshgrid igamma igammac ormqr qr real
imag polar atleast_1d atleast_2d atleast_3d histogram trapz cumulative_trapezoid diagflat split_with_sizes rsub
stft istft view_as_real view_as_complex complex cummax cummin logcumsumexp
"""
_FUNCTIONAL = """
scaled_dot_product_attention multi_head_attention_forward rms_norm embedding_bag unfold fold pixel_shuffle
pixel_unshuffle channel_shuffle grid_sample affine_grid adaptive_max_pool3d adaptive_avg_pool3d conv_transpose3d
multi_margin_loss multilabel_margin_loss max_unpool1d max_unpool2d max_unpool3d dropout3d feature_alpha_dropout
ctc_loss fractional_max_pool2d fractional_max_pool3d upsample upsample_nearest upsample_bilinear max_pool1d
max_pool2d max_pool3d adaptive_max_pool1d adaptive_max_pool2d max_pool1d_with_indices max_pool2d_with_indices
"""


def _writes(aten: str) -> Optional[bool]:
    """Whether some non-``out`` overload of ``aten::<name>`` writes into an argument; None if no such operator."""
    schemas = torch._C._jit_get_schemas_for_operator(f"aten::{aten}")
    if not schemas:
        return None
    for schema in schemas:
        # ``out=`` variants write only into keyword-only outputs (refused separately); anything else written is a write
        if any(a.alias_info is not None and a.alias_info.is_write and not a.kwarg_only for a in schema.arguments):
            return True
    return False


def _allowed(name: str, fn: Callable, aten: str, composite_ok: bool) -> bool:
    short = name.rsplit(".", 1)[-1]
    if short.startswith("_") or short.endswith("_") or any(word in name for word in _FORBIDDEN):
        return False
    writes = _writes(aten)
    if writes is None:
        if not composite_ok:
            return False
        try:
            return "inplace" not in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return False
    return not writes


def _namespace(prefix: str, module: object) -> Iterable[Tuple[str, Callable, str]]:
    sub = prefix.split(".")[-1]
    for short in dir(module):
        fn = getattr(module, short)
        if callable(fn) and not short.startswith("_") and not isinstance(fn, type):
            yield f"{prefix}.{short}", fn, f"{sub}_{short}"


def schema_ops() -> Dict[str, Callable]:
    """The extra ops, name -> callable, that the rules above allow."""
    candidates = []
    for prefix, module in (("torch.linalg", torch.linalg), ("torch.fft", torch.fft), ("torch.special", torch.special)):
        candidates.extend((name, fn, aten, True) for name, fn, aten in _namespace(prefix, module))
    for short in _TORCH.split():
        fn = getattr(torch, short, None)
        if callable(fn):
            candidates.append((f"torch.{short}", fn, short, True))
        meth = getattr(torch.Tensor, short, None)
        if callable(meth):
            candidates.append((f"Tensor.{short}", meth, short, True))
    for short in _FUNCTIONAL.split():
        fn = getattr(F, short, None)
        if callable(fn):
            candidates.append((f"torch.nn.functional.{short}", fn, short, True))
    table: Dict[str, Callable] = {}
    for name, fn, aten, composite in candidates:
        if _allowed(name, fn, aten, composite):
            table[name] = fn
            alias = wire_name(fn)  # e.g. F.pixel_shuffle is torch.pixel_shuffle: the name a client sends
            if alias is not None and alias != name and not any(word in alias for word in _FORBIDDEN):
                table.setdefault(alias, fn)
    return table

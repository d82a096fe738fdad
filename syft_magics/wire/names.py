"""Names on the wire: how an op and a tag are spelled between client and worker.

An op crosses the wire as a public torch name such as ``"torch.add"``,
``"Tensor.__add__"``, ``"Tensor.add_"`` or ``"torch.nn.functional.relu"``;
whether a worker runs it is its allowlist's decision
(:mod:`syft_magics.owner.allowlist`). A tag is ``#`` and at least one
character that is neither a space, ``#`` nor a comma. An object is named by 16 random bytes
(:func:`id_source`).
"""
from __future__ import annotations

import functools
import os
import re
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from ..errors import TagError
from .limits import is_visible

_TAG = re.compile(r"^#[^\s#,]+$")


def check_tag(tag: object) -> str:
    """Return ``tag`` if it is well formed (``#`` then at least one non-space character)."""
    if not isinstance(tag, str):
        raise TagError(f"a tag must be a string like '#X', not {type(tag).__name__}")
    if len(tag) > 128:
        raise TagError(f"a tag is at most 128 characters, this one has {len(tag)}")
    if not is_visible(tag):  # (tags reach the owner's requests: no escape sequences, bidi overrides, blank padding)
        raise TagError(f"bad tag {tag!r}: tags are visible, printable characters")
    if not _TAG.match(tag):
        hint = f"; did you mean '#{tag}'?" if tag and not tag.startswith("#") and " " not in tag else ""
        raise TagError(f"bad tag {tag!r}: tags start with '#' and contain no spaces or commas, e.g. '#X'{hint}")
    return tag


_INPLACE_DUNDERS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__idiv__",
                    "__ifloordiv__", "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__",
                    "__ilshift__", "__irshift__"}


@functools.lru_cache(maxsize=4096)
def is_inplace(name: str) -> bool:
    """Whether the op ``name`` writes into its first argument."""
    short = name.rsplit(".", 1)[-1]
    return short in _INPLACE_DUNDERS or (short.endswith("_") and not short.endswith("__"))


_SHORT_PREFIXES = (("torch.nn.functional.", "F."), ("torch.", ""), ("Tensor.", "."))


@functools.lru_cache(maxsize=4096)
def short_name(name: str) -> str:
    """How an op name reads in logs: ``torch.add`` -> ``add``, ``Tensor.sum`` -> ``.sum``."""
    for prefix, short in _SHORT_PREFIXES:
        if name.startswith(prefix):
            return short + name[len(prefix):]
    return name


def resolve_torch_name(name: str) -> Callable:
    """The torch callable a public dotted name stands for (owner-supplied names only, never wire input)."""
    parts = name.split(".")
    if parts[0] == "Tensor":
        obj: object = torch.Tensor
    elif parts[0] == "torch":
        obj = torch
    else:
        raise ValueError(f"{name!r}: give a name starting with 'torch.' or 'Tensor.', or pass the function")
    for part in parts[1:]:
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            raise ValueError(f"{name!r}: private names cannot be allowed by name")
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


# -- the standard op vocabulary ---------------------------------------------------------------
#: Names that exist as ``torch.<name>`` and/or ``Tensor.<name>`` (and their in-place ``<name>_``).
ELEMENTWISE_AND_REDUCTIONS = """
abs absolute acos acosh add addcdiv addcmul addmm addmv all allclose amax amin aminmax angle any
argmax argmin argsort argwhere asin asinh atan atan2 atanh baddbmm bincount bitwise_and bitwise_not
bitwise_or bitwise_xor bmm broadcast_to bucketize cat cdist ceil chunk clamp clamp_max clamp_min clip
clone column_stack concat concatenate conj copysign corrcoef cos cosh count_nonzero cov cross cummax
cummin cumprod cumsum deg2rad diag diag_embed diagonal diff digamma dist div divide dot dsplit dstack
einsum eq equal erf erfc erfinv exp exp2 expm1 eye flatten flip fliplr flipud float_power floor
floor_divide fmax fmin fmod frac full_like gather gcd ge greater greater_equal gt heaviside histc
hsplit hstack hypot i0 index_add index_copy index_fill index_put index_reduce index_select inner
inverse isclose isfinite isin isinf isnan isneginf isposinf isreal kron kthvalue lcm ldexp le lerp
less less_equal lgamma log log10 log1p log2 log_softmax logaddexp logaddexp2 logcumsumexp logdet
logical_and logical_not logical_or logical_xor logit logsumexp lt masked_fill masked_scatter
masked_select matmul matrix_power max maximum mean median min minimum mm mode moveaxis movedim msort
mul multiply mv mvlgamma nan_to_num nanmean nanmedian nanquantile nansum narrow narrow_copy ne neg
negative nextafter nonzero norm not_equal numel ones_like outer permute pinverse polygamma positive
pow prod quantile rad2deg rand_like randint_like randn_like ravel reciprocal relu remainder renorm
repeat_interleave reshape resolve_conj resolve_neg roll rot90 round rsqrt scatter scatter_add
scatter_reduce searchsorted select select_scatter sgn sigmoid sign signbit sin sinc sinh slice_scatter
slogdet softmax sort split sqrt square squeeze stack std std_mean sub subtract sum svd swapaxes
swapdims t take take_along_dim tan tanh tensor_split tensordot tile topk trace transpose trapezoid
triangular_solve tril triu true_divide trunc unbind unflatten unique unique_consecutive unsqueeze var
var_mean vdot vsplit vstack where xlogy zeros_like
"""

#: Names that exist only as ``Tensor.<name>``.
TENSOR_ONLY = """
view view_as reshape_as expand expand_as repeat contiguous detach float double half bfloat16 long int
short bool byte char type_as size dim numel nelement ndimension is_floating_point is_complex
element_size stride is_contiguous new_zeros new_ones new_full new_tensor fill_ zero_ copy_
uniform_ normal_ bernoulli_ random_ exponential_ geometric_ cauchy_ log_normal_ unfold
__getitem__ __setitem__ __len__ __add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__
__rmul__ __imul__ __truediv__ __rtruediv__ __itruediv__ __div__ __rdiv__ __idiv__ __floordiv__
__rfloordiv__ __ifloordiv__ __mod__ __rmod__ __imod__ __pow__ __rpow__ __ipow__ __matmul__
__rmatmul__ __neg__ __pos__ __abs__ __invert__ __and__ __rand__ __iand__ __or__ __ror__ __ior__
__xor__ __rxor__ __ixor__ __lshift__ __rlshift__ __ilshift__ __rshift__ __rrshift__ __irshift__
__eq__ __ne__ __lt__ __le__ __gt__ __ge__
"""

#: ``torch.nn.functional.<name>``.
FUNCTIONAL = """
relu relu6 elu selu celu gelu silu mish leaky_relu prelu rrelu glu hardtanh hardswish hardsigmoid
logsigmoid softplus softsign softshrink hardshrink tanhshrink threshold sigmoid tanh softmax softmin
log_softmax gumbel_softmax linear bilinear conv1d conv2d conv3d conv_transpose1d conv_transpose2d
max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_max_pool1d
adaptive_max_pool2d adaptive_avg_pool1d adaptive_avg_pool2d lp_pool1d lp_pool2d dropout dropout1d
dropout2d alpha_dropout batch_norm instance_norm layer_norm group_norm local_response_norm normalize
pad interpolate one_hot embedding cosine_similarity pairwise_distance pdist cross_entropy nll_loss
mse_loss l1_loss smooth_l1_loss huber_loss binary_cross_entropy binary_cross_entropy_with_logits
kl_div poisson_nll_loss gaussian_nll_loss hinge_embedding_loss margin_ranking_loss
soft_margin_loss multilabel_soft_margin_loss cosine_embedding_loss triplet_margin_loss
"""

#: Torch functions under private names that public layers call: ``parametrizations.weight_norm``'s weight is
#: ``torch._weight_norm(v, g, dim)``, a pure function of the two (whose kernel a worker runs only after checking
#: them: ``owner/checked/``).
LAYER_INTERNALS = ("_weight_norm",)


def _default_table() -> Dict[str, Callable]:
    table: Dict[str, Callable] = {f"torch.{name}": getattr(torch, name) for name in LAYER_INTERNALS}
    for name in ELEMENTWISE_AND_REDUCTIONS.split():
        for inplace in ("", "_"):
            fn = getattr(torch, name + inplace, None) if not inplace else None
            if callable(fn):
                table[f"torch.{name}"] = fn
            meth = getattr(torch.Tensor, name + inplace, None)
            if callable(meth):
                table[f"Tensor.{name}{inplace}"] = meth
    for name in TENSOR_ONLY.split():
        meth = getattr(torch.Tensor, name, None)
        if callable(meth):
            table[f"Tensor.{name}"] = meth
    for name in FUNCTIONAL.split():
        fn = getattr(F, name, None)
        if callable(fn):
            table[f"torch.nn.functional.{name}"] = fn
    return table


#: The standard vocabulary: every name above -> the torch callable it stands for.
#: A worker's allowlist starts as a copy; a client names a function by looking it up here first.
DEFAULT_TABLE: Dict[str, Callable] = _default_table()


_NAME_CACHE: Dict[Callable, Optional[str]] = {}
_MODULE_ALIASES = {"torch.functional": "torch", "torch._C._nn": "torch.nn.functional",
                   "torch._C._VariableFunctions": "torch", "torch._tensor": "Tensor"}
_C_SUBMODULES = {"torch._C._fft": "fft", "torch._C._linalg": "linalg", "torch._C._special": "special"}


def wire_name(func: Callable) -> Optional[str]:
    """The name under which a client sends ``func``, or None if it has no public torch name.

    Any public torch function or Tensor method has one; whether the worker runs
    it is the worker's allowlist's decision.
    """
    try:
        return _NAME_CACHE[func]
    except KeyError:
        pass
    except TypeError:
        return None
    name = _find_name(func)
    _NAME_CACHE[func] = name
    return name


def _find_name(func: Callable) -> Optional[str]:
    for name, fn in DEFAULT_TABLE.items():
        if fn is func:
            return name
    fname = getattr(func, "__name__", None)
    if not fname:
        return None
    if getattr(torch.Tensor, fname, None) is func:
        return f"Tensor.{fname}"
    module = getattr(func, "__module__", None) or ""
    sub = _C_SUBMODULES.get(module)
    if sub is not None and fname.startswith(sub + "_"):
        # torch.fft.fft is the builtin torch._C._fft.fft_fft (likewise linalg_*, special_*)
        return _checked(f"torch.{sub}.{fname[len(sub) + 1:]}", func)
    module = _MODULE_ALIASES.get(module, module)
    return _checked(f"{module}.{fname}", func) if module.startswith("torch") else None


def _checked(name: str, func: Callable) -> Optional[str]:
    try:
        return name if resolve_torch_name(name) is func else None
    except (AttributeError, ValueError):
        return None


def id_source() -> Callable[[], bytes]:
    """Fresh 128-bit random result ids. Unpredictable on purpose: ids derived from a counter could be
    guessed from one seen in a log, and another client could claim them first (the worker refuses
    an id already in use). Read from the OS 256 at a time (a system call per op cost a chain several
    percent); ``list.pop`` hands each one out once, whichever thread asks."""
    ids: List[bytes] = []

    def new_id() -> bytes:
        try:
            return ids.pop()
        except IndexError:
            block = os.urandom(16 * 256)
            ids.extend(block[i:i + 16] for i in range(0, len(block), 16))
            return ids.pop()

    return new_id

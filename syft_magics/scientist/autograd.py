"""Autograd and the other attribute-like operations of a pointer, so none of them is a silent no-op.

Torch answers ``requires_grad``, ``grad``, ``data`` and friends from the wrapper itself; on a pointer
that would read or change a local stand-in while the tensor on the worker stays as it was (PySyft's
worst training bug: ``loss.backward()`` returned and the weights never changed). Here each of them
either runs on the worker (one pipelined message) or raises a clear error at the user's line:

* ``ptr.requires_grad_()`` / ``ptr.requires_grad = True``: on the worker, and the pointer's metadata;
* ``loss.backward()``, ``y.retain_grad()``, ``torch.autograd.grad``: on the worker (one message);
* ``ptr.grad``: a pointer to the worker's gradient, or None where it has none (``ptr.grad = None`` clears it);
* ``ptr.data`` (a remote ``detach``), ``ptr.data = other``, ``detach_``;
* ``ptr.to(dtype)``, ``ptr.to("cpu")``, ``ptr.cpu()``: on the worker, within its allowed devices.

Ops that return no tensor are answered locally only when the answer is metadata the client knows
(:data:`LOCAL_ANSWERS`); ops returning ``None`` are side effects and are sent; anything else is refused.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import torch

from ..errors import OpNotAllowed, ReadOnlyError
from ..wire.names import short_name

if TYPE_CHECKING:
    from ..wire.results import Tree
    from .pointer import PointerTensor

#: Ops whose non-tensor answer is the pointer's metadata (shape, dtype, layout), the same locally.
LOCAL_ANSWERS = frozenset(
    f"{prefix}.{name}" for prefix in ("Tensor", "torch") for name in """
    size dim ndimension numel nelement stride element_size is_contiguous is_floating_point is_complex is_signed
    __len__ is_same_size is_tensor result_type can_cast is_inference is_nested storage_offset dim_order
    __format__ __repr__ __dir__ __sizeof__ __hash__ is_conj is_neg has_names
    """.split())


def local_answer(name: str, template: "Tree") -> bool:
    """Whether an op with no tensor in its result may be answered from the stand-ins alone.

    False for a side effect (the result is ``None``): the op must be sent. Raises for an answer that
    would be computed from a stand-in with no data (a wrong value, silently).
    """
    if name in LOCAL_ANSWERS:
        return True
    if template.is_none:
        return False
    raise OpNotAllowed(f"{short_name(name)} gives an answer that depends on the remote tensor and is not "
                       "supported on pointers; compute it on the worker as a tensor, or .get() the value")


def _ptr_run(func: Callable, name: str, args: tuple, kwargs: Optional[dict] = None, described: bool = False) -> Any:
    from .pointer import _first_pointer

    ptr = _first_pointer(args, kwargs or {})
    return ptr.client.run(func, name, args, kwargs or {}, described)


def _mark_requires_grad(ptr: "PointerTensor", flag: bool) -> None:
    """The pointer's own metadata, so results inferred from it know they require grad."""
    with torch._C.DisableTorchFunctionSubclass():
        torch.Tensor.requires_grad_(ptr, flag)
    ptr.signature = (ptr.signature[0], ptr.signature[1], flag)


def requires_grad_(ptr: "PointerTensor", requires_grad: bool = True) -> "PointerTensor":
    if requires_grad and not (ptr.dtype.is_floating_point or ptr.dtype.is_complex):
        raise RuntimeError(f"only tensors of floating point and complex dtype can require gradients (this "
                           f"pointer is {ptr.dtype})")
    if not requires_grad and not ptr.is_leaf:  # (as torch, at the line: helper-77 saw the flag change here only)
        raise RuntimeError("you can only change requires_grad flags of leaf variables. If you want to use a computed "
                           "variable in a subgraph that doesn't require differentiation use var_no_grad = "
                           "var.detach().")
    if not ptr.owned and not ptr.deleted:  # (refused there too; here before the pointer says otherwise)
        raise ReadOnlyError(f"{' '.join(ptr.tags) or 'this'} is {ptr.client.name}'s data and cannot be changed "
                            "(requires_grad_ writes into it); compute on a copy instead, e.g. ptr.clone()",
                            op="Tensor.requires_grad_", code="read_only")
    ptr.client.run(_requires_grad_, "Tensor.requires_grad_", (ptr, bool(requires_grad)), {})
    _mark_requires_grad(ptr, bool(requires_grad))
    return ptr


def _requires_grad_(t: torch.Tensor, flag: bool) -> torch.Tensor:
    return t  # stand-in inference only: the result is the pointer itself; the worker does the work


def _set_requires_grad(ptr: "PointerTensor", value: bool) -> None:
    requires_grad_(ptr, bool(value))


def detach_(ptr: "PointerTensor") -> "PointerTensor":
    ptr.client.run(torch.Tensor.detach_, "Tensor.detach_", (ptr,), {})
    _mark_requires_grad(ptr, False)
    return ptr


def get_grad(ptr: "PointerTensor") -> Optional["PointerTensor"]:
    """A pointer to the worker's ``.grad``, or None where it has none (as torch says: no backward has reached
    it yet, or an optimizer's ``zero_grad()`` cleared it). Only the worker knows which, so this waits for its
    answer (one round trip), also for a tensor that no longer requires grad: a frozen parameter keeps the gradient
    it had, as torch's does (helper-80: answered None here, a loop skipped it and the optimizer stepped it)."""
    return ptr.client.run(_no_standin, "syft.grad", (ptr,), {}, described=True)


def _no_standin(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a described op has no stand-in")  # (never called: the worker says what came out)


def _set_grad_standin(t: torch.Tensor, g: Any) -> None:
    return None


def set_grad(ptr: "PointerTensor", value: Any) -> None:
    if value is not None and not isinstance(value, torch.Tensor):
        raise TypeError(f"grad must be a tensor or None, not {type(value).__name__}")
    ptr.client.run(_set_grad_standin, "syft.set_grad_", (ptr, value), {})


def get_data(ptr: "PointerTensor") -> "PointerTensor":
    return ptr.detach()  # type: ignore[return-value]


def set_data(ptr: "PointerTensor", value: Any) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"data must be a tensor, not {type(value).__name__}")
    if tuple(value.shape) != tuple(ptr.shape) or value.dtype != ptr.dtype:
        raise NotImplementedError("assigning .data of another shape or dtype to a pointer is not supported; "
                                  "make a new pointer instead")
    if value is ptr:
        return  # ``ptr.data -= x`` ends with ``ptr.data = ptr.data``-like self assignment of the same pointer
    ptr.client.run(_set_grad_standin, "syft.set_data_", (ptr, value), {})


def _meta_device(args: tuple, kwargs: dict) -> tuple:
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    return device, dtype


def to(ptr: "PointerTensor", *args: Any, **kwargs: Any) -> "PointerTensor":
    """``ptr.to(dtype)``, ``ptr.to("cpu")``, ``ptr.to("cuda")``: runs on the worker, within the devices it allows."""
    if any(isinstance(a, torch.Tensor) for a in args) or isinstance(kwargs.get("other"), torch.Tensor):
        raise NotImplementedError("ptr.to(other_tensor) is not supported; give a dtype or a device")
    device, dtype = _meta_device(args, kwargs)
    allowed = ptr.client.devices
    if device is not None and device.type == "meta" and allowed == ("cpu",):
        device = None  # the device every pointer's .device stands for, as torch.nn.utils.clip_grad_norm_ asks
    if device is not None and device.type == "meta":
        raise OpNotAllowed(f"a pointer's .device reads 'meta' here because it holds no data on this side (its "
                           f"tensor is on {ptr.client.name}, which allows {', '.join(allowed)}): code that moves "
                           "tensors to ptr.device, such as torch.nn.utils.clip_grad_norm_, cannot tell which device "
                           "it means; name the device (ptr.to('cuda')), or compute on the pointers themselves "
                           "(e.g. clip_grad_value_, or norms with torch.linalg.vector_norm)")
    if device is not None and device.type not in allowed:
        raise OpNotAllowed(f"{ptr.client.name} allows the devices {', '.join(allowed)}, not {device} "
                           "(results come back to you on the CPU)")
    if device is not None and allowed == ("cpu",):
        device = None  # every tensor there is on its CPU already
    if device is None and (dtype is None or dtype == ptr.dtype) and not kwargs.get("copy"):
        return ptr  # already there: torch's .to returns the tensor itself
    wire: Dict[str, Any] = {}
    if dtype is not None:
        wire["dtype"] = dtype
    if device is not None:
        wire["device"] = str(device)
    return ptr.client.run(_to_standin, "Tensor.to", (ptr,), wire)


def _to_standin(t: torch.Tensor, dtype: Optional[torch.dtype] = None, device: Any = None) -> torch.Tensor:
    return t.to(dtype=dtype) if dtype is not None else t.clone()


def cpu(ptr: "PointerTensor", *args: Any, **kwargs: Any) -> "PointerTensor":
    return to(ptr, "cpu")


def cuda(ptr: "PointerTensor", device: Any = None, *args: Any, **kwargs: Any) -> "PointerTensor":
    if "cuda" not in ptr.client.devices:
        raise OpNotAllowed(f"{ptr.client.name} has no CUDA device for pointers (it allows "
                           f"{', '.join(ptr.client.devices)}); results come back to you on the CPU")
    return to(ptr, torch.device("cuda", device) if isinstance(device, int) else (device or "cuda"))


def refuse(what: str) -> Callable:
    def handler(ptr: "PointerTensor", *args: Any, **kwargs: Any) -> Any:
        raise OpNotAllowed(f"{what} is not supported on pointers: the autograd graph lives on "
                           f"{ptr.client.name}")
    return handler


def _autograd_grad_standin(outputs: Any, inputs: Any, *args: Any, **kwargs: Any) -> tuple:
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
    with torch._C.DisableTorchFunctionSubclass():
        return tuple(torch.empty(i.shape, dtype=i.dtype, device="meta") for i in inputs)


_GRAD_SIGNATURE = inspect.signature(torch.autograd.grad)


def autograd_grad(*args: Any, **kwargs: Any) -> tuple:
    """``torch.autograd.grad`` on the worker: pointers to the gradients of ``inputs``.

    Pipelined when the result is known here: one gradient per input, none requiring grad. With
    ``create_graph=True`` (whether a gradient requires grad depends on the graph: that of a linear function
    does not) or ``allow_unused=True`` (an unused input's gradient is None) it waits for the worker's answer.
    """
    options = _GRAD_SIGNATURE.bind(*args, **kwargs).arguments
    described = bool(options.get("create_graph")) or \
        bool(options.get("allow_unused")) and not options.get("materialize_grads")
    return _ptr_run(_autograd_grad_standin, "torch.autograd.grad", args, kwargs, described)


def is_leaf(ptr: "PointerTensor") -> bool:
    """Whether the worker's tensor is an autograd leaf (not the local stand-in's answer, which is always True)."""
    return ptr.leaf or not ptr.signature[2]


def grad_fn(ptr: "PointerTensor") -> None:
    """None for a leaf (as torch says); the node of a non-leaf lives on the worker and cannot be used here."""
    if is_leaf(ptr):
        return None
    raise OpNotAllowed(f"grad_fn is {ptr.client.name}'s autograd node and cannot be used here (call .backward() "
                       "on the pointer instead); ptr.is_leaf and ptr.requires_grad tell what the tensor is")


def _without_create_graph(func: Callable, name: str) -> Callable:
    """``func`` (a backward) on the worker, refused here with ``create_graph=True``, as the worker refuses it
    (before the stand-ins' own backward runs and torch warns of the cycle it would make)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("create_graph"):
            raise OpNotAllowed("backward(create_graph=True) is not supported on pointers: the graph it builds "
                               "behind each leaf's .grad refers back to the leaf, which keeps their memory on the "
                               "worker; use torch.autograd.grad(loss, inputs, create_graph=True), which returns "
                               "the gradients")
        return _ptr_run(func, name, args, kwargs)

    return run


#: Functions torch hands to ``__torch_function__`` that need the worker, by the function object.
SPECIAL: Dict[Any, Callable] = {
    torch.Tensor.requires_grad_: requires_grad_,
    torch.Tensor.requires_grad.__set__: _set_requires_grad,  # type: ignore[attr-defined]
    torch.Tensor.detach_: detach_,
    torch.Tensor.grad.__get__: get_grad,  # type: ignore[union-attr]
    torch.Tensor.grad.__set__: set_grad,  # type: ignore[union-attr]
    torch.Tensor.grad.__delete__: lambda ptr: set_grad(ptr, None),  # type: ignore[union-attr]  # del p.grad
    torch.Tensor.data.__get__: get_data,  # type: ignore[attr-defined]
    torch.Tensor.data.__set__: set_data,  # type: ignore[attr-defined]
    torch.Tensor.to: to,
    torch.Tensor.cpu: cpu,
    torch.Tensor.cuda: cuda,
    torch.autograd.grad: autograd_grad,
    torch.Tensor.backward: _without_create_graph(torch.Tensor.backward, "Tensor.backward"),
    torch.autograd.backward: _without_create_graph(torch.autograd.backward, "torch.autograd.backward"),
    torch.Tensor.is_leaf.__get__: is_leaf,  # type: ignore[attr-defined]
    torch.Tensor.grad_fn.__get__: grad_fn,  # type: ignore[union-attr]
    torch.Tensor.register_hook: refuse("register_hook (a Python function would have to run on the worker)"),
}

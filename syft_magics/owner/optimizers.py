"""Optimizers and learning-rate schedulers that live on a worker, next to the parameters they update.

``client.optim.SGD(remote.parameters(), lr=0.1)`` becomes the op ``syft.optim.SGD(params, lr=0.1)``;
the worker builds a real ``torch.optim.SGD`` from an allowlist of classes, over parameters it holds
(leaves that require grad: never the owner's data, which cannot require grad). ``step()`` and
``zero_grad()`` are then one op each, whatever the number of parameters.

An optimizer's state (Adam's two moments per parameter, SGD's momentum buffer) is allocated by its
first ``step()``, and each optimizer has its own, even over the same parameters: a client is charged
for it when the optimizer is made (:func:`state_bytes`), so that a hundred optimizers over one model
are refused by the client's byte quota instead of allocating a hundred sets of moments.
"""
from __future__ import annotations

import inspect
import json
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Tuple

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..wire.protocol import ErrorCode
from ..wire.results import MAX_TEXT
from .plain import flag
from .replies import Reject

if TYPE_CHECKING:
    from .entry import Entry

OPTIMIZERS: Dict[str, type] = {name: getattr(torch.optim, name)
                               for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad")}
SCHEDULERS: Dict[str, type] = {name: getattr(torch.optim.lr_scheduler, name)
                               for name in ("StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR")}
_SCALARS = (bool, int, float)
#: The most milestones a MultiStepLR may have (a tuple option is as long as its default: Adam's betas, 2), and the
#: most parameter groups an optimizer may have: an optimizer is charged for its state, not for its options.
MAX_OPTION_ITEMS = 1024
MAX_GROUPS = 1024


def _defaults(cls: type) -> Dict[str, Any]:
    """The options ``cls`` takes by name (its constructor's, but what it is made over), with their defaults
    (``_REQUIRED`` for those without one)."""
    return {n: (_REQUIRED if p.default is inspect.Parameter.empty else p.default)
            for n, p in inspect.signature(cls).parameters.items() if n not in ("params", "optimizer", "self")}


_REQUIRED = object()
_DEFAULTS: Dict[type, Dict[str, Any]] = {cls: _defaults(cls) for cls in (*OPTIMIZERS.values(), *SCHEDULERS.values())}
_KNOWN: Dict[type, FrozenSet[str]] = {cls: frozenset(d) for cls, d in _DEFAULTS.items()}


def _options(kwargs: Dict[str, Any], cls: type, what: str = "") -> Dict[str, Any]:
    """``kwargs``, checked to be options of ``cls``, each of its default's kind: a bool for a bool, a number
    for a number, a tuple of as many numbers for a tuple (Adam's betas), a bool or None for None (foreach);
    a MultiStepLR's milestones a list of at most :data:`MAX_OPTION_ITEMS` ints, any other option without a
    default a number. Never a tensor, a list in a number's place (a scheduler multiplied a list-valued rate
    by its gamma each step: 8 GB in three), nor anything else."""
    what = what or cls.__name__
    known = _DEFAULTS[cls]
    for key, value in kwargs.items():
        if key not in known:
            raise TypeError(f"{what} has no option {key!r} (options: {', '.join(sorted(known))})")
        if not _fits(key, known[key], value):
            wanted = (f"a list of at most {MAX_OPTION_ITEMS} ints" if key == "milestones" else "a number") \
                if known[key] is _REQUIRED else _kind(known[key])
            raise TypeError(f"{what} option {key}= must be {wanted}, not {_kind(value)}")
    return kwargs


def _fits(key: str, default: Any, value: Any) -> bool:
    if default is _REQUIRED:
        if key == "milestones":
            return type(value) in (list, tuple) and len(value) <= MAX_OPTION_ITEMS and \
                all(type(v) is int for v in value)
        return type(value) in (int, float)
    if default is None:
        return value is None or type(value) is bool
    if type(default) is tuple:
        return type(value) in (tuple, list) and len(value) == len(default) and all(type(v) in (int, float)
                                                                                  for v in value)
    return _same_kind(default, value)


def _check_param(p: Any) -> torch.Tensor:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"optimizer parameters must be tensors (pointers), got {type(p).__name__}")
    if not p.is_leaf:  # (one that does not require grad is skipped by its steps, as torch does: a frozen layer)
        raise ValueError("optimizer parameters must be leaf tensors, not results of ops (e.g. remote.parameters(), "
                         "or a sent tensor with ptr.requires_grad_())")
    if torch._debug_has_internal_overlap(p) == 1:  # (1: elements share memory; torch's own steps fail on it)
        raise ValueError("an optimizer parameter whose elements share memory (e.g. made by expand) cannot be "
                         "trained: use .contiguous() or .clone() first")
    return p


def _dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill its memory, each once, in some order (torch's "non-overlapping and dense")."""
    return torch._debug_has_internal_overlap(t) == 0


def _check_fused(opt: Optimizer) -> None:
    """Refuse a step of torch's fused kernels (``fused=True``) over a parameter or gradient they would misread: they
    write ``numel`` elements in a row from a parameter's start and read its gradient so, whatever their strides
    (helper-74: the last 1,024 floats of a storage, expanded to 1,024 x 1,024, had 4 MiB written past its end, of
    values the client chose: the worker gone, its heap the client's). A dense parameter, its gradient laid out as
    it is, is what they assume."""
    for group in opt.param_groups:
        if not group.get("fused"):
            continue
        for p in group["params"]:
            g = p.grad
            if not _dense(p) or (g is not None and (g.stride() != p.stride() or not _dense(g))):
                raise ValueError(f"{type(opt).__name__}(fused=True) steps only parameters laid out densely, each with "
                                 "a gradient of its own layout (torch's fused kernels read and write them as "
                                 "contiguous memory): use fused=False, or parameters made by .contiguous()")


def _params(params: Any, cls: type) -> list:
    if isinstance(params, torch.Tensor):
        params = [params]
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError("an optimizer needs a non-empty list of parameters or of parameter groups")
    if len(params) > MAX_GROUPS and isinstance(params[0], dict):
        raise ValueError(f"an optimizer on a worker takes at most {MAX_GROUPS} parameter groups")
    groups = []
    for item in params:
        if isinstance(item, dict):
            group = _options({k: v for k, v in item.items() if k != "params"}, cls,
                             f"{cls.__name__}'s parameter group")
            inner = item.get("params")
            inner = [inner] if isinstance(inner, torch.Tensor) else list(inner or ())
            if not inner:
                raise ValueError("a parameter group needs parameters")
            groups.append({**group, "params": [_check_param(p) for p in inner]})
        else:
            groups.append(_check_param(item))  # type: ignore[arg-type]  # (a bare parameter, as torch accepts)
    every = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    if len({id(p) for p in every}) != len(every):  # (torch only warns: [w] * 100,000 made 5M references, uncharged)
        raise ValueError("a parameter appears more than once in the optimizer's parameters")
    return groups


def _optimizer_factory(cls: type) -> Callable:
    def make(params: Any, **kwargs: Any) -> Optimizer:
        return cls(_params(params, cls), **_options(kwargs, cls))
    make.__name__ = cls.__name__
    return make


def _scheduler_factory(cls: type) -> Callable:
    def make(optimizer: Any, **kwargs: Any) -> LRScheduler:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{cls.__name__} needs an optimizer on this worker")
        return cls(optimizer, **_options(kwargs, cls))
    make.__name__ = cls.__name__
    return make


def step(obj: Any) -> None:
    """``optimizer.step()`` or ``scheduler.step()``."""
    if not isinstance(obj, (Optimizer, LRScheduler)):
        raise TypeError(f"step() needs an optimizer or a scheduler, got {type(obj).__name__}")
    if isinstance(obj, Optimizer):
        _check_fused(obj)
    obj.step()
    if isinstance(obj, Optimizer):  # (torch's fused steps write parameters without moving their versions, which
        for group in obj.param_groups:  # approvals bind: helper-36 had -#X leave on an approval of zeros)
            for p in group["params"]:
                torch.autograd.graph.increment_version(p)


def zero_grad(opt: Any, set_to_none: bool = True) -> None:
    """``optimizer.zero_grad(set_to_none)``, of a plain bool (helper-69: a pointer there was read as one, a bit of
    ``#X`` per call, told by whether the gradients were then None)."""
    if not isinstance(opt, Optimizer):
        raise TypeError(f"zero_grad() needs an optimizer, got {type(opt).__name__}")
    opt.zero_grad(set_to_none=flag(set_to_none, "zero_grad(set_to_none=...)"))


def settings(obj: Any) -> str:
    """What a client reads of an optimizer or a scheduler: each parameter group's options without its
    parameters (``opt.param_groups``), and a scheduler's ``get_last_lr()`` and ``last_epoch``, as JSON.
    All of it follows from what the client chose (the options it gave, plain numbers: :func:`_options`)
    and how many steps it took, never from the values trained on: the client reads it in the op's reply,
    without a get (see ``provenance.VALUES_OF_CLIENT``)."""
    if isinstance(obj, LRScheduler):
        found: Dict[str, Any] = {"last_lr": [_plain("lr", v) for v in obj.get_last_lr()],
                                 "last_epoch": int(obj.last_epoch), "groups": _groups(obj.optimizer)}
    elif isinstance(obj, Optimizer):
        found = {"groups": _groups(obj)}
    else:
        raise TypeError(f"settings() needs an optimizer or a scheduler, got {type(obj).__name__}")
    data = json.dumps(found)
    if len(data) > MAX_TEXT:  # (a few hundred characters per group)
        raise ValueError(f"the optimizer's settings take {len(data)} characters, more than {MAX_TEXT}")
    return data


def _groups(opt: Optimizer) -> list:
    return [{k: _plain(k, v) for k, v in group.items() if k != "params"} for group in opt.param_groups]


def _plain(key: str, value: Any) -> Any:
    """``value`` as JSON may carry it: None, a bool, a number or a tuple of numbers; anything else (a tensor
    torch itself put there) is refused rather than described."""
    if value is None or type(value) in _SCALARS:
        return value
    if type(value) in (tuple, list) and all(type(v) in _SCALARS for v in value):
        return list(value)
    raise TypeError(f"the optimizer's {key} is a {type(value).__name__}, which cannot be read this way")


def set_option(opt: Any, group: Any, key: Any, value: Any) -> None:
    """``opt.param_groups[group][key] = value``, for an option of its class the group has (a learning rate, a
    weight decay...), to a plain value of the same kind (a number for a number, a bool for a bool, a tuple of
    as many numbers). Refused where the change would make the optimizer keep more state than it was charged
    for when it was made (momentum turned on: see :func:`state_bytes`): a new optimizer with that option is
    charged for it. Its refusals say only what the client sent, checked plain first (never an argument's
    ``repr`` before its type is known: a pointer there would be the owner's tensor)."""
    def refuse(text: str) -> Reject:
        return Reject(ErrorCode.BAD_ARGS, text)

    if not isinstance(opt, Optimizer):
        raise refuse(f"param_groups can be set on an optimizer, not a {type(opt).__name__}")
    if type(group) is not int or type(key) is not str:
        raise refuse(f"a parameter group is named by an int and an option by a str, not a {type(group).__name__} "
                     f"and a {type(key).__name__}")
    if not 0 <= group < len(opt.param_groups):
        raise refuse(f"the optimizer has {len(opt.param_groups)} parameter groups, no group {group}")
    options, known = opt.param_groups[group], _KNOWN.get(type(opt), frozenset()) - _IMPLEMENTATION
    if key == "initial_lr" and type(value) in (int, float) and "initial_lr" not in options:
        options[key] = value  # (what a scheduler made with last_epoch=n, to resume, reads: torch sets it itself)
        return
    if key not in known | {"initial_lr"} or key not in options:
        raise refuse(f"{type(opt).__name__}'s parameter groups have no option {key[:100]!r} that can be set "
                     f"(options: {', '.join(sorted(known))})")
    old = options[key]
    if not _same_kind(old, value):
        raise refuse(f"{type(opt).__name__}'s {key} is {_kind(old)}: a value of that kind is expected, not "
                     f"{_kind(value)}")
    changed = {**{k: v for k, v in options.items() if k != "params"}, key: value}
    if _ratio(type(opt), changed) > _ratio(type(opt), options):
        raise refuse(f"setting {key}={value!r} would make this {type(opt).__name__} keep state it was not charged "
                     f"for; make a new optimizer with {key}={value!r} instead")
    options[key] = value


#: Options that choose an implementation rather than a training hyperparameter: given when an optimizer is made.
_IMPLEMENTATION = frozenset({"foreach", "fused", "capturable", "differentiable"})


def _kind(value: Any) -> str:
    if type(value) is tuple and all(type(v) in _SCALARS for v in value):
        return f"a tuple of {len(value)} numbers"
    if type(value) is bool:
        return "a bool"
    return "a number" if type(value) in (int, float) else "None" if value is None else f"a {type(value).__name__}"


def _same_kind(old: Any, value: Any) -> bool:
    """Whether ``value`` (checked plain here) may replace the option ``old``: a number a number (int or float), a
    bool a bool, a tuple of numbers one as long; an option that is None now is not set this way."""
    if type(old) is bool or type(value) is bool:
        return type(old) is type(value)
    if type(old) in (int, float):
        return type(value) in (int, float)
    if type(old) is tuple and type(value) is tuple:
        return len(old) == len(value) and all(type(v) in (int, float) for v in value)
    return False


#: The optimizers' constructors, by name (their parameters must be a client's own tensors: see ops.py).
_FACTORIES = {f"syft.optim.{n}": _optimizer_factory(c) for n, c in OPTIMIZERS.items()}
OPTIMIZER_FACTORIES = frozenset(_FACTORIES.values())
_SCHEDULER_FACTORIES = {f"syft.lr_scheduler.{n}": _scheduler_factory(c) for n, c in SCHEDULERS.items()}
SCHEDULER_FACTORIES = frozenset(_SCHEDULER_FACTORIES.values())


#: The ops that take an optimizer or a scheduler: any other op given one is refused before it runs
#: (:func:`check_handles`).
TAKE_HANDLES = frozenset({step, zero_grad, settings, set_option, *SCHEDULER_FACTORIES})


def check_handles(fn: Any, op: str, used: List["Entry"]) -> None:
    """Refuse an optimizer or a scheduler as an argument of an op other than those that take one: torch's
    functions have no use for it, and the worker cannot trace an op given one (helper-68: ``F.nll_loss(...,
    size_average=opt)`` over the owner's data ran untraced, past the failure budget and past the check that an op
    over a withheld size runs whatever that size: a withheld row count read exactly in 9 failures). And those ops
    take their handle and plain values only, no other object of the worker's (helper-69: ``zero_grad(opt,
    set_to_none=x[i, j] > t)``, untraced for its handle, read a value of ``#X`` as a bool: all of it, no failure)."""
    if fn in TAKE_HANDLES:
        for entry in used:
            if not isinstance(entry.tensor, (Optimizer, LRScheduler)):
                kind = "a tensor" if isinstance(entry.tensor, torch.Tensor) else "a model"
                raise Reject(ErrorCode.BAD_ARGS, f"{op} takes an optimizer or a scheduler and plain values, not "
                                                 f"{kind} ({entry.label})")
        return
    for entry in used:
        if isinstance(entry.tensor, (Optimizer, LRScheduler)):
            kind = "a scheduler" if isinstance(entry.tensor, LRScheduler) else "an optimizer"
            raise Reject(ErrorCode.BAD_ARGS, f"{op} cannot take {kind} ({entry.label}); only its own methods "
                                             "(step(), zero_grad(), its options, a scheduler of it) do")


def ops() -> Dict[str, Callable]:
    table: Dict[str, Callable] = {"syft.optim_step": step, "syft.optim_zero_grad": zero_grad,
                                  "syft.optim_settings": settings, "syft.optim_set": set_option}
    table.update(_FACTORIES)
    table.update(_SCHEDULER_FACTORIES)
    return table


#: State bytes per parameter byte, by optimizer class and group options (measured once each, see state_bytes).
_ratios: Dict[Tuple[type, str], float] = {}
_ratios_lock = threading.Lock()
#: The ratio assumed where a measurement fails: the most any allowed optimizer keeps (Adam with amsgrad,
#: RMSprop centered with momentum: three buffers the size of the parameter).
_MOST = 3.0


def state_bytes(opt: Optimizer) -> int:
    """The bytes of state ``opt`` holds, or will hold once it has stepped: what its client is charged for it
    (its parameters and their gradients are charged with the tensors or model they belong to)."""
    will = 0
    for group in opt.param_groups:
        params = group["params"]
        will += int(_ratio(type(opt), group) * sum(p.numel() * p.element_size() for p in params))
    return max(will, _held(opt))


def scheduler_bytes(s: LRScheduler) -> int:
    """What a client is charged for a scheduler itself: its lists and maps (a MultiStepLR's milestones, each
    group's rates) at 64 bytes an item, and a kilobyte (2,000 schedulers of 1,024 milestones each held 160 MB,
    charged nothing: a probe)."""
    return 1024 + 64 * sum(len(v) for v in vars(s).values() if isinstance(v, (list, tuple, dict)))


def _held(opt: Optimizer) -> int:
    """The bytes of the state tensors ``opt`` holds now."""
    return sum(v.numel() * v.element_size() for state in opt.state.values() for v in state.values()
               if isinstance(v, torch.Tensor))


def probe_params(n: int, numel: int) -> list:
    """``n`` small parameters with gradients, to measure an optimizer class on (not the client's)."""
    params = [torch.zeros(numel, requires_grad=True) for _ in range(n)]
    for p in params:
        p.grad = torch.ones(numel)
    return params


def _ratio(cls: type, group: Dict[str, Any]) -> float:
    """State bytes per parameter byte of ``cls`` with ``group``'s options, measured on a few small
    parameters after one step (so Adam's ``step`` counters, a few bytes each, are counted too)."""
    names = _KNOWN.get(cls)
    options = {k: v for k, v in group.items() if k != "params" and (names is None or k in names)}
    # what decides the state is which options are on (momentum, amsgrad, centered), not their values: keyed
    # so, a client varying a learning rate cannot grow this table or make the worker probe again
    key = (cls, repr(sorted((k, v if type(v) is bool or v is None else bool(v) if type(v) in (int, float) else
                             type(v).__name__) for k, v in options.items())))
    with _ratios_lock:
        known = _ratios.get(key)
        if known is None:
            params = probe_params(4, 1024)
            try:
                probe = cls([{**options, "params": params}])
                with torch.no_grad():
                    probe.step()
                known = _held(probe) / sum(p.numel() * p.element_size() for p in params)
            except Exception:  # (options this probe cannot take: the most any allowed optimizer keeps)
                known = _MOST
            _ratios[key] = known
        return known


#: Objects other than tensors that an op may leave in a worker's store.
STORED_TYPES = (torch.Tensor, torch.nn.Module, Optimizer, LRScheduler)

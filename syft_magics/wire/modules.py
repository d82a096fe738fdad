"""How an ``nn.Module`` crosses the wire: an architecture spec of allowlisted standard layers, no code.

``describe(module)`` turns a module built only from standard torch layers and containers into plain
data (type names and constructor arguments: ints, floats, bools, strings, tuples); ``build(spec)``
turns that back into a module, constructing only types on :data:`MODULE_TYPES`. Nothing of the
client's code is ever executed by the worker. A module that cannot be described this way (a custom
``nn.Module`` subclass, hooks, an exotic argument) raises :class:`NotStandard`; the client then keeps
its ``forward`` locally and runs each op on pointer parameters (see ``scientist/remote_module.py``).
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Callable, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

_NAMES = """
Linear Bilinear Identity Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d BatchNorm1d BatchNorm2d
BatchNorm3d LayerNorm GroupNorm InstanceNorm1d InstanceNorm2d LocalResponseNorm Dropout Dropout1d Dropout2d
AlphaDropout ReLU ReLU6 LeakyReLU PReLU ELU SELU CELU GELU SiLU Mish Tanh Sigmoid Softmax LogSoftmax Softmin
Softplus Softsign Hardtanh Hardswish Hardsigmoid Tanhshrink Threshold Flatten Unflatten MaxPool1d MaxPool2d
AvgPool1d AvgPool2d AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveMaxPool1d AdaptiveMaxPool2d Embedding
RNN LSTM GRU MultiheadAttention TransformerEncoderLayer Sequential ModuleList ModuleDict
"""
#: The module types a worker will construct, by name.
MODULE_TYPES: Dict[str, type] = {name: getattr(nn, name) for name in _NAMES.split()}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
#: Bounds on what a spec may ask a worker to construct: modules as built, the layers inside a layer counted
#: (a TransformerEncoderLayer is 9), and the layers of an RNN, LSTM or GRU (their constructor's time grows with the
#: square of them: 2,048 bidirectional took 2 s) before it is built. A delivered model is rebuilt on the receiving
#: worker's serving thread: 9,999 TransformerEncoderLayers held it 10.7 s under the former bound of 10,000
#: modules as the spec counted them (helper-46); 2,000 modules as built take 0.3 s at most.
MAX_MODULES = 2_000
MAX_DEPTH = 32
MAX_RNN_LAYERS = 64
#: The longest name of a container's child (helper-60: a 4 MB name was kept with the model and in every event)
MAX_CHILD_NAME = 64
_SKIPPED_ARGS = {"self", "device", "dtype"}
_ACTIVATIONS = {F.relu: "relu", F.gelu: "gelu"}


class NotStandard(ValueError):
    """The module is not made only of standard layers the worker can rebuild from a spec."""


def _rnn_args(m: nn.RNNBase) -> Dict[str, Any]:
    args = dict(input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers, bias=m.bias,
                batch_first=m.batch_first, dropout=float(m.dropout), bidirectional=m.bidirectional)
    if isinstance(m, nn.LSTM):
        args["proj_size"] = m.proj_size
    if type(m) is nn.RNN:
        args["nonlinearity"] = m.nonlinearity
    return args


def _mha_args(m: nn.MultiheadAttention) -> Dict[str, Any]:
    return dict(embed_dim=m.embed_dim, num_heads=m.num_heads, dropout=float(m.dropout),
                bias=m.in_proj_bias is not None, add_bias_kv=m.bias_k is not None, add_zero_attn=m.add_zero_attn,
                kdim=m.kdim, vdim=m.vdim, batch_first=m.batch_first)


def _encoder_layer_args(m: nn.TransformerEncoderLayer) -> Dict[str, Any]:
    activation = _ACTIVATIONS.get(m.activation)
    if activation is None:
        raise NotStandard("TransformerEncoderLayer with an activation other than relu or gelu")
    return dict(d_model=m.self_attn.embed_dim, nhead=m.self_attn.num_heads, dim_feedforward=m.linear1.out_features,
                dropout=float(m.dropout.p), activation=activation, layer_norm_eps=m.norm1.eps,
                batch_first=m.self_attn.batch_first, norm_first=m.norm_first, bias=m.linear1.bias is not None)


_SPECIAL_ARGS: Dict[type, Callable[[Any], Dict[str, Any]]] = {
    nn.RNN: _rnn_args, nn.LSTM: _rnn_args, nn.GRU: _rnn_args, nn.MultiheadAttention: _mha_args,
    nn.TransformerEncoderLayer: _encoder_layer_args,
}


def _plain(value: Any, where: str) -> Any:
    """``value`` if it is plain data the wire carries (tuples and lists of scalars included)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (tuple, list, torch.Size)):
        return tuple(_plain(v, where) for v in value)
    raise NotStandard(f"{where} is a {type(value).__name__}, which a spec cannot carry")


def _generic_args(m: nn.Module) -> Dict[str, Any]:
    cls = type(m)
    args: Dict[str, Any] = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in _SKIPPED_ARGS or p.name.startswith("_") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not hasattr(m, p.name):
            continue  # not kept by the module (e.g. PReLU's init): the default, then the state dict
        value = getattr(m, p.name)
        if isinstance(p.default, bool) and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None  # bias=True/False is kept as the bias tensor or None
        args[p.name] = _plain(value, f"{cls.__name__}.{p.name}")
    return args


def describe(module: nn.Module) -> Dict[str, Any]:
    """The spec of ``module``; raises :class:`NotStandard` if it is not made only of standard layers."""
    if len(list(module.named_modules(remove_duplicate=False))) != len(list(module.modules())) or \
            len(list(module.named_parameters(remove_duplicate=False))) != len(list(module.parameters())):
        raise NotStandard(f"{type(module).__name__} uses a layer or a weight in two places (tied weights), which a "
                          "spec of layers cannot say")
    spec = _describe(module, "model")
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    if frozen:
        spec["frozen"] = frozen
    rebuilt = build(spec)
    if repr(rebuilt) != repr(module) or _shapes(rebuilt) != _shapes(module):
        raise NotStandard(f"{type(module).__name__} does not rebuild identically from its constructor arguments")
    return spec


def _describe(m: nn.Module, where: str) -> Dict[str, Any]:
    cls = type(m)
    if MODULE_TYPES.get(cls.__name__) is not cls:
        raise NotStandard(f"{where} is a {cls.__module__}.{cls.__qualname__}, not a standard torch layer")
    if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks:
        raise NotStandard(f"{where} has hooks (client code)")
    spec: Dict[str, Any] = {"type": cls.__name__, "training": m.training}
    if isinstance(m, _CONTAINERS):
        spec["children"] = [[name, _describe(child, f"{where}.{name}")] for name, child in m._modules.items()]
    else:
        spec["args"] = _SPECIAL_ARGS.get(cls, _generic_args)(m)
    return spec


def _shapes(m: nn.Module) -> Dict[str, Any]:
    return {k: (tuple(v.shape), v.dtype) for k, v in m.state_dict().items()}


def build(spec: Any, device: str = "meta") -> nn.Module:
    """The module ``spec`` describes, with uninitialised (``meta``) weights unless ``device`` says otherwise.

    Only :data:`MODULE_TYPES` are constructed, with plain-data arguments; size and depth are bounded.
    """
    count = [0]
    with torch.device(device):
        module = _build(spec, 0, count)
    frozen = spec.get("frozen", [])
    params = dict(module.named_parameters())
    if not isinstance(frozen, list) or not all(isinstance(n, str) and n in params for n in frozen):
        raise ValueError("a spec's frozen parameters are a list of the model's parameter names")
    for name in frozen:  # (requires_grad=False where the client froze them: an optimizer must not train them)
        params[name].requires_grad_(False)
    return module


def _build(spec: Any, depth: int, count: list) -> nn.Module:
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError("a module spec is a map with a 'type' name")
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_MODULES:
        raise ValueError(f"a module spec may nest {MAX_DEPTH} deep and hold {MAX_MODULES} modules at most")
    cls = MODULE_TYPES.get(spec["type"])
    if cls is None:
        raise ValueError(f"module type {spec['type']!r} is not on the worker's list of standard layers")
    if issubclass(cls, _CONTAINERS):
        children = spec.get("children")
        if not isinstance(children, list) or not all(
                isinstance(c, (list, tuple)) and len(c) == 2 and isinstance(c[0], str) for c in children):
            raise ValueError(f"{spec['type']} spec needs a list of [name, spec] children")
        if any(len(c[0]) > MAX_CHILD_NAME for c in children):  # (names are kept with the model, uncharged)
            raise ValueError(f"a module's children have names of {MAX_CHILD_NAME} characters at most")
        built = [(name, _build(child, depth + 1, count)) for name, child in children]
        if cls is nn.Sequential:
            module: nn.Module = nn.Sequential(OrderedDict(built))
        elif cls is nn.ModuleList:
            module = nn.ModuleList([m for _, m in built])
        else:
            module = nn.ModuleDict(OrderedDict(built))
    else:
        args = spec.get("args") or {}
        if not isinstance(args, dict) or not all(isinstance(k, str) and not k.startswith("_") for k in args):
            raise ValueError(f"{spec['type']} spec needs a map of constructor arguments")
        for name, value in args.items():
            _plain(value, f"{spec['type']}.{name}")
        if issubclass(cls, nn.RNNBase):
            layers = args.get("num_layers", 1)
            if type(layers) is not int or not 0 < layers <= MAX_RNN_LAYERS:
                raise ValueError(f"{spec['type']} may have 1 to {MAX_RNN_LAYERS} layers, not {layers!r}")
        module = cls(**args)  # type: ignore[assignment]
        count[0] += sum(1 for _ in module.modules()) - 1  # (the layers inside it)
        if count[0] > MAX_MODULES:
            raise ValueError(f"a module spec may hold {MAX_MODULES} modules at most (the layers inside each "
                             "counted)")
    module.train(bool(spec.get("training", True)))
    return module


def export_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    """A copy of ``module``'s state dict (what leaves a worker when a model is fetched)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def load(spec: Any, state: Dict[str, torch.Tensor]) -> nn.Module:
    """A real module from ``spec`` and ``state``: shapes are checked on ``meta`` before any memory is used."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError("a model's state is a map of names to tensors")
    module = build(spec)
    expected = _shapes(module)
    given = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    if expected != given:
        missing = sorted(set(expected) - set(given))
        extra = sorted(set(given) - set(expected))
        wrong = sorted(k for k in set(expected) & set(given) if expected[k] != given[k])
        raise ValueError(f"the state does not fit the architecture (missing {missing}, unexpected {extra}, "
                         f"wrong shape or dtype {wrong})")
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        module.load_state_dict(state, strict=True)  # copies: the module never aliases the tensors it was given
    return module

"""RemoteModule: a pointer to a model whose weights live on a worker.

``client.send(module)`` takes one of two paths, and says which in ``remote.path``:

* ``"worker"``: the module is made only of standard torch layers and containers
  (:data:`syft_magics.wire.modules.MODULE_TYPES`). Its architecture (type names and constructor
  arguments) and ``state_dict`` travel as plain data in one message; the worker rebuilds it, never
  running client code, and ``remote(x)`` is one op that runs the whole forward there.
* ``"client"``: anything else (a custom ``nn.Module`` subclass defined in the notebook). Each
  parameter and buffer is sent as a tensor; a copy of the module is kept here with pointers in place
  of its weights, so its ``forward`` runs on the client and every torch op inside it runs remotely.

Both give the same results (a test checks it). ``parameters()`` and ``state_dict()`` are pointers
(to the live weights on the worker, ready for ``client.optim``); ``get()`` returns a local module with
the trained weights, as the owner's policy allows.
"""
from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Set, Tuple, cast

import torch
import torch.nn as nn
from torch.nn.modules.module import _IncompatibleKeys

from ..errors import OpNotAllowed
from ..wire import modules as spec_format
from . import model_standins
from .pointer import PointerTensor

if TYPE_CHECKING:
    from .client import Client

_numbers = itertools.count(1)


class RemoteModule:
    """A model on a worker; call it on pointers like the local module."""

    def __init__(self, client: "Client", module: nn.Module) -> None:
        _check_sendable(module)
        self._client = client
        self._number = next(_numbers)
        self._param_names = [n for n, _ in module.named_parameters()]
        self._names: List[str] = self._param_names + [n for n, _ in module.named_buffers()]
        try:
            self._spec = spec_format.describe(module)
        except spec_format.NotStandard as exc:
            self.path = "client"
            self.why = str(exc)
            self._send_parts(module)
        else:
            self.path = "worker"
            self.why = "made only of standard torch layers"
            self._send_whole(module)

    # -- sending ------------------------------------------------------------------------------
    def _send_whole(self, module: nn.Module) -> None:
        self._meta = spec_format.build(self._spec)  # for result shapes, without asking the worker
        state = {k: v.detach() for k, v in module.state_dict().items()}
        standins = [torch.empty(0, device="meta")] + [
            torch.empty(t.shape, dtype=t.dtype, device="meta", requires_grad=t.requires_grad)
            for t in self._tensors_of(self._meta)]

        def build_standin(spec: Any, state: Any, names: Any) -> tuple:
            return tuple(standins)

        made = self._client.run(build_standin, "syft.build_module", (self._spec, state, list(self._names)), {})
        self._handle: PointerTensor = made[0]
        self._client.untrack(self._handle)  # the model's handle is not a tensor to list
        self._pointers: Dict[str, PointerTensor] = dict(zip(self._names, made[1:]))
        self._arch = repr(self._spec)  # (its forward's stand-in is shared by models of one architecture)
        self._modes = model_standins.modes(self._meta)

    def _tensors_of(self, module: nn.Module) -> List[torch.Tensor]:
        tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        return [tensors[n] for n in self._names]

    def _send_parts(self, module: nn.Module) -> None:
        recurrent = [n for n, m in module.named_modules() if isinstance(m, nn.RNNBase)]
        if recurrent:
            # their fused kernels take flat weight lists that cannot be pointers (a clear error, not a late one)
            raise NotImplementedError(
                f"{type(module).__name__} is a custom module holding recurrent layers ({', '.join(recurrent)}): "
                "their forward cannot run on the client over pointers. Send the recurrent layer as a standard "
                f"module (client.send(nn.LSTM(...))) or build the model from standard layers only ({self.why})")
        self._template = copy.deepcopy(module)  # a local copy, for get()
        shell = copy.deepcopy(module)
        sent: Dict[int, PointerTensor] = {}  # a weight used in two places (tied) is sent once, one pointer in both
        for owner, kind, name, tensor in _slots(shell):
            ptr = sent.get(id(tensor))
            if ptr is None:
                grad = kind == "_parameters" and tensor.requires_grad
                ptr = sent[id(tensor)] = self._client.send(tensor.detach().requires_grad_(grad))
            getattr(owner, kind)[name] = ptr
        self._pointers = dict(zip(self._slot_names(shell), (cast(PointerTensor, t) for _, _, _, t in _slots(shell))))
        self._shell = shell
        # the weights, grouped on the worker so that get() fetches them as one model (the owner's kind="model")
        names = self.move_names
        self._handle = self._client.run(_handle_standin, "syft.model_weights",
                                        (names, *[self._pointers[n] for n in names]), {})
        self._client.untrack(self._handle)

    @staticmethod
    def _slot_names(module: nn.Module) -> List[str]:
        return [f"{prefix}{'.' if prefix else ''}{name}" for prefix, m in module.named_modules()
                for kind in ("_parameters", "_buffers") for name, t in getattr(m, kind).items() if t is not None]

    # -- using ----------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.path == "client":
            out = self._shell(*args, **kwargs)
            self._keep_reassigned()
            return out
        # (the meta copy in this model's state: its layers' modes, which parameters require grad now)
        state = (self._modes, tuple(self._pointers[n].requires_grad for n in self._param_names))
        return self._client.run(model_standins.standin(self._arch, state, self._meta), "syft.module_call",
                                (self._handle, *args), kwargs)

    forward = __call__

    def _keep_reassigned(self) -> None:
        """A custom forward that reassigns a buffer or a parameter (``self.mean = 0.9 * self.mean + ...``) left the new
        tensor in the client's copy only, and ``get()``, ``state_dict()`` and ``fedavg`` read the worker's model, which
        kept the old one (helper-77). Its value is copied into the model's own tensor on the worker (an op like any
        other, under ``no_grad``), and the model keeps that tensor."""
        for prefix, m in self._shell.named_modules():
            for kind in ("_parameters", "_buffers"):
                slots = getattr(m, kind)
                for name, t in list(slots.items()):
                    kept = self._pointers.get(f"{prefix}{'.' if prefix else ''}{name}")
                    if kept is None or t is kept:
                        continue
                    if not isinstance(t, torch.Tensor) or t.dtype != kept.dtype or t.shape != kept.shape:
                        what = "a tensor of another shape or dtype" if isinstance(t, torch.Tensor) else type(t).__name__
                        raise TypeError(f"the forward set {prefix or 'the model'}'s {name} to {what}: a remote "
                                        "model's weights keep their shape and dtype (write into them, or send a "
                                        "model built that way)")
                    with torch.no_grad():
                        kept.copy_(t)
                    slots[name] = kept

    def train(self, mode: bool = True) -> "RemoteModule":
        """Training mode on the worker (dropout, batch statistics), as ``nn.Module.train``."""
        if self.path == "client":
            self._shell.train(mode)
        else:
            self._meta.train(mode)
            self._modes = model_standins.modes(self._meta)
            self._client.run(_none, "syft.module_train", (self._handle, bool(mode)), {})
        return self

    def _evaluation(self) -> "RemoteModule":
        """Evaluation mode on the worker, as ``nn.Module.eval``."""
        return self.train(False)

    eval = _evaluation

    @property
    def _here(self) -> nn.Module:
        """The local stand-in that follows the remote model's modes: its shell (client path) or meta copy."""
        return self._shell if self.path == "client" else self._meta

    @property
    def training(self) -> bool:
        return self._here.training

    def to(self, device: Any) -> "RemoteModule":
        """Move the model on the worker, within the devices it allows (the CPU by default)."""
        if isinstance(device, torch.dtype):
            raise NotImplementedError("RemoteModule.to(dtype) is not supported; send the model in that dtype")
        dev = torch.device(device)
        if dev.type not in self._client.devices:
            raise OpNotAllowed(f"{self._client.name} allows the devices {', '.join(self._client.devices)}, "
                               f"not {dev}")
        if self.path == "worker":
            self._client.run(_none, "syft.module_to", (self._handle, str(dev)), {})
        else:
            for ptr in self._pointers.values():
                ptr.data = ptr.to(dev, copy=True)  # in place on the worker: the optimizer keeps its parameters
        return self

    def parameters(self) -> Iterator[PointerTensor]:
        """Pointers to the model's parameters on the worker (for ``client.optim``), an iterator as torch's."""
        return iter([p for _, p in self.named_parameters()])

    def named_parameters(self) -> Iterator[Tuple[str, PointerTensor]]:
        return iter([(n, self._pointers[n]) for n in self._param_names])

    def buffers(self) -> Iterator[PointerTensor]:
        return iter([p for _, p in self.named_buffers()])

    def named_buffers(self) -> Iterator[Tuple[str, PointerTensor]]:
        params = set(self._param_names)
        return iter([(n, p) for n, p in self._pointers.items() if n not in params])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Each parameter's gradient set to None (or zeroed) on the worker, as ``nn.Module.zero_grad``."""
        with torch.no_grad():
            for p in self.parameters():
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def requires_grad_(self, requires_grad: bool = True) -> "RemoteModule":
        """Freeze (or unfreeze) every parameter on the worker, as ``nn.Module.requires_grad_``."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        found = _named(self._pointers, name)
        if found is not None:  # remote.weight, remote.fc1.weight: pointers to the worker's tensors
            return found
        raise AttributeError(f"a RemoteModule has no {name!r}: it offers calling it, the train and eval modes, "
                             "parameters(), named_parameters(), buffers(), state_dict() (pointers), its parameters "
                             "and buffers by name (remote.fc1.weight), zero_grad(), requires_grad_(), "
                             "load_state_dict(), to(device), get(), move(); for the rest (calling one of its layers, "
                             "modules(), a dtype cast), use your local model and send it again (client.send(model))")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in ("path", "why"):  # (its own state, set as it is made)
            object.__setattr__(self, name, value)
            return
        raise AttributeError(_setting(f"remote.{name}", name))

    def __getitem__(self, index: Any) -> Any:
        raise TypeError("a RemoteModule's layers are not pointers of their own: call the whole model, or send "
                        "the layer you need (client.send(model[i]))")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a RemoteModule cannot be pickled, saved or copied: remote.get() first (the owner's policy "
                        "decides), then torch.save(model.state_dict(), ...)")

    def state_dict(self) -> Dict[str, PointerTensor]:
        """Pointers to every parameter and buffer (the live tensors on the worker)."""
        return dict(self._pointers)

    def load_state_dict(self, state_dict: Dict[str, Any], strict: bool = True) -> Any:
        """Copy ``state_dict``'s tensors (local ones, or pointers on this worker) into the remote parameters and
        buffers, in place, as ``nn.Module.load_state_dict`` (an optimizer over them keeps them): e.g. a
        federated round's average sent back to each worker. Checked here first, as torch checks: missing or
        unexpected keys (with ``strict``) and shapes; then one pipelined copy per tensor."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict takes a mapping of names to tensors, not {type(state_dict).__name__}")
        transient = _non_persistent(self._here)  # (buffers torch's state_dict leaves out: never missing)
        missing = [k for k in self._pointers if k not in state_dict and k not in transient]
        unexpected = [k for k in state_dict if k not in self._pointers]
        if strict and (missing or unexpected):
            raise RuntimeError(f"Error(s) in loading state_dict for the RemoteModule: missing key(s) {missing}, "
                               f"unexpected key(s) {unexpected}")
        for name, value in state_dict.items():
            ptr = self._pointers.get(name)
            if ptr is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"state_dict[{name!r}] is a {type(value).__name__}, not a tensor")
            if tuple(value.shape) != tuple(ptr.shape):
                raise RuntimeError(f"size mismatch for {name}: copying a param with shape {tuple(value.shape)}, "
                                   f"the parameter in the remote model has shape {tuple(ptr.shape)}")
        with torch.no_grad():
            for name, ptr in self._pointers.items():
                if name in state_dict:
                    ptr.copy_(state_dict[name])
        return _IncompatibleKeys(missing, unexpected)

    def get(self, timeout: Any = None) -> nn.Module:
        """A local module with the worker's current weights (the owner's policy decides), in the training mode
        and with the frozen parameters (``requires_grad``) the remote one has now."""
        state = cast(Dict[str, torch.Tensor], self._client.get(self._handle, timeout=timeout))
        if self.path == "worker":
            module = spec_format.build(self._spec, device="cpu")
        else:
            module = copy.deepcopy(self._template)
            state = _with_tied(module, state)
        for mine, theirs in zip(module.modules(), self._here.modules()):
            mine.training = theirs.training
            if self.path != "worker":  # (a custom forward runs here: what it set, e.g. self.steps += 1, helper-80)
                for key, value in vars(theirs).items():
                    if not key.startswith("_") and key != "training" and _plain(value):
                        setattr(mine, key, copy.deepcopy(value))
        transient = _non_persistent(module)  # (not in torch's state_dict: set as they are, helper-80)
        module.load_state_dict({k: v for k, v in state.items() if k not in transient})
        for name in transient & set(state):
            owner, _, buffer = name.rpartition(".")
            module.get_submodule(owner)._buffers[buffer] = state[name]
        for name, param in module.named_parameters():
            param.requires_grad_(self._pointers[name].requires_grad)
        return module

    @property
    def location(self) -> str:
        return self._client.name

    @property
    def client(self) -> "Client":
        return self._client

    @property
    def handle(self) -> PointerTensor:
        """The pointer to the model object itself on the worker (what a get or a move asks for)."""
        return self._handle

    @property
    def move_names(self) -> List[str]:
        """The names of the tensors a move carries, in the order the model's handle holds them (a tied weight
        once, under its first name)."""
        if self.path == "worker":
            return list(self._names)
        aliases = self.aliases
        return [n for n in self._pointers if n not in aliases]

    @property
    def aliases(self) -> Dict[str, str]:
        """The names of tied weights after their first (client path): each with that first name."""
        return {name: group[0] for group in _tied(self._pointers) for name in group[1:]}

    def move(self, target: "Client", timeout: Any = None) -> "RemoteModule":
        """Send this model from its worker straight to ``target``'s (never through here); returns it there.
        Both owners' policies apply (see :mod:`syft_magics.scientist.moves`)."""
        from .moves import move

        return move(self, target, timeout=timeout)

    def moved_to(self, target: "Client", ids: List[bytes]) -> "RemoteModule":
        """This model's twin on ``target``, whose worker now holds it under ``ids`` (the handle, then
        each tensor of :attr:`move_names`)."""
        from .moves import moved_pointers

        names = self.move_names
        handle = PointerTensor(target, ids[0], (0,), torch.float32, owned=True)
        return self.twin(target, handle, dict(zip(names, moved_pointers(target, [self._pointers[n] for n in names],
                                                                         ids[1:]))))

    def twin(self, client: "Client", handle: PointerTensor, named: Dict[str, PointerTensor]) -> "RemoteModule":
        """A RemoteModule of this architecture for the model ``handle`` on ``client``'s worker, whose tensors
        are ``named`` (by :attr:`move_names`): a moved model, or an average made there."""
        twin = RemoteModule.__new__(RemoteModule)
        twin._client, twin._number, twin.path, twin.why = client, next(_numbers), self.path, self.why
        twin._param_names, twin._names = list(self._param_names), list(self._names)
        twin._handle = handle
        client.untrack(handle)
        aliases = self.aliases
        twin._pointers = {n: named[aliases.get(n, n)] for n in self._pointers}
        if self.path == "worker":
            twin._spec, twin._arch = self._spec, self._arch
            twin._meta = copy.deepcopy(self._meta)
            twin._modes = self._modes
        else:
            twin._template = copy.deepcopy(self._template)
            shell = copy.deepcopy(self._template)
            for full, (owner, kind, name, _) in zip(self._slot_names(shell), _slots(shell)):
                getattr(owner, kind)[name] = twin._pointers[full]
            shell.train(self.training)
            twin._shell = shell
        return twin

    def __repr__(self) -> str:
        arch = repr(self._meta if self.path == "worker" else self._shell).replace("\n", "\n  ")
        return f"RemoteModule(location={self._client.name}, path={self.path!r},\n  {arch})"


def _check_sendable(module: nn.Module) -> None:
    """Refuse, at ``send``, what could only fail later inside torch's code (helper-62): lazy weights, backward
    hooks (torch's autograd on the client never runs a pointer's backward), the deprecated hook-based
    ``weight_norm`` (whose weight torch itself cannot copy)."""
    from torch.nn.utils.weight_norm import WeightNorm

    for path, m in module.named_modules():
        where = f"{path} ({type(m).__name__})" if path else type(m).__name__
        if any(nn.parameter.is_lazy(t) for t in itertools.chain(m._parameters.values(), m._buffers.values())):
            raise ValueError(f"{where} has lazy weights, not made yet: give its sizes (nn.Linear(in, out)), or "
                             "run the model once here on a batch of the right shape, then send it")
        if m._backward_hooks or m._backward_pre_hooks:
            raise NotImplementedError(f"{where} has a backward hook (register_full_backward_hook): a model's "
                                      "backward runs on the worker, where client code never runs; remove it")
        if any(isinstance(h, WeightNorm) for h in m._forward_pre_hooks.values()):
            raise NotImplementedError(f"{where} uses torch.nn.utils.weight_norm (deprecated; torch cannot copy "
                                      "it): use torch.nn.utils.parametrizations.weight_norm, which can be sent")


def _named(pointers: Dict[str, PointerTensor], path: str) -> Any:
    """The pointer to the parameter or buffer named ``path`` (``fc1.weight``), a :class:`_Layer` for a prefix of
    such names (``fc1``), or None."""
    if path in pointers:
        return pointers[path]
    prefix = path + "."
    return _Layer(pointers, path) if any(n.startswith(prefix) for n in pointers) else None


class _Layer:
    """``remote.fc1``: the way to its parameters and buffers by name (``remote.fc1.weight``), not a model of its
    own (the worker holds the whole model as one object)."""

    def __init__(self, pointers: Dict[str, PointerTensor], path: str) -> None:
        self._pointers, self._path = pointers, path

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        found = _named(self._pointers, f"{self._path}.{name}")
        if found is None:
            raise AttributeError(f"{self._path} of the remote model has no parameter or buffer {name!r}")
        return found

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        raise AttributeError(_setting(f"remote.{self._path}.{name}", name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self._path} is a layer of a model that lives on the worker as one object: call the whole "
                        f"model, or send the layer you need (client.send(model.{self._path}))")

    def __repr__(self) -> str:
        names = [n for n in self._pointers if n.startswith(self._path + ".")]
        return f"<layer {self._path} of a remote model: {', '.join(names)}>"


def _none(*args: Any, **kwargs: Any) -> None:
    return None


def _handle_standin(*args: Any, **kwargs: Any) -> torch.Tensor:
    return torch.empty(0, device="meta")


def _tied(named: Dict[str, Any]) -> List[List[str]]:
    """The names of ``named`` grouped by the object they name, in order (a group of two or more: tied)."""
    groups: Dict[int, List[str]] = {}
    for name, obj in named.items():
        groups.setdefault(id(obj), []).append(name)
    return list(groups.values())


def _with_tied(module: nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` with the names of ``module``'s tied weights (a layer used twice, a weight shared by two layers)
    filled from the name it was sent under."""
    out = dict(state)
    for group in _tied(module.state_dict(keep_vars=True)):
        given = next((n for n in group if n in state), None)
        if given is not None:
            out.update({n: state[given] for n in group if n not in state})
    return out


def _slots(module: nn.Module) -> List[Tuple[nn.Module, str, str, torch.Tensor]]:
    return [(m, kind, name, t) for _, m in module.named_modules() for kind in ("_parameters", "_buffers")
            for name, t in getattr(m, kind).items() if t is not None]


def send_module(client: "Client", module: nn.Module) -> RemoteModule:
    """``client.send(module)``: see the module docstring for the two paths."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
    return RemoteModule(client, module)


def _setting(what: str, name: str) -> str:
    """Why ``what = ...`` is refused (helper-77: it set an attribute of this wrapper and changed nothing remotely)."""
    if name == "training":
        return f"{what} cannot be set on a remote model: use remote.train(False) or remote.eval() (the worker's modes)"
    return (f"{what} = ... cannot change a remote model: its weights and layers live on the worker. To change a "
            f"weight's values: with torch.no_grad(): {what}.copy_(t), or remote.load_state_dict({{...}}, "
            "strict=False); to change its layers or options, change your local model and send it again "
            "(client.send(model))")


def _non_persistent(module: nn.Module) -> Set[str]:
    """The full names of ``module``'s buffers registered with ``persistent=False`` (torch's state_dict leaves them
    out; a remote model's pointers include them)."""
    return {f"{prefix}.{name}" if prefix else name for prefix, m in module.named_modules()
            for name in m._non_persistent_buffers_set}


def _plain(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is plain Python data (numbers, strings, and lists, tuples and dicts of them): what a custom
    forward run here may keep in its module's attributes, carried to the module ``get()`` returns."""
    if type(value) in (int, float, bool, str, complex, type(None)):
        return True
    if depth >= 8:
        return False
    if type(value) in (list, tuple):
        return all(_plain(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    if type(value) is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    return False

"""Which torch operations a worker runs: an explicit allowlist, by name.

Ops cross the wire as names such as ``"torch.add"``, ``"Tensor.__add__"``,
``"Tensor.add_"`` or ``"torch.nn.functional.relu"``. A worker looks a name up
in its :class:`Allowlist` (a copy of the standard vocabulary in
:mod:`syft_magics.wire.names`, never built from names that arrived on the wire) and refuses anything else. The owner can
extend or narrow it::

    bob.allowlist.allow("torch.fft.fft")      # a torch function by name
    bob.allowlist.allow("my_op", my_function)  # any callable, under a name
    bob.allowlist.deny("Tensor.exp")

Left out on purpose: anything that touches files, storage, devices, numpy or
raw memory (``save``, ``to``, ``cuda``, ``set_``, ``data_ptr``,
``untyped_storage``, and ``empty_like``/``new_empty``, whose uninitialised
memory may hold freed private data), and ``out=`` arguments.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Iterator, Optional

import torch

from ..wire.names import DEFAULT_TABLE as _STANDARD
from ..wire.names import is_inplace, resolve_torch_name, short_name, wire_name


def _defaults() -> Dict[str, Callable]:
    from . import aggregate, autograd, checked, models, optimizers
    from .devices import Devices
    from .schema_ops import schema_ops

    # .to() and the model builder are each worker's own (its device); these are the CPU's
    return {**schema_ops(), **_STANDARD, **autograd.ops(), **models.ops(), **optimizers.ops(), **aggregate.ops(),
            **Devices().ops(), **{f"torch.nn.init.{n}": getattr(torch.nn.init, n) for n in INITS}, **checked.ops()}


#: ``torch.nn.init``'s initialisers, in place from random draws or constants (helper-62: a newcomer's
#: ``nn.init.kaiming_uniform_(w)`` was refused); like any name ending in ``_`` they never write the owner's data.
INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
         "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")


_DEFAULT: Dict[str, Callable] = _defaults()

__all__ = ["Allowlist", "default_names", "is_inplace", "short_name", "wire_name"]


class Allowlist:
    """The ops one worker will run, name -> callable. A copy per worker, editable by its owner."""

    def __init__(self, table: Optional[Dict[str, Callable]] = None) -> None:
        self._table: Dict[str, Callable] = dict(_DEFAULT if table is None else table)

    def lookup(self, name: str) -> Optional[Callable]:
        """The callable allowed under ``name``, or None."""
        return self._table.get(name)

    def allow(self, name: str, fn: Optional[Callable] = None) -> None:
        """Allow ``name``: a dotted torch name (``"torch.fft.fft"``) resolved here, or ``fn``."""
        if fn is None:
            fn = resolve_torch_name(name)
        if not callable(fn):
            raise TypeError(f"{name!r} does not name a callable")
        self._table[name] = fn

    def deny(self, *names: str) -> None:
        """Stop allowing ``names`` (unknown names are ignored)."""
        for name in names:
            self._table.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._table))

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"<Allowlist of {len(self._table)} ops>"


#: What to use instead of ops left out on purpose, said with their refusal (helper-64: a newcomer's ``out=`` buffer
#: from ``torch.empty_like`` was refused with no way forward).
_INSTEAD = {"empty": "torch.zeros", "empty_like": "torch.zeros_like", "new_empty": "x.new_zeros",
            "empty_strided": "torch.zeros", "new_empty_strided": "x.new_zeros"}


def hint(name: str) -> str:
    """A sentence for the refusal of ``name`` where the default list leaves it out on purpose; else ``""``."""
    instead = _INSTEAD.get(name.rsplit(".", 1)[-1])
    return f" (its memory is uninitialised and may hold freed data: use {instead})" if instead else ""


def default_names() -> Iterable[str]:
    """Every name on the default allowlist, sorted (the documented list)."""
    return sorted(_DEFAULT)

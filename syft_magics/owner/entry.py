"""One object a worker holds: a tensor, a model or an optimizer, whose it is, how it was made and what it derives
from (the records :class:`~syft_magics.owner.store.ObjectStore` keeps, by id and tag)."""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..display import dtype_text, short_id
from .blocks import version_of
from .provenance import CLIENT, Provenance

OWNER = "owner"
_serials = itertools.count()


def new_id() -> bytes:
    return os.urandom(16)


@dataclass
class Entry:
    """One object held by a worker."""

    id: bytes
    tensor: Any  # a tensor; a model or an optimizer built on the worker; None for a failed op
    tags: Tuple[str, ...] = ()
    origin: str = OWNER
    session: Optional[bytes] = None
    op: str = ""  # the op that made it ("" for shared or sent objects)
    inputs: Tuple[bytes, ...] = ()
    created: float = field(default_factory=time.time)
    last_access: float = field(default_factory=time.time)
    error: Optional[str] = None  # set when the op meant to create it failed
    #: writes made into it after it was made: (op, ids of the op's other inputs), in order
    history: List[Tuple[str, Tuple[bytes, ...]]] = field(default_factory=list)
    #: writes past the first ``lineage.MAX_HISTORY``, counted (see :func:`.lineage.record`)
    more_writes: int = 0
    #: the tensor's version counter when its history was last brought up to date
    seen_version: int = -1
    #: derived from whose data, and whether its shape may be told (see :mod:`syft_magics.owner.provenance`)
    provenance: Provenance = CLIENT
    #: seconds of autograd work recorded behind the tensor, for a backward's estimate (see
    #: :mod:`syft_magics.owner.train_costs`); None: none recorded (a leaf, or a graph the worker did not build)
    work: Optional[float] = None
    #: ops on the longest autograd path behind the tensor (0: none recorded), bounded (see .graphs.MAX_DEPTH)
    depth: int = 0
    #: no op may write into it: a result of an op over a withheld shape (see ``ObjectStore.charge_public``)
    read_only: bool = False
    #: what it is charged for memory of withheld size it keeps alive (a public upper bound: ``charge_public``)
    withheld_bytes: int = 0
    #: the first op that put the owner's data into it other than by training ("" if none): a model rule does not
    #: release a model whose weights carry one (see :mod:`.trained`)
    untrained: str = ""
    #: which entry it is, for as long as the worker runs (its ``id`` is its client's choice, and may be reused)
    serial: int = field(default_factory=_serials.__next__)

    def __post_init__(self) -> None:
        self.seen_version = self.version

    @property
    def version(self) -> int:
        """The tensor's version counter: it moves with every write, through any view (-1: none)."""
        return version_of(self.tensor)

    @property
    def hex(self) -> str:
        return self.id.hex()

    @property
    def label(self) -> str:
        """How the object reads in logs: its tags, else a short id."""
        return " ".join(self.tags) if self.tags else short_id(self.id)

    @property
    def kind(self) -> str:
        """``tensor``, ``model`` (an ``nn.Module`` built on the worker) or ``object`` (an optimizer...)."""
        t = self.tensor
        if t is None or isinstance(t, torch.Tensor):
            return "tensor"
        return "model" if isinstance(t, torch.nn.Module) else "object"

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.tensor.shape) if isinstance(self.tensor, torch.Tensor) else ()

    @property
    def dtype(self) -> str:
        t = self.tensor
        if isinstance(t, torch.Tensor):
            return dtype_text(t.dtype)
        return "-" if t is None else type(t).__name__

    @property
    def nbytes(self) -> int:
        t = self.tensor
        if isinstance(t, torch.Tensor):
            return t.numel() * t.element_size()
        if isinstance(t, torch.nn.Module):
            return sum(v.numel() * v.element_size() for v in t.state_dict().values())
        return 0

    def summary(self) -> Dict[str, object]:
        return {"tags": self.tags, "shape": self.shape, "dtype": self.dtype, "bytes": self.nbytes,
                "origin": self.origin, "created": self.created}

    def __repr__(self) -> str:
        return (f"Entry({self.label}, shape={self.shape}, dtype={self.dtype}, "
                f"bytes={self.nbytes}, origin={self.origin})")

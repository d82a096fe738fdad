"""Mini-batches cut on the worker: shuffle and slice remote data without seeing it.

torch's own ``DataLoader(TensorDataset(ptr_x, ptr_y), batch_size=..., shuffle=...)`` works on pointers,
but it indexes one sample at a time (one op per sample, then a ``stack``). :class:`DataLoader` here does
the same job in two ops per tensor per batch: the permutation is drawn on the worker (``randperm``, it
never leaves) and each batch is one indexing op::

    for xb, yb in syft_magics.data.DataLoader(x, y, batch_size=64, shuffle=True, seed=0):
        ...
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import torch

from .scientist.pointer import PointerTensor


def _randperm_standin(n: int, seed: Optional[int] = None) -> torch.Tensor:
    return torch.empty(n, dtype=torch.long, device="meta")


def randperm(like: PointerTensor, n: int, seed: Optional[int] = None) -> PointerTensor:
    """A random permutation of ``range(n)`` drawn on ``like``'s worker (``seed``: reproducible)."""
    if not isinstance(like, PointerTensor):
        raise TypeError("randperm needs a pointer, to know which worker draws the permutation")
    return like.client.run(_randperm_standin, "syft.randperm", (int(n), None if seed is None else int(seed)), {})


class DataLoader:
    """Batches of pointers over tensors on one worker, cut and shuffled there."""

    def __init__(self, *tensors: PointerTensor, batch_size: int = 1, shuffle: bool = False,
                 seed: Optional[int] = None, drop_last: bool = False) -> None:
        if not tensors or not all(isinstance(t, PointerTensor) for t in tensors):
            raise TypeError("DataLoader takes pointers (e.g. DataLoader(x, y, batch_size=64))")
        if len({t.client for t in tensors}) != 1:
            raise ValueError("the tensors of one DataLoader must live on one worker")
        if len({len(t) for t in tensors}) != 1:
            raise ValueError(f"the tensors differ in length: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.tensors, self.batch_size, self.shuffle, self.drop_last = tensors, batch_size, shuffle, drop_last
        self._seed = seed
        self._epoch = 0

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[PointerTensor, ...]]:
        n = len(self.tensors[0])
        perm = None
        if self.shuffle:
            seed = None if self._seed is None else self._seed + self._epoch
            perm = randperm(self.tensors[0], n, seed)
        self._epoch += 1
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            if self.drop_last and stop - start < self.batch_size:
                break
            if perm is None:
                yield tuple(t[start:stop] for t in self.tensors)  # type: ignore[misc]
            else:
                index = perm[start:stop]
                yield tuple(t[index] for t in self.tensors)  # type: ignore[misc]

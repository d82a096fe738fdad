"""Random draws over the owner's data come from a generator state of their own.

Every op of every client draws from torch's one global generator, and a client can rebuild that generator's
state from its own draws (``random_()`` of a tensor of its own, about 1,300 of them): how far any op moved it
is then known. How many draws an op takes can depend on a withheld size (``rand_like(rows)``: one per
element) or on values (``poisson(x)`` samples by rejection), so a client read every value of ``#X`` in 0.1 s
with ``rand_like(nonzero(x[i] > grid))``, without a get or a failed op (helper-31's probe, session 16). An op
over the owner's data, under a policy that withholds anything, therefore draws from a fresh state seeded
from ``os.urandom``, and leaves the global generator as it found it (:func:`apart`).

Not covered: an op of another client that runs at the same moment on another thread draws from that fresh
state too (torch's default generator is one per process, not per thread), and what it draws is not kept.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Sequence

import torch


@contextlib.contextmanager
def apart(devices: Sequence[int] = ()) -> Iterator[None]:
    """Run the block on a fresh, unpredictable state of the CPU generator (and of the CUDA ``devices``'),
    then put the state it found back."""
    cpu = torch.default_generator
    state = cpu.get_state()
    cuda = [torch.cuda.get_rng_state(d) for d in devices]
    seed = int.from_bytes(os.urandom(8), "little") >> 1
    cpu.manual_seed(seed)
    for d in devices:
        with torch.cuda.device(d):
            torch.cuda.manual_seed(seed)
    try:
        yield
    finally:
        cpu.set_state(state)
        for d, s in zip(devices, cuda):
            torch.cuda.set_rng_state(s, d)

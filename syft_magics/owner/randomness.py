"""Random draws over the owner's data come from a generator state of their own.

Every op of every client draws from torch's one global generator, and a client can rebuild that generator's
state from its own draws (``random_()`` of a tensor of its own, about 1,300 of them): how far any op moved it
is then known. How many draws an op takes can depend on a withheld size (``rand_like(rows)``: one per
element) or on values (``poisson(x)`` samples by rejection), so a client read every value of ``#X`` in 0.1 s
with ``rand_like(nonzero(x[i] > grid))``, without a get or a failed op (helper-31's probe, session 16). An op
over the owner's data, under a policy that withholds anything, therefore draws from a fresh state seeded
from ``os.urandom`` (:func:`apart`), and the global generator is put back as it was before once no such op
runs any more: ops on several threads at once all end with the state the first found, never with one drawn
from a fresh seed (a state a client could rewind to its seeding, counting the draws since).

Not covered: an op that runs at the same moment on another thread draws from such a fresh state too
(torch's default generator is one per process, not per thread), and what it draws is not kept; a client
whose op draws at least 624 numbers in that moment could rebuild that state and rewind it to its seeding.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, List, Optional, Sequence, Tuple

import torch

_lock = threading.Lock()
_active = 0
#: the states the first of the running ops found (CPU, then each CUDA device's), put back by the last
_found: Optional[Tuple[torch.Tensor, List[Tuple[int, torch.Tensor]]]] = None


@contextlib.contextmanager
def apart(devices: Sequence[int] = ()) -> Iterator[None]:
    """Run the block on a fresh, unpredictable state of the CPU generator (and of the CUDA ``devices``'); once
    no block runs any more, put back the states the first of them found."""
    global _active, _found
    seed = int.from_bytes(os.urandom(8), "little") >> 1
    with _lock:
        if _active == 0:
            _found = (torch.default_generator.get_state(), [(d, torch.cuda.get_rng_state(d)) for d in devices])
        _active += 1
        torch.default_generator.manual_seed(seed)
        for d in devices:
            with torch.cuda.device(d):
                torch.cuda.manual_seed(seed)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _found is not None:
                cpu, cuda = _found
                torch.default_generator.set_state(cpu)
                for d, state in cuda:
                    torch.cuda.set_rng_state(state, d)
                _found = None

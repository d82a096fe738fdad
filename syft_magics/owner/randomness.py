"""Random draws over the owner's data come from a generator state of their own, apart from any draw a client
can read back.

Every op of every client draws from torch's one global generator, and a client can rebuild that generator's
state from its own draws (``random_()`` of a tensor of its own, about 1,300 of them): how far any op moved it
is then known. How many draws an op takes can depend on a withheld size (``rand_like(rows)``: one per
element) or on values (``poisson(x)`` samples by rejection), so a client read every value of ``#X`` in 0.1 s
with ``rand_like(nonzero(x[i] > grid))``, without a get or a failed op (helper-31's probe, session 16).

So, under a policy that withholds anything, ops are of two sides (:func:`section`):

- an op over the owner's data (and the edge check's real runs, see :mod:`.fake_trace`) draws from a fresh
  state seeded from ``os.urandom``; such ops may run at once, and once the last ends the generator is put
  back as the first found it (never left in a state drawn from a fresh seed, which a client could rewind to
  its seeding, counting the draws since);
- any other op, whose draws its client may read back, runs only while no op of the first side runs, and
  the other way round: a client's own draws made while an op over the owner's data drew from the same fresh
  state told that op's row count exactly (helper-34's probe: 5 of 5).

A side that finds the other running waits, on a client's lane; on the serving thread it does not wait
(:class:`Busy`: the op goes to its client's lane).
"""
from __future__ import annotations

import contextlib
import threading
from typing import List, Optional, Sequence, Tuple

import torch

from ..wire.names import id_source


class Busy(Exception):
    """The other side holds the generator, and this thread must not wait (the serving thread)."""


#: fresh seeds' bytes, read from the OS 256 at a time (a system call per op over the owner's data cost its serving
#: thread 3%)
_random_bytes = id_source()
_turn = threading.Condition()
#: ops of each side running: over the owner's data, and the others
_running = {True: 0, False: 0}
#: the states the first op over the owner's data found (CPU, then each CUDA device's), put back by the last
_found: Optional[Tuple[torch.Tensor, List[Tuple[int, torch.Tensor]]]] = None
#: threads waiting for their side's turn (woken when an op of the other side ends)
_waiting = 0


class section:
    """Run the block as an op of one side (``owners``: over the owner's data, on a fresh state of the CPU
    generator and of the CUDA ``devices``'), once no op of the other side runs (``wait`` False: raise
    :class:`Busy` instead of waiting). A class, not a generator: every op over the owner's data enters one, and
    ``contextlib.contextmanager``'s machinery was most of its cost (9 us of Python per op, 7% of a guarded
    training step)."""

    __slots__ = ("owners", "devices", "wait")

    def __init__(self, owners: bool, devices: Sequence[int] = (), wait: bool = True) -> None:
        self.owners, self.devices, self.wait = owners, devices, wait

    def __enter__(self) -> None:
        global _found, _waiting
        owners, devices = self.owners, self.devices
        with _turn:
            while _running[not owners]:
                if not self.wait:
                    raise Busy()
                _waiting += 1
                try:
                    _turn.wait()
                finally:
                    _waiting -= 1
            if owners:
                if not _running[True]:
                    _found = (torch.default_generator.get_state(),
                              [(d, torch.cuda.get_rng_state(d)) for d in devices] if devices else [])
                seed = int.from_bytes(_random_bytes()[:8], "little") >> 1
                torch.default_generator.manual_seed(seed)
                for d in devices:
                    with torch.cuda.device(d):
                        torch.cuda.manual_seed(seed)
            _running[owners] += 1

    def __exit__(self, *exc: object) -> None:
        global _found
        with _turn:
            _running[self.owners] -= 1
            if self.owners and not _running[True] and _found is not None:
                cpu, cuda = _found
                torch.default_generator.set_state(cpu)
                for d, state in cuda:
                    torch.cuda.set_rng_state(state, d)
                _found = None
            if _waiting:
                _turn.notify_all()


def apart(devices: Sequence[int] = ()) -> "contextlib.AbstractContextManager[None]":
    """A block over the owner's data (see :func:`section`), waiting its turn."""
    return section(True, devices)

"""Answering warm: after a message, the serving thread looks for the next one without sleeping, briefly.

A thread that sleeps lets its CPU go idle; on a virtual machine the CPU halts, and the wake-up when
the next message comes (an interrupt through the hypervisor) and the caches it finds cold cost about
a quarter of an op's round trip (benchmarks/README.md: with the spin, the serving thread answers an op
and its ``.get()`` in 62 us instead of 94, and its ZeroMQ send takes 10 us instead of 29). So after it
answers a message from its socket, the serving thread polls without sleeping for up to
``defaults.spin_seconds`` before it blocks: a client whose next request follows its reply (a loop of
round trips, a training step's ``.item()``) finds it warm.

What it costs, and how that is bounded:

- **CPU.** At most ``spin_seconds`` per message answered; none while idle, none while messages keep
  coming (the poll finds them at once).
- **The GIL.** Each look lets go of it, but a thread of this process that waits for it (an
  in-process client over an ``inproc://`` socket, another worker's serving thread, the notebook's own
  threads) may take it in that instant, or else waits up to a switch interval. A look that took
  that long shows such a thread (or another process that wanted this CPU): the serving thread stops
  spinning, and does not spin again for :data:`BACKOFF_SECONDS`. Measured: an in-process client over
  an ``inproc://`` socket keeps its round trip (169-180 us with the spin, 168-173 without).
- **Not the client's side.** A client that spun while waiting for its reply would take a CPU from a
  busy owner on the same machine (measured on 2 cores: the busy owner's round trip went from 0.68 ms
  to 1.46 ms), and would hold its own GIL while it looks (with both sides spinning, an in-process
  client's round trip over ``inproc://`` went from 168 us to 549), so only the worker spins.
"""
from __future__ import annotations

import time
from typing import Any, Dict

import zmq

#: A look at the sockets that took longer than this waited for the GIL (another thread took it: a forced
#: switch takes a switch interval, 250 us while a worker runs) or for a CPU (another process took it).
CONTENDED_SECONDS = 200e-6
#: ... and then the serving thread does not spin for this long.
BACKOFF_SECONDS = 0.1


class Spinner:
    """When the serving thread may spin, and the spin itself."""

    def __init__(self) -> None:
        self._calm_at = 0.0  # no spin before this (perf_counter): a look waited for the GIL or a CPU

    def poll(self, poller: zmq.Poller, timeout_ms: int, spin: float) -> Dict[Any, int]:
        """``poller.poll(timeout_ms)``, first looking without sleeping for up to ``spin`` seconds."""
        now = time.perf_counter()
        if spin > 0.0 and timeout_ms and now >= self._calm_at:
            end = now + spin
            while now < end:
                ready = poller.poll(0)
                before, now = now, time.perf_counter()
                if now - before > CONTENDED_SECONDS:
                    self._calm_at = now + BACKOFF_SECONDS
                    end = now
                if ready:
                    return dict(ready)
        return dict(poller.poll(timeout_ms))

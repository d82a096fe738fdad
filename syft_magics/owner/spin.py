"""Answering warm: after a message, the serving thread looks for the next one without sleeping, briefly.

A thread that sleeps lets its CPU go idle; on a virtual machine the CPU halts, and the wake-up when
the next message comes (an interrupt through the hypervisor) and the caches it finds cold cost about
a quarter of an op's round trip (README.md, Performance: with the spin, the serving thread answers an op
and its ``.get()`` in 62 us instead of 94, and its ZeroMQ send takes 10 us instead of 29). So after it
answers a message from its socket, the serving thread polls without sleeping for up to
``defaults.spin_seconds`` before it blocks: a client whose next request follows its reply (a loop of
round trips, a training step's ``.item()``) finds it warm.

What it costs, and how that is bounded (:class:`Spin`):

- **CPU: only for a signed-in client, and only while it pays.** A stranger's messages (a hello, anything
  unreadable) are answered without a spin after them: otherwise a peer without the key could keep a CPU
  busy with a message every 0.3 ms. A spin that ends without a message is a miss. After :data:`MISSES`
  misses in a row the thread spins only once every :data:`PROBE_EVERY` waits, until a spin finds a
  message again: a user who types the next cell costs a spin now and then, not each time.
- **The GIL.** Each look lets go of it, but a thread of this process that waits for it (an
  in-process client over an ``inproc://`` socket, another worker's serving thread, the notebook's own
  threads) may not take it in that instant, and then waits up to a switch interval. A look that took
  that long (:data:`CONTENDED_SECONDS`) shows such a thread, or another process that wanted this
  CPU: no spin for :data:`BACKOFF_SECONDS`. Measured: an in-process client over ``inproc://`` keeps
  its round trip (167-185 us with the spin, 168 without).
- **Not the client's side.** A client spinning while it waits for its reply was measured too: beside
  a busy owner on 2 cores it took a CPU from the owner (the owner's round trip went from 0.68 ms to
  1.46 ms), and with both sides spinning the round trip gained nothing over the worker's spin alone
  (180-218 us against 187-210, alternating runs): the two spinning threads and the two ZeroMQ I/O
  threads that carry the message want four CPUs.
"""
from __future__ import annotations

import time
from typing import Any, List, Tuple

import zmq

#: A look that took longer than this waited for the GIL (another thread took it: a forced switch takes a
#: switch interval, 250 us while a worker runs) or for a CPU (another process took it).
CONTENDED_SECONDS = 200e-6
#: ... and then no spin for this long.
BACKOFF_SECONDS = 0.1
#: After this many spins in a row that found nothing ...
MISSES = 2
#: ... spin only once in this many waits, until one finds a message again.
PROBE_EVERY = 16


class Spin:
    """The serving thread's spins: when to spin, and the spin itself."""

    def __init__(self) -> None:
        self._calm_at = 0.0  # no spin before this (perf_counter): a look waited for the GIL or a CPU
        self._misses = 0  # spins in a row that found nothing
        self._skipped = 0  # waits without a spin since the last probe (past MISSES misses)

    def poll(self, poller: zmq.Poller, timeout_ms: int, seconds: float) -> List[Tuple[Any, int]]:
        """``poller.poll(timeout_ms)``, first looking without sleeping for up to ``seconds`` if that has
        paid off lately."""
        if seconds > 0.0 and timeout_ms and self._worth_it():
            now = time.perf_counter()
            end = now + seconds
            while now < end:
                ready = poller.poll(0)
                before, now = now, time.perf_counter()
                if now - before > CONTENDED_SECONDS:
                    self._calm_at = now + BACKOFF_SECONDS
                    end = now
                if ready:
                    self._misses = 0
                    return ready
            self._misses += 1
        return poller.poll(timeout_ms)

    def _worth_it(self) -> bool:
        if time.perf_counter() < self._calm_at:
            return False
        if self._misses < MISSES:
            return True
        self._skipped += 1
        if self._skipped < PROBE_EVERY:
            return False
        self._skipped = 0
        return True

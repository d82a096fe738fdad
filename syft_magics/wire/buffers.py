"""Memory for received tensors, kept for the next one: a tensor that arrives lands in pages already mapped.

The paths that receive a large tensor into memory of their own (a streamed upload or download,
the same-host path) copy its bytes into a new tensor. Fresh pages are the expensive part of that:
the kernel maps and zeroes each 4 KiB page on its first touch, about 1 us a page on the 2-vCPU VMs
we measure on (16 MiB: 4 ms, where copying the bytes takes 1). Whether ``torch.empty`` gets fresh
pages depends on the C allocator's history: on a thread other than the main one (the worker's
serving thread) a 16 MiB tensor faulted in all its 4,096 pages on every upload, and after a
1 GiB transfer so did the main thread's. A single-frame receive lands in ZeroMQ's buffers, which
stay mapped. So the memory of a received tensor is kept, once no tensor uses it any more, for the
next received tensor of the same size, for a few seconds.

- **A received tensor is still the receiver's own**, an ordinary tensor of this process (its
  storage is torch's; it can be resized; it is no view). Its memory is handed out again only when
  nothing else holds it: no tensor, view or autograd graph (torch counts them), and not moved to
  shared memory. Every receive path fills the whole tensor before anyone sees it, or drops it, so no
  bytes of an earlier tensor ever show.
- **Per receiver.** Memory kept for one receiver (a client's session on a worker, or this process's
  own receives) serves only that receiver, and is forgotten when its session or link closes: one
  client's uploads do not land in memory another client's just left (nor tell, by their speed, that
  one of that size was just freed).
- **Bounded.** Only tensors of :data:`MIN_BYTES` to :data:`MAX_BYTES` are kept, at most
  :data:`HELD_BYTES` in :data:`HELD_COUNT` tensors (in use or not), an unused one for
  :data:`IDLE_SECONDS` at most (dropped at the next receive or :func:`trim`, which the worker's and
  the links' housekeeping call). On a worker what is kept unused for a client also stays within what
  its ``max_bytes`` quota leaves room for (a probe kept 127 MiB unused, charged nothing, with uploads
  of 16 sizes under an 8 MiB quota).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable, List, Optional, Sequence

import torch

#: Tensors this large or larger are kept (below, the allocator's heap keeps its pages mapped itself).
MIN_BYTES = 1 << 20
#: Tensors larger than this are not kept (one would hold that much memory idle).
MAX_BYTES = 64 << 20
#: Memory kept at most, in use or idle, and in how many tensors (each receive looks at each).
HELD_BYTES = 128 << 20
HELD_COUNT = 16
#: How long unused memory is kept, and how often housekeeping looks (at most).
IDLE_SECONDS = 5.0
TRIM_SECONDS = 0.5

_use_count: Optional[Callable[[Any], int]] = getattr(torch._C, "_storage_Use_Count", None)


def _alone() -> int:
    """How many references a tensor's storage has when that tensor alone holds it (as counted here)."""
    assert _use_count is not None
    tensor = torch.empty(1)
    storage = tensor.untyped_storage()  # (both alive while counted)
    return _use_count(storage._cdata)


_ALONE = _alone() if _use_count is not None else 0
_ALL = object()  # (trim: every receiver's)


class _Held:
    __slots__ = ("base", "nbytes", "key", "idle_since")

    def __init__(self, base: torch.Tensor, key: Hashable) -> None:
        self.base = base  # (flat uint8: what is handed out is a tensor on its storage)
        self.nbytes = base.numel()
        self.key = key  # (whose receives it serves)
        self.idle_since: Optional[float] = None


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: List[_Held] = []
        self._swept = 0.0  # (when, by time.monotonic())

    def empty(self, shape: Sequence[int], dtype: torch.dtype, key: Hashable = None,
              room: Optional[int] = None) -> torch.Tensor:
        numel = 1
        for n in shape:
            numel *= n
        nbytes = numel * dtype.itemsize
        if _use_count is None or not MIN_BYTES <= nbytes <= MAX_BYTES:
            return torch.empty(tuple(shape), dtype=dtype)
        with self._lock:
            self._sweep(time.monotonic())
            held = next((h for h in self._held if h.key == key and h.idle_since is not None and h.nbytes == nbytes),
                        None)
            if room is not None:  # (what else is kept unused for this receiver stays within its room)
                self._drop_idle(key, max(0, room - nbytes), keep=held)
            if held is None:
                if not self._room(nbytes):
                    self._held = [h for h in self._held if h.idle_since is None]  # (the unused make room)
                    if not self._room(nbytes):  # (all in use: this one is not kept)
                        return torch.empty(tuple(shape), dtype=dtype)
                held = _Held(torch.empty(nbytes, dtype=torch.uint8), key)
                self._held.append(held)
            held.idle_since = None
            # a tensor of its own on that memory, not a view of the pool's (a view could not be detached in
            # place, one made under no_grad not written with grad, and it would share the version counter)
            strides, step = [], 1
            for n in reversed(shape):
                strides.append(step)
                step *= max(n, 1)
            return torch.empty(0, dtype=dtype).set_(held.base.untyped_storage(), 0, tuple(shape), strides[::-1])

    def _drop_idle(self, key: Hashable, limit: int, keep: Optional[_Held] = None) -> None:
        """Drop ``key``'s unused memory, oldest first, until at most ``limit`` bytes of it are left."""
        idle = sorted((h for h in self._held if h.key == key and h.idle_since is not None and h is not keep),
                      key=lambda h: h.idle_since or 0.0)
        left = sum(h.nbytes for h in idle)
        dropped = set()
        for h in idle:
            if left <= limit:
                break
            dropped.add(id(h))
            left -= h.nbytes
        if dropped:
            self._held = [h for h in self._held if id(h) not in dropped]

    def _room(self, nbytes: int) -> bool:
        return len(self._held) < HELD_COUNT and sum(h.nbytes for h in self._held) + nbytes <= HELD_BYTES

    def _sweep(self, now: float) -> None:
        """Note which memory nothing uses any more (since when); drop what stayed unused too long, and
        what is no longer plain memory of ours (moved to shared memory, or resized, by its user)."""
        assert _use_count is not None
        self._swept = now
        kept = []
        for h in self._held:
            storage = h.base.untyped_storage()
            if storage.is_shared() or storage.nbytes() != h.nbytes:
                continue
            if _use_count(storage._cdata) > _ALONE:
                h.idle_since = None
            elif h.idle_since is None:
                h.idle_since = now
            elif now - h.idle_since > IDLE_SECONDS:
                continue
            kept.append(h)
        self._held = kept

    def trim(self, everything: bool = False, key: Hashable = _ALL) -> None:
        now = time.monotonic()
        if not self._held or not everything and now - self._swept < TRIM_SECONDS:  # (a link's tick: every ms)
            return
        with self._lock:
            if everything:
                self._held = [] if key is _ALL else [h for h in self._held if h.key != key]
            else:
                self._sweep(now)

    def idle_bytes(self) -> int:
        if _use_count is None:
            return 0
        with self._lock:
            self._sweep(time.monotonic())
            return sum(h.nbytes for h in self._held if h.idle_since is not None)


_POOL = _Pool()


def empty(shape: Sequence[int], dtype: torch.dtype, key: Hashable = None, room: Optional[int] = None) -> torch.Tensor:
    """A new CPU tensor to receive into; its bytes are not set: fill it all before anyone sees it. ``key``: whose
    receive it is (memory is reused only for the same receiver: a worker's client session, or None for this
    process's own); ``room``: the bytes that receiver may hold besides (what is kept unused for it, beyond
    what this tensor needs, is dropped: a client cannot make the worker keep memory its quota would not allow)."""
    return _POOL.empty(shape, dtype, key, room)


def trim(everything: bool = False, key: Hashable = _ALL) -> None:
    """Drop the kept memory unused for :data:`IDLE_SECONDS`; ``everything``: forget all of it, or all of ``key``'s
    (a link, a worker or a client's session closed: memory a tensor still uses goes with that tensor)."""
    _POOL.trim(everything, key)


def idle_bytes() -> int:
    """Bytes kept for the next received tensor that no tensor uses now."""
    return _POOL.idle_bytes()

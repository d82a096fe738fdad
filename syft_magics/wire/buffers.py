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
  storage is torch's; it can be resized). Its memory is handed out again only when nothing else
  holds it: no tensor, view or autograd graph (torch counts them), and not moved to shared memory.
  Every receive path fills the whole tensor before anyone sees it, or drops it, so no bytes of an
  earlier tensor ever show.
- **Bounded.** Only tensors of :data:`MIN_BYTES` to :data:`MAX_BYTES` are kept, at most
  :data:`HELD_BYTES` in :data:`HELD_COUNT` tensors (in use or not), an unused one for
  :data:`IDLE_SECONDS` at most: dropped at the next receive or :func:`trim`, which the worker's and
  the links' housekeeping call, and all of it forgotten when a link or a worker closes.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, List, Optional, Sequence

import torch

#: Tensors this large or larger are kept (below, the allocator's heap keeps its pages mapped itself).
MIN_BYTES = 1 << 20
#: Tensors larger than this are not kept (one would hold that much memory idle).
MAX_BYTES = 64 << 20
#: Memory kept at most, in use or idle, and in how many tensors (each receive looks at each).
HELD_BYTES = 128 << 20
HELD_COUNT = 16
#: How long unused memory is kept.
IDLE_SECONDS = 5.0

_use_count: Optional[Callable[[Any], int]] = getattr(torch._C, "_storage_Use_Count", None)


def _alone() -> int:
    """How many references a tensor's storage has when that tensor alone holds it (as counted here)."""
    assert _use_count is not None
    tensor = torch.empty(1)
    storage = tensor.untyped_storage()  # (both alive while counted)
    return _use_count(storage._cdata)


_ALONE = _alone() if _use_count is not None else 0


class _Held:
    __slots__ = ("base", "nbytes", "idle_since")

    def __init__(self, base: torch.Tensor) -> None:
        self.base = base  # (flat uint8; what is handed out is a view of it)
        self.nbytes = base.numel()
        self.idle_since: Optional[float] = None


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: List[_Held] = []

    def empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        numel = 1
        for n in shape:
            numel *= n
        nbytes = numel * dtype.itemsize
        if _use_count is None or not MIN_BYTES <= nbytes <= MAX_BYTES:
            return torch.empty(tuple(shape), dtype=dtype)
        with self._lock:
            self._sweep(time.monotonic())
            held = next((h for h in self._held if h.idle_since is not None and h.nbytes == nbytes), None)
            if held is None:
                if not self._room(nbytes):
                    self._held = [h for h in self._held if h.idle_since is None]  # (the unused make room)
                    if not self._room(nbytes):  # (all in use: this one is not kept)
                        return torch.empty(tuple(shape), dtype=dtype)
                held = _Held(torch.empty(nbytes, dtype=torch.uint8))
                self._held.append(held)
            held.idle_since = None
            return held.base.view(dtype).view(tuple(shape))

    def _room(self, nbytes: int) -> bool:
        return len(self._held) < HELD_COUNT and sum(h.nbytes for h in self._held) + nbytes <= HELD_BYTES

    def _sweep(self, now: float) -> None:
        """Note which memory nothing uses any more (since when); drop what stayed unused too long, and
        what is no longer plain memory of ours (moved to shared memory, or resized, by its user)."""
        assert _use_count is not None
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

    def trim(self, everything: bool = False) -> None:
        if not self._held:
            return
        with self._lock:
            if everything:
                self._held = []
            else:
                self._sweep(time.monotonic())

    def idle_bytes(self) -> int:
        if _use_count is None:
            return 0
        with self._lock:
            self._sweep(time.monotonic())
            return sum(h.nbytes for h in self._held if h.idle_since is not None)


_POOL = _Pool()


def empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A new CPU tensor to receive into; its bytes are not set: fill it all before anyone sees it."""
    return _POOL.empty(shape, dtype)


def trim(everything: bool = False) -> None:
    """Drop the kept memory unused for :data:`IDLE_SECONDS`; ``everything``: forget all of it (a link or a
    worker closed: nothing may call this again, and memory a tensor still uses must go with that tensor)."""
    _POOL.trim(everything)


def idle_bytes() -> int:
    """Bytes kept for the next received tensor that no tensor uses now."""
    return _POOL.idle_bytes()

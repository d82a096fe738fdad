"""Received tensors land in memory already mapped (wire/buffers.py): the memory of one that died is handed
to the next of its size, never while anything still uses it, and never more than the bounds allow."""
from __future__ import annotations

import time

import pytest
import torch
from helpers import wait_until

from syft_magics.owner.quotas import Quotas
from syft_magics.wire import buffers

MiB = 1 << 20
N = MiB // 4  # float32 elements in 1 MiB


@pytest.fixture(autouse=True)
def fresh_pool():
    buffers.trim(everything=True)
    yield
    buffers.trim(everything=True)


def test_memory_of_a_received_tensor_that_died_goes_to_the_next_of_its_size():
    a = buffers.empty((2, N), torch.float32)
    address = a.data_ptr()
    b = buffers.empty((2, N), torch.float32)
    assert b.data_ptr() != address, "in use: never handed out twice"
    del a
    c = buffers.empty((N, 2), torch.float32)  # (the same bytes, any shape or dtype)
    assert c.data_ptr() == address and c.shape == (N, 2)
    d = buffers.empty((2 * N,), torch.int32)
    assert d.data_ptr() not in (address, b.data_ptr())
    assert buffers.empty((3, N), torch.float32).data_ptr() != b.data_ptr(), "another size: other memory"


def test_a_view_or_an_autograd_graph_keeps_the_memory_its_own():
    a = buffers.empty((N,), torch.float32)
    address = a.data_ptr()
    view = a[10:20]
    del a
    assert buffers.empty((N,), torch.float32).data_ptr() != address
    del view
    a = buffers.empty((N,), torch.float32)
    assert a.data_ptr() == address
    w = torch.ones(N, requires_grad=True)
    loss = (a * w).sum()  # (saves a for the backward)
    del a
    assert buffers.empty((N,), torch.float32).data_ptr() != address
    del loss
    assert buffers.empty((N,), torch.float32).data_ptr() == address


def test_a_received_tensor_is_an_ordinary_tensor_and_one_resized_or_shared_is_not_handed_out_again():
    a = buffers.empty((N,), torch.float32)
    a.fill_(1.0)
    a.resize_(2 * N)  # (torch's own storage: resizable, unlike memory torch.frombuffer wraps)
    assert a.numel() == 2 * N and torch.equal(a[:N], torch.ones(N))
    del a
    assert buffers.idle_bytes() == 0, "resized by its user: not ours any more"
    s = buffers.empty((N,), torch.float32).fill_(2.0)
    s.share_memory_()  # (its memory went to a shared file another process may map)
    del s
    assert buffers.idle_bytes() == 0, "moved to shared memory: never handed out again"
    kept = buffers.empty((N,), torch.float32)
    del kept
    assert buffers.idle_bytes() == MiB


def test_kept_memory_is_bounded_in_size_count_and_time(monkeypatch):
    small = buffers.empty((10,), torch.float32)
    huge = buffers.empty((buffers.MAX_BYTES // 4 + 1,), torch.float32)
    del small, huge
    assert buffers.idle_bytes() == 0, "outside the sizes kept: ordinary tensors"
    held = [buffers.empty((N,), torch.float32) for _ in range(buffers.HELD_COUNT + 4)]
    del held
    assert buffers.idle_bytes() == buffers.HELD_COUNT * MiB
    monkeypatch.setattr(buffers, "IDLE_SECONDS", 0.01)
    buffers.trim()  # (notes since when they are unused)
    time.sleep(0.05)
    buffers.trim()
    assert buffers.idle_bytes() == 0
    big = [buffers.empty((buffers.MAX_BYTES // 4,), torch.float32) for _ in range(3)]
    assert buffers.idle_bytes() == 0
    del big
    assert buffers.idle_bytes() <= buffers.HELD_BYTES


def test_closing_forgets_what_is_in_use_so_its_memory_goes_with_its_tensor():
    a = buffers.empty((N,), torch.float32)
    buffers.trim(everything=True)
    del a
    assert buffers.idle_bytes() == 0


def test_a_streamed_upload_and_download_reuse_memory_and_show_only_their_own_bytes(make_worker, make_client,
                                                                                   fast_defaults):
    fast_defaults.same_host = False
    fast_defaults.stream_min_bytes = 256 << 10
    fast_defaults.chunk_bytes = 64 << 10
    fast_defaults.progress = False
    bob = make_worker("Bob", policy="open", connection_file=False)
    client = make_client(f"tcp://127.0.0.1:{bob.port}", key=bob.key)
    first = client.send(torch.full((2, N), 7.0))
    address = bob.store.get(first.oid).tensor.data_ptr()
    first.delete()
    client.sync()
    second = client.send(torch.arange(2 * N, dtype=torch.float32).reshape(2, N))
    stored = bob.store.get(second.oid).tensor
    assert stored.data_ptr() == address, "the upload landed in the first one's memory"
    assert torch.equal(stored, torch.arange(2 * N, dtype=torch.float32).reshape(2, N))
    got = second.get()
    mine = got.data_ptr()
    assert torch.equal(got, stored)
    del got
    again = second.get()
    assert again.data_ptr() == mine and torch.equal(again, stored)


def test_a_received_tensor_is_no_view_of_the_kept_memory():
    # helper-35: a view could not be detached in place, one received under no_grad not written with grad, and
    # it started at the version count the memory's earlier tensor left
    a = buffers.empty((N,), torch.float32)
    a.add_(1).mul_(2)
    address = a.data_ptr()
    del a
    b = buffers.empty((N,), torch.float32)
    assert b.data_ptr() == address and not b._is_view() and b._version <= 1
    b.detach_()
    with torch.no_grad():
        c = buffers.empty((2, N), torch.float32)
    c.mul_(torch.ones(2, N, requires_grad=True))
    assert c.grad_fn is not None and type(c.grad_fn).__name__ == "MulBackward0"


def test_memory_is_kept_per_receiver():
    a = buffers.empty((N,), torch.float32, key=b"alice")
    address = a.data_ptr()
    del a
    assert buffers.empty((N,), torch.float32, key=b"eve").data_ptr() != address, "another client's: not handed over"
    b = buffers.empty((N,), torch.float32, key=b"alice")
    assert b.data_ptr() == address
    del b
    buffers.trim(everything=True, key=b"eve")
    assert buffers.idle_bytes() == MiB, "alice's kept"
    buffers.trim(everything=True, key=b"alice")
    assert buffers.idle_bytes() == 0


def test_a_client_cannot_make_the_worker_keep_unused_memory_past_its_quota(make_worker, make_client, fast_defaults):
    # helper-35: uploads of 16 sizes just under an 8 MiB quota, each freed at once, kept 127 MiB unused, charged nothing
    fast_defaults.same_host = False
    fast_defaults.stream_min_bytes = 256 << 10
    fast_defaults.chunk_bytes = 256 << 10
    fast_defaults.progress = False
    bob = make_worker("Bob", policy="open", connection_file=False, quotas=Quotas(max_bytes="4MB"))
    client = make_client(f"tcp://127.0.0.1:{bob.port}", key=bob.key)
    most = 0
    for i in range(8):
        p = client.send(torch.zeros(N + 1024 * i))  # (1 MiB and more: each size its own memory)
        p.delete()
        client.sync()
        most = max(most, buffers.idle_bytes())
    assert 0 < most <= 4 * MiB
    client.disconnect()
    assert wait_until(lambda: buffers.idle_bytes() == 0, timeout=2.0), "its session ended: what was kept for it goes"

"""Torch kernels that trust their arguments (helper-64 to -67: crashes of the worker and reads of its heap in
plain torch 2.13) run on the worker only after the checks torch skips (``owner/checked/``): each bad call is
refused with its reason, the worker lives on, and good calls give torch's result."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import worker_child

import syft_magics as sm

LP = torch.full((5, 1, 4), -1.0).log_softmax(2)  # ctc: 5 steps, 1 sequence, 4 classes
W = torch.full((10, 3), 7.0)
NAN_GRID = torch.full((1, 1, 1, 2), float("nan"))


def _raw(client, name, fn, *args, **kwargs):
    """As a raw client would send it: without the shape inference that may refuse it here first."""
    return client.run(fn, name, args, kwargs, described=True)


BAD = [
    ("torch.nn.functional.ctc_loss", F.ctc_loss, (LP, torch.tensor([[1, 100]]), torch.tensor([5]), torch.tensor([2])),
     {}, "targets must be in"),
    ("torch.nn.functional.ctc_loss", F.ctc_loss, (LP, torch.tensor([[1, 10**9]]), torch.tensor([5]),
                                                  torch.tensor([2])), {}, "targets must be in"),
    ("torch.nn.functional.embedding_bag", F.embedding_bag, (torch.tensor([1, 2, 3]), W, torch.tensor([0, -5])),
     {"mode": "sum"}, "offsets must be in"),
    ("torch.nn.functional.embedding_bag", F.embedding_bag, (torch.tensor([1, 2, 3]), W, torch.tensor([0])),
     {"mode": "max", "include_last_offset": True}, "at least 2"),
    ("torch.repeat_interleave", torch.repeat_interleave, (torch.tensor([-5, 10]),), {"output_size": 5},
     "must not be negative"),
    ("torch.repeat_interleave", torch.repeat_interleave, (torch.full((2,), 7.0), torch.tensor([-5, 10]), 0),
     {"output_size": 5}, "must not be negative"),
    ("Tensor.repeat_interleave", torch.Tensor.repeat_interleave,
     (torch.full((5,), 7.0), torch.tensor([2**62, 2**62, 2**62, 2**62, 3]), 0), {}, "more than 2\\*\\*62"),
    ("torch.nn.functional.grid_sample", F.grid_sample, (torch.full((1, 1, 4, 4), 7.0), NAN_GRID),
     {"padding_mode": "border", "align_corners": False}, "must be finite"),
    ("torch.nn.functional.pdist", F.pdist, (torch.ones(0, 3),), {}, "at least one row"),
    ("torch.nn.functional.pad", F.pad, (torch.full((1, 2, 5), 7.0), (-5, 4)), {"mode": "circular"},
     "more than once"),
    ("torch._weight_norm", torch._weight_norm, (torch.ones(1000, 10), torch.tensor(1.0), 0), {}, "g has shape"),
    ("torch._weight_norm", torch._weight_norm, (torch.full((10, 3), 7.0), torch.ones(1), 1), {}, "g has shape"),
    ("torch.nn.functional.fractional_max_pool2d", F.fractional_max_pool2d, (torch.ones(1, 1, 4, 4), 0),
     {"output_size": 2}, "kernel_size must be"),
    # helper-66: past the first checks (other forms of the same numbers), and integers beyond any size
    ("torch.nn.functional.fractional_max_pool2d", F.fractional_max_pool2d, (torch.ones(1, 1, 10, 10),
                                                                            torch.tensor(0)),
     {"output_size": (5, 5)}, "kernel_size must be"),
    ("torch.nn.functional.pad", F.pad, (torch.arange(100.0, 105.0).view(1, 1, 5), (-5, True)), {"mode": "circular"},
     "more than once"),
    ("torch.nn.functional.grid_sample", F.grid_sample, (torch.ones(1, 1, 4, 4), torch.full((1, 2, 2, 2), 3.4e38)),
     {"padding_mode": "reflection", "align_corners": False}, "within"),
    ("torch._weight_norm", torch._weight_norm, (torch.ones(0, 10), torch.ones(0, 1), 0), {}, "no elements"),
    ("torch.repeat_interleave", torch.repeat_interleave, (torch.ones(8), torch.tensor(2**61)), {}, "2\\*\\*62"),
    ("torch.nn.functional.max_pool1d", F.max_pool1d, (torch.randn(4, 4), 2**63 - 1), {}, "beyond any size"),
    ("torch.nn.functional.max_pool1d", F.max_pool1d, (torch.randn(4, 4), 2**62), {}, "beyond any size"),
    ("torch.nn.functional.max_pool1d", F.max_pool1d, (torch.ones(1, 1, 1), 2, 1, 0, 2**63 - 3), {},
     "beyond any size"),
    ("torch.nn.functional.unfold", F.unfold, (torch.ones(1, 1, 4, 4),), {"kernel_size": 2**63 - 1},
     "beyond any size"),
    ("torch.nn.functional.unfold", F.unfold, (torch.ones(1, 1, 4, 4),), {"kernel_size": 2, "dilation": 2**62},
     "beyond any size"),
    ("torch.nn.functional.adaptive_max_pool2d", F.adaptive_max_pool2d, (torch.ones(1, 1, 4, 4), (2**62, 0)), {},
     "beyond any size"),
    ("torch.nn.functional.max_pool1d", F.max_pool1d, (torch.randn(4, 4), torch.tensor(2**62)), {},
     "beyond any size|as a Python number"),
    ("torch.linalg.eigvals", torch.linalg.eigvals, (torch.full((3, 3), float("nan")),), {}, "must be finite"),
    ("torch.fft.irfft", torch.fft.irfft, (torch.ones(4, dtype=torch.complex64),), {"n": 2**32 + 1},
     "beyond any size|estimated to take"),
    ("torch.fft.irfft", torch.fft.irfft, (torch.ones(4, dtype=torch.complex64), torch.tensor(2**32 + 1)), {},
     "beyond any size|as a Python number"),
    ("torch.linalg.matrix_power", torch.linalg.matrix_power, (torch.eye(2), -2**63), {}, "within"),
    # helper-67: integer division of the smallest integer by -1 traps (SIGFPE); combinations makes n ** r elements
    ("torch.div", torch.div, (torch.tensor([-2**63]), torch.tensor([-1])), {"rounding_mode": "trunc"}, "does not fit"),
    ("torch.div", torch.div, (torch.tensor([-2**31], dtype=torch.int32), -1), {"rounding_mode": "trunc"},
     "does not fit"),
    ("Tensor.div_", torch.Tensor.div_, (torch.tensor([5, -2**31], dtype=torch.int32),
                                        torch.tensor([2, -1], dtype=torch.int32)), {"rounding_mode": "trunc"},
     "does not fit"),
    ("torch.lcm", torch.lcm, (torch.tensor([-2**63]), torch.tensor([7])), {}, "least common multiple"),
    ("Tensor.lcm_", torch.Tensor.lcm_, (torch.tensor([-2**31], dtype=torch.int32),
                                        torch.tensor([2**31 - 1], dtype=torch.int32)), {}, "least common multiple"),
    ("torch.combinations", torch.combinations, (torch.arange(10.0),), {"r": 8}, "combinations"),
] + [(f"Tensor.{name}", getattr(torch.Tensor, name), (torch.tensor([-2**63]), torch.tensor([-1])),
       {"rounding_mode": "trunc"}, "does not fit")  # (helper-69: the operators take a rounding mode too)
      for name in ("__idiv__", "__itruediv__", "__truediv__", "__div__")]

GOOD = [
    (F.ctc_loss, (LP, torch.tensor([[1, 2]]), torch.tensor([5]), torch.tensor([2])), {}),
    (F.embedding_bag, (torch.tensor([1, 2, 3]), W, torch.tensor([0, 2])), {"mode": "sum"}),
    (torch.repeat_interleave, (torch.tensor([2, 1]),), {"output_size": 3}),
    (torch.Tensor.repeat_interleave, (torch.arange(3.0), torch.tensor([1, 0, 2]), 0), {}),
    (F.grid_sample, (torch.arange(16.0).view(1, 1, 4, 4), torch.zeros(1, 1, 1, 2)), {"align_corners": False}),
    (F.pdist, (torch.arange(6.0).view(3, 2),), {}),
    (F.pad, (torch.arange(5.0).view(1, 1, 5), (-1, 2)), {"mode": "circular"}),
    (torch.add, (torch.tensor([1, 2]), 2**62), {}),  # (a big number as a value, not a size)
    (torch.linalg.matrix_power, (torch.tensor([[1.0, 1.0], [0.0, 1.0]]), 3), {}),
    (torch.nonzero, (torch.tensor([[0.0, 1.0], [2.0, 0.0]]),), {}),
    (torch.unique, (torch.tensor([3, 1, 3]),), {}),
    (torch.masked_select, (torch.arange(4.0), torch.tensor([True, False, True, False])), {}),
    (torch.bincount, (torch.tensor([0, 2, 2]),), {"minlength": 5}),
    (torch.div, (torch.tensor([7, -7, -2**63]), torch.tensor([2, 2, 1])), {"rounding_mode": "trunc"}),
    (torch.lcm, (torch.tensor([4, 6]), torch.tensor([6, 4])), {}),
    (torch.combinations, (torch.arange(4.0),), {"r": 3}),
    (torch.unique_consecutive, (torch.tensor([1, 1, 2, 2, 1]),), {}),
]


@pytest.fixture
def child():
    with worker_child() as (proc, address, key):
        client = sm.connect(address, key=key)
        try:
            yield proc, client
        finally:
            client.disconnect()


def test_calls_torch_would_not_check_are_refused_and_the_worker_lives(child):
    proc, client = child
    for name, fn, args, kwargs, why in BAD:
        sent = tuple(client.send(a) if isinstance(a, torch.Tensor) else a for a in args)
        with pytest.raises(sm.SyftError, match=why):
            _raw(client, name, fn, *sent, **kwargs)
            client.sync()
        assert proc.poll() is None, f"the worker is alive after {name}"
    client.sync()


def test_good_calls_give_torchs_result(child):
    proc, client = child
    for fn, args, kwargs in GOOD:
        sent = tuple(client.send(a) if isinstance(a, torch.Tensor) else a for a in args)
        assert torch.allclose(fn(*sent, **kwargs).get().float(), fn(*args, **kwargs).float()), fn.__name__
    drawn = client.send(torch.zeros(3, dtype=torch.long)).random_(0, 2**40).get()  # (its bounds are of values)
    assert drawn.min() >= 0 and drawn.max() < 2**40


def test_backwards_of_checked_calls_reach_their_inputs(child):
    # grid_sample's and pdist's crashes were in their backwards: a good grid or rows still train
    proc, client = child
    x = torch.arange(16.0).view(1, 1, 4, 4).requires_grad_()
    grid = torch.full((1, 1, 1, 2), 0.25)
    F.grid_sample(x, grid, padding_mode="border", align_corners=False).sum().backward()
    rx = client.send(x.detach().requires_grad_())
    F.grid_sample(rx, client.send(grid), padding_mode="border", align_corners=False).sum().backward()
    assert torch.allclose(rx.grad.get(), x.grad)
    rows = client.send(torch.arange(6.0).view(3, 2).requires_grad_())
    F.pdist(rows).sum().backward()
    assert rows.grad.get().shape == (3, 2)


@pytest.mark.parametrize("op", [
    lambda c: torch.repeat_interleave(c.send(torch.tensor([1 << 26]))),
    lambda c: torch.bincount(c.send(torch.tensor([1 << 26]))),
    lambda c: F.one_hot(c.send(torch.tensor([1 << 26]))),
    lambda c: c.send(torch.ones(2)).repeat_interleave(c.send(torch.tensor([1 << 25, 1 << 25])), 0),
    lambda c: torch.bincount(c.send(torch.tensor([1])), minlength=c.send(torch.tensor(1 << 26))),
    lambda c: torch.nonzero(c.send(torch.ones(1)).expand(1 << 26)),
    lambda c: torch.unique(c.send(torch.ones(1)).expand(1 << 26)),
    lambda c: torch.masked_select(c.send(torch.ones(1 << 21)), c.send(torch.ones(1, dtype=torch.bool))),
    lambda c: torch.unique_consecutive(c.send(torch.ones(1)).expand(1 << 26), return_counts=True)[0],
    lambda c: torch.combinations(c.send(torch.arange(9.0)), r=7),
], ids=["repeat_interleave", "bincount", "one_hot", "Tensor.repeat_interleave", "bincount minlength as a tensor",
        "nonzero of a view", "unique of a view", "masked_select", "unique_consecutive of a view", "combinations"])
def test_a_result_sized_by_values_is_refused_before_it_is_made(make_worker, make_client, op):
    # repeat_interleave(tensor([2**31])), 40 bytes, allocated 16 GiB under a 2 GiB quota, then was refused
    import resource

    from syft_magics.owner.quotas import Quotas

    make_worker("Bob", policy="open", quotas=Quotas(max_bytes="16MB"))
    client = make_client("Bob")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(sm.SyftError, match="size read from the values|as a Python number|combinations's work"):
        op(client).get()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 128 << 10, "512 MiB were never made"
    assert torch.equal(torch.bincount(client.send(torch.tensor([0, 2, 2]))).get(), torch.tensor([1, 0, 2]))


def test_a_size_given_as_a_one_element_tensor_is_refused_where_it_cannot_be_priced(make_worker, make_client):
    # helper-66: x.new_zeros(tensor(2**30)) ran unpriced (its price cannot read the tensor): 1.8 GiB from a few bytes
    from syft_magics.owner.quotas import Quotas

    make_worker("Bob", policy="open", quotas=Quotas(max_bytes="16MB"))
    client = make_client("Bob")
    x = client.send(torch.ones(2))
    with pytest.raises(sm.SyftError, match="give it as a Python number"):
        client.run(torch.Tensor.new_zeros, "Tensor.new_zeros", (x, client.send(torch.tensor(1 << 26))), {},
                   described=True)
    assert torch.equal(x.new_zeros(3).get(), torch.zeros(3))
    assert torch.equal((x + client.send(torch.tensor(2))).get(), torch.full((2,), 3.0))  # (a number as a value)


def test_a_checked_op_writes_as_the_torch_function_it_checks() -> None:
    """The worker's tables keyed by torch's functions look through a checked one (``checked.unwrapped``): an op
    that writes nothing by its schema runs without the write guard (``nonzero`` took the guarded path of ops
    that may write), and ``nonzero``/``argwhere`` count a mask's rows in a trace as torch's do."""
    from syft_magics.owner import checked, fake_trace, writes

    for wrapper, torch_fn in checked.STANDS_FOR.items():
        assert writes.writes_nothing(wrapper, {}) == writes.writes_nothing(torch_fn, {}), torch_fn
    assert writes.writes_nothing(checked.nonzero, {}) and writes.writes_nothing(checked.bincount, {})
    assert all(checked.unwrapped(f) in fake_trace._COUNTS_NONZERO for f in (checked.nonzero, checked.argwhere))
    assert checked.unwrapped(torch.add) is torch.add and checked.unwrapped([]) == []


def test_fused_optimizer_steps_only_parameters_and_gradients_laid_out_as_they_assume(child):
    """helper-74: torch's fused steps write ``numel`` elements in a row from a parameter's start, whatever its strides:
    the last 1,024 floats of a storage expanded to 1,024 x 1,024 had 4 MiB written past its end (SIGSEGV, the worker
    gone, from a few bytes of messages). Such a parameter is refused when the optimizer is made, a gradient of another
    layout when a fused step would read it; fused steps of dense parameters give torch's result."""
    proc, client = child
    for make in (client.optim.SGD, client.optim.Adam, client.optim.Adagrad):
        x = client.send(torch.zeros(1)).new_zeros(1024 * 1024 + 1024)
        p = x[1024 * 1024:].view(1, 1024).expand(1024, 1024)
        p.requires_grad_()
        with pytest.raises(sm.SyftError, match="share memory"):
            make([p], lr=0.1, fused=True).step()
            client.sync()
        assert proc.poll() is None, "the worker is alive"
    w = client.send(torch.ones(4, 4)).requires_grad_()
    (w * client.send(torch.arange(16.0).view(4, 4))).sum().backward()
    opt = client.optim.SGD([w], lr=1.0, fused=True)
    w.grad.t_()  # (a gradient of another layout: read as the parameter's, the wrong elements)
    with pytest.raises(sm.SyftError, match="fused=True"):
        opt.step()
        client.sync()
    local = torch.ones(4, 4, requires_grad=True)
    (local * torch.arange(16.0).view(4, 4)).sum().backward()
    torch.optim.Adam([local], lr=0.1, fused=True).step()
    dense = client.send(torch.ones(4, 4)).requires_grad_()
    (dense * client.send(torch.arange(16.0).view(4, 4))).sum().backward()
    client.optim.Adam([dense], lr=0.1, fused=True).step()
    assert torch.equal(dense.get(), local.detach())
    assert proc.poll() is None

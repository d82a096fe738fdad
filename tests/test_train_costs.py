"""Training ops are priced like any op: a cheap model forward, backward, optimizer step and zero_grad run
at once on the serving thread (no thread hand-off per op, which made remote training 5x slower than
local), while a heavy one, or a backward through a graph the worker did not build, still runs on the
client's lane."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from syft_magics.owner import costs, lanes, models, optimizers, train_costs
from syft_magics.owner.store import Entry

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_estimates")]


@pytest.fixture
def lane_runs(monkeypatch):
    """The names of the ops that went to a lane (a thread of their own)."""
    ran = []
    real = lanes.Lane.run

    def counting(self, work, done, call_soon):
        ran.append(self)
        return real(self, work, done, call_soon)

    monkeypatch.setattr(lanes.Lane, "run", counting)
    return ran


def _step(remote, opt, x, y):
    opt.zero_grad()
    loss = F.cross_entropy(remote(x), y)
    loss.backward()
    opt.step()
    return loss


def test_a_training_step_of_a_small_model_runs_without_lane_threads(make_worker, make_client, lane_runs):
    bob = make_worker("Bob", policy="open")
    alice = make_client(bob.address, key=bob.key)
    torch.manual_seed(0)
    x, y = alice.send(torch.rand(16, 8)), alice.send(torch.randint(0, 3, (16,)))
    remote = alice.send(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))
    opt = alice.optim.SGD(remote.parameters(), lr=0.1)
    for _ in range(2):  # the first steps price the model's forward, its optimizer's step and zero_grad
        _step(remote, opt, x, y)
    alice.sync()
    assert costs.wait_warm(60)
    _step(remote, opt, x, y)
    alice.sync()
    lane_runs.clear()
    losses = [_step(remote, opt, x, y).get().item() for _ in range(5)]
    assert lane_runs == []  # forward, loss, backward, step and zero_grad all ran at once
    assert losses[-1] < losses[0]  # and they did run: the model learns


def test_a_backward_through_a_heavy_graph_runs_on_the_lane(make_worker, make_client, lane_runs, monkeypatch):
    bob = make_worker("Bob", policy="open")
    alice = make_client(bob.address, key=bob.key)
    w = alice.send(torch.ones(4, requires_grad=True))
    loss = (w * 2).sum()
    alice.sync()
    assert costs.wait_warm(60)
    monkeypatch.setattr(train_costs, "BACKWARD_FACTOR", 1e9)  # any recorded work now reads as heavy
    lane_runs.clear()
    loss.backward()
    alice.sync()
    assert len(lane_runs) == 1
    assert torch.equal(w.grad.get(), torch.full((4,), 2.0))


def test_work_is_recorded_behind_results_and_grows_with_writes_in_place(make_worker, make_client):
    bob = make_worker("Bob", policy="open")
    alice = make_client(bob.address, key=bob.key)
    w = alice.send(torch.ones(4, requires_grad=True))
    plain = alice.send(torch.ones(4))
    h = w * 2
    d = plain + 1
    alice.sync()
    entry = bob.store.get(h.oid)
    assert entry.work is not None and entry.work > 0
    assert bob.store.get(d.oid).work is None  # no graph behind it
    assert bob.store.get(w.oid).work is None  # a leaf
    before = entry.work
    h.mul_(3)
    alice.sync()
    assert entry.work > before


def test_work_of_an_unrecorded_graph_is_unknown_and_its_backward_unpriced():
    leaf = torch.ones(2, requires_grad=True)
    mine = Entry(b"m" * 16, leaf * 2, op="mul", work=0.0005)
    owners = Entry(b"o" * 16, leaf * 3)  # shared with its grad_fn: the worker recorded nothing
    assert train_costs.work_of(0.5, [mine, mine]) == pytest.approx(0.5005)  # an input counts once
    assert train_costs.work_of(0.5, [mine, owners]) is None
    assert train_costs.of_graph([owners]) is None
    cheap = train_costs.of_graph([mine])
    assert cheap is not None and cheap.seconds == pytest.approx(train_costs.BACKWARD_FACTOR * 0.0005)
    assert train_costs.of_graph([Entry(b"h" * 16, leaf * 4, op="mul", work=1.0)]) is None  # heavy: the lane


@pytest.mark.parametrize("model, inputs", [
    (nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), (torch.rand(64, 64),)),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten()), (torch.rand(2, 1, 6, 6),)),
    (nn.LSTM(8, 16), (torch.rand(5, 2, 8),)),
    (nn.TransformerEncoderLayer(16, 4, 32), (torch.rand(5, 2, 16),)),
])
def test_a_models_forward_is_priced_on_fake_weights_without_touching_the_model(model, inputs):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cost = train_costs.estimate(models.module_call, (model, *inputs), {})
    assert cost.priced and cost.out_bytes > 0 and cost.seconds > 0
    after = model.state_dict()
    assert all(type(v) is torch.Tensor and torch.equal(v, before[k]) for k, v in after.items())
    assert all(type(p) is nn.Parameter for p in model.parameters())


def test_an_optimizers_step_is_priced_from_its_parameters():
    small = nn.Linear(4, 4)
    big = nn.Linear(1024, 1024)
    s = train_costs.estimate(optimizers.step, (torch.optim.Adam(small.parameters()),), {})
    b = train_costs.estimate(optimizers.step, (torch.optim.Adam(big.parameters()),), {})
    assert 0 < s.seconds < b.seconds and b.peak_bytes == 1024 * 1024 * 4
    z = train_costs.estimate(optimizers.zero_grad, (torch.optim.SGD(big.parameters()), False), {})
    assert z.seconds > train_costs.estimate(optimizers.zero_grad, (torch.optim.SGD(big.parameters()),), {}).seconds


def test_models_and_optimizers_are_keyed_by_which_one_they_are():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    x = torch.zeros(1, 2)
    ka = costs.signature("syft.module_call", [a, x], {}, True)
    assert ka is not None and ka == costs.signature("syft.module_call", [a, x], {}, True)
    assert ka != costs.signature("syft.module_call", [b, x], {}, True)
    keys = set()
    for _ in range(20):  # a freed model's id() is soon reused: its successor must not inherit its estimate
        m = nn.Linear(2, 2)
        keys.add(costs.signature("syft.module_call", [m, x], {}, True))
        del m
    assert len(keys) == 20


def test_a_models_forward_is_priced_by_its_matrix_products_not_as_linear_algebra():
    """Elementwise ATen ops whose names hold a linear-algebra word as a substring (``detach``, which a ReLU's
    saved result goes through, ``relu_``, ``gelu_backward``, ``sqrt``) were priced as n**3: a 500-1000-1000-10
    MLP's forward on 3,000 rows was estimated at 55 s on a busy machine (0.07 s in fact), and refused over
    ``op_seconds``. Now its estimate counts its matrix products (2 * rows * weights) only."""
    model = nn.Sequential(nn.Linear(500, 1000), nn.ReLU(), nn.Linear(1000, 1000), nn.GELU(), nn.Linear(1000, 10))
    cost = train_costs.estimate(models.module_call, (model, torch.randn(3000, 500)), {}, True)
    assert cost.flops == pytest.approx(2 * 3000 * (500 * 1000 + 1000 * 1000 + 1000 * 10), rel=0.01)
    for fn, x in ((torch.sqrt, torch.rand(3000, 1000)), (F.gelu, torch.rand(3000, 1000))):
        assert costs.estimate(fn, (x.requires_grad_(),), {}).flops == 0
    assert costs.estimate(torch.linalg.inv, (torch.rand(64, 64),), {}).flops >= costs.CUBIC_FACTOR * 64 ** 3


def test_an_op_with_long_list_arguments_is_not_keyed_but_runs(seed):
    """A key holds a small tuple per list item: three 2 MB messages of list arguments left 570 MB in the
    process-wide cost cache, charged nothing, kept after the client and the worker had gone (a probe)."""
    from syft_magics.owner import costs

    bob, client = seed
    assert costs.signature("Tensor.new_tensor", ([0.0] * 2000,), {}, True) is None
    assert costs.signature("Tensor.new_tensor", ([0.0] * 20,), {}, True) is not None
    x = client.search("#X")[0]
    assert torch.equal(x.new_tensor([1.0] * 2000).get(), torch.ones(2000))

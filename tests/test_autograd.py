"""Remote autograd: requires_grad travels, backward runs on the worker (one message), .grad points at the
worker's gradient, no_grad/enable_grad on the client apply to the ops they wrap; gradients equal local ones."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import syft_magics as sm


def _problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(16, 4, generator=g)
    Y = torch.randn(16, 1, generator=g)
    W = torch.randn(4, 1, generator=g)
    return X, Y, W


def test_send_keeps_requires_grad(seed):
    bob, client = seed
    w = client.send(torch.ones(3, requires_grad=True))
    plain = client.send(torch.ones(3))
    client.sync()
    assert w.requires_grad and not plain.requires_grad
    assert bob.store.get(w.oid).tensor.requires_grad
    assert not bob.store.get(plain.oid).tensor.requires_grad
    assert (w * 2).requires_grad and not (plain * 2).requires_grad


def test_gradients_equal_the_local_ones_and_backward_is_one_message(seed):
    bob, client = seed
    X, Y, W = _problem()
    w_local = W.clone().requires_grad_()
    b_local = torch.zeros(1, requires_grad=True)
    loss_local = F.mse_loss(torch.tanh(X @ w_local + b_local), Y)
    loss_local.backward()

    x, y = client.send(X), client.send(Y)
    w = client.send(W.clone()).requires_grad_()
    b = client.send(torch.zeros(1))
    b.requires_grad = True
    assert w.requires_grad and b.requires_grad
    loss = F.mse_loss(torch.tanh(x @ w + b), y)
    assert loss.requires_grad
    client.sync()
    before = bob.stats["commands"]
    loss.backward()
    client.sync()
    assert bob.stats["commands"] == before + 1
    assert torch.allclose(w.grad.get(), w_local.grad, atol=1e-6)
    assert torch.allclose(b.grad.get(), b_local.grad, atol=1e-6)
    assert torch.allclose(loss.get(), loss_local.detach())


def test_manual_sgd_loop_learns_like_the_local_one(seed):
    bob, client = seed
    X, Y, W = _problem()
    w_local = W.clone().requires_grad_()
    w = client.send(W.clone().requires_grad_())
    x, y = client.send(X), client.send(Y)
    for _ in range(5):
        F.mse_loss(X @ w_local, Y).backward()
        with torch.no_grad():
            w_local -= 0.1 * w_local.grad
            w_local.grad.zero_()
        F.mse_loss(x @ w, y).backward()
        with torch.no_grad():
            w -= 0.1 * w.grad
            w.grad.zero_()
    assert torch.allclose(w.get(), w_local.detach(), atol=1e-6)
    assert not torch.allclose(w.get(), W)


def test_data_update_and_grad_reset(seed):
    bob, client = seed
    X, Y, W = _problem()
    w_local = W.clone().requires_grad_()
    w = client.send(W.clone().requires_grad_())
    x, y = client.send(X), client.send(Y)
    for _ in range(3):
        F.mse_loss(X @ w_local, Y).backward()
        w_local.data -= 0.1 * w_local.grad
        w_local.grad = None
        F.mse_loss(x @ w, y).backward()
        w.data -= 0.1 * w.grad
        w.grad = None
    assert torch.allclose(w.get(), w_local.detach(), atol=1e-6)
    assert bob.store.get(w.oid).tensor.grad is None


def test_no_grad_and_enable_grad_on_the_client_apply_on_the_worker(seed):
    bob, client = seed
    w = client.send(torch.ones(3, requires_grad=True))
    with torch.no_grad():
        z = w * 2
        with torch.enable_grad():
            e = w * 2
    r = w * 2
    client.sync()
    assert not z.requires_grad and e.requires_grad and r.requires_grad
    assert not bob.store.get(z.oid).tensor.requires_grad
    assert bob.store.get(e.oid).tensor.requires_grad
    assert bob.store.get(r.oid).tensor.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        z.sum().backward()


def test_detach_retain_grad_and_autograd_grad(seed):
    bob, client = seed
    w = client.send(torch.tensor([1.0, 2.0, 3.0], requires_grad=True))
    d = w.detach()
    client.sync()
    assert not d.requires_grad and not bob.store.get(d.oid).tensor.requires_grad
    h = w * w
    h.retain_grad()
    h.sum().backward()
    assert torch.equal(h.grad.get(), torch.ones(3))
    assert torch.equal(w.grad.get(), torch.tensor([2.0, 4.0, 6.0]))
    (g,) = torch.autograd.grad((w * 3).sum(), [w])
    assert torch.equal(g.get(), torch.full((3,), 3.0))


def test_autograd_grad_over_the_owners_data_under_review(review_seed):
    # its results have the shapes of the tensors it is given: public, though torch cannot trace it on stand-ins
    bob, client = review_seed
    w = client.send(torch.zeros(5, requires_grad=True))
    (g,) = torch.autograd.grad((w * client.search("#X")[0]).sum(), [w])
    assert g.shape == (5,)
    bob.policy.allow_get(max_numel=1)
    assert g.sum().get() == 15.0


def test_batched_gradients_are_refused(seed):
    """helper-61: ``is_grads_batched`` with an expanded seed of a few bytes made the worker allocate the batch times
    the inputs before anything was charged (4.5 GiB under a 64 MB quota from one message)."""
    _, client = seed
    w = client.send(torch.ones(3, requires_grad=True))
    seeds = client.send(torch.ones(1, 1)).expand(1000, 3)
    with pytest.raises(sm.RemoteError, match="is_grads_batched"):
        torch.autograd.grad(w * 2, [w], seeds, is_grads_batched=True)
        client.sync()
    (g,) = torch.autograd.grad((w * 2).sum(), [w])
    assert torch.equal(g.get(), torch.full((3,), 2.0))


def test_a_backward_does_not_give_an_expanded_tensor_a_gradient_of_its_own(seed):
    """helper-63: ``big.sum().backward(inputs=[big])`` on ``big = w.expand(N)`` kept an N-element gradient, charged
    nothing (as ``retain_grad()`` on it would, which was already refused)."""
    _, client = seed
    w = client.send(torch.ones(1, requires_grad=True))
    big = w.expand(1000)
    for call in (lambda: big.sum().backward(inputs=[big]),
                 lambda: torch.autograd.backward([big.sum()], inputs=[big]),
                 lambda: torch.autograd.grad(big.sum(), [big])):
        with pytest.raises(sm.RemoteError, match="elements share memory"):
            call()
            client.sync()
    big.sum().backward()  # (to the leaf: its own size)
    assert w.grad.get().item() == 1000.0


def test_a_broadcast_view_in_a_graph_is_charged_whole(make_worker, make_client):
    """helper-63: ``w.expand(3e9).mean().backward()`` allocated the expanded gradient (11.5 GiB) under a 16 MB
    quota: the view kept nothing, and a backward is priced by its work, not its memory. A view in a graph is charged
    the memory its backward will take."""
    from syft_magics.owner.quotas import Quotas

    make_worker("Bob", policy="open", quotas=Quotas(max_bytes="16MB"))
    client = make_client("Bob")
    w = client.send(torch.ones(1, requires_grad=True))
    with pytest.raises(sm.QuotaExceeded):
        w.expand(10**8).mean()
        client.sync()
    w.expand(1000).mean().backward()  # (a small broadcast, as in a model's forward)
    assert w.grad.get().item() == pytest.approx(1.0)
    assert client.send(torch.ones(1)).expand(10**8).shape == (10**8,)  # (no graph: nothing to charge)


def test_grad_is_none_where_torch_says_none(seed):
    """``if p.grad is not None`` (torch's idiom, e.g. in hand-written optimizers) must read the worker's state:
    None before a backward reaches the tensor and after an optimizer's zero_grad(), a pointer in between."""
    bob, client = seed
    w = client.send(torch.ones(2, requires_grad=True))
    unused = client.send(torch.ones(2, requires_grad=True))
    assert client.send(torch.ones(2)).grad is None
    assert w.grad is None
    (w * 3).sum().backward()
    assert torch.equal(w.grad.get(), torch.full((2,), 3.0))
    assert unused.grad is None  # the backward did not reach it
    opt = client.optim.SGD([w], lr=0.1)
    opt.zero_grad()  # set_to_none, torch's default
    assert w.grad is None
    client.sync()  # and nothing failed on the way


def test_autograd_grad_allow_unused_and_create_graph_follow_torch(seed):
    bob, client = seed
    a_local, b_local = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    a, b = client.send(a_local.detach().requires_grad_()), client.send(b_local.detach().requires_grad_())
    local = torch.autograd.grad((a_local * 2).sum(), [a_local, b_local], allow_unused=True)
    remote = torch.autograd.grad((a * 2).sum(), [a, b], allow_unused=True)
    assert local[1] is None and remote[1] is None
    assert torch.equal(remote[0].get(), local[0])
    # positional options, as torch binds them (grad_outputs, retain_graph, create_graph, only_inputs, allow_unused)
    assert torch.autograd.grad((a * 2).sum(), [a, b], None, None, False, True, True)[1] is None
    materialized = torch.autograd.grad((a * 2).sum(), [a, b], allow_unused=True, materialize_grads=True)
    assert torch.equal(materialized[1].get(), torch.zeros(3))
    # create_graph: a cube's gradient requires grad (and a second backward goes through it), a line's does not
    (g_local,) = torch.autograd.grad((a_local ** 3).sum(), a_local, create_graph=True)
    (g,) = torch.autograd.grad((a ** 3).sum(), a, create_graph=True)
    assert g.requires_grad and not g.is_leaf and g_local.requires_grad
    g.sum().backward()
    g_local.sum().backward()
    assert torch.equal(a.grad.get(), a_local.grad)
    (line,) = torch.autograd.grad((a * 2).sum(), a, create_graph=True)
    (line_local,) = torch.autograd.grad((a_local * 2).sum(), a_local, create_graph=True)
    assert line.requires_grad is line_local.requires_grad is False
    client.sync()


def test_a_write_through_a_view_made_under_no_grad_works_as_in_torch(seed):
    """Both under the client's no_grad: torch allows it; the worker's own bookkeeping (is the view a node of a
    graph?) asked torch a question it refuses for such a view, and the op was reported failed although it ran."""
    bob, client = seed
    p_local = torch.ones(4, requires_grad=True)
    p = client.send(torch.ones(4, requires_grad=True))
    with torch.no_grad():
        v_local, v = p_local[:2], p[:2]
        v_local.mul_(3)
        v.mul_(3)
        w = v + 1
    assert torch.equal(p.get(), p_local.detach())
    assert torch.equal(w.get(), torch.full((2,), 4.0))
    assert torch.equal(v.get(), torch.full((2,), 3.0))
    with pytest.raises(RuntimeError, match="view was created in no_grad mode"):
        v_local + 1  # torch refuses the view with grad on: the pointer gives torch's own error
    with pytest.raises(sm.RemoteError, match="view was created in no_grad mode"):
        (v + 1).get()


def test_owner_data_cannot_be_made_to_require_grad(seed):
    bob, client = seed
    x = client.search("#X")[0]
    with pytest.raises(sm.ReadOnlyError, match="Bob's data"):
        x.requires_grad_()  # at the user's line, and the pointer does not say otherwise (a user's walk-through)
    with pytest.raises(sm.ReadOnlyError):
        x.requires_grad = True
    assert not x.requires_grad
    client.sync()
    assert not bob.store.search(("#X",))[0].tensor.requires_grad


def test_to_runs_on_the_worker_within_its_devices(seed):
    bob, client = seed
    x = client.search("#X")[0]
    assert x.to("cpu") is x and x.cpu() is x
    d = x.to(torch.float64)
    assert d.dtype == torch.float64 and d.get().dtype == torch.float64
    assert x.to("cpu", torch.float16).get().dtype == torch.float16
    with pytest.raises(sm.OpNotAllowed, match="CPU"):
        x.to("cuda")


def test_is_leaf_and_grad_fn_follow_the_worker_not_the_stand_in(make_worker, make_client):
    """The local stand-in is always a leaf with no grad_fn; the pointer answers as the worker's tensor is."""
    bob = make_worker("Bob", policy="open")
    client = make_client("Bob")
    w = client.send(torch.randn(3, requires_grad=True))
    x = client.send(torch.randn(3))
    y = w * x
    remote = client.send(torch.nn.Linear(2, 2))
    assert w.is_leaf and x.is_leaf and w.grad_fn is None and x.grad_fn is None
    assert not y.is_leaf and y.requires_grad and not y.sum().is_leaf
    assert y.detach().is_leaf and (x * 2).is_leaf  # no grad needed: a leaf, as torch says
    assert all(p.is_leaf for p in remote.parameters())
    with torch.no_grad():
        assert (w * 2).is_leaf
    with pytest.raises(sm.OpNotAllowed, match="grad_fn is Bob's autograd node"):
        y.grad_fn
    # the worker agrees
    client.sync()
    entries = {e.id: e.tensor for e in bob.store.entries()}
    assert entries[y.oid].is_leaf is False and entries[w.oid].is_leaf is True


def test_in_place_ops_on_a_non_leaf_work_as_in_torch(seed):
    """``h = w * 2; h.mul_(3); F.relu(h, inplace=True)`` is legal torch (h is no leaf): the local stand-in
    used to be a leaf, and the op failed on the client before it was sent."""
    bob, client = seed
    w_local = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    h_local = w_local * 2
    h_local.mul_(3)
    F.relu(h_local, inplace=True).sum().backward()

    w = client.send(torch.tensor([1.0, -2.0, 3.0])).requires_grad_()
    h = w * 2
    h.mul_(3)
    F.relu(h, inplace=True).sum().backward()
    assert torch.equal(w.grad.get(), w_local.grad)
    with pytest.raises(RuntimeError, match="leaf Variable"):  # on the leaf itself, refused as torch does
        w.mul_(3)


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_clip_grad_norm_on_a_remote_model_equals_torchs(seed, norm_type):
    """clip_grad_norm_ moves the norms to ``p.device``, which reads 'meta' on a pointer: refused before (with
    a clear error since a user's walk-through), it now stands for the worker's device, the CPU, where
    every tensor of a CPU worker is (a worker with several devices still refuses it, below)."""
    bob, client = seed
    torch.manual_seed(0)
    local = torch.nn.Linear(3, 2)
    remote = client.send(local)
    x = torch.randn(4, 3)
    remote(client.send(x)).sum().backward()
    local(x).sum().backward()
    total = torch.nn.utils.clip_grad_norm_(remote.parameters(), 0.1, norm_type=norm_type)
    local_total = torch.nn.utils.clip_grad_norm_(local.parameters(), 0.1, norm_type=norm_type)
    assert torch.allclose(total.get(), local_total)
    for p, q in zip(remote.parameters(), local.parameters()):
        assert torch.allclose(p.grad.get(), q.grad)


def test_moving_to_a_pointers_device_on_a_worker_of_several_devices_gets_a_clear_error(seed, monkeypatch):
    bob, client = seed
    remote = client.send(torch.nn.Linear(3, 2))
    remote(client.send(torch.ones(4, 3))).sum().backward()
    monkeypatch.setattr(type(client), "devices", property(lambda self: ("cpu", "cuda")))
    with pytest.raises(sm.OpNotAllowed, match="holds no data on this side.*clip_grad_norm_"):
        torch.nn.utils.clip_grad_norm_(remote.parameters(), 1.0)


@pytest.mark.parametrize("policy", ["open", "review"])
def test_a_write_into_a_tensor_a_graph_saved_fails_its_backward_as_in_torch(make_worker, make_client, policy):
    """torch refuses a backward through a saved tensor written since it was saved; with the worker's hooks on saved
    tensors (which charge them to their client), torch left that check to the hook, and none was made: helper-70
    copied ``#X`` into a tensor the client's own loss saved, and the loss's backward put ``#X`` into the client's
    own, untainted ``a.grad``: all of it, no click. The worker makes torch's check, with torch's words."""
    local_a = torch.zeros(4, requires_grad=True)
    local_b = local_a * 1
    local_loss = (local_b * local_b).sum() / 2
    with torch.no_grad():
        local_b.copy_(torch.ones(4))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        local_loss.backward()

    bob = make_worker("Bob", policy=policy, connection_file=False)
    bob.share(torch.tensor([1.5, -2.5, 3.5, 0.25]), "#X")
    client = make_client(bob.address, key=bob.key)
    x, = client.search("#X")
    a = client.send(torch.zeros(4, requires_grad=True))
    b = a * 1
    loss = (b * b).sum() / 2  # saves b
    with torch.no_grad():
        b.copy_(x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
        client.sync()
    assert bob.store.get(a.oid).tensor.grad is None, "no gradient, and none holding #X"
    fresh = (a * 3).sum()  # an untouched graph still trains
    fresh.backward()
    client.sync()
    assert torch.equal(bob.store.get(a.oid).tensor.grad, torch.full((4,), 3.0))


def test_del_grad_clears_the_workers_gradient_as_torch_does(seed):
    bob, client = seed
    w = client.send(torch.ones(3, requires_grad=True))
    (w * 2).sum().backward()
    assert w.grad is not None
    del w.grad  # torch: the same as w.grad = None
    assert w.grad is None
    client.sync()
    assert bob.store.get(w.oid).tensor.grad is None


def test_a_frozen_parameter_keeps_the_gradient_it_had_as_torchs_does(seed):
    """helper-80: p.grad answered None without asking once p no longer required grad; a loop then skipped it."""
    bob, client = seed
    local = torch.ones(3, requires_grad=True)
    (local * 2).sum().backward()
    local.requires_grad_(False)
    w = client.send(torch.ones(3, requires_grad=True))
    (w * 2).sum().backward()
    w.requires_grad_(False)
    assert local.grad is not None and w.grad is not None
    assert torch.equal(w.grad.get(), local.grad)

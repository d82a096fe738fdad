"""A model rule (``allow_get(kind="model")``) releases trained weights, not the owner's data copied into a model
(helper-57: ``load_state_dict``, ``copy_`` into a weight released ``#X`` verbatim, no click); a model's request shows
its weights, their shapes and which holds the owner's data by what."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import syft_magics as sm

X = torch.arange(1.0, 33.0).view(4, 8)
Y = torch.tensor([0, 1, 2, 0])


class Net(nn.Module):
    """A custom module (its forward runs on the client) with a batch norm, whose running statistics its forward
    writes: training."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(x))


@pytest.fixture
def owner(make_worker, make_client):
    """Bob under review, his data shared, and a rule that lets trained models go without a click."""
    bob = make_worker("Bob", policy="review")
    bob.share(X.clone(), "#X")
    bob.share(Y.clone(), "#Y")
    bob.policy.allow_get(kind="model")
    return bob, make_client("Bob")


def _train(client, remote, steps: int = 3) -> None:
    x, y = client.search("#X")[0], client.search("#Y")[0]
    opt = client.optim.SGD(remote.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(remote(x), y).backward()
        opt.step()


@pytest.mark.parametrize("make", [lambda: nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3)), Net],
                         ids=["standard", "custom"])
def test_a_trained_model_is_released_by_the_rule(owner, make):
    bob, client = owner
    remote = client.send(make())
    _train(client, remote)
    trained = remote.get(timeout=10)
    assert isinstance(trained, nn.Module) and not bob.requests.pending


def test_a_model_trained_by_hand_is_released_by_the_rule(owner):
    # gradients by torch.autograd.grad or .grad, a step written out: training too
    bob, client = owner
    remote = client.send(nn.Sequential(nn.Linear(8, 3)))
    x, y = client.search("#X")[0], client.search("#Y")[0]
    w, b = remote.parameters()
    gw, gb = torch.autograd.grad(F.cross_entropy(remote(x), y), [w, b])
    with torch.no_grad():
        w.sub_(0.1 * gw)
    F.cross_entropy(remote(x), y).backward()
    with torch.no_grad():
        b -= 0.1 * b.grad
    remote.get(timeout=10)
    assert not bob.requests.pending


def _copy_into_weight(client, remote):
    x = client.search("#X")[0]
    with torch.no_grad():
        remote.state_dict()["0.weight"].copy_(x[:3])


def _load_state_dict(client, remote):
    remote.load_state_dict({"0.weight": client.search("#X")[0][:3]}, strict=False)


def _set_data(client, remote):
    remote.state_dict()["0.weight"].data = client.search("#X")[0][:3] * 1


def _through_a_view(client, remote):
    with torch.no_grad():
        remote.state_dict()["0.weight"].view(-1)[:8].copy_(client.search("#X")[0][0])


def _gradient_then_step(client, remote):
    w = remote.state_dict()["0.weight"]
    opt = client.optim.SGD([w], lr=1.0)
    with torch.no_grad():
        w.zero_()
    w.grad = -client.search("#X")[0][:3]
    opt.step()


def _into_the_gradient_then_step(client, remote):
    w = remote.state_dict()["0.weight"]
    opt = client.optim.SGD([w], lr=1.0)
    (w * 0).sum().backward()
    g = w.grad
    g.copy_(-client.search("#X")[0][:3])
    opt.step()


@pytest.mark.parametrize("copy", [_copy_into_weight, _load_state_dict, _set_data, _through_a_view,
                                  _gradient_then_step, _into_the_gradient_then_step])
def test_a_model_holding_the_data_copied_in_waits_for_the_owner(owner, copy, capsys):
    bob, client = owner
    remote = client.send(nn.Sequential(nn.Linear(8, 3)))
    copy(client, remote)
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.5)
    (req,) = bob.requests.pending
    assert "0.weight (3, 8)" in req.lineage and req.lineage.startswith("NOT TRAINED: 0.weight holds the owner's data")
    # the scientist is told why (which of their own ops: no value of the owner's)
    assert "Bob's rule for trained models does not apply: 0.weight holds" in capsys.readouterr().out
    assert any("not applied" in str(e.data.get("status")) for e in bob.events.of_kind("get"))
    # trained on top, or zeroed: still the owner's to decide (a mark is never cleared)
    _train(client, remote, steps=1)
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.3)


def test_a_model_built_from_the_data_waits_for_the_owner(owner):
    bob, client = owner
    x = client.search("#X")[0]
    remote = client.send(nn.Sequential(nn.Linear(8, 3)))
    _train(client, remote, steps=1)
    # the scientist's own values written in (a federated round's average) keep it a trained model
    remote.load_state_dict({"0.bias": torch.zeros(3)}, strict=False)
    remote.get(timeout=10)
    # a weight computed from the data (not by a step) does not
    remote.load_state_dict({"0.bias": x[0, :3] * 2}, strict=False)
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.3)
    assert "NOT TRAINED: 0.bias holds the owner's data put there by" in bob.requests.pending[0].lineage


def test_a_model_request_shows_its_weights(owner):
    bob, client = owner
    for rule in list(bob.policy.rules):
        bob.policy.rules.remove(rule)
    remote = client.send(nn.Sequential(nn.Linear(8, 3)))
    _train(client, remote, steps=1)
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.3)
    (req,) = bob.requests.pending
    assert "weights: 0.weight (3, 8), 0.bias (3,)" in req.lineage and "NOT TRAINED" not in req.lineage


def test_a_forward_writing_its_weights_from_the_data_waits_for_the_owner(owner):
    """helper-58 (Critical): a standard ``nn.Embedding(max_norm=1)`` renormalises, in place, the rows its indices
    name; indices computed from ``#X`` wrote ``#X`` into the weight in one forward, released as training."""
    bob, client = owner
    emb = nn.Embedding(64, 1, max_norm=1.0)
    with torch.no_grad():
        emb.weight.fill_(2.0)
    remote = client.send(emb)
    remote(client.search("#Y")[0])  # the rows the owner's labels name are renormalised
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.5)
    assert "NOT TRAINED: weight holds the owner's data put there by a forward writing its weights" \
        in bob.requests.pending[0].lineage
    # the same forward over the scientist's own indices writes nothing of the owner's
    clean = client.send(emb)
    clean(client.send(torch.tensor([1, 2])))
    clean.get(timeout=10)


def test_per_sample_weights_as_a_backwards_seed_are_training(owner):
    """helper-62: ``loss.backward(weights)`` with per-sample weights from the labels waited for a click, while
    ``(loss * weights).sum().backward()`` was released: a seed is a loss in another form (helper-58 had seeds of the
    data marked; both forms can carry the data into gradients, the residual SECURITY.md states)."""
    bob, client = owner
    remote = client.send(nn.Sequential(nn.Linear(8, 3)))
    x, y = client.search("#X")[0], client.search("#Y")[0]
    opt = client.optim.SGD(remote.parameters(), lr=0.1)
    losses = F.cross_entropy(remote(x), y, reduction="none")
    losses.backward((y.float() + 1) / 4)
    opt.step()
    remote.get(timeout=10)
    assert not bob.requests.pending


def test_a_model_built_on_the_worker_over_a_withheld_shape_is_refused(owner):
    """helper-58: the worker's ``syft.build_module`` (placing the model on its device) wraps the model factory,
    and the check for models made of withheld shapes looked for the factory itself."""
    from syft_magics.owner.models import makes_model

    bob, _ = owner
    assert makes_model(bob.server.worker.allowlist.lookup("syft.build_module"))


def test_a_model_moved_to_new_memory_is_followed(owner, monkeypatch):
    """helper-58's hypothesis: on a CUDA worker, ``remote.to(device)`` gives the weights new memory that the store's
    record of which object holds which memory did not follow: a view of a weight made after it, written from the
    data and freed, left no mark (and the old memory stayed held by the record). Here the move to new memory is
    stood in for on the CPU."""
    bob, client = owner
    remote = client.send(nn.Sequential(nn.Linear(8, 3)))
    client.sync()
    entry = bob.store.get(remote._handle.oid)
    old = id(entry.tensor[0].weight.untyped_storage())
    monkeypatch.setattr(nn.Module, "to", lambda self, *a, **k: self._apply(lambda t: t.clone()))
    remote.to("cpu")
    client.sync()
    assert id(entry.tensor[0].weight.untyped_storage()) != old
    view = remote.state_dict()["0.weight"].view(-1)
    with torch.no_grad():
        view[:8].copy_(client.search("#X")[0][0])
    del view
    client.sync()
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.5)


def test_a_fill_value_of_the_data_marks_what_it_fills(owner):
    """helper-59 (Critical): ``full_like``'s values do not depend on its first argument's, but its ``fill_value`` may
    be a pointer to one element of ``#X``: element by element, ``#X`` went into a weight unmarked."""
    bob, client = owner
    remote = client.send(nn.Sequential(nn.Linear(8, 3)))
    w, x = remote.state_dict()["0.weight"], client.search("#X")[0]
    with torch.no_grad():
        w[0, 0].copy_(torch.full_like(w[0, 0], x[0, 0]))
        w[0, 1].copy_(w[0, 1].new_full((), x[0, 1]))
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.5)


def test_the_deprecated_seed_argument_of_autograd_backward_is_refused():
    """helper-59: a raw message's ``torch.autograd.backward([w * 1], grad_variables=[x])`` seeded the backward under
    torch's old name for ``grad_tensors``: one name for the seed."""
    from syft_magics.owner import autograd

    with pytest.raises(ValueError, match="grad_variables is deprecated"):
        autograd.autograd_backward([torch.ones(1, requires_grad=True) * 1], grad_variables=[torch.ones(1)])


def test_a_weights_name_cannot_push_the_warning_out_of_sight(owner):
    """A custom module's weight names are the scientist's: the warning comes first, and names are cut and escaped."""
    bob, client = owner

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_parameter("a" * 1000 + "\nweights: fine", nn.Parameter(torch.zeros(8)))

        def forward(self, x):
            return x * next(self.parameters())

    remote = client.send(Odd())
    with torch.no_grad():
        next(remote.parameters()).copy_(client.search("#X")[0][0])
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.5)
    text = bob.requests.pending[0].lineage
    assert text.index("NOT TRAINED") < text.index("weights:") and "\n" not in text and len(text) < 1000


def test_names_kept_with_a_model_are_bounded(owner):
    """helper-60: a 4 MB weight name was kept with the model and copied into an event per get, uncharged."""
    from syft_magics.owner.models import MAX_WEIGHT_NAME, model_weights
    from syft_magics.wire.modules import MAX_CHILD_NAME, load

    with pytest.raises(ValueError, match="characters at most"):
        model_weights(["w" * (MAX_WEIGHT_NAME + 1)], torch.zeros(1))
    spec = {"type": "Sequential", "children": [["c" * (MAX_CHILD_NAME + 1), {"type": "ReLU"}]]}
    with pytest.raises(ValueError, match="characters at most"):
        load(spec, {})


def test_the_check_of_a_large_model_is_linear(owner, monkeypatch):
    """helper-60: a model of 1,000 weights, many of their pointers marked, took 4.3 s per get on the serving thread
    (each weight compared with each marked holder); the check goes by sorted spans now."""
    from syft_magics.owner import trained

    bob, client = owner
    remote = client.send(nn.Sequential(*[nn.Linear(2, 2, bias=False) for _ in range(1000)]))
    client.sync()
    entry = bob.store.get(remote._handle.oid)
    late = {id(t) for t in list(entry.tensor.parameters())[500:]}
    for e in bob.store.sharing([entry]):
        if id(e.tensor) in late:
            e.untrained = "copy_"
    calls = []
    span = trained._span
    monkeypatch.setattr(trained, "_span", lambda t: calls.append(1) or span(t))
    assert trained.why_not(bob.store, entry).startswith("500.weight holds")
    assert len(calls) < 5 * 1000  # (pair by pair: 250,000)


def test_a_model_request_names_settings_that_write_the_data_in(owner):
    """helper-57: a batch norm of ``momentum=1`` keeps its last batch's mean itself; the request says so."""
    bob, client = owner
    for rule in list(bob.policy.rules):
        bob.policy.rules.remove(rule)
    remote = client.send(nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3, momentum=1.0)))
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.3)
    assert "settings: layer 1 momentum=1.0" in bob.requests.pending[0].lineage


def test_torch_nn_init_reinitialises_remote_weights(owner):
    """helper-62: ``nn.init.kaiming_uniform_(w)`` on a remote weight was refused as not on the allowlist. It runs on
    the worker now, draws nothing from the owner's data (the model stays trained), and never writes the owner's."""
    bob, client = owner
    remote = client.send(nn.Sequential(nn.Linear(8, 3)))
    w, b = remote.state_dict()["0.weight"], remote.state_dict()["0.bias"]
    nn.init.kaiming_uniform_(w, nonlinearity="relu")
    nn.init.zeros_(b)
    _train(client, remote, steps=1)
    trained = remote.get(timeout=10)
    assert trained[0].weight.abs().max() > 0 and not bob.requests.pending
    with pytest.raises(sm.SyftError, match="cannot be changed|read-only"):
        nn.init.zeros_(client.search("#X")[0])
        client.sync()


def test_the_owners_command_log_shows_a_models_request_text_once(owner):
    """helper-62: a model's kilobyte of request text was shown twice, on the Requests tab and in the command log."""
    from syft_magics.display import esc
    from syft_magics.ui.panels import WorkerPanel

    bob, client = owner
    remote = client.send(nn.Sequential(nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3)))
    _copy_into_weight(client, remote)
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.3)
    text = bob.requests.pending[0].lineage
    assert len(text) > 200
    panel = WorkerPanel(bob)
    try:
        panel.tabs.selected_index = 1
        panel.refresh()
        assert esc(text[:100]) in panel.commands.value and esc(text[-60:]) not in panel.commands.value
        assert "(see Requests)" in panel.commands.value
    finally:
        panel.close()


def test_the_owners_panel_shows_the_warning_apart(owner):
    """helper-62: the warning was one sentence inside a kilobyte of history; the panel shows it first, as a badge."""
    from syft_magics.ui.panels import WorkerPanel

    bob, client = owner
    remote = client.send(nn.Sequential(nn.Linear(8, 3)))
    _copy_into_weight(client, remote)
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.3)
    panel = WorkerPanel(bob)
    try:
        html = panel.pending_box.children[0].children[0].value
        badge = html.index('<div class="syft-badge syft-warn"')
        assert badge < html.index("NOT TRAINED: 0.weight holds") < html.index("<code>") and "<code>NOT" not in html
    finally:
        panel.close()



def test_the_warning_is_split_where_its_reason_ends_not_at_a_weights_name():
    # a custom module's child may be named " b": its weight "a. b.weight" cut the badge at "NOT TRAINED: a"
    from syft_magics.owner.trained import split_warning

    text = "NOT TRAINED: a. b.weight holds the owner's data put there by .copy_, not by training. syft.build_module"
    assert split_warning(text) == (text[:text.index(". syft")], "syft.build_module")
    assert split_warning("syft.build_module(...)") == ("", "syft.build_module(...)")

"""Writes an op makes without naming what it writes: every object holding that memory is recorded as written.

helper-37's probe read all of #X, with no request, through each route here: torch writes batch norm's running
statistics without moving a version counter, and an optimizer step, a module's forward or a backward writes
memory that other client objects (``w.detach()``, a pointer to ``w.grad``, to a buffer) hold. Such an object
must lose the approval it had, derive from the owner's data (its error text withheld), and the owner's
request must name #X (see ``owner/side_writes.py``, ``owner/lineage.py``).
"""
from __future__ import annotations

import gc

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from syft_magics.errors import GetTimeout

X = torch.tensor([[1.5, -2.0, 3.25], [4.0, 5.5, -6.0], [7.0, 8.0, 9.75], [0.5, 0.25, 11.0]])


@pytest.fixture
def bob_and_client(make_worker, make_client):
    bob = make_worker("Bob", policy="review")
    bob.share(X.clone(), "#X")
    client = make_client(bob.address, key=bob.key)
    return bob, client, client.search("#X")[0]


def _approved(bob, ptr) -> None:
    """The owner approves a get of ``ptr`` as it is now; the approval waits for the client's next get."""
    with pytest.raises(GetTimeout):
        ptr.get(timeout=0.3)
    bob.approve(bob.requests.pending[-1].n)


def _asked_again(bob, ptr) -> str:
    """A get of ``ptr`` now opens a new request (the approval no longer holds); what the owner is shown."""
    with pytest.raises(GetTimeout):
        ptr.get(timeout=0.3)
    return bob.requests.pending[-1].lineage


def _entry(bob, ptr):
    return bob.store.get(ptr.oid)


def test_batch_norm_running_statistics_of_the_owners_data_void_an_approval_and_derive_from_it(bob_and_client):
    bob, client, x = bob_and_client
    rm, rv = client.send(torch.zeros(3)), client.send(torch.ones(3))
    _approved(bob, rm)
    F.batch_norm(x, rm, rv, training=True, momentum=1.0)  # writes mean(#X) into rm: torch moves no version
    client.sync()
    assert "F.batch_norm(#X" in _asked_again(bob, rm)  # not mean(#X) on the approval of zeros
    assert _entry(bob, rm).provenance.owner and _entry(bob, rv).provenance.owner  # error texts withheld
    with pytest.raises(Exception, match="withheld"):
        client.send(torch.zeros(1))[(rv[0] * 1000).long().view(1)].sum()  # an index error would read var(#X)
        client.sync()


def test_batch_norm_in_evaluation_mode_writes_nothing_and_an_approval_stands(bob_and_client):
    bob, client, x = bob_and_client
    rm, rv = client.send(torch.zeros(3)), client.send(torch.ones(3))
    _approved(bob, rm)
    F.batch_norm(x, rm, rv, training=False)
    client.sync()
    assert torch.equal(rm.get(timeout=2), torch.zeros(3))
    assert not _entry(bob, rm).provenance.owner


def test_a_modules_running_statistics_written_in_training_void_the_buffers_approval(bob_and_client):
    bob, client, x = bob_and_client
    model = client.send(nn.BatchNorm1d(3, momentum=1.0))
    rm = dict(model.named_buffers())["running_mean"]
    _approved(bob, rm)
    model(x)
    client.sync()
    assert "syft.module_call(" in _asked_again(bob, rm) and "#X" in bob.requests.pending[-1].lineage
    assert _entry(bob, rm).provenance.owner and _entry(bob, model.handle).provenance.owner


def test_a_models_approval_is_void_once_batch_norm_writes_its_buffers(bob_and_client):
    # the functional form leaves num_batches_tracked alone: no version of the model's state moved
    bob, client, x = bob_and_client
    model = client.send(nn.BatchNorm1d(3))
    buffers = dict(model.named_buffers())
    _approved(bob, model.handle)
    F.batch_norm(x, buffers["running_mean"], buffers["running_var"], training=True, momentum=1.0)
    client.sync()
    assert "F.batch_norm(#X" in _asked_again(bob, model.handle)
    assert _entry(bob, model.handle).provenance.owner


def test_a_pointer_to_a_gradient_derives_from_the_owners_data_a_backward_adds_into_it(bob_and_client):
    bob, client, x = bob_and_client
    lin = client.send(nn.Linear(3, 1, bias=False))
    w = dict(lin.named_parameters())["weight"]
    lin(client.send(torch.zeros(1, 3))).sum().backward()  # w.grad exists (zeros)
    g = w.grad  # the live gradient: the next backward adds into it in place
    _approved(bob, g)
    lin(x[0:1]).sum().backward()  # g += #X[0]
    client.sync()
    assert "(from #X)" in _asked_again(bob, g)
    assert _entry(bob, g).provenance.owner


def test_an_alias_of_a_parameter_derives_from_the_step_that_wrote_it(bob_and_client):
    bob, client, x = bob_and_client
    lin = client.send(nn.Linear(3, 1, bias=False))
    w = dict(lin.named_parameters())["weight"]
    alias = w.detach()  # the weight's memory, taken before anything of #X
    opt = client.optim.SGD(lin.parameters(), lr=1.0)
    lin(x[0:1]).sum().backward()
    opt.step()  # w -= #X[0]: the op names the optimizer only
    client.sync()
    entry = _entry(bob, alias)
    assert entry.provenance.owner and "optim_step" in bob.store.lineage(entry)
    assert "(from #X)" in bob.store.lineage(entry)


def test_the_owners_request_names_the_owners_data_behind_a_chain_of_ops(bob_and_client):
    bob, client, x = bob_and_client
    z = (x * 1).sum(0) + 0  # the request's ops name only the previous result
    assert _asked_again(bob, z).endswith("(from #X)")
    shown = x * 2  # named already: not repeated
    assert _asked_again(bob, shown) == ".mul(#X)"


def test_the_owners_data_shows_in_a_short_request_whatever_the_scientists_labels(bob_and_client):
    """helper-51: 16 writes of the scientist's own tensors, each with 32 tags of 128 characters padded with blank
    Braille cells, then z.add_(#X): the request named #X in its last 3 of 134,340 characters, 17,600 pixels below
    the Approve button, and the owner's click released #X. Labels are cut at 40 characters, the ops at 600, the
    owner's data always named; a tag of blank-looking characters is refused."""
    from syft_magics.errors import TagError
    from syft_magics.owner import lineage

    bob, client, x = bob_and_client
    with pytest.raises(TagError, match="visible"):
        client.send(torch.zeros(4, 3), "#p" + "\u2800" * 120)
    tags = [f"#n{j}" + "x" * 120 for j in range(32)]
    noise = [client.send(torch.zeros(4, 3), *tags) for _ in range(2)]
    z = client.send(torch.zeros(4, 3), *tags)
    for i in range(16):
        z.addcmul_(noise[i % 2], noise[(i + 1) % 2])
    z.add_(x)
    shown = _asked_again(bob, z)
    assert len(shown) < lineage.MAX_OPS_CHARS + 100 and shown.endswith("(from #X)"), shown
    assert "#X" in bob.requests.pending[-1].describe()[:800]


def test_the_owners_data_is_named_however_many_of_the_owners_objects_a_value_derives_from(bob_and_client):
    """helper-52: an object's sources were cut at 8: eight other shares of the owner's first, then #X, and the
    request read "(from #s0, ..., #s7, …)"; the owner's click released #X. Every one of the owner's objects is
    named (other owners' data moved here is cut at 8)."""
    from syft_magics.owner.provenance import MAX_SOURCES, _bounded

    bob, client, x = bob_and_client
    for i in range(8):
        bob.share(torch.ones(4, 3), f"#s{i}")
    z = sum(client.search(f"#s{i}")[0] * 0 for i in range(8)) + x * 1
    assert "#X" in _asked_again(bob, z)
    moved = [f"moved from Eve{i}, released to this worker only" for i in range(MAX_SOURCES + 2)]
    assert _bounded(["#X", *moved])[0] == "#X" and _bounded([*moved, "#X"]).count("#X") == 1
    assert len(_bounded([*moved, "#X"])) == MAX_SOURCES + 2  # (#X, 8 moved, "…")


def test_error_and_long_label_requests_name_the_owners_data_whole(bob_and_client):
    """helper-53: a request for a withheld error's text named no data (``index 1234 is out of bounds``: 1234 was
    #X[0]); two of the owner's labels with 40 characters in common read alike in "(from …)"; and with thousands of
    the owner's objects behind a value its request grew to 160 KB, each op over two such objects costing seconds.
    The error's request names the owner's data the op read; the owner's labels are named whole; past 16, how many."""
    import syft_magics as sm
    from syft_magics.owner import provenance

    bob, client, x = bob_and_client
    long = "#diabetes_cohort_2023_summary_statistics_patient_rows"
    bob.share(torch.arange(10.0), long)
    table, = client.search(long)
    table.index_select(0, x.max().long().reshape(1))
    with pytest.raises(sm.WithheldError) as info:
        client.sync()
    with pytest.raises(sm.GetTimeout):
        info.value.request_message(timeout=0.3)
    request = bob.requests.pending[-1].lineage
    assert f"(from {long}, #X)" in request or f"(from #X, {long})" in request, request
    assert _asked_again(bob, table * 2).endswith(f"(from {long})")
    sources = tuple(f"#s{i}" for i in range(provenance.MAX_OWN_SOURCES + 10))
    kept = provenance._bounded(sources)
    assert len(kept) == provenance.MAX_OWN_SOURCES + 1 and kept[-1] == provenance.MORE_OWN
    from syft_magics.owner.lineage import sources_text
    assert sources_text(kept).endswith("#s15, 48+ more of yours")


def test_an_objects_history_is_bounded_and_counts_the_writes_after(bob_and_client):
    # a loop of in-place ops grew an object's history (and its request's text) without bound
    bob, client, x = bob_and_client
    z = client.send(torch.zeros(4, 3))
    for _ in range(40):
        z.add_(x)
    client.sync()
    entry = _entry(bob, z)
    assert len(entry.history) == 16 and entry.more_writes == 24
    assert bob.store.lineage(entry).endswith("then 24 more writes")


def _gradient_filled_with(client, x):
    """A client's model ``lin``, its weight ``w``, and a pointer ``g`` to ``w.grad`` into which ``x`` was copied."""
    lin = client.send(nn.Linear(3, 4, bias=False))
    w = dict(lin.named_parameters())["weight"]
    lin(client.send(torch.ones(1, 3))).sum().backward()
    g = w.grad
    with torch.no_grad():
        g.copy_(x)
    return lin, w, g


def test_an_optimizer_step_reads_the_gradients_a_pointer_filled_with_the_owners_data(bob_and_client):
    # helper-38: g = w.grad; g.copy_(#X); opt.step() wrote -#X into w while the step's one input, the optimizer,
    # was the client's own: w, the model and the optimizer stayed untainted, index errors over w read #X
    bob, client, x = bob_and_client
    lin, w, g = _gradient_filled_with(client, x)
    opt = client.optim.SGD(lin.parameters(), lr=1.0)
    opt.step()
    client.sync()
    for ptr in (w, lin.handle, opt._handle):
        assert _entry(bob, ptr).provenance.owner, bob.store.lineage(_entry(bob, ptr))
    assert bob.store.lineage(_entry(bob, w)).endswith("(from #X)")


def test_a_pointer_to_memory_another_object_filled_with_the_owners_data_derives_from_it(bob_and_client):
    # helper-38: w.grad asked again after g = w.grad was filled with #X is that same memory, whatever w derives from
    bob, client, x = bob_and_client
    _, w, _ = _gradient_filled_with(client, x)
    again = w.grad
    client.sync()
    assert _entry(bob, again).provenance.owner  # (and w, whose gradient it is: see the test below)


def test_an_op_naming_one_object_many_times_keeps_a_bounded_record(bob_and_client):
    # helper-38: F.batch_norm(#X, rm, rv, training=True, junk=[rm] * 100,000) failed, and left a record of 100,000
    # ids in the history of every object on rm's memory, uncharged (330 KB of request text after three)
    bob, client, x = bob_and_client
    rm, rv = client.send(torch.zeros(3)), client.send(torch.ones(3))
    view = rm[0:1]
    with pytest.raises(Exception, match="withheld|junk"):
        client.run(F.batch_norm, "torch.nn.functional.batch_norm", (x, rm, rv), {"training": True, "junk": [rm] * 5000},
                   described=True)
    many = torch.cat([x] * 200)
    client.sync()
    assert all(len(inputs) <= 16 for _, inputs in _entry(bob, view).history)
    assert len(_entry(bob, many).inputs) == 16 and len(bob.store.lineage(_entry(bob, many))) < 1000


def test_an_optimizer_over_one_parameter_many_times_is_refused(bob_and_client):
    # helper-38: 50 SGD optimizers over [w] * 100,000 held 5M parameter references for 12 bytes of quota
    _, client, _ = bob_and_client
    w = client.send(torch.zeros(3)).requires_grad_()
    with pytest.raises(Exception, match="more than once"):
        client.optim.SGD([w] * 3, lr=0.1)
        client.sync()


def test_an_object_named_many_times_is_looked_at_once(bob_and_client, monkeypatch):
    # helper-41: the objects an op uses keep their repeats; the watch walked an optimizer's 2,000 parameters once per
    # mention: [opt] * 2000 took 3.2 s of the worker's time (another client's search waited 243 ms), unpriced
    from syft_magics.owner import side_writes
    from syft_magics.scientist.optim import _none

    bob, client, x = bob_and_client
    lin = client.send(nn.Linear(3, 4, bias=False))
    opt = client.optim.SGD(lin.parameters(), lr=1.0)
    lin(x[0:1]).sum().backward()
    client.sync()
    looks = []
    inside = side_writes._inside
    monkeypatch.setattr(side_writes, "_inside", lambda obj: looks.append(obj) or inside(obj))
    with pytest.raises(Exception):  # (optim_zero_grad takes one optimizer: the op fails, after its watch)
        client.run(_none, "syft.optim_zero_grad", (opt._handle,) * 50, {})
        client.sync()
    assert len(looks) == 1, len(looks)


@pytest.mark.parametrize("route", ["pointer to the gradient", "tensor adopted as the gradient"])
def test_a_gradient_written_after_its_leafs_pointer_is_gone_derives_from_the_owners_data(bob_and_client, route):
    # helper-42: w's pointer freed, its graph still holding w; the backward over #X added #X into w.grad in place:
    # into g = w.grad, or into the client's own g torch had adopted as w.grad (a seed given through a view); g stayed
    # the client's own and index errors over it read all of #X
    bob, client, x = bob_and_client
    w = client.send(torch.zeros(12)).requires_grad_()
    if route == "pointer to the gradient":
        (w * 1).sum().backward()
        g = w.grad
    else:
        g = client.send(torch.zeros(12))
        w.view(4, 3).backward(g.view(4, 3))
    loss = (w.view(4, 3) * x).sum()
    del w
    gc.collect()
    client.sync()
    loss.backward()
    client.sync()
    assert _entry(bob, g).provenance.owner
    assert "(from #X)" in _asked_again(bob, g) or "#X" in bob.requests.pending[-1].lineage


@pytest.mark.parametrize("then", ["its gradient asked again", "an optimizer step"])
def test_a_gradient_filled_through_a_freed_pointer_leaves_its_leaf_derived_from_the_owners_data(bob_and_client, then):
    # helper-43: g = w.grad; g.copy_(#X); del g: the taint went with g; a new w.grad, or opt.step() writing -#X
    # into w, read #X back from w, the client's own, through index errors, no request
    bob, client, x = bob_and_client
    lin, w, g = _gradient_filled_with(client, x)
    opt = client.optim.SGD(lin.parameters(), lr=1.0)
    del g
    gc.collect()
    client.sync()
    if then == "its gradient asked again":
        again = w.grad
        client.sync()
        assert _entry(bob, again).provenance.owner
    else:
        opt.step()
        client.sync()
    assert _entry(bob, w).provenance.owner and _entry(bob, opt._handle).provenance.owner
    assert bob.store.lineage(_entry(bob, w)).endswith("(from #X)")


@pytest.mark.parametrize("route", ["requires_grad turned off meanwhile", "a retained gradient of a non-leaf"])
def test_a_gradient_torch_keeps_out_of_sight_is_still_its_holders(bob_and_client, route):
    # helper-44: g = w.grad; w.requires_grad_(False); g.copy_(#X); del g; then w.grad again: w's gradient was not
    # looked for while w did not require one; and y.retain_grad()'s gradient was not counted as y's at all
    bob, client, x = bob_and_client
    w = client.send(torch.zeros(4, 3)).requires_grad_()
    holder = w if route.startswith("requires_grad") else w * 1
    if holder is not w:
        holder.retain_grad()
    holder.sum().backward()
    g = holder.grad
    if holder is w:
        w.requires_grad_(False)
    g.copy_(x)
    del g
    gc.collect()
    client.sync()
    if holder is w:
        w.requires_grad_(True)
    again = holder.grad
    client.sync()
    assert _entry(bob, again).provenance.owner and _entry(bob, holder).provenance.owner

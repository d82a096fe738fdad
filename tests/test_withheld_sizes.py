"""A withheld shape does not leak through quotas (session 13's probe: ``nonzero(x[i:i+1] > t)`` added 0 or 8
bytes to the client's charge, and a bisection over ``QuotaExceeded`` read every value of ``#X`` in 2.8 s under
review). Everything the client can observe of its quota, prices and the owner's rules of sizes follows from
public facts: a result of an op that reads or makes a withheld shape is charged its public upper bound (from a
trace on value-free stand-ins), priced at that bound, and matched against ``allow_get(max_numel=...)`` by it."""
from __future__ import annotations

import pytest
import torch

import syft_magics as sm
from syft_magics.errors import PermissionDenied, QuotaExceeded
from syft_magics.owner.quotas import Quotas

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fresh_estimates")]

SECRET = torch.tensor([0.123456, 0.654321, 0.5, 0.999999])


def _bob(make_worker, **kwargs):
    bob = make_worker("Bob", policy="review", connection_file=False, **kwargs)
    bob.share(SECRET.clone(), "#X")
    return bob


def _held(bob) -> int:
    return bob.store.held_bytes(next(iter(bob.server.sessions)))


@pytest.mark.parametrize("t", [0.0, 2.0], ids=["every value above", "none above"])
def test_a_withheld_result_is_charged_its_public_bound_whatever_its_real_size(make_worker, make_client, t):
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    kept = [torch.nonzero(x[i:i + 1] > t) for i in range(4)]  # real: 1 row each, or none
    grown = kept[0].float().repeat(1000, 1)  # computed from a withheld shape: bounded through it
    client.sync()
    # at most one row of one index each (8 B), and 1000 such rows of float32: the same for either threshold
    assert _held(bob) == 4 * 8 + 1000 * 4
    assert kept[0].known_shape is None and grown.known_shape is None


def test_quota_refusals_are_the_same_whatever_the_withheld_values(make_worker, make_client):
    """The probe's oracle: keep ``nonzero(x[i:i+1] > t)`` results until the quota refuses one; the count and
    the text of the refusal were a read of ``x``. Both follow from public facts now."""
    seen = []
    for t in (0.0, 2.0):
        bob = _bob(make_worker, quotas=Quotas(max_bytes=100))
        client = make_client(bob.address, key=bob.key)
        x = client.search("#X")[0]
        kept = []
        with pytest.raises(QuotaExceeded) as refused:
            for _ in range(40):
                kept.append(torch.nonzero(x[0:1] > t))
                client.sync()
        seen.append((len(kept), str(refused.value)))
    assert seen[0] == seen[1], seen


def test_an_op_over_a_withheld_shape_is_priced_at_its_bound(make_worker, make_client):
    """An estimate from the real size would refuse a big result and let a small one through."""
    bob = make_worker("Bob", policy="review", connection_file=False, quotas=Quotas(max_bytes="64MB"))
    bob.share(torch.zeros(1_000_000), "#Z")
    client = make_client(bob.address, key=bob.key)
    z = client.search("#Z")[0]
    rows = torch.nonzero(z > 0.5)  # really none; at most a million (8 MB)
    client.sync()
    with pytest.raises(QuotaExceeded, match="allocating"):  # 16x the bound: 128 MB over a 64 MB quota
        rows.repeat(16, 1).sum().item()


def test_an_unbounded_size_is_refused_with_what_to_do(make_worker, make_client):
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    with pytest.raises(PermissionDenied, match=r"bincount's result .*no bound.*one_hot"):
        torch.bincount((x * 10).long()).sum().item()
    # a size read from the owner's values, the same
    with pytest.raises(PermissionDenied, match="without telling it"):
        x.new_zeros((x[0] * 1000).long()).sum().item()
    # the client's own data is not the owner's: nothing to withhold
    mine = client.send(torch.tensor([1, 2, 2]))
    assert tuple(torch.bincount(mine).shape) == (3,)


def test_no_autograd_graph_over_a_withheld_shape(make_worker, make_client):
    """What a graph saves is charged by its real size: it would tell a withheld one."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    w = client.send(torch.ones(4)).requires_grad_()
    with pytest.raises(PermissionDenied, match=r"autograd graph .*request_shape"):
        w[x > 0.5].sum().item()  # the result's shape is withheld, and the index its backward saves
    picked = x[x > 0.5]
    with pytest.raises(PermissionDenied, match="autograd graph"):
        (picked * w[0]).sum().item()  # over a withheld input
    with torch.no_grad():
        total = (picked * w[0]).sum()  # no graph: allowed
    client.sync()
    assert total.known_shape == ()


def test_an_owners_rule_of_sizes_reads_the_public_bound(make_worker, make_client):
    """``allow_get(max_numel=1)`` applied to the real numel told whether a withheld result had more than one
    element (auto-allowed or left to review)."""
    bob = _bob(make_worker)
    bob.policy.allow_get(max_numel=1)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    none = torch.nonzero(x[0:2] > 2.0)  # really empty, at most 2 elements: left to the owner
    with pytest.raises(sm.GetTimeout):
        none.get(timeout=0.3)
    one = torch.nonzero(x[0:1] > 0.0)  # at most one element: the rule applies
    assert one.get(timeout=5).tolist() == [[0]]


def _held_after(make_worker, make_client, t, steps):
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    kept = steps(x, t)
    client.sync()
    return _held(bob), kept


@pytest.mark.parametrize("steps", [
    # torch copies (n = 2: nonzero's rows are column-major) or returns a view (n = 0) where the trace saw a view
    lambda x, t: torch.nonzero(x[0:1].view(1, 1).expand(1, 2) > t).contiguous(),
    # and which results share memory showed once the one in between was freed (a copy's block outlived it)
    # (views of views; ``.reshape(-1).unflatten(0, (-1, 2))`` is refused now: its flat size, twice the withheld
    # one, cannot be 1 (the stand-ins of the edge check do not know that))
    lambda x, t: torch.nonzero(x.view(2, 2) > t).t().t(),
    lambda x, t: torch.nonzero(x.view(2, 2) > t)[:, :1],
], ids=["contiguous", "view of a view", "narrow"])
def test_whether_torch_made_a_view_or_a_copy_does_not_show_in_the_charge(make_worker, make_client, steps):
    """helper-27's probe read #X in 0.3 s from ``nonzero(x[i] > t (expanded)).contiguous()``: charged 70 or
    38 bytes as torch copied or not."""
    (a, _), (b, _) = (_held_after(make_worker, make_client, t, steps) for t in (0.0, 2.0))
    assert a == b


def test_a_view_with_a_public_shape_of_withheld_memory_is_a_copy_of_its_own(make_worker, make_client):
    """Else it would keep memory of withheld size alive after the withheld result is freed, at its own charge."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    rows = torch.nonzero(x > 0.3)  # 3 rows really, at most 4 (32 B)
    # shape (0, 1): public (a view of some rows would fail when none passed, and is refused: see
    # test_whether_an_op_over_a_filtered_result_fails_does_not_tell_how_many_rows_passed)
    first = rows[:0]
    client.sync()
    assert first.known_shape == (0, 1)
    before = _held(bob)
    del rows
    client.sync()
    assert _held(bob) == before - 4 * 8 and _held(bob) == 0  # what stays is the copy's own 0 bytes


def test_results_over_withheld_shapes_are_read_only(make_worker, make_client):
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    rows = torch.nonzero(x > 0.3)
    with pytest.raises(sm.ReadOnlyError, match="out of place"):
        rows.add_(1)
        client.sync()
    with pytest.raises(sm.ReadOnlyError, match="out of place"):
        rows[:0].zero_()  # (a copy: writing it would leave rows as they are)
        client.sync()
    assert (rows + 1).sum().known_shape == ()  # out of place: fine


def test_an_op_over_many_withheld_dimensions_is_refused(make_worker, make_client):
    """Each is a symbol of the trace, whose work grows exponentially (13 held the serving thread 17 s)."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    parts = [torch.nonzero(x > t) for t in (0.1, 0.2, 0.3, 0.4, 0.5)]
    assert torch.cat(parts[:4]).sum().known_shape == ()
    with pytest.raises(PermissionDenied, match="more than 4 dimensions"):
        torch.cat(parts).sum().item()


def test_a_trace_never_runs_on_the_serving_thread(make_worker, make_client, monkeypatch):
    """A first trace takes milliseconds of sympy (seconds for many withheld dimensions): a client varying its
    shapes would hold the serving thread for every other client. Such an op runs on its client's lane."""
    import threading

    from syft_magics.owner import provenance

    where = []
    traced = provenance.trace

    def recording(*args, **kwargs):
        where.append(threading.current_thread().name)
        return traced(*args, **kwargs)

    monkeypatch.setattr(provenance, "trace", recording)
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    from syft_magics.owner import costs

    assert costs.wait_warm(60)
    mine = client.send(torch.zeros(4))
    for t in (mine, x):  # priced (and cheap) on the client's own data, where nothing is traced; then traced
        where.clear()
        for i in range(1, 4):
            torch.nonzero(t[:i] > 0.5)
        client.sync()
    assert where and not any(name.startswith("syft-worker") for name in where), where


def test_a_model_cannot_be_made_of_withheld_tensors(make_worker, make_client):
    """helper-28: ``average_models`` over ``model_weights(nonzero(...))`` described the average's real shape
    (models' shapes are public: their architecture's), and a model held withheld memory at no charge."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    rows = torch.nonzero(x > 0.5).float()
    with pytest.raises(PermissionDenied, match="a model cannot be made of a tensor computed over a shape"):
        client.run(None, "syft.model_weights", (["a"], rows), {}, described=True)


@pytest.mark.parametrize("t", [0.0, 2.0], ids=["a row", "no row"])
def test_whether_a_result_is_read_only_follows_from_public_facts(make_worker, make_client, t):
    """helper-28: a view of an empty withheld result (no memory) stayed writable, a view of a non-empty one
    became a read-only copy: the refusal told x[i] > t."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    with pytest.raises(sm.ReadOnlyError):
        torch.nonzero(x[0:1] > t)[0:0].mul_(1)
        client.sync()


def test_a_view_of_a_released_shape_does_not_keep_its_memory_uncharged(make_worker, make_client):
    """helper-28: once the owner released a shape, a view of it held the withheld memory at no charge (369 MiB
    under a 256 MB quota after 10 approvals)."""
    import threading
    import time

    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    big = torch.nonzero(x > -1.0).float().repeat(1000, 1)  # 4,000 rows really (at most as many)

    def approve() -> None:
        end = time.monotonic() + 10
        while not bob.requests.pending and time.monotonic() < end:
            time.sleep(0.01)
        bob.approve(bob.requests.pending[0].n)

    approver = threading.Thread(target=approve)
    approver.start()
    assert tuple(big.request_shape(timeout=10)) == (4000, 1)
    approver.join()
    first = big[:1]
    del big
    client.sync()
    assert first.known_shape == (1, 1) and _held(bob) == 4  # the view is a copy of its own 4 bytes


def test_a_forward_on_withheld_rows_under_no_grad_does_not_stop_training(make_worker, make_client):
    """helper-28: the model read as computed over a withheld shape afterwards, and every forward with
    gradients was refused."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    remote = client.send(torch.nn.Linear(1, 1))
    with torch.no_grad():
        remote(x[x > 0.3][:, None]).sum()
    loss = remote(x[:, None]).sum()
    loss.backward()
    client.sync()
    assert next(remote.parameters()).grad is not None


def test_an_op_needing_two_withheld_sizes_equal_is_traced(make_worker, make_client):
    """Rows picked by one mask have one size, whatever the data: an op that needs them equal (mse_loss) is
    traced with one symbol for both."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    m = x > 0.3
    a, b = x[m], (x * 2)[m]
    assert torch.nn.functional.mse_loss(a, b).known_shape == ()
    assert (torch.nonzero(m)[:, 0] * a).sum().known_shape == ()  # (nonzero(m) counts the same elements)
    client.sync()


@pytest.mark.parametrize("t", [0.0, 2.0], ids=["a row", "no row"])
def test_a_write_into_the_clients_empty_tensor_next_to_an_empty_withheld_result(make_worker, make_client, t):
    """helper-29: an empty withheld result has no memory (address 0), as the client's own empty tensor has: the
    read-only guard took one for the other, and the refusal told whether x[i] > t."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    mine, none = client.send(torch.zeros(0, dtype=torch.long)), client.send(torch.zeros(0, dtype=torch.bool))
    mine.masked_scatter_(none, torch.nonzero(x[0:1] > t))  # selects nothing: fine, as in torch
    client.sync()


def test_gradients_written_over_the_owners_data_with_many_objects_are_looked_for_off_the_serving_thread(
        make_worker, make_client, monkeypatch):
    """helper-29: ``p.grad = g`` (g from #X) looked at all 80,000 parameters of a client's models on the serving
    thread: 0.6 s per op, another client's round trip up to 1.2 s."""
    import threading

    from syft_magics.owner import ops, side_writes

    where = []
    looked = side_writes.watch

    def recording(*args, **kwargs):
        where.append(threading.current_thread().name)
        return looked(*args, **kwargs)

    monkeypatch.setattr(side_writes, "watch", recording)
    monkeypatch.setattr(ops, "GRADS_INLINE", 16)
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    model = client.send(torch.nn.Sequential(*[torch.nn.Linear(1, 1) for _ in range(10)]))  # 21 objects
    p = client.send(torch.zeros(4)).requires_grad_()
    for _ in range(3):  # (priced on the first, cheap afterwards)
        p.grad = x * 2
        client.sync()
    assert where and not any(name.startswith("syft-worker") for name in where), where
    del model


def test_a_tensor_written_from_withheld_rows_keeps_its_public_shape(make_worker, make_client):
    """helper-30: ``p.addmv_(x[m].t(), y[m])`` marked the client's p (shape (5,), its own memory) as withheld:
    autograd over it and moving it were refused as if its shape were unknown."""
    bob = make_worker("Bob", policy="review", connection_file=False)
    bob.share(torch.rand(8, 5), "#D")
    bob.share(torch.rand(8), "#Y")
    client = make_client(bob.address, key=bob.key)
    d, y = client.search("#D")[0], client.search("#Y")[0]
    m = d[:, 0] > 0.5
    p = client.send(torch.zeros(5)).requires_grad_()
    with torch.no_grad():
        p.addmv_(d[m].t(), y[m])
    (p * 2).sum().backward()  # a graph over p: its shape is public
    client.sync()
    assert p.known_shape == (5,) and p.grad is not None
    entry = bob.store.get(p.oid)
    assert entry.provenance.owner and not entry.provenance.hidden  # (its values are Bob's: a get is reviewed)


def test_an_op_that_may_write_over_a_withheld_shape_torch_cannot_trace_is_refused_before_it_writes(
        make_worker, make_client, monkeypatch):
    """helper-30: such an op ran, wrote, and only then were its results refused (the write stayed)."""
    from syft_magics.owner import provenance
    from syft_magics.owner.fake_trace import Untraced

    traced = provenance.trace
    monkeypatch.setattr(provenance, "trace",
                        lambda fn, *a: Untraced() if fn is torch.Tensor.index_add_ else traced(fn, *a))
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    rows = torch.nonzero(x > 0.3)[:, 0]  # withheld: which rows
    p = client.send(torch.zeros(4))
    with pytest.raises(PermissionDenied, match="cannot work out"):
        p.index_add_(0, rows, torch.ones_like(rows, dtype=torch.float32))
        client.sync()
    assert bob.store.get(p.oid).tensor.sum().item() == 0  # nothing written


def test_an_in_place_op_under_no_grad_on_a_view_of_a_parameter_over_withheld_rows(make_worker, make_client):
    """helper-30: ``W.view(5).addmv_(d[m].t(), y[m])`` under the client's no_grad wrote W, then failed: the copy
    of its public-shape result was taken with grad mode on ("a view was created in no_grad mode...")."""
    bob = make_worker("Bob", policy="review", connection_file=False)
    bob.share(torch.rand(8, 5), "#D")
    bob.share(torch.rand(8), "#Y")
    client = make_client(bob.address, key=bob.key)
    d, y = client.search("#D")[0], client.search("#Y")[0]
    remote = client.send(torch.nn.Linear(5, 1))
    weight = next(remote.parameters())
    client.sync()
    live = next(e.tensor for e in bob.store.entries() if isinstance(e.tensor, torch.nn.Linear)).weight
    before = live.detach().clone()
    m = d[:, 0] > -1.0  # every row
    with torch.no_grad():
        weight.view(5).addmv_(d[m].t(), y[m])
    client.sync()
    expected = before.view(5) + bob.store.search(("#D",))[0].tensor.t() @ bob.store.search(("#Y",))[0].tensor
    assert torch.allclose(live.detach().view(5), expected)

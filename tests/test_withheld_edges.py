"""An op over a withheld size runs only if it runs whatever that size is, so that neither its result's shape nor
whether it fails tells how many rows passed a filter (see ``owner/fake_trace.py``, ``owner/sizes.py``): it is
traced with the withheld sizes unknown, and again with each at 0 and at 1 (the others unknown), on torch's
value-free kernels and on its real ones over zero-filled stand-ins. Random draws over the owner's data come
from a generator state of their own (``owner/randomness.py``)."""
from __future__ import annotations

import pytest
import torch

import syft_magics as sm
from syft_magics.errors import PermissionDenied

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("fresh_estimates")]

M = torch.tensor([[1.0, -2, 3], [4, 5, -6], [7, 8, 9]])
THRESHOLDS = (0.5, 3.0, 5.0, 8.0)  # 3, 2, 1 and 0 rows of M pass M[:, 0] > t


def _bob(make_worker, data=M):
    bob = make_worker("Bob", policy="review", connection_file=False)
    bob.share(data.clone(), "#M")
    return bob


def _copies(monkeypatch, method: str, at_least: int) -> list:
    """The sizes of the tensors of ``at_least`` elements that ``Tensor.<method>`` copies from now on."""
    copied: list = []
    original = getattr(torch.Tensor, method)

    def counting(t, *args, **kwargs):
        if t.numel() >= at_least:
            copied.append(t.numel())
        return original(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, method, counting)
    return copied


def test_how_many_rows_passed_a_filter_does_not_show_through_squeeze(make_worker, make_client):
    """Torch decides ``squeeze()`` over a size it does not know as if that size were not 1; the real result of
    one row differed, and whether its shape was shown told it: ``x[x[:, 0] > t].squeeze().sum(0)`` had the
    shape (3,) unless exactly one row passed, threshold by threshold (found reviewing this session's work). The
    trace's public facts must hold at sizes 0 and 1 too, or the op is refused, whatever the data."""
    bob = make_worker("Bob", policy="review", connection_file=False)
    bob.share(torch.tensor([[1.0, -2, 3], [4, 5, -6], [7, 8, 9]]), "#M")
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    seen = []
    for t in (0.5, 3.0, 5.0, 8.0):  # 3, 2, 1 and 0 rows pass
        rows = m[m[:, 0] > t]
        outcome = []
        for make in (lambda r: r.squeeze(), lambda r: r.squeeze().sum(0), lambda r: r.squeeze(0)):
            try:
                out = make(rows)
                client.sync()
                outcome.append(out.known_shape)
            except PermissionDenied as exc:
                outcome.append(type(exc).__name__)
        outcome.append(rows.sum(0).shape)  # (what stays public: a sum over the withheld rows)
        seen.append(outcome)
    assert all(o == seen[0] for o in seen), seen
    assert seen[0][-1] == (3,)


#: Ops over ``rows = M[M[:, 0] > t]`` that fail on real data when no row (or one) passed, and succeeded else:
#: a ``WithheldError`` instead of a result told whether any row passed, and a threshold search read the column's
#: maximum (found reviewing session 15's work). Each is refused now, whatever the data.
FAILS_AT_AN_EDGE = {
    "rows[0]": lambda r, c: r[0],
    "rows[-1]": lambda r, c: r[-1],
    "rows[1]": lambda r, c: r[1],
    "max(0)": lambda r, c: r.max(0).values,
    "amax(0)": lambda r, c: r.amax(0),
    "max()": lambda r, c: r.max(),
    "median(0)": lambda r, c: r.median(0).values,
    "topk(1, 0)": lambda r, c: r.topk(1, 0).values,
    "cumsum(0)[-1]": lambda r, c: r.cumsum(0)[-1],
    "rows[:1].expand(4, 3)": lambda r, c: r[:1].expand(4, 3),
    "view(3)": lambda r, c: r.view(3),  # (runs at exactly one row only)
    "reshape(-1, 6)": lambda r, c: r.reshape(-1, 6),  # (an even count only)
    "index_select(0, i)": lambda r, c: r.index_select(0, c.send(torch.tensor([0]))),  # (the client's index)
    "gather(0, i)": lambda r, c: r.gather(0, c.send(torch.zeros(1, 3, dtype=torch.long))),
}


def test_whether_an_op_over_a_filtered_result_fails_does_not_tell_how_many_rows_passed(make_worker, make_client):
    bob = make_worker("Bob", policy="review", connection_file=False)
    bob.share(torch.tensor([[1.0, -2, 3], [4, 5, -6], [7, 8, 9]]), "#M")
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    seen = {}
    for t in (0.5, 3.0, 5.0, 8.0):  # 3, 2, 1 and 0 rows pass
        rows = m[m[:, 0] > t]
        for name, make in FAILS_AT_AN_EDGE.items():
            try:
                make(rows, client)
                client.sync()
                outcome = "ran"
            except sm.SyftError as exc:
                outcome = type(exc).__name__
            seen.setdefault(name, []).append(outcome)
    assert {name: o for name, o in seen.items() if o != ["PermissionDenied"] * 4} == {}
    with pytest.raises(PermissionDenied, match=r"fails when a size Bob withholds is 0 .*torch\.where"):
        rows.max(0)
        client.sync()


def test_ops_over_a_filtered_result_that_cannot_fail_still_run(make_worker, make_client):
    """What the edge check leaves alone: ops that run at any count of rows, and the same question asked with
    a mask, which needs no withheld size; an op that fails whatever the data says torch's own error."""
    bob = make_worker("Bob", policy="review", connection_file=False)
    bob.share(torch.tensor([[1.0, -2, 3], [4, 5, -6], [7, 8, 9]]), "#M")
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    keep = m[:, 0] > 5.0
    rows = m[keep]
    assert [rows.sum(0).shape, rows.mean(0).shape, rows.sort(0).values.sum(0).shape, rows.t().matmul(rows).shape] \
        == [(3,), (3,), (3,), (3, 3)]
    masked = torch.where(keep[:, None], m, torch.tensor(float("-inf"))).amax(0)
    bob.policy.allow_get(max_numel=3)
    assert masked.get(timeout=5).tolist() == [7.0, 8.0, 9.0]
    with pytest.raises(RuntimeError, match="must match the size"):
        rows + torch.ones(4)
        client.sync()


def test_whether_two_filters_passed_as_many_rows_does_not_show(make_worker, make_client):
    """``a * b`` of rows picked by two filters ran when as many rows passed both (or one passed one), and failed
    otherwise: comparing the counts of two thresholds on one column reads its values (found reviewing session
    16's work). Sizes not known to be equal are distinct symbols now: such an op is refused, whatever the
    counts; and so is an op over rows picked by two masks computed alike (``x[x > t]``, ``y[x > t]``: name
    the mask once)."""
    bob = make_worker("Bob", policy="review", connection_file=False)
    bob.share(torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]), "#M")
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    seen = []
    for t1, t2 in [(0, 0), (0, 3), (3, 3), (0, 6), (10, 10)]:  # 3 and 3 rows, 3 and 2, 2 and 2, 3 and 1, none
        a, b = m[m[:, 0] > t1], m[m[:, 1] > t2]
        try:
            (a * b).sum()
            client.sync()
            seen.append("ran")
        except sm.SyftError as exc:
            seen.append(type(exc).__name__)
    assert seen == ["PermissionDenied"] * 5, seen
    m0 = m[:, 0] > 3
    assert (m[m0] * m[m0]).sum().known_shape == ()  # one mask: fine
    client.sync()


def test_the_verdict_at_the_edges_is_remembered_by_the_clients_index_values(make_worker, make_client):
    """helper-31: the verdict was remembered by the shape of the client's index: ``rows[:, i]`` with ``i = [0]``
    first, then ``[5]`` (same shape) ran when no row passed and failed otherwise, telling whether any row
    passed. It is remembered by the index's values now: ``[5]`` is asked on its own (it fails at one row)."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    first, second = client.send(torch.tensor([0])), client.send(torch.tensor([5]))
    seen = []
    for t in THRESHOLDS:
        rows = m[m[:, 0] > t]
        outcome = []
        for index in (first, second):
            try:
                rows[:, index].sum()
                client.sync()
                outcome.append("ran")
            except sm.SyftError as exc:
                outcome.append(type(exc).__name__)
        seen.append(outcome)
    assert seen == [["ran", "PermissionDenied"]] * 4, seen


def test_random_draws_over_the_owners_data_do_not_move_the_workers_generator(make_worker, make_client):
    """helper-31: every op drew from torch's one global generator, whose state a client rebuilt from ~1,300
    draws of its own; ``rand_like(rows)`` moved it by the number of rows that passed (and ``poisson(x)`` by an
    amount that depends on values): all of ``#X`` read in 0.1 s, without a get or a failed op. Ops over the
    owner's data draw from a state of their own now: the client's next draw is the same however many rows
    passed."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    mine = client.send(torch.zeros(8, dtype=torch.int32))
    draws = []
    for t in THRESHOLDS:
        torch.manual_seed(1234)  # (the worker runs in this process: its generator is this one)
        rows = m[m[:, 0] > t]
        torch.rand_like(rows).sum()
        torch.nn.functional.dropout(m, 0.5).sum()
        drawn = mine.random_()
        client.sync()
        draws.append(bob.store.get(drawn.oid).tensor.tolist())
    assert all(d == draws[0] for d in draws), draws
    assert len(set(map(tuple, draws))) == 1 and draws[0] != [0] * 8  # (the client's own op did draw)


def test_the_edge_checks_stand_ins_are_one_per_tensor_and_bounded(monkeypatch):
    """helper-31: the real-kernel check made a full-size copy of every tensor an op named, each time it was
    named, outside any quota (+7.5 GiB from a 64 MB quota with one 1 GB tensor named 8 times). The owner's
    tensors stand as zeros within ``STANDIN_BYTES`` (past it, one zero expanded); the client's are themselves,
    copied only where the op may write into them."""
    from torch.utils import _pytree as pytree

    from syft_magics.owner import edge_runs

    monkeypatch.setattr(edge_runs, "STANDIN_BYTES", 1000)
    big, small, mine = torch.ones(100, 10), torch.ones(2, 2), torch.ones(10)
    seen = []

    def op(*tensors):
        seen.append(tensors)

    args = (big, big, small, mine)
    leaves, spec = pytree.tree_flatten((args, {}))
    owned = {id(big), id(small)}
    for may_write in (False, True):
        assert edge_runs.runs_at(op, leaves, spec, {}, {}, owned, may_write)
    monkeypatch.setattr(edge_runs, "STANDIN_BYTES", 16)  # (the client's 40 bytes do not fit: not asked)
    assert edge_runs.runs_at(op, leaves, spec, {}, {}, owned, True) is None
    (b1, b2, s, c), (_, _, _, c_copy) = seen
    assert b1 is b2 and b1.stride() == (0, 0) and not b1.any()  # 4,000 bytes: over the room, expanded
    assert s.stride() == (2, 1) and not s.any()  # 16 bytes: zeros of its own
    assert c.data_ptr() == mine.data_ptr() and c_copy.data_ptr() != mine.data_ptr()


def test_a_views_copy_is_checked_against_the_quota_before_it_is_made(make_worker, make_client, monkeypatch):
    """helper-31: a result the trace says views its inputs is a copy of its own; ``atleast_1d(rows, *[big] * 8)``
    copied a 1 GB owner tensor 8 times before the quota refused the results (64 MB quota)."""
    from syft_magics.owner.quotas import Quotas

    bob = make_worker("Bob", policy="review", connection_file=False, quotas=Quotas(max_bytes="1MB"))
    bob.share(M.clone(), "#M")
    bob.share(torch.zeros(1 << 20), "#BIG")  # 4 MiB
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    big, = client.search("#BIG")
    rows = m[m[:, 0] > 3]
    copied = _copies(monkeypatch, "clone", 1 << 20)
    with pytest.raises(sm.QuotaExceeded, match="max_bytes"):
        torch.atleast_1d(rows, big, big)
        client.sync()
    assert copied == []


def test_a_broadcast_masks_count_is_not_taken_for_the_masks_own(make_worker, make_client):
    """``masked_select(x, m)`` broadcasts ``m``: its length is a multiple of ``m``'s count, so it does not share
    the size of ``y[m]`` (found reviewing this session's work: taken as equal, ``masked_select(M, m) + M[0][m]``
    ran when no element passed and failed otherwise)."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    x, = client.search("#M")
    seen = []
    for t in (-3.0, 0.0, 2.0, 5.0):  # 3, 2, 1 and 0 of M[0] = [1, -2, 3] pass
        m = x[0] > t
        try:
            (torch.masked_select(x, m) + x[0][m]).sum()
            client.sync()
            seen.append("ran")
        except sm.SyftError as exc:
            seen.append(type(exc).__name__)
    assert seen == ["PermissionDenied"] * 4, seen


def test_overlapping_ops_put_back_the_generator_state_the_first_found():
    """Two ops over the owner's data on two threads at once, the first to start ending first: the second had
    saved the first's fresh state and put it back last, leaving the worker's generator in a state drawn from a
    fresh seed, which a client could rebuild from its draws and rewind to its seeding, counting the draws made
    since (found reviewing this session's work)."""
    import threading

    from syft_magics.owner import randomness

    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    second_in, first_done = threading.Event(), threading.Event()

    def second() -> None:
        with randomness.apart():
            torch.rand(5)
            second_in.set()
            first_done.wait(5)

    thread = threading.Thread(target=second)
    with randomness.apart():
        torch.rand(3)
        thread.start()  # (starts after this one, ends after it)
        assert second_in.wait(5)
    first_done.set()
    thread.join(5)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_withheld_result_is_kept_contiguous_as_the_edge_check_sees_it(make_worker, make_client):
    """helper-32: ``rows.t()`` was kept as a transposed view, while the edge check's stand-ins are contiguous:
    ``rows.t().view(-1)`` ran with 0 or 1 rows and failed with more."""
    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    seen = []
    for t in THRESHOLDS:
        try:
            m[m[:, 0] > t].t().view(-1).sum()
            client.sync()
            seen.append("ran")
        except sm.SyftError as exc:
            seen.append(type(exc).__name__)
    assert seen == ["ran"] * 4, seen


def test_the_edge_check_is_bounded_in_time_and_its_keys_in_size(monkeypatch):
    """helper-32: four withheld sizes and a costly op took 81 real runs (10 s for an op priced at 0.1 s); and a
    client's index named 1,000 times in one op put 1,000 copies of its values in a remembered key (the worker
    grew 32 MB per 1 KB message)."""
    from torch.utils import _pytree as pytree

    from syft_magics.owner import fake_trace

    x = torch.ones(3, 2)
    leaves, spec = pytree.tree_flatten(((x,), {"dim": 0}))
    withheld = {id(x): ((3, 2), (0,), (0,))}
    assert isinstance(fake_trace.trace(torch.sum, leaves, spec, withheld), fake_trace.Trace)
    monkeypatch.setattr(fake_trace, "EDGE_SECONDS", -1.0)
    assert fake_trace.trace(torch.sum, leaves, spec, withheld) == fake_trace.Untraced(late=True)

    index = torch.arange(5)
    few, many = (x, *[index] * 10), (x, *[index] * 1000)  # 5,000 of the client's elements: not remembered
    for nest in (lambda a: a, lambda a: ([*a],)):  # (as arguments, and in a list: the key's two paths)
        assert fake_trace.trace_key(torch.stack, nest(few), {}, withheld, {id(x)}) is not None
        assert fake_trace.trace_key(torch.stack, nest(many), {}, withheld, {id(x)}) is None


def test_a_models_remembered_trace_follows_its_mode():
    from syft_magics.owner.fake_trace import signature

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout())
    trained = signature(model, None, edges=True)  # (over a withheld shape: its edge check ran on the layers)
    assert signature(model.eval(), None, edges=True) != trained
    assert signature(model.train(), None, edges=True) == trained
    assert signature(model.eval(), None) == signature(model.train(), None)  # (else by which model it is: any op)


def test_the_edge_checks_real_run_puts_back_the_generator_state_the_first_op_found():
    """helper-33: the real run of the edge check saved and put back the generator state on its own (torch's
    ``fork_rng``): started while an op over the owner's data drew from its fresh state and ending after it, it
    put that fresh state back, drawn from since, which told how many rows the other op drew for (184,887
    draws: three per passing row)."""
    import threading

    from torch.utils import _pytree as pytree

    from syft_magics.owner import edge_runs, randomness

    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    check_started, other_done = threading.Event(), threading.Event()

    def other_op() -> None:
        with randomness.apart():
            torch.rand(6)
            assert check_started.wait(5)
        other_done.set()

    def slow(x: torch.Tensor) -> torch.Tensor:
        check_started.set()
        assert other_done.wait(5)
        return x

    thread = threading.Thread(target=other_op)
    thread.start()
    x = torch.ones(2)
    leaves, spec = pytree.tree_flatten(((x,), {}))
    withheld = {id(x): ((2,), (0,), (0,))}
    assert edge_runs.runs_at(slow, leaves, spec, withheld, {0: 1}, {id(x)}, False)
    thread.join(5)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_withheld_copy_is_checked_against_the_quota_by_its_public_charge_before_it_is_made(
        make_worker, make_client, monkeypatch):
    """helper-33: a withheld result made contiguous was copied before the quota check: ``rows[:, None, :]
    .expand(-1, 40_000_000, -1)`` took the worker from 347 MB to 1.7 GB over a 64 MB quota, in a 100-byte
    message. It is refused by its public charge (so whatever the real rows), before the copy."""
    from syft_magics.owner.quotas import Quotas

    bob = make_worker("Bob", policy="review", connection_file=False, quotas=Quotas(max_bytes="1MB"))
    bob.share(M.clone(), "#M")
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    copied = _copies(monkeypatch, "contiguous", 1 << 16)
    for t in THRESHOLDS[:3]:
        with pytest.raises(sm.QuotaExceeded, match="max_bytes"):
            m[m[:, 0] > t][:, None, :].expand(-1, 100_000, -1).sum()
            client.sync()
    assert copied == []


def test_long_strings_and_keyword_names_are_not_kept_in_remembered_keys(make_worker, raw):
    """helper-33: an einsum equation padded with 1 MB of spaces was kept whole in the cost cache and in the
    trace cache, per message (143 MB each for 150 messages; the cost cache outlives the worker)."""
    from syft_magics.owner import costs, fake_trace

    long = "ij" + " " * 5000 + "->i"
    assert costs.signature("torch.einsum", (long, torch.ones(2, 2)), {}, False) is None
    with pytest.raises(TypeError):
        fake_trace.signature(long, None)
    assert fake_trace.signature("ij->i", None) is not None
    bob = _bob(make_worker)
    peer = raw(bob)
    reply = peer.request({"t": "op", "s": 1, "f": "torch.zeros", "a": [2], "k": {"x" * 65: 1}, "o": [], "m": True})
    assert reply is not None and reply["t"] == "err" and "names of at most 64 characters" in reply["msg"]


def test_a_check_that_ran_out_of_time_is_not_remembered(make_worker, make_client, monkeypatch):
    """helper-33: a refusal because the edge check ran past its time (on a busy worker) was remembered, and the
    same op was refused for every client afterwards, saying torch could not work it out."""
    from syft_magics.owner import fake_trace

    bob = _bob(make_worker)
    client = make_client(bob.address, key=bob.key)
    m, = client.search("#M")
    rows = m[m[:, 0] > 3]
    monkeypatch.setattr(fake_trace, "EDGE_SECONDS", -1.0)
    with pytest.raises(PermissionDenied, match="took longer than"):
        rows.sum(0)
        client.sync()
    monkeypatch.setattr(fake_trace, "EDGE_SECONDS", 5.0)
    assert rows.sum(0).shape == (3,)


def test_a_clients_own_draws_wait_until_no_op_over_the_owners_data_draws():
    """helper-34: while one op over the owner's data held a fresh generator state (a long op on a lane),
    another client's ``rand_like(rows)`` drew from it, and the client's own ``random_()`` drew right after,
    from the same state: rebuilt and rewound to its seeding, it told the row count exactly (5 of 5). Ops whose
    draws a client may read back now wait until no op over the owner's data runs (on the serving thread they
    do not wait: ``Busy``, and the op goes to its lane), and draw from the state the worker had before."""
    import threading

    from syft_magics.owner import randomness

    torch.manual_seed(5)
    expected = torch.rand(3, generator=torch.Generator().set_state(torch.random.get_rng_state()))
    owner_in, owner_may_end = threading.Event(), threading.Event()
    got = []

    def owner_op() -> None:
        with randomness.section(True):
            torch.rand(7)
            owner_in.set()
            assert owner_may_end.wait(5)

    def clients_op() -> None:
        with randomness.section(False, wait=True):
            got.append(torch.rand(3))

    owner = threading.Thread(target=owner_op)
    owner.start()
    assert owner_in.wait(5)
    with pytest.raises(randomness.Busy):
        with randomness.section(False, wait=False):
            pass
    client = threading.Thread(target=clients_op)
    client.start()
    client.join(0.2)
    assert not got  # (it waits its turn)
    owner_may_end.set()
    owner.join(5)
    client.join(5)
    assert torch.equal(got[0], expected)

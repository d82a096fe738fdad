"""The owner's data is never written, whichever way an op is asked to write: decided from torch's
op schemas on the worker, so a client that does not use our library (positional ``out``) is refused too."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from raw_peer import RawPeer

import syft_magics as sm
from syft_magics.owner import writes
from syft_magics.wire.protocol import Ref, encode

X = torch.tensor([[1.0, 2, 3], [4, 5, 6]])


@pytest.fixture(params=["copies", "guard"])
def bob_and_mallory(make_worker, request, monkeypatch):
    """A worker holding #X, a raw client; the owner's data protected either way: an op given a little of it
    runs on copies (``writes.Copies``), one given more under the dispatch guard (``writes.WriteGuard``)."""
    if request.param == "guard":
        monkeypatch.setattr(writes, "COPY_MAX_BYTES", -1)
    bob = make_worker("Bob", policy="open")
    owner = X.clone()
    bob.share(owner, "#X")
    mallory = RawPeer(bob.address)
    mallory.login(bob.key, name="mallory")
    yield bob, owner, mallory
    mallory.close()


def _op(peer: RawPeer, f: str, *args, **kwargs) -> dict:
    return peer.request({"t": "op", "s": 1, "f": f, "a": list(args), "k": kwargs, "m": True})


# the three: functions that take ``out`` positionally, called from a raw client
POSITIONAL_OUT = [
    ("torch.norm", lambda x: (torch.ones(2, 3), "fro", None, False, x)),
    ("torch.tensordot", lambda x: (torch.ones(2, 3), torch.ones(3, 2), 1, x)),
    ("torch.nn.functional.normalize", lambda x: (torch.ones(2, 3), 2.0, 1, 1e-12, x)),
]


@pytest.mark.filterwarnings("ignore:An output with one or more elements was resized")
@pytest.mark.parametrize("f,args", POSITIONAL_OUT, ids=["norm", "tensordot", "normalize"])
def test_positional_out_into_owner_data_is_refused(bob_and_mallory, f, args):
    bob, owner, mallory = bob_and_mallory
    x = Ref(bob.store.search(("#X",))[0].id)
    version = owner._version
    reply = _op(mallory, f, *args(x))
    # (refused as out= is, whatever it names: torch resizes an out in place; see the empty views below)
    assert reply["t"] == "err" and reply["code"] == "bad_args" and "out=" in reply["msg"], reply
    assert torch.equal(owner, X) and owner._version == version and owner.shape == X.shape


@pytest.mark.parametrize("f,args,kwargs", [
    ("Tensor.add_", lambda x, m: (x, 1), {}),
    ("Tensor.__setitem__", lambda x, m: (x, 0, 9.0), {}),
    ("Tensor.copy_", lambda x, m: (x, torch.zeros(2, 3)), {}),
    ("torch.nn.functional.relu", lambda x, m: (x, True), {}),
    ("torch.nn.functional.batch_norm", lambda x, m: (torch.ones(4, 3), m, m), {"training": True}),
    ("torch.nn.functional.batch_norm", lambda x, m: (torch.ones(4, 3), m, m, None, None, True), {}),
    ("torch.add", lambda x, m: (torch.ones(2, 3), 1), {"out": "X"}),
], ids=["add_", "setitem", "copy_", "relu-positional-inplace", "batch_norm-running-stats",
        "batch_norm-positional-training", "out-keyword"])
def test_every_kind_of_write_into_owner_data_is_refused(bob_and_mallory, f, args, kwargs):
    bob, owner, mallory = bob_and_mallory
    mean = torch.zeros(3)
    bob.share(mean, "#mean")
    x, m = (Ref(bob.store.search((tag,))[0].id) for tag in ("#X", "#mean"))
    kwargs = {k: x if v == "X" else v for k, v in kwargs.items()}
    reply = _op(mallory, f, *args(x, m), **kwargs)
    assert reply["t"] == "err" and reply["code"] in ("read_only", "bad_args"), reply
    assert torch.equal(owner, X) and torch.equal(mean, torch.zeros(3))


def test_writes_into_the_clients_own_objects_still_work_and_are_recorded(bob_and_mallory):
    bob, owner, mallory = bob_and_mallory
    oid = bob.store.search(("#X",))[0].id
    mine = os.urandom(16)
    assert mallory.request({"t": "send", "s": 1, "id": mine, "x": torch.zeros(2, 3), "ack": True})["t"] == "ok"
    reply = _op(mallory, "torch.nn.functional.relu", Ref(mine), True)
    assert reply["t"] == "ok", reply
    reply = _op(mallory, "Tensor.copy_", Ref(mine), Ref(oid))
    assert reply["t"] == "ok", reply
    assert [op for op, _ in bob.store.get(mine).history] == ["F.relu", ".copy_"]
    assert bob.store.get(mine).history[1][1] == (oid,)
    assert torch.equal(bob.store.get(mine).tensor, X) and torch.equal(owner, X)


def test_the_guard_reads_writes_from_op_schemas():
    owner = X.clone()
    from syft_magics.owner.store import storage_key
    guard = writes.WriteGuard({storage_key(owner)}, {id(owner)}, {storage_key(owner): "#X"})
    attempts = [
        lambda: torch.norm(torch.ones(2, 3), "fro", None, False, owner),
        lambda: torch.tensordot(torch.ones(2, 3), torch.ones(3, 2), 1, owner),
        lambda: F.normalize(torch.ones(2, 3), 2.0, 1, 1e-12, owner),
        lambda: torch.add(owner, 1, out=owner),
        lambda: owner[0].mul_(2),
        lambda: owner.t().copy_(torch.zeros(3, 2)),
        lambda: F.relu(owner, True),
        lambda: F.batch_norm(torch.ones(4, 3), owner[0], owner[1], training=True),
        lambda: F.embedding(torch.tensor([0, 1]), owner, max_norm=0.1),
        lambda: torch.empty(0).set_(owner.untyped_storage()).fill_(1),
    ]
    for attempt in attempts:
        with pytest.raises(writes.OwnerDataWrite):
            with guard:
                attempt()
    assert torch.equal(owner, X)
    with guard:  # reads are fine, and so are writes elsewhere
        assert torch.equal(torch.add(owner, 1), X + 1)
        torch.zeros(3).add_(1)
        assert F.batch_norm(torch.ones(4, 3), owner[0], owner[1], training=False).shape == (4, 3)


def test_an_unforeseen_write_is_reported(bob_and_mallory, monkeypatch):
    bob, owner, mallory = bob_and_mallory
    oid = bob.store.search(("#X",))[0].id
    # pretend the schemas missed a write (and no copy was made): the version counter still tells
    monkeypatch.setattr(writes, "guard", lambda *a, **k: __import__("contextlib").nullcontext())
    monkeypatch.setattr(writes, "copies_for", lambda *a, **k: None)
    _op(mallory, "torch.nn.functional.relu", Ref(oid), True)
    assert bob.events.totals["owner_write"] == 1
    assert bob.stats["refusals"]["unforeseen write into the owner's data"] == 1


def test_ops_whose_schema_writes_nothing_run_without_the_guard(bob_and_mallory, monkeypatch):
    """The dispatch mode costs tens of microseconds per op: an op whose every ATen overload writes only
    through ``out=`` (not passed) skips it; one that may write (in place, Python-level, batch norm) keeps it."""
    bob, owner, mallory = bob_and_mallory
    x = Ref(bob.store.search(("#X",))[0].id)
    entered = []
    monkeypatch.setattr(writes.WriteGuard, "__enter__",
                        lambda self: entered.append(1) or writes.TorchDispatchMode.__enter__(self))
    for f, args in [("torch.add", (x, x)), ("Tensor.__mul__", (x, 2.0)), ("Tensor.sum", (x,)),
                    ("torch.relu", (x,)), ("Tensor.view", (x, 6))]:
        assert _op(mallory, f, *args)["t"] == "ok", f
    assert entered == []
    assert _op(mallory, "torch.nn.functional.relu", x, True)["code"] == "read_only"
    assert _op(mallory, "Tensor.__mul__", x, 2.0, out=x)["t"] == "err"
    assert torch.equal(owner, X)


def test_keyword_writes_follow_the_schemas():
    assert writes.keyword_writes(torch.add) == {"out"}
    assert "max" in writes.keyword_writes(torch.max)  # max.dim_max writes its keyword-only outputs
    for fn in (torch.Tensor.add_, torch.Tensor.__iadd__, torch.batch_norm, F.relu, torch.Tensor.copy_,
               torch.Tensor.__setitem__, torch.Tensor.requires_grad_, torch.norm):
        assert writes.keyword_writes(fn) is None, fn


def test_a_view_of_the_owners_data_stays_read_only_after_it_is_unshared(bob_and_mallory):
    # helper-36: share() keeps the owner's own tensor; unshare() dropped its memory from the guard while a client's
    # view made before still held it: fill_ through the view wrote into the owner's tensor in the owner's process
    bob, owner, mallory = bob_and_mallory
    view = os.urandom(16)
    x = Ref(bob.store.search(("#X",))[0].id)
    mallory.send_raw(encode({"t": "op", "s": 0, "f": "Tensor.__getitem__", "a": [x, 0], "o": [view]}))
    assert mallory.request({"t": "sync", "s": 9})["t"] == "ok"
    assert bob.unshare("#X") == 1
    reply = _op(mallory, "Tensor.fill_", Ref(view), -999.0)
    assert reply["t"] == "err" and reply["code"] == "read_only", reply
    assert torch.equal(owner, X)
    mallory.send_raw(encode({"t": "free", "ids": [view]}))
    assert mallory.request({"t": "sync", "s": 10})["t"] == "ok"
    assert not bob.store.owner_storages(), "the last view gone: nothing of it is kept as the owner's"


def test_an_empty_view_keeps_the_owners_memory_the_owners_after_it_is_unshared(bob_and_mallory):
    # helper-40: a client holding only x.view(-1)[0:0] when the owner unshared #X: its memory was let go as the
    # owner's (an empty view counted as holding nothing), and a positional out resized the view over #X
    bob, owner, mallory = bob_and_mallory
    x = Ref(bob.store.search(("#X",))[0].id)
    flat = _made(mallory, "Tensor.view", x, -1)
    empty = _made(mallory, "Tensor.__getitem__", flat, slice(0, 0, None))
    mallory.send_raw(encode({"t": "free", "ids": [flat.id]}))  # (only the empty view holds #X's memory)
    assert mallory.request({"t": "sync", "s": 11})["t"] == "ok"
    assert bob.unshare("#X") == 1
    assert writes.owner_view(bob.store, bob.store.get(empty.id)), "still the owner's memory"
    assert _op(mallory, "torch.tensordot", torch.ones(12), torch.tensor(-7.0), 0, empty)["t"] == "err"
    assert torch.equal(owner, X)


@pytest.mark.parametrize("protection", ["copies", "guard"])
def test_ops_on_the_owners_data_alias_it_and_cannot_write_it_either_way(make_worker, make_client, monkeypatch,
                                                                        protection):
    """An op given a little of the owner's data runs on a copy (``writes.Copies``): what it returns is what it
    returns under the guard, views of the owner's data included (read-only), and a write into it is refused."""
    if protection == "guard":
        monkeypatch.setattr(writes, "COPY_MAX_BYTES", -1)
    bob = make_worker("Bob", policy="open")
    owner = X.clone()
    bob.share(owner, "#X")
    client = make_client(bob.address, key=bob.key)
    x = client.search("#X")[0]
    same = F.dropout(x, 0.5, training=False)  # x itself
    flat = client.send(torch.nn.Flatten(0))(x)  # a view of it
    inplace = client.send(torch.nn.Sequential(torch.nn.ReLU(inplace=True)))
    client.sync()
    for ptr in (same, flat):
        assert writes.owner_view(bob.store, bob.store.get(ptr.oid)), "it aliases the owner's data"
        with pytest.raises(sm.RemoteError, match="cannot be changed"):
            ptr.add_(1)
            client.sync()
    with pytest.raises(sm.RemoteError, match="cannot be changed"):
        inplace(x)
        client.sync()
    assert torch.equal(owner, X) and torch.equal(flat.get(), X.flatten())


def _made(peer: RawPeer, f: str, *args) -> Ref:
    oid = os.urandom(16)
    peer.send_raw(encode({"t": "op", "s": 0, "f": f, "a": list(args), "o": [oid]}))
    assert peer.request({"t": "sync", "s": 9})["t"] == "ok"
    return Ref(oid)


@pytest.mark.filterwarnings("ignore:An output with one or more elements was resized")
@pytest.mark.parametrize("f,args", [
    ("torch.norm", lambda x, mine: (x, 2, 1, False)),  # out: 2 values, into #X's memory after the view
    ("torch.nn.functional.normalize", lambda x, mine: (mine, 2.0, 1, 1e-12)),  # only the client's tensors given
    ("torch.tensordot", lambda x, mine: (torch.zeros(64), torch.tensor(1.0), 0)),  # resized past #X: its memory moves
], ids=["norm-resized-within", "normalize-clients-inputs", "tensordot-resized-past"])
def test_an_empty_view_of_the_owners_data_is_the_owners_as_an_output(bob_and_mallory, f, args):
    # helper-39: x.view(-1)[3:3] has no elements but lives in #X's memory; given as a positional out, torch
    # resized it in place and wrote there (#X overwritten with the client's values), or moved #X's memory, after
    # which no view of #X was recognised as the owner's and x[1].fill_(42) went through
    bob, owner, mallory = bob_and_mallory
    x = Ref(bob.store.search(("#X",))[0].id)
    empty = _made(mallory, "Tensor.__getitem__", _made(mallory, "Tensor.view", x, -1), slice(3, 3, None))
    mine = _made(mallory, "Tensor.__mul__", _made(mallory, "Tensor.clone", x), 1.0)  # the client's own 2x3
    assert writes.owner_view(bob.store, bob.store.get(empty.id)), "an empty view of #X is the owner's"
    reply = _op(mallory, f, *args(x, mine), empty)
    assert reply["t"] == "err" and reply["code"] in ("read_only", "bad_args"), reply
    assert torch.equal(owner, X) and owner.data_ptr() == bob.store.search(("#X",))[0].tensor.data_ptr()
    assert _op(mallory, "Tensor.fill_", _made(mallory, "Tensor.__getitem__", x, 1), 42.0)["code"] == "read_only"
    assert torch.equal(owner, X)


def test_a_backward_seeded_with_the_owners_data_gives_no_gradient_in_its_memory(make_worker, make_client):
    # helper-41: w.view(...).backward(#B) (2 MiB: past the copies, under the guard): torch adopted a fresh view of #B
    # as w.grad without a copy (no ATen write for the guard to see), and (w * 1).backward(v) added v into #B
    bob = make_worker("Bob", policy="open")
    owner = torch.arange(512 * 1024, dtype=torch.float32).reshape(1024, 512)
    bob.share(owner, "#B")
    client = make_client(bob.address, key=bob.key)
    b = client.search("#B")[0]
    w = client.send(torch.zeros(owner.numel())).requires_grad_()
    w.view(1024, 512).backward(b)
    (w * 1).backward(client.send(torch.full((owner.numel(),), 5.0)))
    client.sync()
    assert torch.equal(owner, torch.arange(512 * 1024, dtype=torch.float32).reshape(1024, 512))
    grad = bob.store.get(w.oid).tensor.grad
    assert not bob.store.aliases_owner_data(grad) and torch.equal(grad, owner.flatten() + 5.0)

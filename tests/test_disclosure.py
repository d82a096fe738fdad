"""No value of the owner's leaves through shapes or error text without the owner's decision (issue 10
item 2): under ``review`` and ``closed`` a shape that depends on the owner's values is unknown to the
client until released, and an error raised on the owner's data reaches the client as its type and
a number. Attacks are written with raw messages (no client library), as an attacker would."""
from __future__ import annotations

import os
import threading

import pytest
import torch
from helpers import wait_until
from raw_peer import RawPeer

import syft_magics as sm
from syft_magics.scientist.inference import REMOTE, infer
from syft_magics.wire.protocol import ref_ext
from syft_magics.wire.results import describe, from_wire

SECRET = torch.tensor([0.123456, 0.654321, 0.5, 0.999999])


class Attacker:
    """Speaks the wire by hand: runs ops, asks the worker to describe results, reads replies."""

    def __init__(self, peer: RawPeer, x_id: bytes) -> None:
        self.peer, self.x, self.seq = peer, x_id, 10

    def op(self, f: str, *args, described: bool = False, n_out: int = 1) -> tuple:
        self.seq += 1
        ids = [os.urandom(16) for _ in range(n_out)]
        header = {"t": "op", "s": self.seq, "f": f, "a": list(args), "k": {}, "o": [] if described else ids}
        if described:
            header["m"] = True
            reply = self.peer.request(header)
            assert reply is not None
            return reply, ids
        self.peer.send_raw(_encode(header))
        return None, ids

    def sync(self) -> dict:
        """The first error since the last sync, else the sync's own ``ok``; told, as the client library says it
        raised a failure (a failed op stops the ops after it until then: owner/halts.py)."""
        self.seq += 1
        reply = self.peer.request({"t": "sync", "s": self.seq})
        first = reply
        while reply is not None and reply.get("s") != self.seq:
            reply = self.peer.reply()
        assert first is not None and reply is not None
        if first["t"] == "err":
            self.peer.send_raw(_encode({"t": "told", "first": first.get("s") if first.get("s") is not None else 0}))
        return first

    def count_above(self, i: int, t: float, launder: bool = False):
        """How many of ``x[i] > t`` are true (0 or 1), read from a shape: the issue's bisection step."""
        _, (xi,) = self.op("Tensor.__getitem__", ref_ext(self.x), i)
        _, (gt,) = self.op("Tensor.__gt__", ref_ext(xi), t)
        if launder:  # not described itself: a later described op on it would tell its shape
            _, (nz,) = self.op("torch.nonzero", ref_ext(gt))
            reply, _ = self.op("Tensor.clone", ref_ext(nz), described=True)
        else:
            reply, _ = self.op("torch.nonzero", ref_ext(gt), described=True)
        if reply["t"] != "ok":
            return None
        shape = reply["r"][1][0][2]
        return None if shape is None else shape[0]

    def bisect(self, i: int, steps: int = 24, launder: bool = False):
        lo, hi = 0.0, 1.0
        for _ in range(steps):
            mid = (lo + hi) / 2
            above = self.count_above(i, mid, launder)
            if above is None:
                return None
            lo, hi = (mid, hi) if above else (lo, mid)
        return (lo + hi) / 2


def _encode(header):
    from syft_magics.wire.protocol import encode

    return encode(header)


def _shared(make_worker, policy: str):
    bob = make_worker("Bob", policy=policy, connection_file=False)
    bob.share(SECRET.clone(), "#X")
    return bob, bob.store.search(("#X",))[0].id


@pytest.mark.parametrize("launder", [False, True])
def test_the_bisection_attack_recovers_values_under_open_only(make_worker, raw, launder):
    # the attack is real: under open (where values are not private) it reads every value to 1e-6
    bob, x = _shared(make_worker, "open")
    attacker = Attacker(raw(bob), x)
    for i in range(len(SECRET)):
        assert abs(attacker.bisect(i, launder=launder) - SECRET[i].item()) < 1e-6
    # under review and closed it learns nothing: the shape of nonzero(x[i] > t) is unknown
    for policy in ("review", "closed"):
        bob, x = _shared(make_worker, policy)
        attacker = Attacker(raw(bob), x)
        assert attacker.count_above(0, 0.5, launder) is None
        assert attacker.bisect(1, launder=launder) is None


def test_sizes_read_from_values_and_the_structure_of_results_are_withheld(make_worker, raw):
    bob, x = _shared(make_worker, "review")
    a = Attacker(raw(bob), x)
    _, (scaled,) = a.op("Tensor.__mul__", ref_ext(x), 1000)
    _, (n,) = a.op("Tensor.long", ref_ext(scaled))
    _, (n0,) = a.op("Tensor.__getitem__", ref_ext(n), 0)
    reply, _ = a.op("Tensor.new_zeros", ref_ext(x), ref_ext(n0), described=True)  # new_zeros(123)
    # no public fact bounds that size, so it cannot be charged without telling it: refused, whatever the value
    assert reply["t"] == "err" and reply["code"] == "denied" and "without telling it" in reply["msg"]
    assert "123" not in reply["msg"]
    reply, _ = a.op("torch.nonzero", ref_ext(x), described=True)  # bounded (at most 4 rows): kept, shape withheld
    assert reply["t"] == "ok" and reply["r"][1][0][2] is None
    reply, _ = a.op("Tensor.split", ref_ext(x), ref_ext(n0), described=True)  # how many chunks: a value
    # (refused before it runs since session 22: a size given as a tensor cannot be priced; since session 24 as a
    # number torch's Python reads, helper-73)
    assert reply["t"] == "err" and "123" not in reply["msg"]
    assert any(why in reply["msg"] for why in ("withholds", "as a Python number", "takes a Python value"))
    _, (nz,) = a.op("torch.nonzero", ref_ext(x))
    reply, _ = a.op("Tensor.unbind", ref_ext(nz), described=True)  # as many tensors as nonzero values
    assert reply["t"] == "err" and "4" not in reply["msg"]
    # the client guesses the count: whether it matched would say it; refused before it runs, whatever the count
    a.op("Tensor.unbind", ref_ext(nz), n_out=3)
    err = a.sync()
    assert err["t"] == "err" and err["code"] == "denied" and "4" not in err["msg"]
    # a shape that follows from public metadata is told (sum of anything is a scalar)
    reply, _ = a.op("Tensor.sum", ref_ext(nz), described=True)
    assert reply["r"][1][0][2] == []


def test_error_text_from_the_owners_data_is_withheld_until_released(make_worker, raw):
    bob, x = _shared(make_worker, "review")
    seen = []
    bob.events.subscribe(lambda e: seen.append(e))
    a = Attacker(raw(bob), x)
    _, (idx,) = a.op("Tensor.long", ref_ext(x))  # owner-derived indices
    _, (bad,) = a.op("Tensor.__add__", ref_ext(idx), 99)
    _, (picked,) = a.op("Tensor.index_select", ref_ext(x), 0, ref_ext(bad))
    err = a.sync()
    assert err["t"] == "err" and err["code"] == "withheld" and err["etype"] == "IndexError"
    assert "index_select" in err["msg"] and "out of range" not in err["msg"] and "99" not in err["msg"]
    n = err["w"]
    # the owner's log and panel see the whole text
    assert any("out of range" in str(e.data.get("status", "")) for e in seen)
    # an op on the failed result tells only the withheld message
    a.op("Tensor.sum", ref_ext(picked))
    again = a.sync()
    assert "out of range" not in again["msg"]
    # released like a value: a request the owner sees with the text, then the text
    a.seq += 1
    pending = a.peer.request({"t": "get", "s": a.seq, "what": "error", "n": n})
    assert pending["t"] == "pending"
    req = bob.requests.pending[0]
    assert req.what == "error" and "out of range" in req.lineage
    bob.approve(req.n)
    assert a.peer.reply()["t"] == "approved"
    a.seq += 1
    text = a.peer.request({"t": "get", "s": a.seq, "what": "error", "n": n})
    assert text["t"] == "value" and "out of range" in text["x"]
    # another session cannot ask for it
    other = raw(bob)
    reply = other.request({"t": "get", "s": 1, "what": "error", "n": n})
    assert reply["t"] == "err" and "out of range" not in reply["msg"]


def test_errors_on_the_clients_own_data_and_under_open_keep_their_text(make_worker, make_client):
    bob = make_worker("Bob", policy="review", connection_file=False)
    client = make_client(bob)
    mine = client.send(torch.arange(3.0))
    mine.index_select(0, torch.tensor([7]))
    with pytest.raises(sm.RemoteError, match="out of range"):
        client.sync()
    opened = make_worker("Open", policy="open", connection_file=False)
    opened.share(SECRET.clone(), "#X")
    c2 = make_client(opened)
    c2.search("#X")[0].index_select(0, torch.tensor([7]))
    with pytest.raises(sm.RemoteError, match="out of range"):
        c2.sync()


def _approve_when_asked(worker: sm.Worker, log: list) -> threading.Thread:
    def run() -> None:
        wait_until(lambda: worker.requests.pending, timeout=20)
        req = worker.requests.pending[0]
        log.append(req.describe())
        worker.approve(req.n)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_pointer_with_a_withheld_shape_says_so_pipelines_and_can_be_released(make_worker, make_client, capsys):
    bob, _ = _shared(make_worker, "review")
    client = make_client(bob)
    x = client.search("#X")[0]
    z = torch.nonzero(x > 0.4)
    assert z.known_shape is None and "shape=unknown until Bob approves" in repr(z)
    with pytest.raises(sm.ShapeUnknown, match=r"request_shape\(\)"):
        z.shape
    for read in (lambda: z.size(), lambda: z.dim(), lambda: len(z), lambda: z.numel()):
        with pytest.raises(sm.ShapeUnknown):
            read()
    w = (z * 2).float()  # runs on the worker; its shape depends on z's: unknown too
    assert w.known_shape is None
    total = w.sum()  # a scalar whatever z's size: known
    assert total.shape == ()
    # the owner sees "shape of" in the request; once approved the pointer knows its shape
    log: list = []
    t = _approve_when_asked(bob, log)
    assert z.request_shape(timeout=20) == torch.Size([3, 1])
    t.join()
    assert "the shape of" in log[0] and "nonzero" in log[0]
    assert z.shape == (3, 1) and z.dim() == 2 and len(z) == 3 and "shape=(3, 1)" in repr(z)
    # an approved get tells the shape too
    t = _approve_when_asked(bob, log)
    value = w.get(timeout=20)
    t.join()
    assert w.shape == value.shape == (3, 1)


@pytest.mark.parametrize("how", ["grad", "sgd step", "gradient argument", "model"])
def test_gradients_from_the_owners_data_are_the_owners(make_worker, make_client, how):
    """A backward through the owner's data writes gradients into the client's own objects, which no argument
    names: t.grad (and what an optimizer computes from it) derived from #X but read as the client's, so a
    shape told #X's values, with no approval (an attacker probe recovered all of #X with bincount)."""
    bob, _ = _shared(make_worker, "review")
    client = make_client(bob)
    x = client.search("#X")[0]
    if how == "model":
        remote = client.send(torch.nn.Linear(4, 1))
        opt = client.optim.SGD(remote.parameters(), lr=0.1)
        (remote(client.send(torch.ones(2, 4))).sum() * x.sum()).backward()  # the forward saw only own data
        opt.step()
        leaked = next(iter(remote.parameters()))
    else:
        t = client.send(torch.ones(4)).requires_grad_()
        if how == "gradient argument":
            t.backward(gradient=x)
        else:
            (t * x).sum().backward()
        leaked = t.grad
        if how == "sgd step":
            client.optim.SGD([t], lr=1.0).step()
            leaked = t
    rows = torch.nonzero(leaked.reshape(-1)[0:1] > 0.5)  # its length would tell a bit of a value
    assert rows.known_shape is None
    with pytest.raises(sm.GetTimeout):
        leaked.get(timeout=0.2)  # the owner decides


def test_closed_denies_the_shape_and_open_tells_it(make_worker, make_client):
    bob, _ = _shared(make_worker, "closed")
    z = torch.nonzero(make_client(bob).search("#X")[0] > 0.4)
    assert z.known_shape is None
    with pytest.raises(sm.PermissionDenied, match="shape"):
        z.request_shape(timeout=5)
    opened, _ = _shared(make_worker, "open")
    assert torch.nonzero(make_client(opened).search("#X")[0] > 0.4).shape == (3, 1)


def test_a_withheld_error_is_released_through_the_client(make_worker, make_client):
    bob, _ = _shared(make_worker, "review")
    client = make_client(bob)
    x = client.search("#X")[0]
    x.index_select(0, torch.tensor([99]))
    with pytest.raises(sm.WithheldError) as info:
        client.sync()
    err = info.value
    assert err.remote_type == "IndexError" and "withheld" in str(err) and "out of range" not in str(err)
    log: list = []
    t = _approve_when_asked(bob, log)
    assert "out of range" in err.request_message(timeout=20)
    t.join()
    assert "message of error" in log[0]


def test_shape_errors_found_by_local_inference_are_unchanged(make_worker, make_client, capfd):
    bob, _ = _shared(make_worker, "review")
    x = make_client(bob).search("#X")[0]
    with pytest.raises(RuntimeError, match="broadcast") as info:
        x + torch.ones(3)
    assert not isinstance(info.value, sm.WithheldError)
    assert "fake_tensor" not in capfd.readouterr().err  # the classification's tracing stays quiet


def test_one_result_encoding_round_trips():
    values = torch.max(torch.ones(2, 3), 1)
    ids = [os.urandom(16), os.urandom(16)]
    tree, got = from_wire(describe(values, ids, [True, False]))
    assert got == ids
    built = tree.build(lambda leaf: leaf)
    assert type(built) is torch.return_types.max
    assert built.values == ("T", (2,), torch.float32, False, True) and built.indices[1] is None
    nested = [torch.ones(1), (torch.Size([2]), 3)]
    tree, got = from_wire(describe(nested, [b"a" * 16, None, None]))
    assert tree.build(lambda leaf: leaf[0]) == ["T", ("V", "V")]
    # a tensor leaf described without is_leaf (an older worker) is still a tensor, never a plain value
    tree, _ = from_wire([0, [["T", b"b" * 16, [2], "float32", True]]])
    assert tree.leaves == (("T", (2,), torch.float32, True, False),)
    with pytest.raises(sm.ProtocolError):
        from_wire([["nosuchtype", None, [0]], [["V"]]])
    with pytest.raises(sm.ProtocolError):
        from_wire([0, [["V"], ["V"]]])  # two leaves for a structure of one


def test_data_dependent_ops_are_recognised_by_fake_tensor_types():
    meta = torch.empty(4, device="meta")

    def standins():
        return (meta,), {}, [meta], []

    assert infer(torch.nonzero, None, standins) is REMOTE
    assert infer(torch.Tensor.unique, None, standins) is REMOTE
    scalar = torch.empty((), device="meta")
    assert infer(torch.Tensor.item, None, lambda: ((scalar,), {}, [scalar], [])) is REMOTE
    with pytest.raises(RuntimeError, match="broadcast"):
        infer(torch.add, None, lambda: ((meta, torch.empty(3, device="meta")), {}, [meta], []))


@pytest.mark.parametrize("view_first", [False, True], ids=["view made after", "view made before"])
def test_a_write_through_a_view_makes_its_base_and_other_views_the_owners_too(review_seed, view_first):
    """``z[:].add_(x)`` marked only the view: ``z`` (the client's own tensor, holding #X now) still read as the
    client's, so an error naming its values was shown: a probe read #X back exactly, with no request."""
    bob, client = review_seed
    x = client.search("#X")[0]
    z = client.send(torch.zeros(5))
    early = z.view(torch.int32) if view_first else None
    z[:].add_(x)
    bits = early if view_first else z.view(torch.int32)
    one = client.send(torch.ones(1))
    with pytest.raises(sm.RemoteError) as caught:
        one[bits[0:1]].sum().get()
    text = str(caught.value)
    assert "withheld" in text and "1065353216" not in text and "out of bounds" not in text, text


def test_a_withheld_error_stays_its_sessions_not_its_routing_ids(make_worker):
    # helper-36: after mallory left, eve logged in with mallory's routing id and asked for mallory's error text
    bob, x = _shared(make_worker, "review")
    mallory = RawPeer(bob.address)
    mallory.login(bob.key, name="mallory")
    err = mallory.request({"t": "op", "s": 5, "f": "Tensor.__getitem__", "a": [torch.zeros(1), ref_ext(x)],
                           "o": [os.urandom(16)]})
    assert err["code"] == "withheld", err
    mallory.send_raw(_encode({"t": "bye"}))
    mallory.close()
    assert wait_until(lambda: not bob.clients)
    eve = RawPeer(bob.address, ident=mallory.ident)
    try:
        eve.login(bob.key, name="eve")
        reply = eve.request({"t": "get", "s": 1, "what": "error", "n": err["w"]})
        assert reply["t"] == "err" and reply["code"] == "unknown_object", reply
        assert not bob.requests.pending
    finally:
        eve.close()

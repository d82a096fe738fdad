"""``ptr.move(alice)``: worker to worker, never through the scientist; both owners' policies apply."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import free_port, wait_until

import syft_magics as sm
from syft_magics.owner.policy import RequestBook
from syft_magics.scientist import link as link_module
from syft_magics.wire.protocol import Kind


@pytest.fixture
def two(make_worker, make_client):
    """Bob (review) holding #x, Alice (open), a scientist connected to both."""
    bob = make_worker("Bob", policy="review")
    bob.share(torch.arange(12.0).reshape(3, 4), "#x")
    alice = make_worker("Alice", policy="open")
    return bob, alice, make_client("Bob"), make_client("Alice")


@pytest.fixture
def received_bytes(monkeypatch):
    """Counts every byte the scientist's links receive from workers."""
    count = [0]
    real = link_module.recv_parts

    def counting(sock):
        parts = real(sock)
        count[0] += sum(len(p) for p in parts)
        return parts

    monkeypatch.setattr(link_module, "recv_parts", counting)
    return count


def test_a_tensor_moves_worker_to_worker_and_never_through_the_scientist(two, received_bytes):
    bob, alice, b, a = two
    bob.policy.allow_get(kind="tensor")  # the move out is decided like a get: this rule lets it go
    big = b.send(torch.randn(512, 1024))  # 2 MiB
    y = big * 3
    b.sync()
    before = received_bytes[0]
    z = y.move(a)
    assert z.location == "Alice" and z.owned and z.shape == (512, 1024)
    assert received_bytes[0] - before < 16_384, "the value passed through the scientist"
    assert alice.stats["bytes_in"] >= 2 << 20 and bob.stats["bytes_out"] >= 2 << 20
    bob.policy = sm.owner.policy.OpenPolicy()
    assert torch.equal(z.get(), y.get())
    # the moved tensor is the scientist's on Alice: ops run there, and it is freed with its pointer
    assert torch.equal((z + 1).get(), y.get() + 1)
    held = len(alice.store)
    del z
    a.sync()
    a.sync()
    assert wait_until(lambda: len(alice.store) < held)


def test_a_model_moves_and_trains_on_the_target(two):
    bob, alice, b, a = two
    bob.policy.allow_get(kind="model")
    torch.manual_seed(0)
    local = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    remote = b.send(local)
    moved = remote.move(a)
    assert moved.location == "Alice" and moved.path == "worker"
    x = torch.randn(5, 4)
    moved.eval()
    local.eval()
    assert torch.allclose(moved(a.send(x)).get(), local(x), atol=1e-6)
    moved.train()
    opt = a.optim.SGD(moved.parameters(), lr=0.1)
    opt.zero_grad()
    F.cross_entropy(moved(a.send(x)), a.send(torch.tensor([0, 1, 0, 1, 1]))).backward()
    opt.step()
    trained = moved.get()
    assert not torch.equal(trained[0].weight, local[0].weight)
    assert torch.equal(remote.get()[0].weight, local[0].weight)  # the original on Bob is untouched


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 5)
        self.b = nn.Linear(5, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))) * 2


def test_a_custom_module_moves_too(two):
    bob, alice, b, a = two
    bob.policy.allow_get(kind="model")
    local = Custom()
    remote = b.send(local)
    assert remote.path == "client"
    moved = remote.move(a)
    x = torch.randn(4, 3)
    assert moved.path == "client" and moved.location == "Alice"
    assert torch.allclose(moved(a.send(x)).get(), local(x), atol=1e-6)
    assert all(p.location == "Alice" for p in moved.parameters())
    assert torch.equal(moved.get().a.weight, local.a.weight)


def test_the_source_owner_reviews_a_move_like_a_get_and_sees_where_it_goes(two):
    bob, alice, b, a = two
    x = b.search("#x")[0]
    result = {}

    def mover():
        try:
            result["z"] = x.move(a)
        except Exception as exc:  # pragma: no cover - reported below
            result["error"] = exc

    thread = threading.Thread(target=mover)
    thread.start()
    assert wait_until(lambda: bob.requests.pending, timeout=10)
    req = bob.requests.pending[0]
    assert (req.what, req.to.split(" at ")[0]) == ("move", "Alice") and "wants to move #x to Alice" in req.describe()
    bob.approve(req.n)
    thread.join(15)
    assert "error" not in result
    assert torch.equal(result["z"].get(), torch.arange(12.0).reshape(3, 4))
    # the approval was for that move only: a get of #x still waits for its own decision
    with pytest.raises(sm.GetTimeout):
        x.get(timeout=0.3)


def test_an_approved_move_lets_no_get_and_no_other_move_through():
    book = RequestBook()
    alice = "Alice at tcp://127.0.0.1:1"
    req, _ = book.ask(b"s", b"o", 1, version=0, client="c", object_id="6f", shape=(1,), dtype="float32",
                      lineage="x", what="move", to=alice)
    book.decide(req.n, "approved")
    assert not book.take_grant(b"s", b"o", 0)  # a get
    assert not book.take_grant(b"s", b"o", 0, "move", "Mallory at tcp://127.0.0.1:2")  # another target
    assert not book.take_grant(b"s", b"o", 1, "move", alice)  # the object was written since
    req, _ = book.ask(b"s", b"o", 2, version=0, client="c", object_id="6f", shape=(1,), dtype="float32",
                      lineage="x", what="move", to=alice)
    book.decide(req.n, "approved")
    assert book.take_grant(b"s", b"o", 0, "move", alice)
    assert not book.take_grant(b"s", b"o", 0, "move", alice)  # used up


def test_the_source_owner_can_refuse(two):
    bob, alice, b, a = two
    bob.policy = sm.owner.policy.ClosedPolicy()
    with pytest.raises(sm.PermissionDenied, match="refused to move #x to Alice"):
        b.search("#x")[0].move(a)
    assert len(alice.store) == 0


def test_the_target_owner_can_refuse(two):
    bob, alice, b, a = two
    bob.policy.allow_get(kind="tensor")
    alice.policy.accept_moves(False)
    x = b.search("#x")[0]
    with pytest.raises(sm.PermissionDenied, match="Alice does not accept this move from Bob"):
        x.move(a)
    alice.policy.accept_moves(lambda move: move.source == "Carol")
    with pytest.raises(sm.PermissionDenied, match="accept rule refuses"):
        x.move(a)
    assert not bob.requests.pending and len(alice.store) == 0
    alice.policy.accept_moves(lambda move: move.source == "Bob" and move.nbytes <= 48)
    assert torch.equal(x.move(a).get(), torch.arange(12.0).reshape(3, 4))
    assert alice.stats["refusals"]["move refused"] == 2


def test_a_dead_target_gives_a_clear_error(two, make_worker, make_client, monkeypatch):
    bob, alice, b, a = two
    bob.policy.allow_get(kind="tensor")
    x = b.search("#x")[0]
    real = type(a)._request

    def ticket_then_die(self, header, *args, **kwargs):
        reply = real(self, header, *args, **kwargs)
        if header.get("t") == Kind.TICKET:
            alice.stop()  # the target dies after issuing the ticket: Bob's courier finds nobody
        return reply

    monkeypatch.setattr(type(a), "_request", ticket_then_die)
    with pytest.raises(sm.RemoteError, match="could not reach Alice at tcp://.* within 0.5 s"):
        x.move(a, timeout=0.5)
    monkeypatch.setattr(type(a), "_request", real)
    with pytest.raises(ConnectionError, match="link to Alice is closed"):
        x.move(a)
    assert bob.running  # the source worker serves on
    assert b.search("#x")[0].shape == (3, 4)


def _order(b, x, ticket, **changes):
    header = {"t": Kind.MOVE, "id": x.oid, "to": ticket["address"], "name": ticket["name"],
              "instance": ticket["instance"], "tid": ticket["tid"], "secret": ticket["secret"], "w": 1.0}
    header.update(changes)
    return b._request(header)


def _ticket(a, x):
    return a._request({"t": Kind.TICKET, "kind": "tensor", "from": "Bob", "o": [a._new_id()],
                       "shapes": [list(x.shape)], "dtypes": ["float32"], "rg": [False]})


def test_tickets_are_secret_one_time_and_bound_to_the_target(two):
    bob, alice, b, a = two
    bob.policy.allow_get(kind="tensor")
    x = b.search("#x")[0]
    ticket = _ticket(a, x)
    with pytest.raises(sm.SyftError, match="is not the Alice that issued the ticket"):
        _order(b, x, ticket, secret=bytes(32))  # a wrong secret: neither side can prove it
    with pytest.raises(sm.SyftError, match="no such ticket"):
        _order(b, x, ticket, tid=bytes(16))
    with pytest.raises(sm.SyftError, match="is not the Alice"):
        _order(b, x, ticket, instance="0" * 16)  # another worker than the one that issued it
    _order(b, x, ticket)
    with pytest.raises(sm.SyftError, match="no such ticket"):
        _order(b, x, ticket)  # used up
    other = free_port()
    with pytest.raises(sm.RemoteError, match="could not reach Zoe"):  # (a worker this machine does not know)
        _order(b, x, _ticket(a, x), to=f"tcp://127.0.0.1:{other}", name="Zoe")
    assert alice.stats["refusals"]["bad ticket"] == 2  # the unknown and the used-up ticket


def test_the_owner_approves_the_move_the_courier_makes(two):
    """helper-49: a target name with an escape sequence made the request read "to Alice at <her address>" on the
    owner's console while the courier dialled the scientist's listener; 'Alice' at another known worker's address
    was shown as Alice, and a click sent the value there; 'Alice' at 127.2 (127.0.0.2, a form no parser here reads as
    loopback) went to whoever listened there. Names are printable; a name this machine knows is dialled at its
    file's address, and one that is not the name of the worker at the given address is refused."""
    bob, alice, b, a = two
    x = b.search("#x")[0]
    ticket = _ticket(a, x)
    for name in ("Alice\x1b[8m", "Alice\u202e", "Al\nice"):
        with pytest.raises(sm.SyftError, match="printable"):
            _order(b, x, ticket, name=name)
    with pytest.raises(sm.SyftError, match=f"the worker at {bob.address} is Bob, not Alice"):
        _order(b, x, ticket, to=bob.address)
    with pytest.raises(sm.SyftError, match="printable"):
        b.send(torch.zeros(1), "#z\x1b[8m")
    port = alice.address.rsplit(":", 1)[1]
    with pytest.raises(sm.GetTimeout):
        _order(b, x, ticket, to=f"tcp://127.2:{port}")  # under review: the request names Alice's own address
    request, = bob.requests.pending
    assert request.to == f"Alice at {alice.address}"


def test_a_delivery_must_match_its_ticket(two):
    bob, alice, b, a = two
    bob.policy.allow_get(kind="tensor")
    x = b.search("#x")[0]
    ticket = a._request({"t": Kind.TICKET, "kind": "tensor", "from": "Bob", "o": [a._new_id()],
                         "shapes": [[2, 2]], "dtypes": ["float32"], "rg": [False]})
    with pytest.raises(sm.SyftError, match="exceeds its ticket|not the float32 tensor of shape"):
        _order(b, x, ticket)
    assert len(alice.store) == 0


def test_moving_needs_two_workers(two):
    bob, alice, b, a = two
    x = b.search("#x")[0]
    with pytest.raises(ValueError, match="already on Bob"):
        x.move(b)
    with pytest.raises(TypeError, match="client of the target worker"):
        x.move("Alice")


def test_a_rule_can_let_models_go_to_one_worker_only(make_worker, make_client):
    bob = make_worker("Bob", policy="review")
    make_worker("Carol", policy="open")
    make_worker("Mallory", policy="open")
    b, c, m = make_client("Bob"), make_client("Carol"), make_client("Mallory")
    rule = bob.policy.allow_get(kind="model", to="Carol")
    assert "to Carol only" in bob.policy.summary and str(rule) == "kind=model to Carol only"
    remote = b.send(nn.Linear(2, 2))
    assert remote.move(c).location == "Carol"  # allowed by the rule, no click
    with pytest.raises(sm.GetTimeout):
        remote.get(timeout=0.3)  # the scientist itself: under review
    with pytest.raises(sm.GetTimeout):
        remote.move(m, timeout=0.3)  # another worker: under review too
    assert [(r.what, r.to.split(" at ")[0]) for r in bob.requests.pending] == [("value", ""), ("move", "Mallory")]
    with pytest.raises(ValueError, match="names a worker"):
        bob.policy.allow_get(kind="model", to="")


def test_a_rule_to_carol_does_not_apply_to_a_scientists_own_worker_called_carol(make_worker, make_client):
    """The scientist names a move's target: a worker of its own called Carol (no connection file of this
    machine's user names it) gets nothing by the owner's rule; the move falls to review."""
    from syft_magics.wire import discovery

    bob = make_worker("Bob", policy="review")
    bob.policy.allow_get(kind="model", to="Carol")
    impostor = make_worker("Carol", policy="open")
    discovery.remove(impostor._conn)  # as if it ran elsewhere, or as another user
    b, i = make_client("Bob"), make_client(impostor.address, key=impostor.key)
    remote = b.send(nn.Linear(2, 2))
    with pytest.raises(sm.GetTimeout):
        remote.move(i, timeout=0.3)
    assert len(impostor.store) == 0
    assert any("rule to Carol not applied" in e["status"] for e in bob.events.of_kind("get"))
    carol = make_worker("Carol", policy="open")  # the Carol this machine knows
    assert remote.move(make_client("Carol")).location == "Carol"
    assert len(carol.store) > 0  # the model and its weights


def test_a_listener_at_a_look_alike_address_of_carols_gets_nothing(make_worker, make_client, monkeypatch):
    """helper-46: the connection-file pin took Carol's port at any local address (127.0.0.2, the machine's LAN
    address) with the instance any connected client learns; a listener of the scientist's there, called Carol,
    with a ticket of its own, got Bob's model and no click. Whoever answers must prove the key in Carol's file."""
    from syft_magics.wire import discovery

    bob = make_worker("Bob", policy="review")
    bob.policy.allow_get(kind="model", to="Carol")
    carol = make_worker("Carol", policy="open")
    impostor = make_worker("Carol", policy="open", connection_file=False)
    b, i = make_client("Bob"), make_client(impostor.address, key=impostor.key)
    monkeypatch.setattr(impostor, "instance", carol.instance)  # (a connected client learns it)
    found = discovery.find_by_address  # (tests bind 127.0.0.1 only: the impostor's port stands for the look-alike)
    monkeypatch.setattr(discovery, "find_by_address", lambda a: found(carol.address if a == impostor.address else a))
    remote = b.send(nn.Linear(2, 2))
    with pytest.raises(sm.SyftError, match="Carol refused the courier"):
        remote.move(i)  # (dialled at the address Carol's file names: the impostor's ticket is none of hers)
    assert len(impostor.store) == 0 and not bob.requests.pending
    assert remote.move(make_client("Carol")).location == "Carol" and len(carol.store) > 0  # the real one: no click
    assert not discovery._is_local("127.0.0.1.example.com") and discovery._is_local("127.0.0.2")


def test_a_rule_pinned_by_key_does_not_take_an_inproc_worker_of_that_name(make_worker, make_client, monkeypatch):
    """helper-46: ``key=`` was compared with the key the scientist's order named; to an ``inproc://`` address the
    courier uses no CurveZMQ, so any worker of the owner's process called Carol took the model. There the worker
    itself is compared."""
    from syft_magics.scientist import moves

    bob = make_worker("Bob", policy="review")
    bob.policy.allow_get(kind="model", to="Carol", key="k" * 40)  # (Carol's CurveZMQ key, were she encrypted)
    scratch = make_worker("Carol", policy="open", tcp=False)
    b, s = make_client("Bob"), make_client(scratch)
    ticket = moves.Move.ticket

    def claiming_the_key(self):
        ticket(self)
        self._ticket["curve"] = ["k" * 40, "0" * 40, "0" * 40]

    monkeypatch.setattr(moves.Move, "ticket", claiming_the_key)
    remote = b.send(nn.Linear(2, 2))
    with pytest.raises(sm.GetTimeout):
        remote.move(s, timeout=0.3)  # under review: the rule does not pin it
    assert len(scratch.store) == 0


@pytest.mark.skipif(not __import__("zmq").has("curve"), reason="this libzmq has no CurveZMQ")
def test_a_rule_pinned_by_key_lets_models_go_to_that_key_only(make_worker, make_client):
    bob = make_worker("Bob", policy="review")
    impostor = make_worker("Carol", policy="open", secure=True)
    i = make_client("Carol")
    carol = make_worker("Carol", policy="open", secure=True)
    c = make_client("Carol")  # the latest started Carol
    rule = bob.policy.allow_get(kind="model", to="Carol", key=carol.server_key)
    assert str(rule) == f"kind=model to Carol (key {carol.server_key[:8]}...) only"
    b = make_client("Bob")
    remote = b.send(nn.Linear(2, 2))
    with pytest.raises(sm.GetTimeout):
        remote.move(i, timeout=0.3)  # called Carol, known here even, but not the key pinned
    assert remote.move(c).location == "Carol" and len(carol.store) > 0 and len(impostor.store) == 0
    with pytest.raises(ValueError, match="pins the worker"):
        bob.policy.allow_get(kind="model", key=carol.server_key)  # a key without to=
    with pytest.raises(ValueError, match="pins the worker"):
        bob.policy.allow_get(kind="model", to="Carol", key="short")


def test_a_withheld_shape_does_not_move_and_moved_data_stays_the_owners_on_the_target(make_worker, make_client):
    bob = make_worker("Bob", policy="review")
    bob.share(torch.arange(12.0), "#x")
    bob.policy.allow_get(kind="tensor")  # moves out need no click here: only the shape rule is tested
    alice = make_worker("Alice", policy="review")
    b, a = make_client("Bob"), make_client("Alice")
    x = b.search("#x")[0]
    big = torch.nonzero(x > 5)  # its shape tells how many values exceed 5: withheld on Bob
    with pytest.raises(sm.ShapeUnknown):
        big.move(a)  # the ticket would have to declare it
    big.learn_shape((6, 1))  # a client that guesses (or a raw one): Bob still refuses, before anything leaves
    with pytest.raises(sm.PermissionDenied, match="shape of .* is withheld"):
        big.move(a)
    assert len(alice.store) == 0
    # on Alice, Bob's data is treated as owner data: its value-dependent shapes are withheld there too
    z = x.move(a)
    with pytest.raises(sm.ShapeUnknown):
        torch.nonzero(z > 5).shape
    assert (z + 1).shape == (12,)


@pytest.mark.skipif(not __import__("zmq").has("curve"), reason="this libzmq has no CurveZMQ")
def test_moves_into_an_encrypted_worker_use_a_one_time_curve_key(make_worker, make_client, monkeypatch):
    from syft_magics.owner.tickets import Tickets

    asked = []
    real = Tickets.admits
    monkeypatch.setattr(Tickets, "admits", lambda self, key: asked.append(real(self, key)) or asked[-1])
    bob = make_worker("Bob", policy="open")
    bob.share(torch.arange(4.0), "#x")
    carol = make_worker("Carol", policy="open", secure=True)  # CurveZMQ: only invited keys get through
    b, c = make_client("Bob"), make_client("Carol")
    z = b.search("#x")[0].move(c)  # the courier's link is encrypted, with the key its ticket carried
    assert torch.equal(z.get(), torch.arange(4.0))
    assert asked and asked[-1] is True, "Carol's ZAP handler admitted the courier by its ticket's key"
    assert not carol.server.tickets.curve_keys, "a used ticket's key is admitted no longer"
    # the courier's key of an open ticket passes the ZAP handler, but is no invitation: it cannot open a session
    ticket = _ticket(c, b.search("#x")[0])
    assert len(ticket["curve"]) == 3 and carol.server.tickets.curve_keys
    from syft_magics.wire.auth import CurveKeys

    with pytest.raises(sm.AuthenticationError, match="refused the link"):
        sm.Client(carol.address, carol.key, timeout=5, curve=CurveKeys(*ticket["curve"]))
    assert carol.stats["refusals"]["key not invited"] == 1


def test_another_clients_tickets_do_not_evict_a_rounds_ticket(make_worker, make_client):
    """helper-47: past the 256 open tickets of a worker, the oldest gave way, whoever's: a client with 17 sessions of
    16 tickets each made an honest move fail half way. The session holding the most gives way."""
    from syft_magics.owner import tickets
    from syft_magics.scientist.moves import Move

    bob = make_worker("Bob", policy="review")
    bob.policy.allow_get(kind="model", to="Carol")
    make_worker("Carol", policy="review")
    b, c = make_client("Bob"), make_client("Carol")
    move = Move(b.send(nn.Linear(6, 3)), c)
    move.ticket()
    for _ in range(tickets.MAX_TICKETS // tickets.MAX_TICKETS_PER_SESSION + 1):
        m = make_client("Carol")
        for _ in range(tickets.MAX_TICKETS_PER_SESSION):
            m._request({"t": Kind.TICKET, "from": "x", "o": [m._new_id()], "shapes": [[0]], "dtypes": ["float32"],
                        "rg": [False], "kind": "tensor"}, op="move")
    assert move.order().location == "Carol"


def test_a_look_alike_listener_relaying_carols_proof_gets_nothing(make_worker, make_client, monkeypatch):
    """helper-48: with Carol's proof of her file's key demanded (helper-46), a listener of the scientist's at a
    look-alike address of Carol's relayed the courier's nonce and routing id to the real Carol, and her proof back:
    Bob's model, #x in its weights, reached the listener with no click. The courier now dials the address the
    connection file names, where only Carol listens."""
    import os
    import socket
    import threading

    import zmq

    from syft_magics.owner import tickets
    from syft_magics.wire import discovery
    from syft_magics.wire.protocol import PROTOCOL_VERSION, decode, encode

    bob = make_worker("Bob", policy="review")
    x = torch.randn(8, 6)
    bob.share(x, "#x")
    bob.policy.allow_get(kind="model", to="Carol")
    carol = make_worker("Carol", policy="review")
    b, c = make_client("Bob"), make_client("Carol")
    ctx = zmq.Context()
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    here = f"tcp://127.0.0.1:{fake.bind_to_random_port('tcp://127.0.0.1')}"
    found = discovery.find_by_address  # (tests bind 127.0.0.1 only: the listener stands for 127.0.0.2:<Carol's port>)
    monkeypatch.setattr(discovery, "find_by_address", lambda a: found(carol.address if a == here else a))
    tid, secret = os.urandom(16), os.urandom(32)
    stolen: dict = {}
    lin = b.send(nn.Linear(6, 8, bias=False))
    opt = b.optim.SGD(lin.parameters(), lr=1.0)  # a step over #x: its weights derive from #x, by training
    lin(b.search("#x")[0]).sum().backward()
    opt.step()
    real = c._request({"t": Kind.TICKET, "from": "Bob", "o": [c._new_id(), c._new_id()], "shapes": [[8, 6]],
                       "dtypes": ["float32"], "rg": [True], "kind": "model", "path": "worker", "names": ["weight"]},
                      op="move")

    def serve() -> None:
        for _ in range(3):
            if not fake.poll(2_000):
                return
            ident, *parts = fake.recv_multipart()
            h = decode(parts)
            if h["t"] == Kind.HELLO:  # the courier's nonce and routing id, to the real Carol, with a real ticket
                relay = ctx.socket(zmq.DEALER)
                relay.setsockopt(zmq.ROUTING_ID, ident)
                relay.setsockopt(zmq.LINGER, 0)
                relay.connect(carol.address)
                relay.send_multipart(encode({"t": Kind.HELLO, "s": 0, "v": PROTOCOL_VERSION, "ticket": real["tid"],
                                             "cn": h["cn"], "name": "courier", "pid": 1,
                                             "hostname": socket.gethostname()}))
                challenge = decode(relay.recv_multipart())
                relay.close(0)
                reply = {"t": Kind.CHALLENGE, "nonce": os.urandom(16), "instance": carol.instance, "name": "Carol",
                         "tp": tickets.worker_proof(secret.hex(), h["cn"], ident), "kp": challenge.get("kp")}
            elif h["t"] == Kind.AUTH:
                reply = {"t": Kind.WELCOME, "instance": carol.instance, "name": "Carol"}
            else:
                stolen.update(h)
                reply = {"t": Kind.OK, "s": h.get("s")}
            fake.send_multipart([ident, *encode(reply)])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(sm.SyftError):
            b._request({"t": Kind.MOVE, "id": lin.handle.oid, "to": here, "name": "Carol", "instance": carol.instance,
                        "tid": tid, "secret": secret, "w": 3.0}, approval_timeout=3, op="move", what="move")
        thread.join(3)
        assert not stolen and not bob.requests.pending
    finally:
        fake.close(0)
        ctx.term()


def test_moves_on_their_way_are_bounded_in_number_and_bytes(make_worker, make_client):
    """helper-49: every allowed move started a courier (a thread, a ZeroMQ context, a copy of the value) that waits
    up to a minute for a target that may never answer: 400 moves of a scalar took every file descriptor of the
    owner's process, and 40 of 48 MiB held 2 GiB against a 64 MB quota, charged nothing."""
    from syft_magics.owner import moves
    from syft_magics.owner.quotas import Quotas

    bob = make_worker("Bob", policy="open", quotas=Quotas(max_bytes="8MB"))
    b = make_client("Bob")
    nowhere = f"tcp://127.0.0.1:{free_port()}"  # (nobody answers: the couriers wait)
    small = b.send(torch.zeros(4))

    def order(obj):
        return b._request({"t": Kind.MOVE, "id": obj.oid, "to": nowhere, "name": "Zoe", "instance": "0" * 16,
                           "tid": bytes(16), "secret": bytes(32), "w": 2.0}, timeout=10)

    threads = [threading.Thread(target=lambda: pytest.raises(sm.SyftError, order, small), daemon=True)
               for _ in range(moves.MAX_COURIERS_PER_SESSION)]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(bob.server.__dict__.get("couriers", ())) == moves.MAX_COURIERS_PER_SESSION)
    with pytest.raises(sm.QuotaExceeded, match="moves on their way"):
        order(small)
    for t in threads:
        t.join(10)
    big = b.send(torch.zeros(3 << 20 >> 2))  # 3 MB: held 3, with its copy on its way 6 (of 8)
    thread = threading.Thread(target=lambda: pytest.raises(sm.SyftError, order, big), daemon=True)
    thread.start()
    assert wait_until(lambda: len(bob.server.__dict__.get("couriers", ())) == 1)
    with pytest.raises(sm.QuotaExceeded):
        order(big)  # a second copy would make 9
    thread.join(10)


def test_a_target_that_answers_with_junk_is_read_no_further(make_worker, make_client):
    """helper-50: a courier read whatever its target sent until its deadline: a listener of the scientist's (the
    target of a scalar moved by the owner's rule) answered with gigabytes, 6 GB in the owner's process under a
    64 MB quota. The courier reads messages of MAX_ANSWER_BYTES at most: a bigger one ends the link."""
    import zmq

    from syft_magics.owner.courier import MAX_ANSWER_BYTES
    from syft_magics.wire.protocol import encode

    make_worker("Bob", policy="open")
    b = make_client("Bob")
    scalar = b.send(torch.ones(()))
    ctx = zmq.Context()
    listener = ctx.socket(zmq.ROUTER)
    listener.setsockopt(zmq.LINGER, 0)
    here = f"tcp://127.0.0.1:{listener.bind_to_random_port('tcp://127.0.0.1')}"

    def answer() -> None:
        if listener.poll(5_000):
            ident = listener.recv_multipart()[0]
            listener.send_multipart([ident, encode({"t": "junk"})[0], bytes(2 * MAX_ANSWER_BYTES)])
            listener.send_multipart([ident, *encode({"t": Kind.ERR, "code": "error", "msg": "read after the junk"})])

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(sm.SyftError) as failed:
            b._request({"t": Kind.MOVE, "id": scalar.oid, "to": here, "name": "Dave",
                        "instance": "x", "tid": bytes(16), "secret": bytes(32), "w": 1.0}, timeout=10)
        assert "read after the junk" not in str(failed.value) and "within 1 s" in str(failed.value), failed.value
        thread.join(5)
    finally:
        listener.close(0)
        ctx.term()


def test_a_move_target_cannot_look_like_a_worker_this_machine_knows(two):
    """helper-50: 'Cаrol' (a Cyrillic а), 'carol', 'Ｃarol' or 'Carol at tcp://<Carol's address> (relay)' at
    tcp://127.2:<Carol's port> (127.0.0.2, in a form no parser here read as loopback) read as Carol in the owner's
    request; a click sent the value to the scientist's listener there. A target is named exactly as a worker of
    this machine is, or plainly and unlike any of them; 127.2 is read as 127.0.0.2."""
    from syft_magics.wire import discovery

    bob, alice, b, a = two
    x = b.search("#x")[0]
    ticket = _ticket(a, x)
    port = alice.address.rsplit(":", 1)[1]
    for name in ("Аlice", "alice", "Ａlice", f"Alice at {alice.address} (relay)"):
        with pytest.raises(sm.SyftError, match="named as a worker of this machine is"):
            _order(b, x, ticket, name=name, to=f"tcp://10.9.9.9:{port}")
    assert discovery._is_local("127.2") and discovery._is_local("2130706434") and not discovery._is_local("10.9.9.9")
    with pytest.raises(sm.SyftError, match="is Alice, not Dave"):
        _order(b, x, ticket, name="Dave", to=f"tcp://127.2:{port}")

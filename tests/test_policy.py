"""Policies decide which values leave the worker: open, review (the owner approves each get), closed."""
from __future__ import annotations

import collections
import threading
import time

import pytest
import torch
from helpers import wait_until

import syft_magics as sm
from syft_magics.owner.policy import ALLOW, DENY, REVIEW, GetRequest, RequestBook, make_policy

X = torch.tensor([1.0, 2, 3, 4, 5])


@pytest.fixture
def review(make_worker, make_client):
    bob = make_worker("Bob", policy="review")
    bob.share(X.clone(), "#X")
    client = make_client("Bob")
    return bob, client


class Owner(threading.Thread):
    """The data owner deciding from another thread, once a request is pending."""

    def __init__(self, bob, decide) -> None:
        super().__init__(name="owner-decides", daemon=True)
        self.bob, self.decide, self.error = bob, decide, None

    def run(self) -> None:
        try:
            # (30 s: the first op of a process imports torch._dynamo, seconds under load)
            assert wait_until(lambda: self.bob.requests.pending, timeout=30), "no request arrived"
            self.decide(self.bob, self.bob.requests.pending[0])
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_open_policy_allows_every_get(seed):
    bob, client = seed
    assert client.policy == "open"
    assert torch.equal(client.search("#X")[0].get(), X)
    assert len(bob.requests) == 0


def test_review_get_blocks_until_the_owner_approves(review, capsys):
    bob, client = review
    x = client.search("#X")[0]
    owner = Owner(bob, lambda b, r: b.approve(r.n))
    owner.start()
    got = x.get()
    owner.join(5)
    assert owner.error is None
    assert torch.equal(got, X)
    out = capsys.readouterr().out
    assert "waiting for Bob to approve request #1 (get of #X)" in out
    req = bob.requests[1]
    assert req.status == "approved" and req.tags == ("#X",) and req.lineage == "#X" and req.shape == (5,)
    assert not bob.requests.pending


def test_review_get_says_it_waits_even_when_the_decision_came_in_the_same_read(review, capsys):
    # a loaded client reads the worker's "pending" note and the owner's approval in one go: the
    # approval must not replace the note (the user would never see what they waited for)
    bob, client = review
    x = client.search("#X")[0]
    link = client._link
    drain = link._drain

    def late_drain(*args, **kwargs):
        if bob.requests.pending:
            bob.approve(bob.requests.pending[0].n)
            time.sleep(0.2)  # the approval reaches the socket before it is read
        return drain(*args, **kwargs)

    link._drain = late_drain
    got = x.get()
    assert torch.equal(got, X)
    assert "waiting for Bob to approve request #1 (get of #X)" in capsys.readouterr().out
    assert bob.requests[1].status == "approved"


def test_review_shows_the_lineage_of_a_computed_value(review):
    bob, client = review
    x = client.search("#X")[0]
    owner = Owner(bob, lambda b, r: b.approve(r.n))
    owner.start()
    assert torch.equal((x * 2).sum().get(), torch.tensor(30.0))
    owner.join(5)
    assert bob.requests[1].lineage.startswith(".sum(") and bob.requests[1].shape == ()


def test_review_deny_raises_permission_denied_with_the_reason(review):
    bob, client = review
    x = client.search("#X")[0]
    owner = Owner(bob, lambda b, r: b.deny(r.n, "raw rows are private"))
    owner.start()
    with pytest.raises(sm.PermissionDenied) as info:
        x.get()
    owner.join(5)
    assert "raw rows are private" in str(info.value) and "denied request #1" in str(info.value)
    assert isinstance(info.value, PermissionError)
    assert bob.requests[1].status == "denied" and bob.requests[1].reason == "raw rows are private"
    # the client keeps working
    assert (x + 1).shape == (5,)
    client.sync()


def test_approval_timeout_raises_get_timeout_and_the_request_stays_pending(review):
    bob, client = review
    x = client.search("#X")[0]
    with pytest.raises(sm.GetTimeout, match="stays pending") as info:
        x.get(timeout=0.5)
    assert isinstance(info.value, TimeoutError)
    assert [r.n for r in bob.requests.pending] == [1]
    # a second get attaches to the same request; approving it releases the value
    owner = Owner(bob, lambda b, r: b.approve(r.n))
    owner.start()
    assert torch.equal(x.get(), X)
    owner.join(5)
    assert owner.error is None
    assert len(bob.requests) == 1 and bob.requests[1].status == "approved"


def test_approval_while_nobody_waits_is_kept_for_the_next_get(review):
    bob, client = review
    x = client.search("#X")[0]
    with pytest.raises(sm.GetTimeout):
        x.get(timeout=0.5)
    bob.approve(1)
    assert torch.equal(x.get(timeout=2), X)
    assert len(bob.requests) == 1
    # an approval is for one get: the next one asks again
    with pytest.raises(sm.GetTimeout):
        x.get(timeout=0.5)
    assert [r.n for r in bob.requests.pending] == [2]


def test_deciding_twice_or_an_unknown_request_is_an_error(review):
    bob, client = review
    x = client.search("#X")[0]
    with pytest.raises(sm.GetTimeout):
        x.get(timeout=0.5)
    bob.approve(1)
    with pytest.raises(ValueError, match="already approved"):
        bob.deny(1)
    with pytest.raises(KeyError, match="no request #7"):
        bob.approve(7)


def test_closed_policy_refuses_every_get(make_worker, make_client):
    bob = make_worker("Bob", policy="closed")
    bob.share(X.clone(), "#X")
    client = make_client("Bob")
    x = client.search("#X")[0]
    with pytest.raises(sm.PermissionDenied, match="closed"):
        x.get()
    with pytest.raises(sm.PermissionDenied):
        (x + 1).get()
    # computation still works; nothing is queued for review
    assert (x * 2).sum().shape == ()
    client.sync()
    assert len(bob.requests) == 0


def test_requests_of_a_disconnected_client_are_cancelled(review):
    bob, client = review
    x = client.search("#X")[0]
    with pytest.raises(sm.GetTimeout):
        x.get(timeout=0.5)
    assert bob.requests.pending
    client.disconnect()
    assert wait_until(lambda: not bob.requests.pending)
    assert bob.requests[1].status == "cancelled" and bob.requests[1].reason == "disconnected"
    with pytest.raises(ValueError, match="already cancelled"):
        bob.approve(1)


def test_request_book_repr_and_history():
    book = RequestBook()
    assert repr(book) == "no get requests"
    a = book.open(client="ana@host", object_id="ab" * 16, shape=(5,), dtype="float32", lineage="#X", tags=("#X",))
    b = book.open(client="ana@host", object_id="cd" * 16, shape=(2, 2), dtype="int64", lineage=".add(#X, #Y)")
    assert (a.n, b.n) == (1, 2)
    book.decide(2, "denied", "too detailed")
    text = repr(book)
    lines = text.splitlines()
    assert lines[0].split() == ["n", "status", "client", "object", "lineage", "shape", "reason"]
    assert "#1" in text and "pending" in text and "#X" in text
    assert "#2" in text and "denied" in text and ".add(#X, #Y)" in text and "too detailed" in text
    assert "cdcdcdcd" in text and "(2, 2)" in text
    assert [r.n for r in book.pending] == [1] and [r.n for r in book.history] == [2]
    assert book[2] is b
    with pytest.raises(TypeError, match=r"by their number .* bob.requests.pending"):
        book[:1]  # (it raised "unhashable type: 'slice'")
    assert "ana@host wants #X" in a.describe()


def test_policies_by_name_and_custom_rules(make_worker, make_client):
    assert make_policy("open").decide(None) == ALLOW
    assert make_policy("closed").decide(None) == DENY
    assert make_policy("review").decide(None) == REVIEW
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("permissive")

    class SmallOnly(sm.Policy):
        name = "small-only"

        def decide(self, request: GetRequest) -> str:
            return ALLOW if len(request.shape) == 0 else DENY

        def deny_reason(self, request: GetRequest) -> str:
            return "only aggregates leave"

    bob = make_worker("Bob", policy=SmallOnly())
    bob.share(X.clone(), "#X")
    x = make_client("Bob").search("#X")[0]
    assert x.sum().get().item() == 15.0
    with pytest.raises(sm.PermissionDenied, match="only aggregates leave"):
        x.get()


def test_stopping_the_worker_cancels_pending_requests_and_frees_client_objects(review, make_client):
    bob, client = review
    x = client.search("#X")[0]
    z = x * 2
    with pytest.raises(sm.GetTimeout):
        z.get(timeout=0.5)
    assert len(bob.store) == 2 and bob.requests.pending
    bob.stop()
    assert not bob.requests.pending
    assert bob.requests[1].status == "cancelled" and bob.requests[1].reason == "worker stopped"
    assert len(bob.store) == 1 and bob.store.search(("#X",)), "only the owner's data is kept"
    assert not bob.clients
    # started again, the same worker serves its data to new clients
    bob.start()
    bob.policy = sm.OpenPolicy()
    assert torch.equal(make_client("Bob").search("#X")[0].get(), X)


def test_decisions_from_another_thread_while_gets_arrive_are_never_lost(make_worker, make_client):
    """The owner approves and denies from its own thread while the scientist's gets (some giving up
    early and asking again) keep arriving: every get ends with its value or PermissionDenied, and
    every approval lets a value out (one that raced a get used to be lost: the get opened a new request)."""
    bob = make_worker("Bob", policy="review")
    values = [torch.full((3,), float(i)) for i in range(400)]
    for i, v in enumerate(values):
        bob.share(v, f"#V{i}")
    client = make_client("Bob")
    pointers = [client.search(f"#V{i}")[0] for i in range(len(values))]
    sent = collections.Counter()  # values that left the worker, by object (hex id)
    bob.events.subscribe(lambda e: sent.update([e.data["id"]]) if e.kind == "get" and e.data["status"] == "sent"
                         else None)
    stop = threading.Event()
    errors = []

    def owner() -> None:
        try:
            while not stop.is_set():
                for req in bob.requests.pending:
                    if req.n % 3 == 0:
                        bob.deny(req.n, "every third")
                    else:
                        bob.approve(req.n)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=owner, name="owner-hammer", daemon=True)
    thread.start()
    outcomes = {}
    try:
        for i, ptr in enumerate(pointers):
            for _ in range(500):
                try:
                    outcomes[i] = ptr.get(timeout=0.01)  # gives up soon and asks again, racing the decision
                    break
                except (sm.GetTimeout, sm.ReplyTimeout):
                    continue
                except sm.PermissionDenied:
                    outcomes[i] = "denied"
                    break
    finally:
        stop.set()
        thread.join(5)
    assert not errors and not thread.is_alive()
    assert len(outcomes) == len(values), "a get never ended"
    assert not bob.requests.pending
    for i, got in outcomes.items():
        asked = [r for r in bob.requests if r.tags == (f"#V{i}",)]
        approved = [r for r in asked if r.status == "approved"]
        # every approval let one value out: none was lost (a get that gave up before its denial, or
        # before the value it was let through arrived, asks again: a new request)
        assert sent[asked[0].object_id] >= len(approved), [(r.n, r.status) for r in asked]
        if asked[-1].status == "denied":
            assert got == "denied"
        else:
            assert asked[-1].status == "approved" and torch.equal(got, values[i])

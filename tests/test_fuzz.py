"""Property-based fuzzing of the worker's wire: over 10,000 generated and mutated messages, before and
after authentication, give 0 crashes and 0 hangs, while a well-behaved client gets right answers
throughout.

The seed corpus is what our own client sends (recorded off its socket during a short session: the
handshake, batches of ops, sends with inline and raw-frame tensors, gets, searches, frees, heartbeats,
goodbye). Hypothesis mutates it (header fields set to other msgpack types, deleted, nested hundreds of
levels deep, made large; kinds swapped; batch members mutated; bytes flipped, cut or inserted; frames
dropped, repeated or added) or generates messages from scratch. The worker runs in a child process,
so a crash shows as its exit rather than taking the test down. Deterministic (``derandomize``, no
example database), so CI sees the same messages every run.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, List

import msgpack
import pytest
import torch
from helpers import worker_child
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from raw_peer import RawPeer

import syft_magics as sm
from syft_magics.scientist import link as link_module
from syft_magics.wire.protocol import DTYPES, EXT_REF, EXT_SHARED, EXT_TENSOR, EXT_TUPLE, Kind

HERE = Path(__file__).parent
X = torch.tensor([1.0, 2, 3, 4, 5])
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 200))
MESSAGES_PER_EXAMPLE = (50, 60)  # so at least 10,000 messages in all
#: a worker that has not answered within this long is hung (generous: CI machines are loaded)
HANG_S = 30.0

KINDS = [k.value for k in Kind]
KEYS = ["t", "s", "f", "a", "k", "o", "m", "n", "id", "ids", "x", "tags", "mac", "v", "name", "ack", "g", "rg",
        "host", "probe", "i", "nonce", "pid", "hostname"]


def packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpacked(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def nested(depth: int, tuples: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = msgpack.ExtType(EXT_TUPLE, packed(value)) if tuples else [value]
    return value


# -- generating and mutating -------------------------------------------------------------------------------
# Hypothesis draws what to do (which real message, a seed per message, one structured value per example);
# the mutations themselves are plain Python driven by that seed: drawing every byte through Hypothesis
# cost about 50 ms a message, far too slow for 10,000 of them.
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1), st.floats(),
    st.text(max_size=40), st.binary(max_size=40), st.sampled_from(KINDS),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=32)),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), children, max_size=4),
        st.builds(lambda v: msgpack.ExtType(EXT_TUPLE, packed(v)), st.lists(children, max_size=3)),
    ),
    max_leaves=12,
)

EDGE_INTS = [0, 1, -1, 2 ** 31, -(2 ** 31), 2 ** 32, 2 ** 53 + 1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1, 10 ** 12]


def random_value(rng: random.Random, extra: Any, depth: int = 0) -> Any:
    """Any msgpack value, our extension types with lying payloads among them."""
    pick = rng.randrange(16 if depth < 3 else 10)
    if pick == 0:
        return rng.choice([None, True, False, extra])
    if pick == 1:
        return rng.choice(EDGE_INTS) if rng.random() < 0.5 else rng.randrange(-1000, 1000)
    if pick == 2:
        return rng.choice([0.0, -0.0, float("nan"), float("inf"), 1e308, rng.random()])
    if pick == 3:
        return rng.choice(KINDS + KEYS + ["torch.add", "Tensor.add_", "torch.zeros", "builtins.eval", ""])
    if pick == 4:
        return rng.randbytes(rng.choice([0, 1, 15, 16, 17, 64]))
    if pick == 5:  # sizes
        return rng.choice(["s" * (1 << 16), "s" * (1 << 20), b"b" * (1 << 20), [0] * (1 << 14)])
    if pick == 6:  # depths
        value: Any = 1
        tuples = rng.random() < 0.5
        for _ in range(rng.choice([31, 32, 33, 100, 400])):
            value = msgpack.ExtType(EXT_TUPLE, packed(value)) if tuples else [value]
        return value
    if pick == 7:
        return msgpack.ExtType(EXT_REF, rng.randbytes(rng.choice([0, 15, 16, 17])))
    if pick == 8:  # a tensor that lies: its frame, dtype or shape
        shape = [rng.choice([-1, 0, 3, 2 ** 20, 2 ** 40]) for _ in range(rng.randrange(4))]
        frame = rng.choice([-1, 0, 1, 5, 2 ** 40, rng.randbytes(8)])
        return msgpack.ExtType(EXT_TENSOR, packed([frame, rng.choice([*DTYPES, "evil", ""]), shape]))
    if pick == 9:
        return msgpack.ExtType(rng.choice([rng.randrange(128), EXT_SHARED, 4, 6, 7, 8]),
                               packed([rng.randrange(-1, 2 ** 20) for _ in range(rng.randrange(6))]))
    if pick < 13:
        return [random_value(rng, extra, depth + 1) for _ in range(rng.randrange(4))]
    if pick < 15:
        return {rng.choice(KEYS): random_value(rng, extra, depth + 1) for _ in range(rng.randrange(4))}
    return msgpack.ExtType(EXT_TUPLE, packed([random_value(rng, extra, depth + 1) for _ in range(rng.randrange(3))]))


def mutate_header(rng: random.Random, header: bytes, extra: Any) -> bytes:
    """One real header, changed in one to three places (as a map while it decodes, else as bytes)."""
    try:
        value = unpacked(header)
    except Exception:
        value = None
    for _ in range(rng.randint(1, 3)):
        how = rng.choice(["set", "set", "delete", "kind", "member", "bytes", "replace"])
        if isinstance(value, dict) and how == "set":
            value[rng.choice(KEYS + list(value))] = random_value(rng, extra)
        elif isinstance(value, dict) and how == "delete" and value:
            value.pop(rng.choice(list(value)))
        elif isinstance(value, dict) and how == "kind":
            value["t"] = rng.choice(KINDS)
        elif isinstance(value, dict) and how == "member" and isinstance(value.get("m"), list) and value["m"]:
            i = rng.randrange(len(value["m"]))
            member = value["m"][i]
            value["m"][i] = mutate_header(rng, member, extra) if isinstance(member, bytes) else extra
        elif how == "replace":
            value = random_value(rng, extra)
        else:  # bytes: flip, cut or insert
            data = bytearray(packed(value) if value is not None else header)
            at = rng.randrange(len(data) + 1)
            edit = rng.choice(["flip", "cut", "insert"])
            if edit == "flip" and at < len(data):
                data[at] ^= rng.randrange(1, 256)
            elif edit == "cut":
                del data[at:]
            else:
                data[at:at] = rng.randbytes(rng.randrange(1, 17))
            return bytes(data)
    return packed(value)


def make_message(rng: random.Random, corpus: List[List[bytes]], extra: Any) -> List[bytes]:
    """A multipart message: a real one mutated (mostly), or one made from scratch."""
    if rng.random() < 0.1:
        return [packed(random_value(rng, extra))] + [rng.randbytes(rng.randrange(64)) for _ in range(rng.randrange(3))]
    parts = list(rng.choice(corpus))
    parts[0] = mutate_header(rng, parts[0], extra)
    frames = rng.choice(["keep", "keep", "drop", "repeat", "add"])
    if frames == "drop" and len(parts) > 1:
        del parts[rng.randrange(1, len(parts))]
    elif frames == "repeat":
        parts.append(parts[-1])
    elif frames == "add":
        parts.append(rng.randbytes(rng.randrange(256)))
    return parts


# -- the worker and the corpus ---------------------------------------------------------------------------
@pytest.fixture
def worker():
    with worker_child("open", grace=15) as child:
        yield child


def record_corpus(address: str, key: str, monkeypatch) -> List[List[bytes]]:
    """Every message our client sends during a short session, as bytes."""
    sent: List[List[bytes]] = []
    original = link_module.send_parts

    def recording(sock, parts, **kwargs):
        sent.append([bytes(memoryview(p).cast("B")) for p in parts])
        return original(sock, parts, **kwargs)

    monkeypatch.setattr(link_module, "send_parts", recording)
    client = sm.connect(address, key=key)
    x = client.search("#X")[0]
    y = client.send(torch.arange(6.0).reshape(2, 3))
    z = client.send(torch.ones(8192))  # over the inline limit: a raw frame
    w = (x + 1) * 2
    v = torch.matmul(y, y.T)[0, 1:]
    total = (z.sum() + x.sum()).get()
    assert float(total) == 8192 + 15
    torch.nonzero(x > 2)  # an op whose result the worker describes
    assert torch.equal(w.get(), (X + 1) * 2)
    del v
    client.sync()
    client.search("#X")
    client.disconnect()  # frees and goodbye
    monkeypatch.undo()
    for parts in list(sent):  # each member of a batch also as a message of its own, as the worker takes it
        header = unpacked(parts[0])
        if header.get("t") == "batch":
            frames = iter(parts[1:])
            for member, n in zip(header["m"], header["n"]):
                sent.append([member, *(next(frames) for _ in range(n))])
    kinds = {unpacked(m[0]).get("t") for m in sent}
    assert {"hello", "auth", "batch", "get", "search", "send", "sync", "bye"} <= kinds, kinds
    return sent


# -- the test -----------------------------------------------------------------------------------------------
@pytest.mark.timeout(900)
def test_fuzzed_messages_before_and_after_login_never_crash_or_hang_the_worker(worker, make_client, monkeypatch):
    proc, address, key = worker
    corpus = record_corpus(address, key, monkeypatch)
    good = make_client(address, key=key)
    x = good.search("#X")[0]
    counts = {"messages": 0, "examples": 0, "checks": 0, "relogins": 0}
    authed: List[RawPeer] = []

    def logged_in() -> RawPeer:
        if not authed:
            peer = RawPeer(address, timeout=HANG_S)
            peer.login(key)
            authed.append(peer)
            counts["relogins"] += 1
        return authed[0]

    # no shrinking: a failure is reported as generated (shrinking a hang could take many minutes)
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.lists(st.integers(0, 2 ** 32 - 1), min_size=MESSAGES_PER_EXAMPLE[0], max_size=MESSAGES_PER_EXAMPLE[1]),
           values, st.booleans())
    def one(seeds: List[int], extra: Any, after_login: bool) -> None:
        counts["examples"] += 1
        messages = [make_message(random.Random(seed), corpus, extra) for seed in seeds]
        mark = 1_000_000 + counts["examples"]
        if after_login:
            peer = logged_in()
            for parts in messages:
                peer.send_raw(parts)
            peer.send_raw([packed({"t": "sync", "s": mark})])
            while True:  # the replies come in order; the marker's is the last
                reply = peer.reply(HANG_S)
                assert reply is not None, f"the worker did not answer within {HANG_S:g} s (seeds {seeds})"
                if reply.get("s") == mark:
                    break
                if reply.get("code") == "unknown_session":  # a fuzzed bye or hello ended the session
                    authed.pop().close()
                    break
        else:
            stranger = RawPeer(address, timeout=HANG_S)
            try:
                for parts in messages:
                    stranger.send_raw(parts)
            finally:
                stranger.close()
        counts["messages"] += len(messages)
        assert proc.poll() is None, f"the worker process died (exit {proc.returncode}) (seeds {seeds})"
        # a well-behaved client is served right throughout
        k = counts["examples"] % 7
        assert torch.equal((x + k).get(timeout=HANG_S), X + k)
        counts["checks"] += 1

    try:
        one()
    finally:
        for peer in authed:
            peer.close()
    assert counts["messages"] >= 10_000, counts
    assert counts["checks"] == counts["examples"] and proc.poll() is None
    # and a new client can still log in and compute
    assert torch.equal((make_client(address, key=key).search("#X")[0] * 3).get(), X * 3)

"""Big transfers stream in chunks (wire/chunks.py): values intact, Ctrl-C cancels cleanly on both sides,
small ops get through during a transfer, a progress bar where someone can see it, the worker bounded.

Sizes are small (a few MiB) with a low streaming threshold and small chunks, so a loaded 2-core machine
moves them in well under a second; the real signal path (SIGINT to this process) is used for interrupts.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any, Iterator

import pytest
import torch
from helpers import wait_until

import syft_magics as sm
from syft_magics.errors import ProtocolError, RemoteError, SyftError
from syft_magics.scientist import progress
from syft_magics.wire import chunks, limits
from syft_magics.wire.protocol import Kind, encode

CHUNK = 64 << 10


@pytest.fixture
def streamed(make_worker, make_client, fast_defaults):
    """Bob (open policy) and a client over TCP that streams anything from 256 KiB, in 64 KiB chunks."""
    fast_defaults.same_host = False
    fast_defaults.stream_min_bytes = 256 << 10
    fast_defaults.chunk_bytes = CHUNK
    fast_defaults.chunk_window = 4
    fast_defaults.progress = False
    bob = make_worker("Bob", policy="open", connection_file=False)
    bob.share(torch.tensor([1.0, 2, 3]), "#X")
    client = make_client(f"tcp://127.0.0.1:{bob.port}", key=bob.key)
    return bob, client


def session_of(bob):
    session, = bob.clients
    return session


def interrupt_after(monkeypatch, cls, method: str, calls: int = 1) -> list:
    """SIGINT to this process (as Ctrl-C or a kernel interrupt) after ``calls`` calls of ``cls.method`` on
    the main thread (the client's side; an in-process worker's calls run on its serving thread)."""
    seen: list = []
    original = getattr(cls, method)

    def wrapped(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if threading.current_thread() is threading.main_thread():
            seen.append(1)
            if len(seen) == calls:
                os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(cls, method, wrapped)
    return seen


@pytest.mark.parametrize("make", [
    lambda: torch.randn(300, 1000),
    lambda: torch.arange(200_000, dtype=torch.int64).reshape(1000, 200),
    lambda: torch.randn(1000, 500).t(),  # not contiguous
    lambda: torch.rand(2_000_000) > 0.5,  # bool
    lambda: torch.randn(100_000, dtype=torch.complex64),
])
def test_big_tensors_stream_both_ways_with_values_intact(streamed, make):
    bob, client = streamed
    t = make()
    assert t.numel() * t.element_size() >= sm.defaults.stream_min_bytes
    ptr = client.send(t, "#big")
    assert ptr.oid in bob.store, "stored whole"
    back = ptr.get()
    assert back.dtype == t.dtype and back.shape == t.shape and torch.equal(back, t)
    assert len(session_of(bob).streams) == 0, "nothing left in the worker's stream tables"
    assert not client._link.streams and not client._link.credits


def test_send_keeps_requires_grad_and_the_caller_may_change_the_tensor_at_once(streamed):
    bob, client = streamed
    t = torch.randn(400_000, requires_grad=True)
    expected = t.detach().clone()
    ptr = client.send(t)
    with torch.no_grad():
        t.zero_()  # send returned: the worker holds every byte already
    assert ptr.requires_grad and bob.store.get(ptr.oid).tensor.requires_grad, "on the worker too"
    assert torch.equal(ptr.get().detach(), expected)


def test_a_streamed_get_of_a_value_changed_mid_transfer_stops_with_a_clear_error(streamed, monkeypatch):
    bob, client = streamed
    data = torch.zeros(1 << 20)
    bob.share(data, "#D")
    ptr, = client.search("#D")
    original = chunks.Outgoing.due

    def due(self, window=None):
        out = original(self, window)
        data.add_(1)  # the owner's notebook changes its tensor while it is being sent
        return out

    monkeypatch.setattr(chunks.Outgoing, "due", due)
    with pytest.raises(SyftError, match="changed while it was being sent"):
        ptr.get()
    monkeypatch.setattr(chunks.Outgoing, "due", original)
    assert wait_until(lambda: len(session_of(bob).streams) == 0)
    assert torch.equal(ptr.get(), data), "the link still works and the next get is whole"


def test_an_interrupted_get_stops_the_worker_sending_and_the_link_stays_usable(streamed, monkeypatch):
    bob, client = streamed
    big = torch.randn(4 << 20)  # 16 MiB: 256 chunks
    bob.share(big, "#BIG")
    ptr, = client.search("#BIG")
    interrupt_after(monkeypatch, chunks.Incoming, "write", calls=2)
    with pytest.raises(KeyboardInterrupt):
        ptr.get()
    assert not client._link.streams, "the client dropped the partial value"
    assert wait_until(lambda: len(session_of(bob).streams) == 0, timeout=5), "the worker stopped sending"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "Ctrl-C works as before afterwards"
    x, = client.search("#X")
    assert torch.equal((x + 1).get(), torch.tensor([2.0, 3, 4])), "the link stays usable"
    monkeypatch.undo()
    assert torch.equal(ptr.get(), big), "and a new get is whole"


def test_a_get_interrupted_before_its_stream_began_stops_the_worker_sending(streamed, monkeypatch):
    """Ctrl-C after the request went out, before the value's first chunk came: the stream the worker
    starts anyway is cancelled when its header arrives, instead of waiting a minute for credit."""
    bob, client = streamed
    bob.share(torch.randn(4 << 20), "#BIG")
    ptr, = client.search("#BIG")
    interrupt_after(monkeypatch, type(client._link), "send")
    with pytest.raises(KeyboardInterrupt):
        ptr.get()
    monkeypatch.undo()
    x, = client.search("#X")  # (reads the worker's replies, the stream's header among them)
    assert wait_until(lambda: (x + 0).get() is not None and len(session_of(bob).streams) == 0, timeout=5), \
        "the worker stopped sending"
    assert not client._link.streams


def test_an_interrupted_send_leaves_nothing_half_stored(streamed, monkeypatch):
    bob, client = streamed
    before = len(bob.store)
    t = torch.randn(4 << 20)
    interrupt_after(monkeypatch, chunks.Outgoing, "credit", calls=2)
    with pytest.raises(KeyboardInterrupt):
        client.send(t, "#half")
    assert wait_until(lambda: len(session_of(bob).streams) == 0, timeout=5), "the worker dropped the upload"
    client.sync()  # chunks still on their way when it was cancelled have arrived, and were dropped
    assert len(bob.store) == before, "nothing half-stored"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    assert torch.equal(client.send(t).get(), t), "the link stays usable"


def test_a_small_op_is_answered_while_a_big_get_is_still_streaming(streamed, fast_defaults):
    bob, client = streamed
    fast_defaults.chunk_window = 1  # one chunk in flight: the big get takes hundreds of round trips
    big = torch.randn(32 << 20)  # 128 MiB in 2,048 chunks (32 MiB went by before the small op on a fast machine)
    bob.share(big, "#BIG")
    ptr, = client.search("#BIG")
    x, = client.search("#X")
    assert torch.equal((x * 2).get(), torch.tensor([2.0, 4, 6]))  # priced now, not while the get streams
    got: list = []
    getter = threading.Thread(target=lambda: got.append(ptr.get()))
    getter.start()
    try:
        assert wait_until(lambda: client._link.streams, timeout=10), "the big get started streaming"
        small = (x * 2).get()
        still_streaming = bool(client._link.streams)
    finally:
        getter.join(60)
    assert torch.equal(small, torch.tensor([2.0, 4, 6]))
    assert still_streaming, "the small op's answer came before the big value had finished"
    assert torch.equal(got[0], big)


@contextlib.contextmanager
def ops_from_another_thread(x: Any) -> Iterator[list]:
    """Op round trips on ``x`` (#X: [1, 2, 3]) from a second thread while the block runs (at least one before
    it starts); yields whether each gave the right value."""
    stop = threading.Event()
    done: list = []

    def ops() -> None:
        while not stop.is_set():
            done.append(torch.equal((x + 1).get(), torch.tensor([2.0, 3, 4])))

    worker = threading.Thread(target=ops)
    worker.start()
    try:
        assert wait_until(lambda: done, timeout=20)
        yield done
    finally:
        stop.set()
        worker.join(30)


def test_a_streamed_send_while_another_thread_runs_ops_on_the_link_stores_the_right_values(streamed):
    """The uploading thread's chunks go alone (the worker may serve an op queued behind them first); riding in a
    batch with the other thread's ops, a chunk overtook the ones the worker held and broke the upload."""
    bob, client = streamed
    x, = client.search("#X")
    with ops_from_another_thread(x) as done:
        for i in range(4):
            t = torch.randn(1 << 20)  # 4 MiB in 64 chunks
            assert torch.equal(client.send(t).get(), t)
    assert done and all(done)


def test_an_upload_keeps_one_chunk_in_flight_while_ops_share_the_link(streamed, monkeypatch):
    """Ops from another thread during an upload wait behind the chunks already sent: the upload keeps one chunk
    in flight while they come (transfers.SHARED_SECONDS), its whole window when it is alone."""
    bob, client = streamed
    x, = client.search("#X")
    in_flight: list = []
    due = chunks.Outgoing.due

    def recording(self: chunks.Outgoing, window=None) -> list:
        out = due(self, window)
        if threading.current_thread() is threading.main_thread():  # (the upload's: the worker's get streams too)
            in_flight.append((self.sent - self.acked) // self.chunk)
        return out

    monkeypatch.setattr(chunks.Outgoing, "due", recording)
    t = torch.randn(1 << 20)  # 4 MiB in 64 chunks
    assert torch.equal(client.send(t).get(), t)
    assert max(in_flight) == 4, "alone: its whole window"
    with ops_from_another_thread(x) as done:
        in_flight.clear()
        assert torch.equal(client.send(t).get(), t)
    assert all(done) and max(in_flight[-20:]) == 1, "beside the ops: one (once one went out during it)"


def test_a_stream_sends_no_more_chunks_than_the_window_it_is_given():
    out = chunks.Outgoing(1, torch.zeros(10 * CHUNK // 4), CHUNK, 4)
    assert len(out.due(2)) == 2
    assert out.due(2) == [], "two in flight already"
    assert len(out.due()) == 2, "its own window: two more"
    out.credit(CHUNK)
    assert len(out.due(8)) == 1, "never more than its own window"


def test_an_op_behind_upload_chunks_is_answered_before_them(streamed):
    """Chunks already on their way are served after the messages queued behind them (owner/chunk_queue.py), in
    their own order, so that a small op sent during a big upload waits for at most the chunk being copied."""
    bob, client = streamed
    link = client._link
    oid = os.urandom(16)
    seq = put(client, id=oid, sh=[4 * CHUNK // 4], n=4 * CHUNK)
    order: list = []
    filed = link._file

    def file(header: dict) -> None:
        if header["t"] in (Kind.CREDIT, Kind.OK):  # (not the heartbeats' pongs)
            order.append((header["t"], header.get("o", header.get("s"))))
        filed(header)

    link._file = file
    with bob.server.lock:  # the worker takes all of it at once (it waits for this lock after each poll)
        for k in range(3):
            header = {"t": Kind.CHUNK, "s": seq, "o": k * CHUNK, "x": torch.full((CHUNK,), k, dtype=torch.uint8)}
            link.send(encode(header), flush=True, awaited=True, alone=True)
        sync = link.next_seq()
        link.expect(sync)
        link.send(encode({"t": Kind.SYNC, "s": sync}), flush=True, awaited=True)
        time.sleep(0.3)  # all four on the worker's socket
    link.wait(sync, 10)
    assert wait_until(lambda: link.credits.get(seq) == 3 * CHUNK, timeout=10)
    assert order[0] == ("ok", sync), "the op's answer came first"
    assert [o for _, o in order[1:]] == [CHUNK, 2 * CHUNK, 3 * CHUNK], "then the chunks', in their order"
    header = {"t": Kind.CHUNK, "s": seq, "o": 3 * CHUNK, "x": torch.full((CHUNK,), 3, dtype=torch.uint8)}
    link.expect(seq)
    link.send(encode(header), flush=True, awaited=True, alone=True)
    assert link.wait(seq, 10)["t"] == Kind.OK
    stored = bob.store.get(oid).tensor.view(torch.uint8).reshape(4, CHUNK)
    assert torch.equal(stored[:, 0], torch.arange(4, dtype=torch.uint8)), "in their own order"


def test_chunks_held_when_their_client_leaves_are_dropped_quietly(streamed, make_client):
    bob, client = streamed
    link = client._link
    seq = put(client, sh=[4 * CHUNK // 4], n=4 * CHUNK)
    refused = bob.stats.get("refused", 0)
    with bob.server.lock:
        for k in range(2):
            header = {"t": Kind.CHUNK, "s": seq, "o": k * CHUNK, "x": torch.zeros(CHUNK, dtype=torch.uint8)}
            link.send(encode(header), flush=True, awaited=True, alone=True)
        client.disconnect()
        time.sleep(0.3)
    assert wait_until(lambda: not bob.clients, timeout=10)
    other = make_client(f"tcp://127.0.0.1:{bob.port}", key=bob.key)
    assert torch.equal(other.search("#X")[0].get(), torch.tensor([1.0, 2, 3]))
    assert bob.stats.get("refused", 0) == refused, "not answered as a stranger's malformed handshake"


def test_the_progress_bar_shows_bytes_and_rate_when_asked_and_never_otherwise(streamed, fast_defaults, capsys):
    bob, client = streamed
    bob.share(torch.randn(1 << 20), "#P")
    ptr, = client.search("#P")
    fast_defaults.progress_delay = 0.0
    fast_defaults.progress = True
    ptr.get()
    shown = capsys.readouterr().err
    assert "get #P" in shown and "4.00M" in shown and "B/s" in shown, shown  # bytes, total and rate
    fast_defaults.progress = False
    ptr.get()
    assert capsys.readouterr().err == ""
    fast_defaults.progress = None  # automatic: pytest's stderr is no terminal and this is no kernel
    assert progress.interactive() is False
    fast_defaults.progress = True
    fast_defaults.progress_delay = 60.0  # a transfer faster than the delay shows nothing
    ptr.get()
    assert capsys.readouterr().err == ""


# -- the worker's bounds ---------------------------------------------------------------------------
def put(client, **fields) -> int:
    """Declare an upload as a client would (and send no chunk); its sequence number, or the worker's error."""
    link = client._link
    seq = link.next_seq()
    header = {"t": Kind.PUT, "s": seq, "id": os.urandom(16), "d": "float32", "sh": [1 << 18], "n": 1 << 20,
              "c": CHUNK, "tags": []}
    header.update(fields)
    link.expect(seq)
    link.send(encode(header), flush=True, awaited=True)
    assert wait_until(lambda: seq in link.credits or seq in link.replies, timeout=10)
    reply = link.replies.pop(seq, None)
    if reply is not None:
        raise client._error(reply)
    assert link.credits.pop(seq) == 0, "accepted: the worker holds 0 bytes of it"
    return seq


def send_chunk(client, seq: int, offset: int, nbytes: int) -> None:
    """One chunk of upload ``seq``, as a client would send it; raises the worker's error."""
    link = client._link
    link.expect(seq)
    header = {"t": Kind.CHUNK, "s": seq, "o": offset, "x": torch.zeros(nbytes, dtype=torch.uint8)}
    link.send(encode(header), flush=True, awaited=True)
    reply = link.wait(seq, 10)
    raise client._error(reply)


def test_the_worker_refuses_uploads_beyond_its_limits_before_allocating(streamed, monkeypatch):
    bob, client = streamed
    with pytest.raises(SyftError, match="does not match shape"):
        put(client, n=1 << 30)  # declares more bytes than the shape holds
    with pytest.raises(SyftError, match="chunk size"):
        put(client, c=1 << 30)
    monkeypatch.setattr(limits, "MAX_UPLOAD_BYTES", 3 << 20)
    for _ in range(3):
        put(client)
    with pytest.raises(RemoteError, match="at most"):
        put(client)
    assert len(session_of(bob).streams.uploads) == 3
    session_of(bob).streams.clear()


def test_chunks_past_the_declaration_or_out_of_order_drop_the_upload(streamed):
    bob, client = streamed
    seq = put(client)
    with pytest.raises(SyftError, match="offset"):
        send_chunk(client, seq, CHUNK, CHUNK)
    assert not session_of(bob).streams.uploads, "a broken upload is dropped whole"
    seq = put(client)
    with pytest.raises(SyftError, match="does not fit"):
        send_chunk(client, seq, 0, 2 * CHUNK)
    with pytest.raises(SyftError, match="no upload in progress"):
        send_chunk(client, 424242, 0, CHUNK)
    assert not session_of(bob).streams.uploads


def test_idle_partial_uploads_time_out_and_end_with_the_session(streamed, monkeypatch, make_client):
    bob, client = streamed
    put(client)
    streams = session_of(bob).streams
    assert len(streams.uploads) == 1
    assert streams.expire() == 0
    monkeypatch.setattr(limits, "STREAM_IDLE_SECONDS", 0.0)
    time.sleep(0.01)
    assert streams.expire() == 1 and not streams.uploads, "an upload nobody finishes is freed"
    monkeypatch.undo()
    put(client)
    assert len(streams.uploads) == 1
    client.disconnect()
    assert wait_until(lambda: not bob.clients)
    assert not streams.uploads, "a session's partial uploads end with it"


def test_a_bad_chunk_from_the_worker_is_a_clear_error_not_a_hang():
    inc = chunks.Incoming(torch.float32, [4], 16)
    with pytest.raises(ProtocolError, match="offset"):
        inc.write(4, torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(ProtocolError, match="raw bytes"):
        inc.write(0, torch.zeros(4))
    inc.write(0, torch.ones(16, dtype=torch.uint8))
    assert inc.done


KERNEL_SETUP = """
import torch, syft_magics as sm
sm.defaults.same_host = False
sm.defaults.stream_min_bytes = 256 << 10
sm.defaults.chunk_bytes = 64 << 10
sm.defaults.chunk_window = 1
sm.defaults.progress_delay = 0.3
bob = sm.Worker("Bob", port=0, policy="open", connection_file=False).start()
bob.share(torch.arange(16 << 20, dtype=torch.float32), "#BIG")
bob.share(torch.tensor([1.0, 2, 3]), "#X")
client = sm.connect(f"tcp://127.0.0.1:{bob.port}", key=bob.key)
big, = client.search("#BIG")
x, = client.search("#X")
"""


def test_a_kernel_interrupt_cancels_a_streamed_get_and_the_notebook_goes_on(runtime_dir):
    from kernel_driver import Kernel

    kernel = Kernel({"SYFT_MAGICS_RUNTIME_DIR": str(runtime_dir), "PYTHONPATH": os.getcwd()})
    try:
        kernel.run(KERNEL_SETUP, timeout=60)
        msg = kernel.start("while True:\n    v = big.get()")
        time.sleep(2.0)
        kernel.km.interrupt_kernel()
        out = kernel.collect(msg, timeout=30)
        assert "KeyboardInterrupt" in out.error, out
        assert any("HBox" in r or "%" in r for r in out.results) or "B/s" in out.stderr, \
            f"a progress bar was shown in the notebook: {out}"
        kernel.wait_for("len(bob.clients[0].streams)", "0", timeout=10)
        assert kernel.run("print((x + 1).get().tolist())").stdout.strip() == "[2.0, 3.0, 4.0]"
        kernel.run("sm.defaults.chunk_window = 4; sm.defaults.chunk_bytes = 1 << 20")
        assert kernel.run("print(torch.equal(big.get(), torch.arange(16 << 20, dtype=torch.float32)))",
                          timeout=60).stdout.strip() == "True"
        kernel.run("client.disconnect(); bob.stop()")
    finally:
        kernel.shutdown()

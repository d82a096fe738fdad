"""What goes wrong gets its own exception, quickly, with a message that says what to do."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from helpers import free_port, wait_until

import syft_magics as sm
from syft_magics import config
from syft_magics.wire import discovery

X = torch.tensor([1.0, 2, 3, 4, 5])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


def test_every_error_is_a_syft_error_and_the_matching_builtin():
    assert issubclass(sm.WorkerUnreachable, ConnectionError)
    assert issubclass(sm.ReplyTimeout, TimeoutError) and issubclass(sm.ReplyTimeout, sm.WorkerUnreachable)
    assert issubclass(sm.WorkerStopped, sm.WorkerUnreachable)
    assert issubclass(sm.UnknownWorker, LookupError) and issubclass(sm.StaleConnectionFile, sm.UnknownWorker)
    assert issubclass(sm.PortInUse, OSError) and issubclass(sm.TagError, ValueError)
    assert issubclass(sm.PermissionDenied, PermissionError) and issubclass(sm.GetTimeout, TimeoutError)
    assert issubclass(sm.OpNotAllowed, sm.RemoteError) and issubclass(sm.ReadOnlyError, sm.PermissionDenied)
    for name in sm.__all__:
        obj = getattr(sm, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, sm.SyftError)


def test_nobody_listening_raises_worker_unreachable_within_the_timeout():
    port = free_port()
    start = time.monotonic()
    with pytest.raises(sm.WorkerUnreachable) as info:
        sm.connect(port, key="0" * 64, timeout=0.5)
    elapsed = time.monotonic() - start
    assert elapsed < 5, "must give up around the timeout, never hang"
    assert f"127.0.0.1:{port}" in str(info.value) and "no worker answered" in str(info.value)


def test_a_stopped_worker_raises_worker_stopped_on_the_next_op_and_get(seed):
    bob, client = seed
    x = client.search("#X")[0]
    y = x + 1
    client.sync()
    bob.stop()
    assert wait_until(lambda: not client.connected), "the worker's goodbye reaches the client"
    with pytest.raises(sm.WorkerStopped, match="stopped by its owner"):
        y.get()
    with pytest.raises(sm.WorkerStopped):
        x + 1
    with pytest.raises(sm.WorkerStopped):
        client.sync()
    with pytest.raises(sm.WorkerStopped):
        client.search("#X")
    assert "disconnected" in repr(client)


def test_a_stopped_worker_is_reported_even_if_the_client_was_busy_elsewhere(seed):
    """The goodbye must not be lost when the worker closes its socket right after sending it."""
    bob, client = seed
    x = client.search("#X")[0]
    client._link._stop.set()  # nobody reads the socket in the background
    client._link._thread.join(5)
    bob.stop()
    with pytest.raises(sm.WorkerStopped):
        (x + 1).get()


def test_a_worker_restarted_on_the_same_port_raises_worker_restarted(seed, make_worker, make_client):
    bob, client = seed
    x = client.search("#X")[0]
    port = bob.port
    time.sleep(0.3)  # the link's first heartbeat has been answered; the next is due in a second
    bob.stop()
    # the goodbye arrives first; while the worker is away the client keeps probing the address
    # (heartbeats every second), so it learns of the restart even though it sends nothing else
    assert wait_until(lambda: isinstance(client._link.broken, sm.WorkerStopped))
    time.sleep(0.2)
    bob2 = make_worker("Bob", port=port, policy="open")
    bob2.share(X.clone(), "#X")
    assert bob2.port == port

    def restarted() -> bool:
        try:
            client.sync()
        except sm.WorkerRestarted:
            return True
        except sm.WorkerStopped:
            return False
        return False

    assert wait_until(restarted, timeout=10)
    with pytest.raises(sm.WorkerRestarted) as info:
        x.get()
    assert "restarted" in str(info.value) and "pointers made before the restart are invalid" in str(info.value)
    # a new connection works
    assert torch.equal(make_client("Bob").search("#X")[0].get(), X)


def test_a_worker_killed_and_restarted_raises_worker_restarted(seed, make_worker, make_client):
    """No goodbye at all (the process died): the first message to the new worker tells."""
    bob, client = seed
    x = client.search("#X")[0]
    port = bob.port
    def crash(router):
        # in one step of the serving thread, so no heartbeat between forgetting and stopping gets an answer
        # from the old worker: it forgets the session and stops without a goodbye, as after a crash
        bob.server.sessions.clear()
        bob.server._running = False

    bob.server.call_soon(crash)
    bob.server._thread.join(5)
    bob.stop()
    assert client._link.broken is None
    make_worker("Bob", port=port, policy="open")
    with pytest.raises(sm.WorkerRestarted):
        for _ in range(100):
            client.sync()
            time.sleep(0.05)
    assert x.shape == (5,)


def test_restarting_a_worker_on_the_same_port_in_the_same_process_works(make_worker, make_client):
    first = make_worker("Bob", policy="open")
    port = first.port
    second = make_worker("Bob", port=port, policy="open")  # re-running the notebook cell
    assert not first.running and second.running and second.port == port
    second.share(X.clone(), "#X")
    assert torch.equal(make_client("Bob").search("#X")[0].get(), X)
    files = list(discovery.runtime_dir().glob("syft-worker-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["instance"] == second.instance


def test_wrong_key_raises_authentication_error(seed):
    bob, _ = seed
    with pytest.raises(sm.AuthenticationError, match="wrong key"):
        sm.connect(bob.address, key="f" * 64)
    assert bob.events.totals["auth_failed"] == 1
    assert len(bob.clients) == 1


def test_an_address_without_a_known_key_raises_authentication_error():
    port = free_port()
    with pytest.raises(sm.AuthenticationError, match="no key for"):
        sm.connect(f"127.0.0.1:{port}")


def test_unknown_name_raises_unknown_worker(seed):
    with pytest.raises(sm.UnknownWorker) as info:
        sm.connect("Alice")
    assert "no worker named 'Alice'" in str(info.value) and "Running here: Bob" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_a_stale_connection_file_raises_stale_connection_file(runtime_dir):
    runtime_dir.mkdir(parents=True, exist_ok=True)
    pid = dead_pid()
    info = discovery.ConnectionInfo(name="Ghost", address=f"tcp://127.0.0.1:{free_port()}", key="0" * 64, pid=pid,
                                    hostname=socket.gethostname(), instance="dead", policy="open", protocol=1,
                                    started=time.time())
    path = discovery.write(info)
    start = time.monotonic()
    with pytest.raises(sm.StaleConnectionFile) as err:
        sm.connect("Ghost")
    assert time.monotonic() - start < 2, "a stale file is reported at once, never waited on"
    assert str(pid) in str(err.value) and str(path) in str(err.value) and "has exited" in str(err.value)
    assert isinstance(err.value, sm.UnknownWorker)


def test_a_new_worker_replaces_stale_files_of_its_name(runtime_dir, make_worker, make_client):
    runtime_dir.mkdir(parents=True, exist_ok=True)
    stale = discovery.ConnectionInfo(name="Bob", address=f"tcp://127.0.0.1:{free_port()}", key="0" * 64,
                                     pid=dead_pid(), hostname=socket.gethostname(), instance="old", policy="open",
                                     protocol=1, started=time.time() - 100)
    stale_path = discovery.write(stale)
    bob = make_worker("Bob", policy="open")
    assert not stale_path.exists()
    bob.share(X.clone(), "#X")
    assert torch.equal(make_client("Bob").search("#X")[0].get(), X)


def test_bad_tags_raise_tag_error(seed):
    bob, client = seed
    for bad in ("X", "#", "# X", "#a b", "#a,b", "", 5, None):
        with pytest.raises(sm.TagError):
            bob.share(torch.ones(1), bad)
        with pytest.raises(sm.TagError):
            client.search(bad)
        with pytest.raises(sm.TagError):
            client.send(torch.ones(1), bad)
    with pytest.raises(sm.TagError, match="did you mean '#X'"):
        client.search("X")


def test_a_port_held_by_another_process_raises_port_in_use(make_worker):
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(sm.PortInUse) as info:
            make_worker("Bob", port=port)
        assert str(port) in str(info.value) and "already in use" in str(info.value)
        assert isinstance(info.value, OSError)
    finally:
        holder.close()
    assert not discovery.all_files(), "a worker that failed to start leaves no connection file"


def test_bad_worker_arguments_raise_value_error():
    with pytest.raises(ValueError, match="non-empty name"):
        sm.Worker("")
    with pytest.raises(ValueError, match="port"):
        sm.Worker("Bob", port=70000)
    with pytest.raises(ValueError, match="unknown policy"):
        sm.Worker("Bob", policy="maybe")


def test_connecting_to_a_worker_that_is_not_running(make_worker):
    bob = sm.Worker("Bob", policy="open")
    with pytest.raises(sm.UnknownWorker, match="not running"):
        sm.connect(bob)


def test_a_silent_worker_raises_reply_timeout(seed):
    bob, client = seed
    x = client.search("#X")[0]
    config.defaults.reply_timeout = 0.5
    bob.server.HANDLERS = dict(bob.server.HANDLERS, sync=lambda *a: None)  # this worker never answers a sync
    start = time.monotonic()
    with pytest.raises(sm.ReplyTimeout, match="did not answer within 0.5 s"):
        client.sync()
    assert time.monotonic() - start < 5
    config.defaults.reply_timeout = 10.0
    assert torch.equal(x.get(), X), "the link still works afterwards"


def test_remote_error_carries_the_structured_fields():
    err = sm.RemoteError("boom", op="torch.add", remote_type="RuntimeError", remote_message="bad", line="f.py:3",
                         code="error")
    assert (err.op, err.remote_type, err.remote_message, err.line, err.code) == \
        ("torch.add", "RuntimeError", "bad", "f.py:3", "error")
    assert str(err) == "boom"


def test_a_remote_torch_error_is_caught_as_the_local_one_would_be(seed):
    """``except RuntimeError`` around a training step caught torch's "backward through the graph a second
    time" locally, but not on a pointer (a RemoteError only)."""
    _, client = seed
    w = client.send(torch.ones(3)).requires_grad_()
    loss = (w * w).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time") as caught:
        loss.backward()
        client.sync()
    assert isinstance(caught.value, sm.RemoteError) and caught.value.remote_type == "RuntimeError"
    assert type(caught.value).__name__ == "RemoteError"


def test_a_withheld_error_is_still_the_builtin_error_its_kind_names(review_seed):
    """On the owner's data only the kind is told; it is enough for ``except IndexError``."""
    _, client = review_seed
    x = client.search("#X")[0]
    with pytest.raises(IndexError) as caught:
        x.index_select(0, (x * 0 + 99).long()).sum()
        client.sync()
    assert isinstance(caught.value, sm.WithheldError) and "out of range" not in caught.value.remote_message


def test_error_messages_of_the_runtime_dir_are_isolated(runtime_dir):
    assert os.environ["SYFT_MAGICS_RUNTIME_DIR"] == str(runtime_dir)
    assert discovery.runtime_dir() == runtime_dir


WORKER_SCRIPT = """
import time, torch
import syft_magics as sm
bob = sm.Worker("Bob", policy="open").start()
bob.share(torch.tensor([1.0, 2, 3, 4, 5]), "#X")
print("ready", flush=True)
time.sleep(60)
"""


def test_a_killed_worker_process_is_reported_and_leaves_a_stale_file(tmp_path, make_client):
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ), text=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            pytest.fail(f"the worker process did not start: {line!r} {proc.communicate(timeout=10)[1]}")
        client = make_client("Bob")
        x = client.search("#X")[0]
        assert torch.equal(x.get(), X)
        proc.kill()
        proc.wait(10)
        config.defaults.heartbeat_timeout = 1.0
        start = time.monotonic()
        with pytest.raises(sm.WorkerUnreachable, match="stopped answering"):
            (x + 1).get()
        assert time.monotonic() - start < 8
        start = time.monotonic()
        with pytest.raises(sm.WorkerUnreachable, match="stopped answering"):
            client.send(torch.zeros(2 << 20))  # a large send waits for the worker's acknowledgement
        assert time.monotonic() - start < 8
        # the link is marked dead: even a small send, which would only be queued, fails at once
        with pytest.raises(sm.WorkerUnreachable, match="stopped answering"):
            client.send(torch.zeros(4))
        start = time.monotonic()
        with pytest.raises(sm.WorkerUnreachable, match="stopped answering"):
            client.sync()
        assert time.monotonic() - start < 0.5
        # the connection file it could not remove names a dead process
        with pytest.raises(sm.StaleConnectionFile, match=str(proc.pid)):
            sm.connect("Bob")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_a_remote_linalg_failure_is_caught_as_torchs_own_error(seed):
    """helper-79: `except torch.linalg.LinAlgError` (and RuntimeError) missed a singular matrix's remote failure."""
    _, client = seed
    torch.linalg.inv(client.send(torch.zeros(2, 2)))
    with pytest.raises(torch.linalg.LinAlgError, match="singular") as info:
        client.sync()
    assert isinstance(info.value, sm.RemoteError) and isinstance(info.value, RuntimeError)

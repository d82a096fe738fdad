"""Shared fixtures: an isolated runtime dir, workers and clients that always clean up, leak checks."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch
import torch._dynamo  # noqa: F401  (a worker's write guard needs it at its first op: imported once here, not

#                                    inside a test's reply timeout, where it takes 10+ s on a loaded machine)
import syft_magics as sm
from syft_magics import config


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path, monkeypatch):
    """Connection files go to a private directory per test."""
    path = tmp_path / "runtime"
    monkeypatch.setenv("SYFT_MAGICS_RUNTIME_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def fast_defaults():
    """Short timeouts so error paths finish quickly; restored after each test."""
    saved = config.Defaults(**vars(config.defaults))
    config.defaults.connect_timeout = 2.0
    config.defaults.reply_timeout = 10.0
    config.defaults.approval_timeout = 10.0
    yield config.defaults
    for key, value in vars(saved).items():
        setattr(config.defaults, key, value)


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Every syft thread a test starts must be gone when it ends."""
    yield
    deadline = time.monotonic() + 5
    while True:
        left = [t.name for t in threading.enumerate() if t.name.startswith("syft-") and t.is_alive()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"threads left running: {left}"


@pytest.fixture
def make_worker():
    """``make_worker("Bob", policy="open")``: a started worker on a free loopback port, stopped afterwards."""
    workers = []

    def make(name: str = "Bob", **kwargs) -> sm.Worker:
        kwargs.setdefault("port", 0)
        worker = sm.Worker(name, **kwargs).start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()


@pytest.fixture
def make_client():
    """``make_client(target, **kw)``: ``connect()`` whose client is disconnected afterwards."""
    clients = []

    def make(target, **kwargs) -> sm.Client:
        client = sm.connect(target, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.disconnect()


def _seed(make_worker, make_client, policy: str):
    bob = make_worker("Bob", policy=policy)
    bob.share(torch.tensor([1.0, 2, 3, 4, 5]), "#X")
    bob.share(torch.ones(5), "#Y")
    return bob, make_client("Bob")


@pytest.fixture
def seed(make_worker, make_client):
    """The seed tutorial's setup: Bob shares #X and #Y (open policy), a client connected by name."""
    return _seed(make_worker, make_client, "open")


@pytest.fixture
def review_seed(make_worker, make_client):
    """The seed's setup under the default ``review`` policy: every get waits for Bob's decision."""
    return _seed(make_worker, make_client, "review")


@pytest.fixture
def peers():
    """``peers(address, ident=b"")``: hand-driven wire peers (tests/raw_peer.py), as an attacker would
    speak; closed at the end of the test."""
    from raw_peer import RawPeer

    made = []

    def make(address: str, ident: bytes = b"", **kwargs: Any) -> RawPeer:
        made.append(RawPeer(address, ident, **kwargs))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def raw(peers):
    """``raw(worker, name="raw")``: a hand-driven peer (tests/raw_peer.py) logged in to ``worker``."""

    def login(worker: Any, name: str = "raw") -> Any:
        p = peers(worker.address)
        p.login(worker.key, name=name)
        return p

    return login


@pytest.fixture
def ip():
    """An in-process IPython shell with the extension loaded; the names a test binds are removed after."""
    from IPython.testing import globalipapp

    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    before = set(shell.user_ns)
    shell.run_line_magic("load_ext", "syft_magics")
    yield shell
    shell.run_line_magic("unload_ext", "syft_magics")
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)


@pytest.fixture
def kernels(runtime_dir):
    """Two real IPython kernels (owner, scientist) sharing this test's runtime directory; shut down after."""
    from kernel_driver import Kernel

    env = {"SYFT_MAGICS_RUNTIME_DIR": str(runtime_dir)}
    started = []
    try:
        started.append(Kernel(env))
        started.append(Kernel(env))
        yield started
    finally:
        for k in started:
            k.shutdown()


@pytest.fixture
def fresh_estimates():
    """Op cost estimates are cached per process and learn from ops that took long: a test of quotas or
    lanes starts afresh, with the fake-tensor stack loaded (until then ops run unpriced)."""
    from syft_magics.owner import costs

    costs.forget()
    costs.warm_up()
    assert costs.wait_warm(120)
    yield
    costs.forget()

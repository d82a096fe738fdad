"""The whole seed flow in two real Jupyter kernels, magics included, over real sockets."""
from __future__ import annotations

import pytest
from helpers import free_port

pytestmark = pytest.mark.timeout(180)


def test_seed_tutorial_in_two_kernels(kernels, runtime_dir):
    bob, scientist = kernels
    port = free_port()

    # Bob's notebook: a worker in a background thread; the notebook stays usable
    bob.run("%load_ext syft_magics\nimport torch")
    out = bob.run(f"%syft_worker Bob {port}")
    assert f"Bob serving at tcp://127.0.0.1:{port}" in out.stdout
    bob.run("x = torch.tensor([1., 2, 3, 4, 5]); y = torch.ones(5)\n"
            "bob.share(x, '#X')\n"
            "%syft_share y #Y")
    registry = bob.run("bob.objects").text
    assert "#X" in registry and "#Y" in registry and "owner" in registry
    assert list(runtime_dir.glob("syft-worker-Bob-*.json")), "no connection file written"

    # the scientist's notebook: found by name, pointers, an op that returns at once
    scientist.run("%load_ext syft_magics\nimport torch")
    assert "connected to Bob" in scientist.run("%syft_connect Bob").stdout
    scientist.run("x_set = bob.search('#X'); y_set = bob.search('#Y')\nz = torch.add(x_set[0], y_set[0])")
    shown = scientist.run("z").text
    assert "PointerTensor(" in shown and "location=Bob" in shown and "shape=(5,)" in shown

    # review is the default: the get waits until Bob approves in his notebook
    pending = scientist.start("print(z.get())")
    bob.wait_for("len(bob.requests.pending)", "1")
    assert "add(#X, #Y)" in bob.run("bob.requests").text
    bob.run("bob.approve(1)")
    out = scientist.collect(pending)
    assert not out.error, out.error
    assert "waiting for Bob to approve request #1" in out.stdout
    assert "tensor([2., 3., 4., 5., 6.])" in out.stdout

    # a denied get raises PermissionDenied in the scientist's kernel, with Bob's reason
    pending = scientist.start("w = x_set[0] * 2\nw.get()")
    bob.wait_for("len(bob.requests.pending)", "1")
    bob.run("bob.deny(2, 'no raw values today')")
    out = scientist.collect(pending)
    assert out.error.startswith("PermissionDenied") and "no raw values today" in out.error

    # the owner's data is untouched and only the owner's objects plus the results remain
    assert "tensor([1., 2., 3., 4., 5.])" in bob.run("print(x)").stdout
    assert "worker" in bob.run("%syft_workers").stdout
    assert "connection" in scientist.run("%syft_workers").stdout


def test_dead_scientist_kernel_frees_its_objects_and_worker_restarts(kernels):
    bob, scientist = kernels
    port = free_port()
    bob.run(f"%load_ext syft_magics\nimport torch\n%syft_worker Bob {port} --policy open\n"
            "bob.lease_timeout = 2.0\nbob.share(torch.arange(5.), '#X')")
    scientist.run("%load_ext syft_magics\nimport torch\n%syft_connect Bob\n"
                  "x = bob.search('#X')[0]\nkeep = [x + i for i in range(10)]\nbob.sync()")
    bob.wait_for("len(bob.store)", "11")

    scientist.kill()  # no goodbye: only the lease can tell
    bob.wait_for("len(bob.store)", "1", timeout=20)

    # re-running the cell restarts on the same port instead of failing
    out = bob.run(f"%syft_worker Bob {port} --policy open")
    assert "restarted" in out.stdout and f":{port}" in out.stdout

"""Errors read like local ones in a notebook: the user's line, torch's message, no library frames."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def kernel(runtime_dir):
    """One real IPython kernel with a worker and a client of it."""
    from kernel_driver import Kernel

    k = Kernel({"SYFT_MAGICS_RUNTIME_DIR": str(runtime_dir)})
    try:
        k.run("import torch, syft_magics as sm\n"
              "bob = sm.Worker('Bob', policy='open', tcp=False).start()\n"
              "bob.share(torch.arange(5.), '#X')\n"
              "client = sm.connect(bob)\n"
              "x = client.search('#X')[0]", timeout=60)
        yield k
    finally:
        try:
            k.run("client.close(); bob.stop()", ok=False)
        finally:
            k.shutdown()


def test_a_shape_error_shows_torchs_message_at_the_users_line_without_the_inference_frames(kernel):
    out = kernel.run("y = x + 1\nz = x.reshape(3, 7)", ok=False)
    assert out.error == "RuntimeError: shape '[3, 7]' is invalid for input of size 5"
    assert "z = x.reshape(3, 7)" in out.traceback
    assert "inference.py" not in out.traceback and "client.py" not in out.traceback, out.traceback


def test_a_failed_op_fails_the_cell_that_issued_it(kernel):
    issued = kernel.run("print(get_ipython().execution_count)").stdout.strip()
    out = kernel.run("idx = torch.tensor([10])\ny = x[idx]\nz = x * 2", ok=False)  # fails on the worker
    assert out.error.startswith("RemoteError: .__getitem__ failed on Bob: index 10 is out of bounds"), out
    assert f"issued at In [{int(issued) + 1}], line 2: y = x[idx]" in out.error
    assert "1 later op or send was not run" in out.error
    assert "syft_magics" not in out.traceback and "cell_end" not in out.traceback, out.traceback
    assert kernel.run("print(x.sum().get())").stdout.strip() == "tensor(10.)"  # the next cells work
    out = kernel.run("z.get()", ok=False)
    assert "came from an op that failed: .mul: not run" in out.error


def test_a_deferred_remote_error_names_the_cell_and_line_that_issued_the_op(kernel):
    kernel.run("sm.defaults.sync_at_cell_end = False")  # (its failure is raised by the next wait, cells later)
    issued = kernel.run("print(get_ipython().execution_count)").stdout.strip()
    kernel.run("idx = torch.tensor([10])\ny = x[idx]")  # fails on the worker, noticed later
    out = kernel.run("y.get()", ok=False)
    assert out.error.startswith("RemoteError: .__getitem__ failed on Bob: index 10 is out of bounds")
    assert f"issued at In [{int(issued) + 1}], line 2: y = x[idx]" in out.error
    assert "ipykernel_" not in out.error, "the kernel's temporary cell file, not the cell"
    # the notebook shows the user's line and the message, not the client's and the link's frames
    assert "y.get()" in out.traceback and "RemoteError: .__getitem__ failed" in out.traceback
    assert "syft_magics" not in out.traceback, out.traceback
    assert "link.py" not in out.traceback and "client.py" not in out.traceback

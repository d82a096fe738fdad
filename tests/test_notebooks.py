"""The tutorial notebooks, executed for real: Bob's kernel stays alive while Model's kernel runs against it.

Bob's notebook runs cell by cell in a real kernel (tests/kernel_driver.py) up to its approval cell.
Model's notebook runs unedited with nbclient in a second kernel; when its ``z.get()`` waits, Bob's
approval cell runs in Bob's kernel, as a person would run it (or click Approve). Assertions are on the
outputs: the value of ``z``, the registry rows, the command log lines, the card's widget state.
Port 3000 is held by this test while the notebooks run, so the fallback to a free port (and Model
finding Bob by name) is what runs, whoever else uses 3000 on the machine.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import List

import nbformat
import pytest
from kernel_driver import Kernel

pytestmark = pytest.mark.timeout(240)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def code_cells(nb) -> List:
    return [c for c in nb.cells if c.cell_type == "code"]


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "".join(parts)


def widget_values(nb) -> str:
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return "\n".join(str(w.get("state", {}).get("value", "")) for w in state.values())


@pytest.fixture
def port_3000_taken():
    """Hold 127.0.0.1:3000 (if nobody else does) so the notebooks' `%syft_worker Bob 3000` must fall back."""
    holder = socket.socket()
    # as ZeroMQ does: a port whose last connections linger in TIME_WAIT can be bound; a listener cannot be
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 3000))
        holder.listen()
    except OSError:
        pass  # someone else holds it: the fallback runs all the same
    yield
    holder.close()


def test_the_notebooks_are_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in code_cells(nb):
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"
        assert "widgets" not in nb.metadata, f"{path.name} carries widget state"
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} >= {"Bob.ipynb", "Model.ipynb", "Pipelines.ipynb"}


def test_bob_and_model_run_top_to_bottom_in_two_kernels(runtime_dir, port_3000_taken):
    from nbclient import NotebookClient

    bob_nb = nbformat.read(NOTEBOOKS / "Bob.ipynb", as_version=4)
    model_nb = nbformat.read(NOTEBOOKS / "Model.ipynb", as_version=4)
    cells = code_cells(bob_nb)
    approve_at = next(i for i, c in enumerate(cells) if "approve" in c.metadata.get("tags", []))
    bob = Kernel({"SYFT_MAGICS_RUNTIME_DIR": str(runtime_dir)})
    try:
        started = time.monotonic()
        bob_out = [bob.run(c.source, timeout=60) for c in cells[:approve_at]]
        worker_line = next(o.stdout for o in bob_out if "serving at" in o.stdout)
        assert "port 3000 is taken by another process, so Bob serves on port" in worker_line
        registry = next(o.text for o in bob_out if "holds 2 objects" in o.text)
        assert "#X" in registry and "#Y" in registry and "owner" in registry
        assert any("#X on Bob" in o.text and "shared by you" in o.text for o in bob_out)  # bob.inspect("#X")

        # Model's notebook, unedited, in its own kernel; Bob approves when Model's z.get() waits
        approvals: List[str] = []
        failures: List[BaseException] = []
        done = threading.Event()

        def bob_approves() -> None:
            try:
                while not done.is_set():
                    if bob.run("print(len(bob.requests.pending))", timeout=30).stdout.strip() == "1":
                        approvals.append(bob.run(cells[approve_at].source, timeout=30).stdout)
                        return
                    time.sleep(0.2)
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        approver = threading.Thread(target=bob_approves, name="test-bob-approves", daemon=True)
        approver.start()
        try:
            NotebookClient(model_nb, timeout=120, kernel_name="python3",
                           resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        finally:
            done.set()
            approver.join(40)
        assert not failures, failures
        model_cells = code_cells(model_nb)
        by_source = {c.source.splitlines()[0]: c for c in model_cells}
        assert "connected to Bob" in outputs_text(by_source["%syft_connect Bob --panel"])
        z_cell = next(c for c in model_cells if c.source.startswith("z = torch.add"))
        z_out = z_cell.outputs[-1]
        assert "PointerTensor(" in z_out["data"]["text/plain"] and "location=Bob" in z_out["data"]["text/plain"]
        assert "application/vnd.jupyter.widget-view+json" in z_out["data"]  # the card, in a widget front end
        get_cell = next(c for c in model_cells if c.source == "z.get()")
        assert "waiting for Bob to approve request #1" in outputs_text(get_cell)
        assert "tensor([2., 3., 4., 5., 6.])" in outputs_text(get_cell)
        assert approvals and "add(#X, #Y)" in approvals[0] and "request #1" in approvals[0]
        widgets_html = widget_values(model_nb)
        assert "syft-card-state" in widgets_html and "add(#X, #Y)" in widgets_html  # the card's state, saved
        assert "syft-graph" in widgets_html  # Model's panel drew the pointer graph

        # what Bob saw: the command log lines and the decided request
        log = bob.run(cells[approve_at + 1].source).stdout
        assert "Received Command From:" in log and "add(#X, #Y)" in log and "[ok]" in log
        assert "approved" in bob.run(cells[approve_at + 2].source).text
        # Model's kernel has ended: Bob freed what it computed; his own data stays
        bob.wait_for("len(bob.store)", "2")
        elapsed = time.monotonic() - started
        print(f"Bob + Model ran in {elapsed:.1f} s")
    finally:
        bob.shutdown()


def test_pipelines_runs_top_to_bottom_on_a_fresh_kernel(runtime_dir):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / "Pipelines.ipynb", as_version=4)
    started = time.monotonic()
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    elapsed = time.monotonic() - started
    text = "\n".join(outputs_text(c) for c in code_cells(nb))
    assert "304 ops issued in" in text
    assert "tensor(0.9990)" in text  # score = mean of the squared normalized data, let through
    assert "denied:" in text and "only single numbers may leave Bob, not a (1000,) tensor" in text
    assert "div failed on Bob: RuntimeError in div on Bob's data; the message is withheld" in text
    assert "issued at" in text and "released: ZeroDivisionError" in text  # Bob's policy lets the text out
    assert "per_group = torch.div(counts, 0" in text  # the user's own line
    assert "caught locally, no round trip:" in text
    assert "OpNotAllowed" in text and "exp" in text
    assert "connection" in text and "worker" in text  # %syft_workers
    assert not any(o.get("output_type") == "error" for c in code_cells(nb) for o in c.outputs)
    print(f"Pipelines ran in {elapsed:.1f} s")
    json.dumps(nb)  # the executed notebook is still valid JSON (widget state included)

"""notebooks/Federated.ipynb, executed top to bottom in a real kernel: two owners' digits, FedAvg rounds,
a plot, and a final accuracy the scientist reached without seeing a digit."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
from nbclient import NotebookClient  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_federated_notebook_runs_and_learns(runtime_dir):
    nb = nbformat.read(REPO / "notebooks" / "Federated.ipynb", as_version=4)
    # the kernel starts in the repository root, so it imports this checkout's syft_magics
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    accuracy = float(re.search(r"final accuracy (\d\.\d+)", text).group(1))
    assert accuracy > 0.85, text
    assert "0 requests for review" in text  # only rule-allowed values left the owners
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))  # the accuracy plot

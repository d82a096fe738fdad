"""What the real-browser tests share: Debian's chromium and how playwright starts it, what a person does in
a JupyterLab-based front end (Run All), and a check that a screenshot is not blank."""
from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-first-run",
                 "--disable-extensions", "--metrics-recording-only", "--mute-audio"]
#: skip a test module where chromium is absent (``.ci/run`` installs it)
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason=f"{CHROMIUM} is absent (apt-get install chromium)")


def png_ink(path: Path) -> float:
    """The share of bytes in a PNG's pixel rows that are not white (0.0: blank). Stdlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert width > 0 and height > 0 and raw
    # filtered rows: a zero byte after a row filter means "same as neighbour", so count non-0, non-255 bytes
    inked = sum(1 for b in raw[:: 97] if b not in (0, 255))
    return inked / max(1, len(raw[:: 97]))


def run_all(page, notebook) -> None:
    """Focus ``notebook`` and choose Run > Run All Cells, as a person would; once more if the click was lost
    (the first code cell shows ``[*]`` or a number once its run starts)."""
    started = notebook.locator(".jp-CodeCell .jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]")).first
    for attempt in range(2):
        notebook.locator(".jp-Cell").first.click()
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        try:
            started.wait_for(timeout=30_000)
            return
        except Exception:
            if attempt:
                raise
            page.keyboard.press("Escape")

"""Progress bars for long transfers: ``tqdm.auto`` (a widget in a notebook, text in a terminal).

A bar appears only once a transfer has taken ``defaults.progress_delay`` seconds (most transfers end
before and show nothing) and only where someone can see it: ``defaults.progress`` True or False
decides; None (the default) shows bars in an IPython kernel or when stderr is a terminal, never in
scripts whose output goes to a file or a pipe.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Optional

from ..config import defaults


def interactive() -> bool:
    """Whether progress bars are shown here (see the module docstring)."""
    if defaults.progress is not None:
        return bool(defaults.progress)
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Bar:
    """A bar of ``total`` bytes, made lazily on the first :meth:`update` after the delay."""

    def __init__(self, total: int, desc: str) -> None:
        self.total = total
        self.desc = desc
        self.start = time.monotonic()
        self.bar: Optional[Any] = None
        self._off = not interactive()

    def update(self, done: int) -> None:
        """``done`` bytes have moved so far."""
        if self._off:
            return
        if self.bar is None:
            if time.monotonic() - self.start < defaults.progress_delay:
                return
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            self.bar = tqdm(total=self.total, initial=done, desc=self.desc, unit="B", unit_scale=True,
                            unit_divisor=1024)
            return
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

"""Ops a script queued on its last lines still reach the worker: at interpreter exit every open link
sends its batch and a goodbye, all links together within :data:`EXIT_FLUSH_SECONDS`.

A process killed by a signal runs no exit handler; what it still queued is lost (SECURITY.md, "Faults").
"""
from __future__ import annotations

import atexit
import logging
import time
import weakref
from typing import Any

log = logging.getLogger(__name__)

#: How long (s) queued messages of all open links together get to leave at exit.
EXIT_FLUSH_SECONDS = 2.0
_OPEN: "weakref.WeakSet[Any]" = weakref.WeakSet()


def register(link: Any) -> None:
    """Flush and close ``link`` (a :class:`~syft_magics.scientist.link.Link`) at exit if still open."""
    _OPEN.add(link)


@atexit.register
def _flush_at_exit() -> None:
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for link in list(_OPEN):
        try:
            link.close(linger=max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # the process is exiting: report, never hang or raise
            log.info("link to %s not flushed at exit: %s", link.worker_name, exc)

"""Ops a script queued on its last lines still reach the worker: at interpreter exit every open link
sends its batch and a goodbye, all links together within :data:`EXIT_FLUSH_SECONDS`; first, the ops a client has
not waited for are waited for within that time, and the first failure among them is printed on stderr.

A process killed by a signal runs no exit handler; what it still queued is lost (SECURITY.md, "Faults").
"""
from __future__ import annotations

import atexit
import logging
import sys
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
    _report_failures(deadline)
    for link in list(_OPEN):
        try:
            link.close(linger=max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # the process is exiting: report, never hang or raise
            log.info("link to %s not flushed at exit: %s", link.worker_name, exc)


def _report_failures(deadline: float) -> None:
    """Wait, within ``deadline``, for the ops each open client sent and has not waited for, and print the first
    failure among them on stderr (helper-79: a script whose last ops failed exited with no word of it)."""
    from ..errors import ReplyTimeout, SyftError
    from .client import live_clients

    for client in live_clients():
        left = deadline - time.monotonic()
        if not client.unsettled or left <= 0:
            continue
        try:
            client.sync(timeout=left)
        except ReplyTimeout:
            print(f"syft_magics: {client.name} was still running ops this script sent when it ended; whether they "
                  "failed is unknown (end the script with client.sync() to wait for them)", file=sys.stderr)
        except SyftError as exc:
            print(f"syft_magics: an op this script sent failed after its last wait: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
        except Exception as exc:  # the process is exiting: report, never hang or raise
            log.info("ops sent to %s not checked at exit: %s", client.name, exc)

"""In a notebook, an op's failure shows in the cell that sent it, not at some later ``.get()``.

Ops are pipelined: a cell whose lines are all ops on pointers (a training loop) ends before the worker has run
them, and a failure would only be raised by the next request that waits (a ``.get()`` cells later), while the
worker runs none of that client's later ops (``owner/halts.py``). Run locally, the cell itself would have
failed. So at the end of each cell that sent ops it has not waited for, every live client waits until its
worker has run them (one ``sync()``: as long as the cell would have taken locally) and prints the first failure,
naming the line that sent the op, in that cell's output. Installed with the first client made in an IPython
shell; outside IPython nothing changes. ``syft_magics.defaults.sync_at_cell_end = False`` lets a cell's ops run on
behind the next cells (their failure is then raised by the next ``.get()`` or ``sync()``).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterable, Set

from ..config import defaults
from ..errors import ReplyTimeout, SyftError

_HOOKED: Set[int] = set()  # id() of the shells whose post_run_cell runs :func:`after_cell`


def install(clients: Callable[[], Iterable[Any]]) -> None:
    """Run :func:`after_cell` over ``clients()`` at the end of each cell of the running IPython shell, if any."""
    if "IPython" not in sys.modules:  # (not imported: no shell to hook, and importing it would cost 0.3 s)
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or id(shell) in _HOOKED:
        return
    _HOOKED.add(id(shell))
    shell.events.register("post_run_cell", lambda *_: after_cell(clients()))


def after_cell(clients: Iterable[Any]) -> None:
    """Wait for the ops each open client in ``clients`` sent and has not waited for; print the first failure
    (unless ``defaults.sync_at_cell_end`` is False)."""
    if not defaults.sync_at_cell_end:
        return
    for client in clients:
        if client.closed or client._link.broken is not None or not (client._origins or client._link.errors):
            continue  # (a worker gone or stopped is raised by the client's next use, once, not after every cell)
        try:
            client.sync()
        except ReplyTimeout:
            print(f"{client.name} is still running the ops this cell sent; a failure among them will be raised by "
                  "the next .get() or sync()", file=sys.stderr)
        except SyftError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            print(f"interrupted: {client.name} still runs the ops this cell sent; a failure among them will be "
                  "raised by the next .get() or sync()", file=sys.stderr)

"""In a notebook, an op's failure fails the cell that sent it, not some later ``.get()``.

Ops are pipelined: a cell whose lines are all ops on pointers (a training loop) would end before the worker has run
them, and a failure would only be raised by the next request that waits (a ``.get()`` cells later), while the worker
runs none of that client's later ops (``owner/halts.py``). Run locally, the cell itself would have failed, and "Run
All" would have stopped there (helper-79: a notebook went on and saved a half-trained model). So every cell ends,
as its last step, by waiting until the workers have run the ops it sent (one ``sync()`` per client with ops in
flight: as long as the cell would have taken locally) and raises the first failure there, naming the line that
sent the op: the cell fails as a local one would. Its last expression is still shown: ``x = f(); x.sum()`` runs as
``x = f(); end(x.sum())``, ``end`` returning its argument (an IPython AST transformer, installed with the first
client made in an IPython shell; outside IPython nothing changes).

``syft_magics.defaults.sync_at_cell_end = False`` lets a cell's ops run on behind the next cells (their failure
is then raised by the next ``.get()`` or ``sync()``).
"""
from __future__ import annotations

import ast
import sys
from typing import Any, Callable, Iterable, List, Set, TypeVar

from ..config import defaults
from ..errors import ReplyTimeout

_HOOKED: Set[int] = set()  # id() of the shells whose cells end with :func:`end`
T = TypeVar("T")
_CLIENTS: List[Callable[[], Iterable[Any]]] = []  # what lists this process's clients (given to install)


def install(clients: Callable[[], Iterable[Any]]) -> None:
    """End each cell of the running IPython shell, if any, with :func:`end` over ``clients()``."""
    _CLIENTS[:] = [clients]
    if "IPython" not in sys.modules:  # (not imported: no shell to hook, and importing it would cost 0.3 s)
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or id(shell) in _HOOKED:
        return
    _HOOKED.add(id(shell))
    shell.ast_transformers.append(_EndOfCell())


def end(value: T = None) -> T:  # type: ignore[assignment]
    """Wait until the workers have run the ops this process sent and has not waited for; raise the first failure
    among them (unless ``defaults.sync_at_cell_end`` is False). Returns ``value`` (the cell's last expression)."""
    if defaults.sync_at_cell_end:
        for client in _CLIENTS[0]() if _CLIENTS else ():
            if not client.unsettled:
                continue
            while True:  # (as long as the worker works: a silent one breaks the link, and the wait raises)
                try:
                    client.sync()
                    break
                except ReplyTimeout:
                    continue
    return value


class _EndOfCell(ast.NodeTransformer):
    """``body; last`` -> ``body; end(last)`` (``last`` an expression), or ``body; end()``."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        if not node.body:
            return node
        last = node.body[-1]
        if isinstance(last, ast.Expr):
            last.value = ast.copy_location(_end_call([last.value]), last.value)
        else:
            node.body.append(ast.copy_location(ast.Expr(_end_call([])), last))
        return ast.fix_missing_locations(node)


def _end_call(args: list) -> ast.Call:
    """``end(*args)``, this module found by its name through the built-in ``__import__``: no name in the user's
    namespace, which the user may delete or reuse."""
    module = ast.Call(func=ast.Name(id="__import__", ctx=ast.Load()), args=[ast.Constant(__name__)],
                      keywords=[ast.keyword(arg="fromlist", value=ast.List(elts=[ast.Constant("end")],
                                                                           ctx=ast.Load()))])
    return ast.Call(func=ast.Attribute(value=module, attr="end", ctx=ast.Load()), args=args, keywords=[])

"""IPython magics: ``%syft_worker``, ``%syft_connect``, ``%syft_share``, ``%syft_workers``,
``%syft_panel``, ``%syft_stop`` and ``%syft_disconnect``.

They are thin: each parses its arguments (``%syft_worker?`` shows the usage; a
bad argument raises ``UsageError``) and calls the same :class:`Worker` and
:func:`connect` a script would use, binding the result to a variable in the
notebook (``bob`` for ``Bob``, or ``--as VAR``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

from ..config import defaults
from ..display import table
from ..errors import SyftError, UnknownWorker
from ..owner.policy import POLICIES
from ..owner.quotas import FLAGS as QUOTA_FLAGS
from ..owner.quotas import from_flags
from ..owner.worker import Worker, live_workers
from ..scientist.client import Client
from ..scientist.connecting import connect

_NAMES = ("syft_worker", "syft_connect", "syft_share", "syft_workers", "syft_panel", "syft_stop", "syft_disconnect",
          "syft_inspect")


def _var_name(name: str, given: Optional[str]) -> str:
    var = given or name.lower()
    if not var.isidentifier():
        raise UsageError(f"{var!r} is not a valid variable name; choose one with --as VAR")
    return var


def _quota_arguments(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The quota flags of ``%syft_worker`` (``--max-bytes``...), as ``python -m syft_magics worker`` has them."""
    for flag, dest, metavar, text in reversed(QUOTA_FLAGS):
        fn = argument(flag, dest=dest, default=None, metavar=metavar, help=text)(fn)
    return fn


@magics_class
class SyftMagics(Magics):
    """The syft magics of one IPython shell, with the workers and connections they made."""

    def __init__(self, shell: "InteractiveShell") -> None:
        super().__init__(shell)
        self.workers: Dict[str, Worker] = {}
        self.clients: Dict[str, Client] = {}
        self.panels: Dict[Tuple[str, str], Any] = {}  # ("worker" | "connection", name) -> live panel

    @property
    def user_ns(self) -> Dict[str, Any]:
        """The notebook's variables (where the magics bind ``bob``, ``alice``...)."""
        return self.shell.user_ns  # type: ignore[attr-defined]  # (IPython types Magics.shell as None)

    # -- the data owner ---------------------------------------------------------------
    @magic_arguments()
    @argument("name", help="the worker's name, e.g. Bob (clients connect by this name)")
    @argument("port", nargs="?", type=int, default=0, help="TCP port; 0 or omitted: any free port")
    @argument("--host", default="127.0.0.1",
              help="interface to bind (default 127.0.0.1: this machine only; 0.0.0.0 for the network, "
                   "which encrypts links and admits invited clients only: bob.invite('alice'))")
    @argument("--secure", action="store_true",
              help="encrypt links (CurveZMQ) and admit invited clients only, on loopback too")
    @argument("--policy", default="review", choices=sorted(POLICIES),
              help="who may .get() values: open (anyone), review (you approve each; default), closed (nobody)")
    @argument("--verbose", action="store_true", help="print one line per command received")
    @argument("--log", default=None, metavar="FILE", help="append one JSON line per command to FILE")
    @argument("--as", dest="var", default=None, metavar="VAR",
              help="variable to bind (default: the name in lower case)")
    @argument("--panel", action="store_true", help="display the worker's live panel (registry, commands, requests)")
    @_quota_arguments
    @argument("--strict-port", action="store_true",
              help="fail if PORT is taken by another process (default: serve on a free port instead and say so)")
    @argument("--device", default=None, metavar="DEVICE",
              help="keep shared and received tensors and models on DEVICE (cpu, cuda, cuda:1); default cpu")
    @line_magic
    def syft_worker(self, line: str) -> None:
        """Start a worker in a background thread of this kernel; the notebook stays usable.

        Re-running the cell restarts the worker (old pointers become invalid, its registry starts empty).
        When PORT is taken by another process the worker serves on a free port instead and says so:
        clients that connect by name (``%syft_connect Bob``) find it through its connection file.
        """
        args = parse_argstring(self.syft_worker, line)
        if not 0 <= args.port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, not {args.port}")
        var = _var_name(args.name, args.var)
        try:
            from ..owner.devices import Devices

            Devices(args.device)  # a device this machine lacks is refused before the old worker stops
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        old = self.workers.pop(args.name, None)
        if old is not None:
            old.stop()
        self._close_panel("worker", args.name)
        moved = ""
        try:
            quotas = from_flags(args)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

        def start(port: int) -> Worker:
            try:
                worker = Worker(args.name, port=port, host=args.host, policy=args.policy, verbose=args.verbose,
                                log=args.log, secure=True if args.secure else None, device=args.device,
                                quotas=quotas)
                return worker.start()
            except SyftError as exc:
                raise UsageError(str(exc)) from None
            except OSError as exc:  # e.g. a --log file that cannot be opened
                raise UsageError(f"cannot start worker {args.name}: {exc}") from None

        try:
            worker = start(args.port)
        except UsageError as exc:
            if args.strict_port or not args.port or "already in use" not in str(exc):
                raise
            worker = start(0)
            moved = (f"port {args.port} is taken by another process, so {worker.name} serves on port {worker.port} "
                     f"instead; clients connecting by name (%syft_connect {worker.name}) find it there\n")
        self.workers[args.name] = worker
        self.user_ns[var] = worker
        restarted = ""
        if old is not None:
            gone = len(old.store)
            lost = f"; the {gone} objects shared before are gone" if gone else ""
            restarted = (f" (restarted: a new, empty registry{lost}"
                         f", share them again; pointers to the old worker are now invalid)")
        on = f", on {worker.device}" if worker.device.type != "cpu" else ""
        secure = (f"; encrypted, key {worker.fingerprint}: invite each client with {var}.invite('alice') and "
                  f"hand over the file it writes; {var}.revoke('alice') ends it") if worker.secure else ""
        print(f"{moved}{worker.name} serving at {worker.address} (policy: {worker.policy.name}{on}){restarted}"
              f"{secure}\n"
              f"Bound to `{var}`. Share data with {var}.share(x, '#X') or %syft_share x #X")
        if args.panel:
            self._show_panel("worker", args.name)

    @magic_arguments()
    @argument("var", help="the notebook variable holding the tensor")
    @argument("tags", nargs="*", help="tags to find it by, e.g. #X (default: # and the variable's name)")
    @argument("--to", dest="worker", default=None, metavar="NAME",
              help="which worker of this kernel (needed only when there are several)")
    @line_magic
    def syft_share(self, line: str) -> None:
        """Share a tensor from the notebook with this kernel's worker under tags."""
        args = parse_argstring(self.syft_share, line)
        worker = self._pick_worker(args.worker)
        if args.var not in self.user_ns:
            raise UsageError(f"no variable named {args.var!r} in the notebook")
        value = self.user_ns[args.var]
        tags = tuple(args.tags) or (f"#{args.var}",)
        for entry in worker.store.entries():
            if entry.session is None and entry.tensor is not None and _same_tensor(entry.tensor, value) \
                    and (not args.tags or set(tags) <= set(entry.tags)):
                print(f"{worker.name} already shares `{args.var}` as {' '.join(entry.tags) or 'an untagged object'}")
                return
        try:
            worker.share(value, *tags)
        except (TypeError, ValueError, SyftError) as exc:
            raise UsageError(str(exc)) from None
        print(f"{worker.name} shares `{args.var}` as {' '.join(tags)}")

    def _pick_worker(self, name: Optional[str]) -> Worker:
        running = {n: w for n, w in self.workers.items() if w.running}
        if name is not None:
            if name not in running:
                raise UsageError(f"no worker named {name!r} runs in this kernel "
                                 f"(running: {', '.join(running) or 'none'})")
            return running[name]
        if not running:
            raise UsageError("no worker runs in this kernel; start one with %syft_worker NAME")
        if len(running) > 1:
            raise UsageError(f"several workers run here ({', '.join(running)}); choose one with --to NAME")
        return next(iter(running.values()))

    @magic_arguments()
    @argument("name", help="the worker to stop")
    @line_magic
    def syft_stop(self, line: str) -> None:
        """Stop a worker of this kernel: clients are told, the port is freed."""
        args = parse_argstring(self.syft_stop, line)
        worker = self.workers.pop(args.name, None)
        if worker is None:
            raise UsageError(f"no worker named {args.name!r} in this kernel "
                             f"(workers: {', '.join(self.workers) or 'none'})")
        worker.stop()
        print(f"{args.name} stopped")

    # -- the data scientist ----------------------------------------------------------------
    @magic_arguments()
    @argument("name", help="the worker's name, e.g. Bob")
    @argument("address", nargs="?", default=None,
              help="tcp://host:port, host:port or a port; omitted: find the worker by name on this machine")
    @argument("--as", dest="var", default=None, metavar="VAR",
              help="variable to bind (default: the name in lower case)")
    @argument("--timeout", type=float, default=None, metavar="S", help="seconds to wait for the worker to answer")
    @argument("--key", default=None, help="the worker's key, when connecting by address from another machine")
    @argument("--file", default=None, metavar="FILE",
              help="an invitation file from the worker's owner (bob.invite('alice') wrote it): connects from any "
                   "machine, encrypted, as that invited client")
    @argument("--panel", action="store_true", help="display the connection's live panel (pointers and their graph)")
    @line_magic
    def syft_connect(self, line: str) -> None:
        """Connect to a worker and bind a Client: ``bob.search("#X")`` then gives pointers."""
        args = parse_argstring(self.syft_connect, line)
        var = _var_name(args.name, args.var)
        old = self.clients.pop(args.name, None)
        if old is not None:
            old.disconnect()
        self._close_panel("connection", args.name)
        target: Any = args.address if args.address else args.name
        here = [w for w in live_workers() if w.name == args.name and w.running] if not args.address else []
        if here and defaults.in_process_direct:
            target = here[-1]  # a worker of this kernel: served directly, no socket (scientist/direct.py)
        try:
            if args.file:
                client = connect(args.address, key=args.key, timeout=args.timeout, file=args.file)
            else:
                client = connect(target, key=args.key, timeout=args.timeout)
        except UnknownWorker as exc:
            raise UsageError(str(exc)) from None
        if client.name != args.name:
            print(f"note: the worker at {client.address} calls itself {client.name!r}")
        self.clients[args.name] = client
        self.user_ns[var] = client
        where = "in this kernel" if client.address.startswith("inproc://") else f"at {client.address}"
        print(f"connected to {client.name} {where} (policy: {client.policy}); bound to `{var}`. "
              f"Find data with {var}.search('#X')")
        if args.panel:
            self._show_panel("connection", args.name)

    @magic_arguments()
    @argument("name", help="the connection to close")
    @line_magic
    def syft_disconnect(self, line: str) -> None:
        """Close a connection; the worker frees what this kernel computed there (never the owner's data)."""
        args = parse_argstring(self.syft_disconnect, line)
        client = self.clients.pop(args.name, None)
        if client is None:
            raise UsageError(f"no connection to {args.name!r} (connections: {', '.join(self.clients) or 'none'})")
        client.disconnect()
        print(f"disconnected from {args.name}")

    @line_magic
    def syft_workers(self, line: str = "") -> None:
        """A table of this kernel's workers and connections."""
        from ..scientist.client import live_clients

        # the magics' own, then those this kernel made through the Python API (Worker(...).start(), connect())
        workers = list(self.workers.values()) + [w for w in live_workers() if w not in self.workers.values()]
        clients = list(self.clients.values()) + [c for c in live_clients() if c not in self.clients.values()]
        rows = [("worker", w.name, w.address or "-", w.policy.name, "running" if w.running else "stopped",
                 f"{len(w.store)} objects, {len(w.clients)} clients") for w in workers]
        rows += [("connection", c.name, c.address, c.policy, "connected" if c.connected else "disconnected",
                  f"{len(c.pointers)} pointers") for c in clients]
        if not rows:
            print("no workers or connections in this kernel (start with %syft_worker NAME or %syft_connect NAME)")
            return
        print(table(("kind", "name", "address", "policy", "state", "holds"), rows))

    # -- live panels ---------------------------------------------------------------------------------
    @magic_arguments()
    @argument("name", nargs="?", default=None,
              help="a worker of this kernel, or a connection of it (may be omitted when there is only one)")
    @argument("--connection", action="store_true",
              help="the connection named NAME, when this kernel also runs a worker of that name")
    @line_magic
    def syft_panel(self, line: str) -> None:
        """Display a live panel: for a worker of this kernel its registry, command log and requests
        (with Approve / Deny); for a connection its pointers and the pointer graph.

        Running it again shows the same panel (it keeps refreshing); ``bob.panel()`` makes a new one.
        """
        args = parse_argstring(self.syft_panel, line)
        workers = {n: w for n, w in self.workers.items() if w.running}
        clients = dict(self.clients)
        name = args.name
        if name is None:
            choices = [("worker", n) for n in workers] + [("connection", n) for n in clients]
            if args.connection:
                choices = [c for c in choices if c[0] == "connection"]
            if len(choices) != 1:
                have = ", ".join(f"{k} {n}" for k, n in choices) or "none"
                raise UsageError(f"say which panel: %syft_panel NAME (workers and connections here: {have})")
            kind, name = choices[0]
        elif name in workers and not args.connection:
            kind = "worker"
        elif name in clients:
            kind = "connection"
        else:
            raise UsageError(f"no worker or connection named {name!r} in this kernel "
                             f"(workers: {', '.join(workers) or 'none'}; connections: {', '.join(clients) or 'none'})")
        self._show_panel(kind, name)

    @magic_arguments()
    @argument("var", help="a notebook variable holding a pointer (or an expression such as x_set[0])")
    @line_magic
    def syft_inspect(self, line: str) -> Any:
        """Show the card of a pointer: where it lives, how it was made, its state, and a Request value button."""
        args = parse_argstring(self.syft_inspect, line)
        from ..scientist.pointer import PointerTensor

        value = _lookup(args.var, self.user_ns)
        if not isinstance(value, PointerTensor):
            raise UsageError(f"{args.var} is a {type(value).__name__}, not a pointer; %syft_inspect shows pointers")
        from IPython.display import display

        from .card import PointerCard

        display(PointerCard(value, name=args.var))

    def _panel(self, kind: str, name: str) -> Any:
        panel = self.panels.get((kind, name))
        target = self.workers[name] if kind == "worker" else self.clients[name]
        owner = getattr(panel, "worker", None) if kind == "worker" else getattr(panel, "client", None)
        if panel is None or panel.closed or owner is not target:
            self._close_panel(kind, name)
            panel = target.panel()
            self.panels[(kind, name)] = panel
        return panel

    def _show_panel(self, kind: str, name: str) -> None:
        from IPython.display import display

        display(self._panel(kind, name))

    def _close_panel(self, kind: str, name: str) -> None:
        panel = self.panels.pop((kind, name), None)
        if panel is not None:
            panel.close()

    def close_all(self) -> None:
        for panel in self.panels.values():
            panel.close()
        self.panels.clear()
        for client in self.clients.values():
            client.disconnect()
        for worker in self.workers.values():
            worker.stop()
        self.clients.clear()
        self.workers.clear()


def _lookup(expr: str, namespace: Dict[str, Any]) -> Any:
    """The value of a variable, or of items and attributes of one (``z``, ``x_set[0]``, ``d['w']``, ``m.weight``).

    Only names, constant subscripts and attributes: nothing is evaluated.
    """
    import ast

    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise UsageError(f"{expr!r} is not a variable name (e.g. z or x_set[0])") from None

    def value(n: ast.AST) -> Any:
        if isinstance(n, ast.Name):
            if n.id not in namespace:
                raise UsageError(f"no variable named {n.id!r} in the notebook")
            return namespace[n.id]
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant):
            try:
                return value(n.value)[n.slice.value]
            except (LookupError, TypeError) as exc:
                raise UsageError(f"{expr}: {exc}") from None
        if isinstance(n, ast.Attribute):
            try:
                return getattr(value(n.value), n.attr)
            except AttributeError as exc:
                raise UsageError(f"{expr}: {exc}") from None
        raise UsageError(f"%syft_inspect takes a variable, an item or an attribute of one, not {expr!r}")

    return value(node)


def _same_tensor(a: Any, b: Any) -> bool:
    """Whether ``b`` is the tensor ``a`` (share() keeps a detached alias of the same memory)."""
    import torch

    return (isinstance(b, torch.Tensor) and a.data_ptr() == b.data_ptr() and a.shape == b.shape
            and a.dtype == b.dtype and a.stride() == b.stride())


_LOADED: Dict[int, SyftMagics] = {}


def load(ipython) -> None:
    """Register the magics with ``ipython`` (``%load_ext syft_magics``)."""
    magics = SyftMagics(ipython)
    ipython.register_magics(magics)
    _LOADED[id(ipython)] = magics


def unload(ipython) -> None:
    """Stop this shell's workers and connections and remove the magics."""
    magics = _LOADED.pop(id(ipython), None)
    if magics is not None:
        magics.close_all()
    line_magics = ipython.magics_manager.magics["line"]
    for name in _NAMES:
        line_magics.pop(name, None)

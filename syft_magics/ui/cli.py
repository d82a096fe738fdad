"""Command line: ``python -m syft_magics tutorial`` (JupyterLab on the notebooks, see :mod:`.tutorial`),
``... worker NAME`` (a headless worker) and ``... demo``.

The worker command serves tensors loaded *safely* from files (``torch.load``
with ``weights_only=True``, ``numpy.load`` without pickles), prints its address
so a parent process can read it, answers owner commands typed on stdin
(``approve 1``...) and stops cleanly on Ctrl-C or SIGTERM. The demo runs the
seed tutorial across two processes: that worker as a child, this process as
the data scientist.
"""
from __future__ import annotations

import argparse
import cmd
import contextlib
import os
import queue
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple

from ..owner.policy import POLICIES
from ..owner.quotas import FLAGS as QUOTA_FLAGS
from ..owner.quotas import from_flags
from ..wire.limits import printable

COMMANDS = "requests | approve N | deny N [reason] | objects | invite NAME [FILE] | revoke NAME | invites | quit"


class ShareError(ValueError):
    """A ``--share`` argument that cannot be served (bad form, missing file, not a tensor)."""


def load_tensor(path: str) -> "Any":
    """Load one tensor from ``path`` without running pickled code (``.pt``/``.pth`` or ``.npy``)."""
    import torch

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".pt", ".pth", ".npy"):
        raise ShareError(f"{path}: unknown file type {suffix or '(none)'!r}; use .pt/.pth (torch.save) or .npy")
    if not p.is_file():
        raise ShareError(f"{path}: no such file")
    if suffix == ".npy":
        import numpy

        try:
            return torch.from_numpy(numpy.load(p, allow_pickle=False))
        except (ValueError, TypeError, OSError) as exc:
            raise ShareError(f"{path}: not a numeric .npy array that can be loaded safely ({exc})") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShareError(f"{path}: cannot be loaded safely with torch.load(weights_only=True): {first}") from None
    if type(obj) not in (torch.Tensor, torch.nn.Parameter):
        raise ShareError(f"{path} holds a {type(obj).__name__}, not a tensor; save one tensor with torch.save(t, path)")
    return obj.detach()


def parse_share(spec: str) -> Tuple[Tuple[str, ...], str]:
    """``'#X,#Y=data/x.pt'`` -> ``(('#X', '#Y'), 'data/x.pt')``; tags are checked like ``share()`` does."""
    from ..wire.names import check_tag

    tags, sep, path = spec.partition("=")
    if not sep or not path or not tags:
        raise ShareError(f"--share {spec!r}: expected '#TAG[,#TAG2]=PATH', e.g. --share '#X=x.pt'")
    try:
        return tuple(check_tag(t.strip()) for t in tags.split(",")), path
    except ValueError as exc:
        raise ShareError(f"--share {spec!r}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m syft_magics`` parser with its ``worker`` and ``demo`` subcommands."""
    parser = argparse.ArgumentParser(prog="python -m syft_magics",
                                     description="Remote tensors over ZeroMQ: run a headless worker or the demo.")
    sub = parser.add_subparsers(dest="command", metavar="{tutorial,worker,demo}", required=True)
    t = sub.add_parser("tutorial", help="open the tutorial in JupyterLab, Bob and Model side by side",
                       description="Start JupyterLab (from the 'tutorial' extra) on the tutorial notebooks with a "
                                   "workspace that opens Bob.ipynb and Model.ipynb side by side. From a checkout it "
                                   "opens notebooks/; otherwise it copies the notebooks to a working folder first.")
    t.add_argument("--port", type=int, default=0, help="JupyterLab's port on 127.0.0.1 (default: a free one)")
    t.add_argument("--no-browser", action="store_true", help="do not open a browser; print the URL only")
    t.add_argument("--dir", default=None, metavar="FOLDER",
                   help="working folder for a copy of the notebooks (default: the checkout's notebooks/, "
                        "else ~/syft-magics-tutorial)")
    w = sub.add_parser(
        "worker", help="serve tensors from files until Ctrl-C or SIGTERM",
        description="Run a data owner's worker without Jupyter. It prints its address and connection file, "
                    f"then reads owner commands from stdin ({COMMANDS}). End of input does not stop it; "
                    "Ctrl-C, SIGTERM or 'quit' do.",
        epilog="example: python -m syft_magics worker Bob --share '#X=x.pt' --share '#Y,#ones=y.npy'")
    w.set_defaults(worker_parser=w)
    w.add_argument("name", help="the worker's name; clients connect with syft_magics.connect(NAME)")
    w.add_argument("--port", type=int, default=0, help="TCP port (default: 0, any free port)")
    w.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: 127.0.0.1, this machine only); any other encrypts links "
                        "(CurveZMQ) and admits invited clients only (--invite)")
    w.add_argument("--secure", action="store_true",
                   help="encrypt links and admit invited clients only, on loopback too")
    w.add_argument("--invite", action="append", default=[], metavar="NAME[=FILE]",
                   help="write an invitation for client NAME (its own key pair; default file NAME.json); "
                        "repeatable. Needs --secure or a non-loopback --host")
    w.add_argument("--policy", choices=tuple(POLICIES), default="review",
                   help="who may .get() values: everyone, only what you approve (default), nobody")
    w.add_argument("--verbose", action="store_true", help="print one line per command received")
    w.add_argument("--log", metavar="FILE", help="append one JSON line per command to FILE")
    for flag, dest, metavar, text in QUOTA_FLAGS:
        w.add_argument(flag, dest=dest, default=None, metavar=metavar, help=text)
    w.add_argument("--share", action="append", default=[], metavar="'#TAG[,#TAG2]=PATH'",
                   help="share a tensor from a .pt/.pth (loaded with weights_only=True) or .npy file; repeatable")
    d = sub.add_parser("demo", help="run the seed tutorial with a worker in a second process",
                       description="Start a worker Bob in a child process sharing #X and #Y, connect to it by name, "
                                   "add the two remotely, get the sum, time a pipelined loop, then stop Bob.")
    d.add_argument("--policy", choices=tuple(POLICIES), default="open",
                   help="Bob's policy (default: open; review: the demo approves through Bob's stdin)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m syft_magics``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "worker":
        return run_worker(args, args.worker_parser)
    if args.command == "tutorial":
        from .tutorial import run

        return run(port=args.port, browser=not args.no_browser, folder=args.dir)
    return run_demo(args.policy)


# -- the headless worker ------------------------------------------------------------------------
def run_worker(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Load the ``--share`` files, serve them until a signal or ``quit``, stop cleanly; returns 0."""
    try:
        shares = [(tags, path, load_tensor(path)) for tags, path in map(parse_share, args.share)]
    except ShareError as exc:
        parser.error(str(exc))  # exits 2, argparse-style
    from ..errors import EncryptionUnavailable, PortInUse
    from ..owner.worker import Worker

    stop = threading.Event()
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: stop.set())
    try:
        quotas = from_flags(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        worker = Worker(args.name, port=args.port, host=args.host, policy=args.policy,
                        verbose=args.verbose, log=args.log, secure=True if args.secure else None,
                        quotas=quotas).start()
    except ValueError as exc:  # a bad name or port, a plaintext bind off loopback
        parser.error(str(exc))
    except (PortInUse, OSError, EncryptionUnavailable) as exc:  # the port is taken, the log file cannot be opened...
        _say(f"error: {exc}", sys.stderr)
        return 1
    notes: "queue.SimpleQueue[int]" = queue.SimpleQueue()
    # the serving thread only queues the request number; the main loop prints it (never blocking serving on stdout)
    unsubscribe = worker.events.subscribe(lambda e: notes.put(e.data["n"]) if e.kind == "request" else None)
    try:
        for tags, path, tensor in shares:
            worker.share(tensor, *tags)
            _say(f"shared {' '.join(tags)}: {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')} "
                 f"from {path}")
        _say(f"{worker.name} serving at {worker.address} (policy: {worker.policy.name})"
             + (f", encrypted, key {worker.fingerprint}" if worker.secure else ""))
        _say(f"connection file: {worker.connection_file}")
        console = OwnerConsole(worker)
        for spec in args.invite:
            console.do_invite(" ".join(spec.split("=", 1)))
        _say(f"commands on stdin: {COMMANDS}; Ctrl-C stops")
        _serve_console(worker, stop, notes)
    finally:
        unsubscribe()
        worker.stop()
    _say(f"{worker.name} stopped")
    return 0


def _say(text: str, file: Any = None) -> None:
    """One whole line in one write, flushed (a parent process may be waiting for it)."""
    out = file or sys.stdout
    out.write(printable(text, keep="\n") + "\n")  # (requests and errors carry a peer's strings: no escapes)
    out.flush()


def _serve_console(worker: Any, stop: threading.Event, notes: "queue.SimpleQueue[int]") -> None:
    """Until ``stop`` or ``quit``: print request notices and run the commands typed on stdin."""
    fd = _stdin_fd()
    console = OwnerConsole(worker)
    buffer = b""
    while not stop.is_set():
        while not notes.empty():
            req = worker.requests[notes.get()]
            how = f"type 'approve {req.n}' or 'deny {req.n} [reason]'" if fd is not None else \
                f"stdin is closed, so it cannot be approved here (policy {worker.policy.name})"
            _say(f"[{worker.name}] {req.describe()}; {how}")
        if fd is None or not _in_foreground(fd):
            stop.wait(0.1)
            continue
        try:
            chunk = os.read(fd, 4096) if select.select([fd], [], [], 0.1)[0] else None
        except OSError:  # not selectable (e.g. on Windows) or gone: treat as end of input
            chunk = b""
        if chunk is None:
            continue
        buffer += chunk
        lines = buffer.split(b"\n")
        buffer = lines.pop() if chunk else b""
        for line in lines + ([buffer] if not chunk else []):
            if console.onecmd(line.decode(errors="replace").strip()):
                return
        if not chunk:  # end of input: keep serving, stop reading
            fd = None
            _say("stdin closed: still serving; stop with Ctrl-C or SIGTERM")


def _stdin_fd() -> Optional[int]:
    """Standard input's descriptor, or None when there is none to read."""
    try:
        return sys.stdin.fileno() if sys.stdin is not None and not sys.stdin.closed else None
    except (OSError, ValueError, AttributeError):
        return None


def _in_foreground(fd: int) -> bool:
    """False when a terminal belongs to another job: reading it would stop us with SIGTTIN."""
    try:
        return not os.isatty(fd) or os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return True


class OwnerConsole(cmd.Cmd):
    """The owner's commands typed on the worker's stdin (one :meth:`onecmd` per line; errors are
    reported on stderr, never fatal). The read loop stays :func:`_serve_console`'s: it must also
    print request notices and notice signals while no line comes."""

    def __init__(self, worker: Any) -> None:
        super().__init__(stdout=sys.stdout)
        self.worker = worker

    def emptyline(self) -> bool:  # an empty line does nothing (cmd.Cmd would repeat the last command)
        return False

    def default(self, line: str) -> None:
        _say(f"error: unknown command {line.split()[0]!r}; commands: {COMMANDS}", sys.stderr)

    def do_quit(self, arg: str) -> bool:
        """Stop the worker."""
        return True

    def do_requests(self, arg: str) -> None:
        """The get requests, pending and decided."""
        _say(repr(self.worker.requests))

    def do_objects(self, arg: str) -> None:
        """The objects this worker holds."""
        _say(repr(self.worker.objects))

    def do_approve(self, arg: str) -> None:
        """approve N: let request N's value go to its client."""
        self._decide("approve", arg)

    def do_deny(self, arg: str) -> None:
        """deny N [reason]: refuse request N; its client's .get() raises PermissionDenied."""
        self._decide("deny", arg)

    def do_invite(self, arg: str) -> None:
        """invite NAME [FILE]: write an invitation (a connection file with NAME's own keys) to hand over."""
        name, _, path = arg.strip().partition(" ")
        if not name:
            _say("error: usage: invite NAME [FILE]", sys.stderr)
            return
        try:
            written = self.worker.invite(name, path.strip() or None)
        except (ValueError, RuntimeError, OSError) as exc:
            _say(f"error: {exc}", sys.stderr)
            return
        _say(f"invited {name} (key {self.worker.invites[name].fingerprint}): hand over {written}")

    def do_revoke(self, arg: str) -> None:
        """revoke NAME: end NAME's invitation and sessions now."""
        try:
            invite = self.worker.revoke(arg.strip())
        except KeyError as exc:
            _say(f"error: {exc.args[0]}", sys.stderr)
            return
        _say(f"revoked {invite.name} (key {invite.fingerprint})")

    def do_invites(self, arg: str) -> None:
        """The invitations, valid and revoked."""
        _say(repr(self.worker.invites))

    def _decide(self, word: str, arg: str) -> None:
        n_text, _, reason = arg.strip().partition(" ")
        if not n_text.lstrip("#").isdigit():
            _say(f"error: usage: {word} N" + (" [reason]" if word == "deny" else ""), sys.stderr)
            return
        n = int(n_text.lstrip("#"))
        try:
            req = self.worker.approve(n) if word == "approve" else self.worker.deny(n, reason.strip())
        except (KeyError, ValueError) as exc:  # no such request, or already decided
            _say(f"error: {exc.args[0] if exc.args else exc}", sys.stderr)
            return
        _say(f"{req.status} request #{n}" + (f": {req.reason}" if req.reason else ""))


# -- the demo ---------------------------------------------------------------------------------------
def run_demo(policy: str = "open", name: str = "Bob") -> int:
    """The seed tutorial in two processes: a worker child sharing #X and #Y, this process computing."""
    import torch

    import syft_magics as sm

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on SIGTERM too
    with tempfile.TemporaryDirectory(prefix="syft-demo-") as tmp:
        torch.save(torch.tensor([1.0, 2, 3, 4, 5]), Path(tmp, "x.pt"))
        torch.save(torch.ones(5), Path(tmp, "y.pt"))
        cmd = [sys.executable, "-m", "syft_magics", "worker", name, "--policy", policy,
               "--share", f"#X={Path(tmp, 'x.pt')}", "--share", f"#Y={Path(tmp, 'y.pt')}"]
        _say(f"$ python -m syft_magics worker {name} --policy {policy} --share '#X=x.pt' --share '#Y=y.pt' &")
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        owner = name if policy == "review" else None
        reader = threading.Thread(target=_pump, args=(proc, lines, name, owner), daemon=True)
        reader.start()
        try:
            if not _wait_for(lines, "Ctrl-C stops", 60.0):
                _say(f"error: the worker did not start (exit code {proc.poll()})", sys.stderr)
                return 1
            _tutorial(sm, torch, name)
        except KeyboardInterrupt:
            return 130
        except sm.SyftError as exc:
            _say(f"error: {type(exc).__name__}: {exc}", sys.stderr)
            return 1
        finally:
            _stop_child(proc)
            reader.join(5)
    return 0 if proc.returncode == 0 else 1


def _pump(proc: subprocess.Popen, lines: "queue.Queue[Optional[str]]", name: str, owner: Optional[str]) -> None:
    """Echo the child's stdout live and queue it; under review, play ``owner`` by approving each request."""
    for line in proc.stdout:  # type: ignore[union-attr]
        _say(f"  [{name} process] {line.rstrip()}")
        lines.put(line)
        match = re.search(r"request #(\d+): .*type 'approve", line) if owner else None
        if match and proc.stdin is not None:
            _say(f"  [{owner}'s owner types] approve {match.group(1)}")
            try:
                proc.stdin.write(f"approve {match.group(1)}\n")
                proc.stdin.flush()
            except (OSError, ValueError):  # the worker is stopping
                pass
    lines.put(None)


def _wait_for(lines: "queue.Queue[Optional[str]]", text: str, timeout: float) -> bool:
    """Whether a line containing ``text`` arrives within ``timeout`` seconds (False at EOF)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None or text in line:
            return line is not None


def _tutorial(sm: Any, torch: Any, name: str) -> None:
    """The seed tutorial's steps, echoed like an interactive session, then a pipelined loop and timings."""
    var = name.lower()

    def step(code: str, run: Callable[[], Any]) -> Any:
        _say(f">>> {code}")
        try:
            value = run()
        except sm.PermissionDenied as exc:  # the closed policy: expected, and part of the lesson
            _say(f"PermissionDenied: {exc}")
            return None
        _say(repr(value))
        return value

    client = step(f'{var} = sm.connect("{name}")', lambda: sm.connect(name, timeout=10))
    try:
        x_set = step(f'x_set = {var}.search("#X")', lambda: client.search("#X"))
        y_set = step(f'y_set = {var}.search("#Y")', lambda: client.search("#Y"))
        z = step("z = torch.add(x_set[0], y_set[0])", lambda: torch.add(x_set[0], y_set[0]))
        step("z.get()", z.get)
        n = 1000
        acc = x_set[0]
        t0 = time.perf_counter()
        for _ in range(n):
            acc = acc + y_set[0]
        sent = time.perf_counter() - t0
        client.sync()
        total = time.perf_counter() - t0
        _say(">>> acc = x_set[0]")
        _say(f">>> for _ in range({n}): acc = acc + y_set[0]   # pipelined: nothing waits for {name}")
        _say(f">>> {var}.sync()")
        _say(f"# {n} ops sent in {sent * 1e3:.0f} ms, all run by {total * 1e3:.0f} ms ({total / n * 1e6:.0f} µs/op)")
        step("acc.get()", acc.get)
        rtts = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.sync()
            rtts.append(time.perf_counter() - t0)
        _say(f"# one round trip ({var}.sync()): median {sorted(rtts)[len(rtts) // 2] * 1e3:.2f} ms over 50")
    finally:
        client.disconnect()
        _say(f">>> {var}.disconnect()")


def _stop_child(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGINT (a clean stop), then wait; SIGKILL only if it does not stop within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(OSError):
        proc.stdin.close()  # type: ignore[union-attr]

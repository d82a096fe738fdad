"""A worker's command logs: ``--verbose`` lines on stdout and ``--log FILE`` JSON lines."""
from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, TextIO

from ..display import short_id
from ..events import Event
from ..wire.limits import clip

if TYPE_CHECKING:
    from .worker import Worker


class CommandLog:
    """Appends structured command lines to a file; a subscriber of the worker's events."""

    def __init__(self, path: str, worker: "Worker") -> None:
        # 0600: the log names clients, objects and errors on the owner's data
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        self._file = open(fd, "a", buffering=1, encoding="utf-8")
        self._worker = worker
        self._lock = threading.Lock()

    def write(self, event: Event) -> None:
        if event.kind in ("refused", "owner_write", "auth_failed", "connect", "disconnect", "invite", "revoke"):
            # what the worker refused, and who came, went, was invited or revoked (keys as fingerprints)
            self._write({"time": event.time, "worker": self._worker.name, "event": event.kind,
                         **{k: clip(v, 200) for k, v in event.data.items()}})
            return
        if event.kind != "command":
            return
        data = event.data
        line = {
            "time": event.time,
            "worker": self._worker.name,
            "client": data["client"],
            "op": data["op"],
            "command": describe_command(self._worker, event),
            "inputs": [i.hex() for i in data.get("inputs", ())],
            "out": [o.hex() for o in data.get("out", ())],
            "duration_ms": round(data.get("duration", 0.0) * 1000, 3),
            "status": data["status"],
        }
        self._write(line)

    def _write(self, line: dict) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


def describe_command(worker: "Worker", event: Event) -> str:
    """How a command reads in logs: ``add(#X, #Y) -> 3f2a…``."""
    data = event.data
    labels = []
    for oid in data.get("inputs", ()):
        entry = worker.store.get(oid)
        labels.append(entry.label if entry else short_id(oid))
    text = f"{data['op']}({', '.join(labels)})"
    if data.get("out"):
        text += " -> " + ", ".join(short_id(o) for o in data["out"])
    return text


def print_command(out: TextIO, worker: "Worker", event: Event) -> None:
    """``--verbose``: one line per command received (as the seed tutorial printed), and connections."""
    if event.kind == "command":
        status = "" if event.data["status"] == "ok" else f"  [{event.data['status']}]"
        print(f"[{worker.name}] Received Command From: {event.data['client']}  "
              f"{describe_command(worker, event)}{status}",
              file=out, flush=True)
    elif event.kind in ("connect", "disconnect", "request"):
        print(f"[{worker.name}] {event.kind}: " + ", ".join(f"{k}={v}" for k, v in event.data.items()),
              file=out, flush=True)

"""``--log FILE``: one JSON line per command a worker receives."""
from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

from .events import Event

if TYPE_CHECKING:
    from .worker import Worker


class CommandLog:
    """Appends structured command lines to a file; a subscriber of the worker's events."""

    def __init__(self, path: str, worker: "Worker") -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")
        self._worker = worker
        self._lock = threading.Lock()

    def write(self, event: Event) -> None:
        if event.kind != "command":
            return
        data = event.data
        line = {
            "time": event.time,
            "worker": self._worker.name,
            "client": data["client"],
            "op": data["op"],
            "command": self._worker.describe_command(event),
            "inputs": [i.hex() for i in data.get("inputs", ())],
            "out": [o.hex() for o in data.get("out", ())],
            "duration_ms": round(data.get("duration", 0.0) * 1000, 3),
            "status": data["status"],
        }
        with self._lock:
            if not self._file.closed:
                self._file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()

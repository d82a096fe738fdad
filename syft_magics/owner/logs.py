"""A worker's command logs: ``--verbose`` lines on stdout, and records on a :mod:`logging` logger
(``syft_magics.commands.<name>``) that ``--log FILE`` writes as JSON lines."""
from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, TextIO

from ..display import short_id
from ..events import Event
from ..wire.limits import clip, printable

if TYPE_CHECKING:
    from .worker import Worker


#: The parent of every worker's command logger; it does not propagate, so a notebook's
#: ``logging.basicConfig(level=INFO)`` does not print every command (attach a handler here for that).
COMMANDS = "syft_magics.commands"
logging.getLogger(COMMANDS).propagate = False
logging.getLogger(COMMANDS).addHandler(logging.NullHandler())  # no "last resort" printing of refusals


def command_logger(worker: "Worker") -> logging.Logger:
    """``syft_magics.commands.<worker name>``: one INFO record per command and one WARNING per refusal,
    each carrying its structured line as ``record.syft`` (a dict). ``--log FILE`` is a
    :class:`JsonLinesHandler` on it; any other :mod:`logging` handler can be added the same way."""
    return logging.getLogger(f"{COMMANDS}.{worker.name}")


#: The events other than commands that the log records, at their level.
_EVENTS = {"refused": logging.WARNING, "owner_write": logging.WARNING, "auth_failed": logging.WARNING,
           "overran": logging.WARNING,
           "connect": logging.INFO, "disconnect": logging.INFO, "invite": logging.INFO, "revoke": logging.INFO}


class CommandLog:
    """Turns the worker's events into records on :func:`command_logger`; a subscriber of the events.

    Builds nothing unless a handler wants the level (the serving thread pays one level check)."""

    def __init__(self, worker: "Worker") -> None:
        self._worker = worker
        self.logger = command_logger(worker)

    def write(self, event: Event) -> None:
        if event.kind in _EVENTS:  # what the worker refused; who came, went, was invited or revoked (fingerprints)
            level = _EVENTS[event.kind]
            if self.logger.isEnabledFor(level):
                line = {"time": event.time, "worker": self._worker.name, "event": event.kind,
                        **{k: clip(v, 200) for k, v in event.data.items()}}
                self.logger.log(level, "%s", event.kind, extra={"syft": line})
            return
        if event.kind != "command" or not self.logger.isEnabledFor(logging.INFO):
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
        self.logger.info("%s", line["command"], extra={"syft": line})


class JsonLinesHandler(logging.FileHandler):
    """``--log FILE``: appends each record's structured line as one JSON line, to a file created 0600
    (the log names clients, objects and errors on the owner's data)."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file keeps no wider mode
        finally:
            os.close(fd)
        super().__init__(path, mode="a", encoding="utf-8")

    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, "syft", None)
        return json.dumps(line if isinstance(line, dict) else {"time": record.created, "message": record.getMessage()})


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
    return clip(text)  # a command's inputs and results are as many as a client makes them


def print_command(out: TextIO, worker: "Worker", event: Event) -> None:
    """``--verbose``: one line per command received (as the seed tutorial printed), and connections."""
    if event.kind == "command":
        status = "" if event.data["status"] == "ok" else f"  [{event.data['status']}]"
        print(printable(f"[{worker.name}] Received Command From: {event.data['client']}  "
                        f"{describe_command(worker, event)}{status}"),
              file=out, flush=True)
    elif event.kind in ("connect", "disconnect", "request", "refused", "overran", "owner_write"):
        # every value clipped: names, tags and lineages come from clients
        print(f"[{worker.name}] {event.kind}: " + ", ".join(f"{k}={clip(v, 200)}" for k, v in event.data.items()),
              file=out, flush=True)

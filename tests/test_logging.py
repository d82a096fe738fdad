"""Failures that the package survives are logged on the ``syft_magics`` logger, never swallowed silently."""
from __future__ import annotations

import logging

import pytest
import torch

import syft_magics as sm
from syft_magics.events import EventStream


def test_a_failing_event_subscriber_is_logged_and_dropped(caplog):
    stream = EventStream(10)
    calls = []

    def broken(event):
        calls.append(event.kind)
        raise ValueError("panel bug")

    stream.subscribe(broken)
    with caplog.at_level(logging.WARNING, logger="syft_magics"):
        stream.emit("share")
        stream.emit("share")
    assert calls == ["share"], "dropped after its first failure"
    [record] = [r for r in caplog.records if r.name == "syft_magics.events"]
    assert "failed on 'share' and was removed" in record.getMessage()
    assert record.exc_info and "panel bug" in str(record.exc_info[1])


def test_an_op_failing_on_the_worker_is_logged_there_at_debug_level(seed, caplog):
    bob, client = seed
    x = client.search("#X")[0]
    with caplog.at_level(logging.DEBUG, logger="syft_magics.owner"):
        y = x[torch.tensor([10])]
        with pytest.raises(sm.RemoteError, match="out of bounds"):
            y.get()
    # (logged where the op ran: the serving thread, or its client's lane, priced or not)
    records = [r for r in caplog.records if r.name in ("syft_magics.owner.serving", "syft_magics.owner.ops")]
    assert records and "answers" in records[0].getMessage() and "out of bounds" in str(records[0].exc_info[1])


def test_an_op_failing_on_its_clients_lane_is_logged_too(seed, caplog, fresh_estimates):
    """With estimates warm, an op of a signature not priced yet runs on its client's lane (to be priced there)."""
    bob, client = seed
    x = client.search("#X")[0]
    with caplog.at_level(logging.DEBUG, logger="syft_magics.owner"):
        y = x[torch.tensor([10, 11])]
        with pytest.raises(sm.RemoteError, match="out of bounds"):
            y.get()
    records = [r for r in caplog.records if r.name == "syft_magics.owner.ops"]
    assert records and "answers" in records[0].getMessage() and "out of bounds" in str(records[0].exc_info[1])


def test_the_package_logger_is_silent_unless_configured():
    logger = logging.getLogger("syft_magics")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.syft)  # type: ignore[attr-defined]


def test_the_owner_can_send_command_records_to_any_logging_handler(seed):
    bob, client = seed
    logger = logging.getLogger("syft_magics.commands.Bob")
    handler = _Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        x = client.search("#X")[0]
        torch.add(x, 1)
        client.sync()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    [line] = handler.lines
    assert line["op"] == "add" and line["worker"] == "Bob" and line["status"] == "ok"
    assert line["command"].startswith("add(#X)")


def test_command_records_stay_out_of_the_root_logger(seed, caplog):
    """A notebook's ``basicConfig(level=INFO)`` must not print every command the worker serves."""
    bob, client = seed
    with caplog.at_level(logging.DEBUG):
        x = client.search("#X")[0]
        torch.add(x, 1)
        client.sync()
    assert not [r for r in caplog.records if r.name.startswith("syft_magics.commands")]


def test_log_file_is_a_logging_handler_created_0600_and_removed_at_stop(make_worker, tmp_path):
    import json
    import os
    import stat

    path = tmp_path / "bob.log"
    path.write_text("")
    path.chmod(0o644)
    bob = make_worker("Bob", policy="open", log=str(path))
    logger = logging.getLogger("syft_magics.commands.Bob")
    [handler] = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, "an existing log is narrowed to the owner"
    assert logger.level == logging.INFO
    bob.events.emit("refused", reason="x" * 1000, peer="mallory")
    bob.stop()
    assert handler not in logger.handlers and logger.level == logging.NOTSET, "stop removes the handler"
    [line] = [json.loads(raw) for raw in path.read_text().splitlines()]
    assert line["event"] == "refused" and line["peer"] == "mallory"
    assert len(line["reason"]) < 300, "huge strings are clipped in the log"

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
    records = [r for r in caplog.records if r.name == "syft_magics.owner.serving"]
    assert records and "answers" in records[0].getMessage() and "out of bounds" in str(records[0].exc_info[1])


def test_the_package_logger_is_silent_unless_configured():
    logger = logging.getLogger("syft_magics")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)

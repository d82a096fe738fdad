"""Load: 32 concurrent clients (threads of this process and of child processes) x 5,000 pipelined ops
each against one worker; every value read back is right, nothing is lost, and once they disconnect the
worker holds what it held before (objects, bytes, sessions, memory). Loopback only."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch
from helpers import wait_until
from load_client import run_threads

HERE = Path(__file__).parent
CLIENTS = 32
OPS = 5_000
PROCESSES, THREADS_PER_PROCESS = 4, 7  # 28 clients in child processes...
IN_PROCESS = CLIENTS - PROCESSES * THREADS_PER_PROCESS  # ...and 4 in threads beside the worker
#: a leak of one 20-byte tensor per op of the run would add about 100 MiB (entries, storages, ids)
MEMORY_SLACK = 64 << 20


def worker_state(bob) -> tuple:
    return len(bob.store), bob.store.nbytes, len(bob.server.sessions), len(bob.clients)


@pytest.mark.timeout(600)
def test_32_clients_of_5000_pipelined_ops_get_right_answers_and_leave_nothing_behind(make_worker, fast_defaults):
    fast_defaults.reply_timeout = 120.0
    fast_defaults.connect_timeout = 60.0
    bob = make_worker("Bob", policy="open")
    bob.share(torch.tensor([1.0, 2, 3, 4, 5]), "#X")
    assert run_threads(bob.address, bob.key, 2, 500, 1000) == []  # warm: torch's dispatch, allocator, caches
    assert wait_until(lambda: not bob.clients, timeout=10)
    gc.collect()
    baseline, rss = worker_state(bob), psutil.Process().memory_info().rss
    commands = bob.stats["commands"]

    children = [subprocess.Popen([sys.executable, str(HERE / "load_client.py"), bob.address, bob.key,
                                  str(THREADS_PER_PROCESS), str(OPS), str(i * THREADS_PER_PROCESS)],
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(HERE.parent)})
                for i in range(PROCESSES)]
    try:
        errors = run_threads(bob.address, bob.key, IN_PROCESS, OPS, PROCESSES * THREADS_PER_PROCESS)
        for child in children:
            out, _ = child.communicate(timeout=480)
            assert child.returncode == 0, out
            report = json.loads(out.strip().splitlines()[-1])
            errors += report["errors"]
            assert report["ok"] + len(report["errors"]) == THREADS_PER_PROCESS
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=10)
    assert errors == [], errors
    # every op ran once: the chains' values say so, and the worker counted exactly that many
    assert bob.stats["commands"] - commands == CLIENTS * OPS
    assert wait_until(lambda: worker_state(bob) == baseline, timeout=30), (worker_state(bob), baseline)
    assert not bob.server.handshakes
    gc.collect()
    grown = psutil.Process().memory_info().rss - rss
    assert grown < MEMORY_SLACK, f"the worker's process grew by {grown >> 20} MiB"

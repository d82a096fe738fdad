"""Clients for the load test (tests/test_load.py): each runs a chain of pipelined ops and checks the results.

``python tests/load_client.py ADDRESS KEY THREADS OPS FIRST_SEED`` runs THREADS clients in threads of
one process and prints one JSON line: ``{"ok": n, "errors": [...]}``.
"""
from __future__ import annotations

import json
import sys
import threading
from typing import List

import torch

import syft_magics as sm

#: a get checks the chain every this many ops (a round trip each; the rest is pipelined)
CHECK_EVERY = 1000


def run_client(address: str, key: str, ops: int, seed: int) -> None:
    """``ops`` pipelined ops (exactly) on one connection: a chain mixing the client's tensor with the owner's
    ``#X``; raises AssertionError if any value read back differs from the same chain run locally."""
    client = sm.connect(address, key=key, timeout=60)
    try:
        x = client.search("#X")[0]
        local_x = torch.tensor([1.0, 2, 3, 4, 5])
        start = torch.full((5,), float(seed))
        y, expected = client.send(start), start.clone()
        for i in range(ops):
            k = float(i % 5)
            if i % 3 == 0:
                y, expected = y + x, expected + local_x
            elif i % 3 == 1:
                y, expected = y - k, expected - k
            else:
                y, expected = -y, -expected
            if (i + 1) % CHECK_EVERY == 0 or i + 1 == ops:
                got = y.get(timeout=120)
                assert torch.equal(got, expected), f"client {seed}, op {i}: {got} != {expected}"
    finally:
        client.disconnect()


def run_threads(address: str, key: str, threads: int, ops: int, first_seed: int) -> List[str]:
    """``threads`` clients at once, one per thread; the errors they raised (empty: all correct)."""
    errors: List[str] = []

    def one(seed: int) -> None:
        try:
            run_client(address, key, ops, seed)
        except BaseException as exc:  # reported to the test, which fails on it
            errors.append(f"client {seed}: {type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=one, args=(first_seed + i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors


if __name__ == "__main__":
    address, key, threads, ops, first = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    errors = run_threads(address, key, threads, ops, first)
    print(json.dumps({"ok": threads - len(errors), "errors": errors}), flush=True)

"""One scientist process of the many-clients row: pipelined chains against one owner, timed.

    python -m benchmarks._chainclient

It reads JSON commands on stdin, one per line, and answers each with one JSON line:
``{"connect": "syft"|"raw", "address": A, "key": K}`` connects and warms up (``{"ready": true}``);
``{"go": N}`` runs ``N`` ops (ours: ``z = torch.add(z, y)`` then one ``.get()``, checked; raw: msgpack op
messages, 512 in flight, decoded and acked by the server) and answers ``{"start": t0, "end": t1, "ops": N}``
on the system-wide monotonic clock; ``{"close": true}`` disconnects. It exits when stdin closes.
One process serves several rounds, so a round pays no interpreter start-up.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, Optional

import torch

from ._clients import RawClient, op_template, syft_connect

WINDOW = 512


def connect(mode: str, address: str, key: Optional[str]) -> "tuple[Callable[[int], None], Callable[[], None]]":
    """(run n ops, close) for one connection."""
    if mode == "syft":
        from .rows.pipeline import chain

        client = syft_connect(address, key or "")
        x, = client.search("#X")
        y = client.send(torch.ones(5))
        return (lambda n: chain(client, x, y, n)), client.disconnect
    raw = RawClient(address)
    template = op_template()
    return (lambda n: raw.pipelined(n, WINDOW, template)), raw.close


def main() -> None:
    torch.set_num_threads(1)
    run: Optional[Callable[[int], Any]] = None
    close: Optional[Callable[[], None]] = None
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if "connect" in cmd:
                if close is not None:
                    close()
                run, close = connect(cmd["connect"], cmd["address"], cmd.get("key"))
                run(200)
                answer: dict = {"ready": True}
            elif "go" in cmd and run is not None:
                t0 = time.monotonic()
                run(int(cmd["go"]))
                answer = {"start": t0, "end": time.monotonic(), "ops": int(cmd["go"])}
            elif "close" in cmd and close is not None:
                close()
                run = close = None
                answer = {"closed": True}
            else:
                answer = {"error": f"unexpected command {cmd!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        if close is not None:
            close()


if __name__ == "__main__":
    main()

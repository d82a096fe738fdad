"""A worker in its own process, for tests where the worker may crash, be killed or be paused.

``python tests/worker_process.py PORT KEY [POLICY]`` serves ``#X = [1., 2., 3., 4., 5.]`` on
127.0.0.1:PORT with KEY, prints ``ready`` and serves until its stdin closes.
"""
from __future__ import annotations

import sys

import torch

import syft_magics as sm


def main() -> None:
    port, key = int(sys.argv[1]), sys.argv[2]
    policy = sys.argv[3] if len(sys.argv) > 3 else "open"
    worker = sm.Worker("Bob", port=port, key=key, policy=policy, connection_file=False).start()
    worker.share(torch.tensor([1.0, 2, 3, 4, 5]), "#X")
    print("ready", flush=True)
    sys.stdin.read()
    worker.stop()


if __name__ == "__main__":
    main()

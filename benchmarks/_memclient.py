"""A fresh scientist process for the memory row: one ``get`` or ``send``, its peak RSS added, as a JSON line.

    python -m benchmarks._memclient get  ADDRESS KEY TAG
    python -m benchmarks._memclient send ADDRESS KEY NUMEL
"""
from __future__ import annotations

import gc
import json
import sys

import torch

from ._clients import syft_connect
from ._util import hwm_bytes, reset_hwm, rss_bytes


def main() -> None:
    mode, address, key, arg = sys.argv[1:5]
    torch.set_num_threads(1)
    client = syft_connect(address, key)
    try:
        if mode == "get":
            ptr, = client.search(arg)
            nbytes = ptr.numel() * ptr.element_size()
            gc.collect()
            reset_ok = reset_hwm()
            before = rss_bytes()
            value = ptr.get()
            peak = hwm_bytes()
            ok = value.numel() * value.element_size() == nbytes
            del value
        else:
            t = torch.ones(int(arg), dtype=torch.float32)
            nbytes = t.numel() * t.element_size()
            gc.collect()
            reset_ok = reset_hwm()
            before = rss_bytes()
            ptr = client.send(t)
            client.sync()
            peak = hwm_bytes()
            ok = True
        print(json.dumps({"mode": mode, "nbytes": nbytes, "rss_before": before, "hwm": peak,
                          "added": peak - before, "reset_ok": reset_ok, "ok": ok}), flush=True)
    finally:
        client.disconnect()


if __name__ == "__main__":
    main()

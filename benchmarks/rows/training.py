"""Row 9: training on a worker (issue 9). Three figures, each against a baseline from the same run:

* one epoch of the issue's MLP (64-32-10, SGD, batch 64) on scikit-learn's digits, on an owner process,
  versus the same epoch in plain local torch, alternating (goal: at most 3x local wall time): on a copy the
  scientist sent under the ``open`` policy, and as the issue's loop does it, on the owner's own digits under
  ``review`` (the owner's data guarded: write protection, provenance, withheld shapes);
* messages per training step (zero_grad, forward, loss, backward, step) with a 64-512-10 model versus a
  64-8-10 one (goal: the same count, ratio 1.0: never one message per parameter);
* a FedAvg round (one local epoch per worker, then ``fedavg``) over 2 and 8 owner processes, each with
  the same amount of data, versus one owner alone (goal: about the slowest single worker, ratio <= 1.5;
  on a machine with fewer cores than workers this cannot hold and the note says so);
* a FedAvg round over 2 owners averaged on a third, aggregator, owner process (``fedavg(..., on=carol)``:
  the models move worker to worker, the average is fetched) versus pulled to the scientist (goal <= 1.5x).
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Dict, Iterator, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._clients import syft_connect
from .._util import Config, Owner, info_row, median, row

NAME = "training"
TITLE = "9. training on a worker"
QUICK = False


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target, dtype=torch.long)


def _mlp(hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _epoch(model, opt, x, y, n: int, batch: int = 64) -> Any:
    loss = None
    for i in range(0, n, batch):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
        loss.backward()
        opt.step()
    return loss


def _epoch_seconds(model, opt, x, y, n: int, client: Any = None) -> float:
    """One timed epoch; remote (``client`` given): until the worker has run all of it."""
    t0 = time.perf_counter()
    _epoch(model, opt, x, y, n)
    if client is not None:
        client.sync()
    return time.perf_counter() - t0


def _paired_epochs(client, X, Y, pairs: int, owners: bool = False) -> Tuple[List[float], List[float]]:
    """Seconds of ``pairs`` epochs remotely and locally, alternating (remote, then local, then remote...),
    so that the machine's drift over the run falls on both sides alike. A first remote epoch, not timed,
    prices every batch shape once (the last batch is short). ``owners``: on the owner's digits (``#digits_x``,
    ``#digits_y``, which the scientist cannot see), else on copies the scientist sends."""
    if owners:
        (x,), (y,) = client.search("#digits_x"), client.search("#digits_y")
    else:
        x, y = client.send(X), client.send(Y)
    remote = client.send(_mlp())
    opt = client.optim.SGD(remote.parameters(), lr=0.1)
    model = _mlp()
    local_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _epoch(remote, opt, x, y, len(X))
    client.sync()
    remote_s: List[float] = []
    local_s: List[float] = []
    for _ in range(pairs):
        remote_s.append(_epoch_seconds(remote, opt, x, y, len(X), client))
        local_s.append(_epoch_seconds(model, local_opt, X, Y, len(X)))
    return remote_s, local_s


def _local_epochs(X, Y, reps: int) -> List[float]:
    """Seconds of ``reps`` local epochs back to back (warm caches: local torch at its best)."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return [_epoch_seconds(model, opt, X, Y, len(X)) for _ in range(reps)]


def _messages_per_step(client, X, Y, hidden: int) -> int:
    x, y = client.send(X[:64]), client.send(Y[:64])
    remote = client.send(_mlp(hidden))
    opt = client.optim.SGD(remote.parameters(), lr=0.1)
    client.sync()
    seen = []
    unsubscribe = client.events.subscribe(lambda e: seen.append(e) if e.kind == "op" else None)
    try:
        _epoch(remote, opt, x, y, 64)
        client.sync()
    finally:
        unsubscribe()
    return len(seen)


def _round_seconds(clients, X, Y, on=None) -> float:
    """One round: send the model, one epoch per owner, then FedAvg (pulled here, or on the aggregator ``on``,
    whose average is then fetched, as the scientist would to evaluate it)."""
    from syft_magics.federated import fedavg

    data = [(c.send(X), c.send(Y)) for c in clients]
    for c in clients:
        c.sync()
    model = _mlp()
    t0 = time.perf_counter()
    remotes = [c.send(model) for c in clients]
    for c, r, (x, y) in zip(clients, remotes, data):
        _epoch(r, c.optim.SGD(r.parameters(), lr=0.1), x, y, len(X))
    average = fedavg(remotes, [len(X)] * len(clients), on=on)
    if on is not None:
        average.get()
    return time.perf_counter() - t0


@contextlib.contextmanager
def _clients_of_owners(n: int) -> Iterator[List[Any]]:
    """``n`` owner processes and a client of each; all stopped on the way out."""
    with contextlib.ExitStack() as stack:
        owners = [stack.enter_context(Owner("syft")) for _ in range(n)]
        clients = [syft_connect(o.address, o.key) for o in owners]
        try:
            yield clients
        finally:
            for c in clients:
                c.disconnect()


def run(cfg: Config) -> Dict[str, Any]:
    X, Y = _digits()
    reps = 5 if cfg.full else 2
    rows, notes, data = [], [], {}
    threads = torch.get_num_threads()
    with Owner("syft") as owner:
        client = syft_connect(owner.address, owner.key)
        try:
            pairs = 9 if cfg.full else 5
            # local torch on one thread, as the owner's: for this MLP its fastest (3.3 ms against 3.4 on two), and
            # its idle OpenMP threads do not spin on the core the owner's process needs for the remote epochs
            torch.set_num_threads(1)
            try:
                remote_s, local_s = _paired_epochs(client, X, Y, pairs)
            finally:
                torch.set_num_threads(threads)
            remote, local = median(remote_s), median(local_s)
            pair_ratio = median([r / lo for r, lo in zip(remote_s, local_s)])
            hot = median(_local_epochs(X, Y, pairs))
            rows.append(row("MLP epoch on digits, remote vs local torch", remote * 1e3, local * 1e3, "ms",
                            better="lower", goal="<= 3x local", goal_ratio=3.0,
                            notes=f"medians of {pairs} alternating pairs (median pair ratio {pair_ratio:.2f}); "
                                  f"local back to back {hot * 1e3:.1f} ms (remote {remote / hot:.2f}x that)"))
            small, big = _messages_per_step(client, X, Y, 8), _messages_per_step(client, X, Y, 512)
            rows.append(row("messages per training step, 64-512-10 vs 64-8-10", big, small, "messages",
                            better="lower", goal="constant (ratio 1.0)", goal_ratio=1.0))
            data.update(epoch_remote_s=remote, epoch_local_s=local, epoch_local_back_to_back_s=hot,
                        messages_small=small, messages_big=big)
        finally:
            client.disconnect()
    with Owner("syft", policy="review", digits=True) as owner:  # the loop: the owner's data, its policy
        client = syft_connect(owner.address, owner.key)
        torch.set_num_threads(1)
        try:
            remote_s, local_s = _paired_epochs(client, X, Y, pairs, owners=True)
        finally:
            torch.set_num_threads(threads)
            client.disconnect()
        guarded, local = median(remote_s), median(local_s)
        rows.append(row("MLP epoch on the owner's digits under review, remote vs local", guarded * 1e3, local * 1e3,
                        "ms", better="lower", goal="<= 3x local", goal_ratio=3.0,
                        notes=f"medians of {pairs} alternating pairs; the same epoch on data the scientist sent, "
                              f"open policy: {remote * 1e3:.1f} ms (above)"))
        data.update(epoch_owners_review_s=guarded, epoch_owners_review_local_s=local)
    part = 600
    one = None
    cfg.check(15.0)
    with _clients_of_owners(8) as clients:  # started once: the rounds below use the first 1, 2, 8 (or 3)
        for n in (1, 2, 8):
            seconds = min(_round_seconds(clients[:n], X[:part], Y[:part]) for _ in range(reps))
            data[f"fedavg_round_{n}_s"] = seconds
            if n == 1:
                one = seconds
                rows.append(info_row("FedAvg round, 1 owner process", seconds * 1e3, None, "ms"))
            else:
                floor = max(1.0, n / (os.cpu_count() or 1))  # with fewer cores than owners, their epochs share them
                rows.append(row(f"FedAvg round over {n} owner processes vs 1", seconds * 1e3, one * 1e3, "ms",
                                better="lower", goal="<= 1.5x the slowest single worker", goal_ratio=1.5,
                                notes=f"{seconds / (floor * one):.2f}x this machine's floor ({floor:g}x one owner's "
                                      f"round: {n} owners on {os.cpu_count()} cores); one after another: {n}x"
                                if floor > 1 else ""))
        pulled = min(_round_seconds(clients[:2], X[:part], Y[:part]) for _ in range(reps))
        aggregated = min(_round_seconds(clients[:2], X[:part], Y[:part], on=clients[2]) for _ in range(reps))
    data.update(fedavg_round_2_pulled_s=pulled, fedavg_round_2_aggregator_s=aggregated)
    rows.append(row("FedAvg round over 2 owners: on an aggregator worker vs pulled here", aggregated * 1e3,
                    pulled * 1e3, "ms", better="lower", goal="<= 1.5x (models move worker to worker)",
                    goal_ratio=1.5))
    cores = os.cpu_count() or 1
    if cores < 8:
        notes.append(f"{cores} cores for 8 owner processes: their epochs cannot all run at once here (the work "
                     f"of a round over 8 takes at least {8 / cores:.0f}x one owner's; one after another, 8x)")
    return {"rows": rows, "notes": notes, "data": data}

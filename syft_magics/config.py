"""Default timeouts and limits, in one place so users can tune them.

Change them for the whole process (``syft_magics.defaults.reply_timeout = 60``)
or per call where a function takes a ``timeout``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class Defaults:
    #: Seconds to wait for a worker to answer the handshake.
    connect_timeout: float = 5.0
    #: Seconds to wait for any reply (sync, get of an allowed object, search).
    reply_timeout: float = 30.0
    #: Seconds a ``.get()`` waits for the owner to approve a request.
    approval_timeout: float = 300.0
    #: A client session is freed when the worker hears nothing for this long.
    lease_timeout: float = 15.0
    #: How often a client tells the worker it is alive.
    heartbeat_interval: float = 1.0
    #: A client gives up on a silent worker after this many seconds without a pong.
    heartbeat_timeout: float = 10.0
    #: How often the client's background thread sends queued frees.
    free_interval: float = 0.05
    #: Pipelined ops wait about this long (s) in the client's batch before they are sent (up to
    #: ``free_interval`` for the first op after a pause); a request that waits, such as ``.get()``,
    #: sends them at once.
    flush_interval: float = 0.005
    #: Largest single message (frame) the worker accepts, in bytes; ZeroMQ drops the
    #: connection of a peer that announces a larger one before reading it.
    max_message_bytes: int = 1 << 30
    #: Thread switch interval (s) set while a worker runs, so it answers while the owner's
    #: notebook computes; None leaves the interpreter's setting alone (see _switch.py).
    switch_interval: Optional[float] = 0.00025
    #: While a worker or client runs, the objects that exist once it has warmed up are frozen (``gc.freeze()``),
    #: so that Python's full collections do not walk torch's 330,000 objects (0.2 s each); False leaves gc alone
    #: (see collector.py).
    freeze_gc: bool = True
    #: Seconds a worker or client runs before what exists is frozen (its warm-ups done first); 0: at once.
    freeze_gc_after: float = 10.0
    #: Large tensors between a client and a worker verified to run on one host, as one user, travel as
    #: sealed memory files instead of through TCP (:mod:`syft_magics.wire.samehost`); False: always TCP.
    #: Read when a client connects.
    same_host: bool = True
    #: A client connected to a worker of its own process (``connect(worker)``, an ``inproc://`` address)
    #: hands its messages to the worker's handlers on its own thread (:mod:`syft_magics.scientist.direct`);
    #: False: through an ``inproc://`` ZeroMQ socket and the worker's serving thread. Read when a client connects.
    in_process_direct: bool = True
    #: Tensors of at least this many bytes that travel by TCP are streamed in chunks (``send``, ``get``):
    #: other ops on the link interleave with them, Ctrl-C / a kernel interrupt cancels them, and a
    #: progress bar shows when one takes more than ``progress_delay`` s (:mod:`syft_magics.wire.chunks`).
    stream_min_bytes: int = 8 << 20
    #: Bytes per chunk of a stream, and chunks in flight before the receiver's credit comes back
    #: (measured against the single-frame path: benchmarks/rows/streaming.py; session 22, alternating full runs:
    #: 2 MiB x 2 sends 16 MiB at 0.93-0.97x single frame and 1 GiB in 1.13-1.29 s, against 0.83-0.87x and
    #: 1.80-1.96 s for 1 MiB x 4, with the same 4 MiB in flight ahead of another op; 2 MiB x 4 made that op
    #: wait 4.9x idle).
    chunk_bytes: int = 2 << 20
    chunk_window: int = 2
    #: Progress bars for streamed transfers (tqdm.auto: a widget in a notebook, text in a terminal):
    #: None shows them when interactive (an IPython kernel, or stderr is a terminal); True/False force.
    progress: Optional[bool] = None
    #: A transfer shows its bar once it has taken this many seconds.
    progress_delay: float = 2.0
    #: After it answers a message, a worker's serving thread polls its socket without sleeping for up to this
    #: many seconds before it blocks: a thread that sleeps wakes up cold (on a virtual machine its CPU halts),
    #: which costs a quarter of an op's round trip. Only while it pays: spins that keep finding nothing, or
    #: that wait for the GIL or a CPU, stop (:mod:`syft_magics.owner.spin`). 0: never spin.
    spin_seconds: float = 0.0003
    #: In a notebook, a cell that sent ops waits for them when it ends and fails with the first failure
    #: (:mod:`syft_magics.scientist.cell_end`); False: ops run on while the next cells run, and a failure is raised
    #: by the next ``.get()`` or ``sync()``.
    sync_at_cell_end: bool = True
    #: Commands kept in a worker's recent-events ring.
    event_history: int = 500


defaults = Defaults()

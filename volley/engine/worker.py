"""A worker: one process pinned to one client CPU, running its clients as threads.

The worker lives for the whole benchmark; its clients' connections live for one run. At
each run the clients connect afresh (to a fresh server, or the same one) and verify the
connection with one exchange; then every client thread runs ``_core.play`` with the GIL
released, writing latencies straight into a shared mapping the coordinator reads with
numpy, so no per-op value ever crosses a pipe. Messages on the pipe are few and small:

    coordinator -> worker:  ("connect", host, port) | ("run", start_ns, measure_from_ns,
                            deadline_ns[, OpenLoad]) | ("disconnect",) | ("close",)
    worker -> coordinator:  ("ready",) once mapped | ("connected",) | ("failed", message)
                            | ("done", [ClientReport...], involuntary context switches,
                            the open loop's send lags as an encoded Histogram or None,
                            when the last of its clients entered its loop, ns)
                            | ("disconnected",)
"""

from __future__ import annotations

import ctypes
import errno as errno_names
import mmap
import os
import queue
import random
import signal
import socket
import struct
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from volley import _core
from volley.engine.server import STOP_SIGNALS
from volley.system import noise

if TYPE_CHECKING:  # numpy itself is imported only after the worker pins itself
    import numpy as np

# The first page of the shared mapping holds the stop flag; latencies start after it.
CONTROL_BYTES = mmap.PAGESIZE
SAMPLE_BYTES = 8
# Threads here only run play(); a small stack lets thousands of clients share a worker.
CLIENT_STACK_BYTES = 256 * 1024
# After a stop request, a client still blocked in recv this long gets its socket shut down.
STOP_GRACE_S = 0.2
POLL_S = 0.05
PR_SET_PDEATHSIG = 1

# Open loop: each client wakes this long before a send and spins (polling for replies) until
# it is due. Sleeping to the send instead makes it leave late by the wake-up, 15-30 us here
# (more on a busier VM), and that lag is inside every latency, which counts from the
# schedule. Measured (bench/openloop/spin.py, c-epoll, CPUs held in shallow idle states):
# with one client on its CPU, 20 us already brings the lag p50 from 14-18 us to 0.3 us at
# 1k-20k ops/s; 50 us also brings its p90 from 3 us to under 2 us. It costs the client CPU
# rate x 50 us of spinning (5% at 1k ops/s, all of it from 20k), a CPU that is the
# generator's own.
SPIN_NS = 50_000
# Several clients on one CPU are threads that take turns: one spinning holds the CPU that
# another needs to send or read on time. Their spinning together is kept to this share of
# the CPU (per client: the share over clients x rate). Measured with 4 clients on one CPU:
# at 20k ops/s 50 us each (the whole CPU) made the lag p90 83 us against 54 us without
# spinning, 20 us each (40%) 42 us with the lag p50 at 3.5 us (21 us without); at 5k ops/s
# 20 us (10%) and 50 us (25%) were alike (lag p50 0.3 us, p90 9.5 and 5.4 us, p99 30 and
# 49 us); at 1k ops/s 50 us (5%) was best (p90 0.4 us).
SPIN_SHARE = 0.4


def spin_for(
    spin_ns: int, clients_on_cpu: int, client_rate_ops_s: float, server_on_cpu: bool = False
) -> int:
    """The spin each of a CPU's clients uses for a requested ``spin_ns``: all of it for a
    lone client, at most SPIN_SHARE of the CPU for several together, none on a CPU the
    server also runs on (the spinning would be taken from it)."""
    if server_on_cpu or spin_ns <= 0:
        return 0
    if clients_on_cpu <= 1:
        return spin_ns
    return int(min(spin_ns, SPIN_SHARE / (clients_on_cpu * client_rate_ops_s) * 1e9))


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker needs to know: where it runs, whom it plays, where to write."""

    index: int
    cpu: int
    client_ids: list[int]
    op_timeout_s: float
    samples_path: str
    capacity: int  # latencies one client may record in one run


@dataclass(frozen=True)
class OpenLoad:
    """A run played open-loop: each client sends on its own schedule at this rate."""

    client_rate_ops_s: float  # one client's share of the offered rate
    arrivals: str  # "poisson" or "fixed", a key of _core.ARRIVALS
    spin_ns: int = 0  # each client spins this long before a send (spin_for)


@dataclass(frozen=True)
class OpenCounts:
    """One open-loop client's run, besides its latencies (see ``_core.play_open``)."""

    due: int  # words scheduled in the measured window
    late: int  # of those, sent more than _core.LATE_TOLERANCE_NS late
    replied: int  # replies received in the window
    max_outstanding: int
    backlog_start: int  # words due and unanswered when the window opened
    backlog_end: int  # ... and when it closed
    window_ns: int


@dataclass(frozen=True)
class ClientReport:
    """How one client's run ended: ops completed and, if it failed, why."""

    client: int
    completed: int
    outcome: int
    errno: int
    challenge: int
    reply: int
    counts: OpenCounts | None = None  # open loop only

    @property
    def failed(self) -> bool:
        return self.outcome != _core.OK

    def describe(self) -> str:
        if self.outcome == _core.PEER_CLOSED:
            return "the server closed the connection"
        if self.outcome == _core.WRONG_REPLY:
            return (
                f"wrong reply to challenge {self.challenge} (0x{self.challenge:08x}): expected "
                f"{(self.challenge + 1) & 0xFFFFFFFF}, received {self.reply} (0x{self.reply:08x})"
            )
        if self.outcome == _core.OP_TIMEOUT:
            return f"no reply to challenge {self.challenge} within the op timeout"
        name = errno_names.errorcode.get(self.errno, str(self.errno))
        if self.errno in (errno_names.EPIPE, errno_names.ECONNRESET):
            return f"the server closed the connection ({name})"
        return f"socket error {name}: {os.strerror(self.errno)}"


def connect(host: str, port: int, op_timeout_s: float) -> socket.socket:
    """A blocking, Nagle-free connection whose sends and recvs give up after the op timeout."""
    sock = socket.create_connection((host, port), timeout=op_timeout_s)
    sock.settimeout(None)  # blocking for play(); the kernel enforces the timeout below
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seconds = int(op_timeout_s)
    timeval = struct.pack("ll", seconds, int((op_timeout_s - seconds) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    return sock


class Client:
    def __init__(self, client_id: int, latency_ns: memoryview) -> None:
        self.id = client_id
        self.sock: socket.socket | None = None  # the connection of the current run
        self.latency_ns = latency_ns
        self.report: ClientReport | None = None
        # Open loop: how late each send of the last run's window left its schedule (ns).
        self.send_lag_ns: np.ndarray | None = None
        # When the thread entered the last run's loop (read just outside it: the loop
        # itself reads no clock but its latencies'); it then waits for the start instant.
        self.entered_ns = 0

    def play(self, start_ns: int, measure_from_ns: int, deadline_ns: int, stop: memoryview) -> None:
        assert self.sock is not None
        # A fresh seed per run, so no two runs or clients replay one challenge sequence.
        seed = random.getrandbits(32) | 1
        result = _core.play(
            self.sock.fileno(), self.latency_ns, seed, start_ns, deadline_ns, stop, measure_from_ns
        )
        self.report = ClientReport(self.id, *result)

    def play_open(
        self,
        start_ns: int,
        measure_from_ns: int,
        deadline_ns: int,
        stop: memoryview,
        load: OpenLoad,
        op_timeout_s: float,
    ) -> None:
        # numpy here, not at the top: imported before the worker pins itself, its math
        # library's threads would keep every CPU (tests/test_bench.py's pinning test).
        import numpy as np

        assert self.sock is not None
        seed = random.getrandbits(32) | 1
        # Room for the window's sends with margin (a Poisson count); -1 marks no send.
        window_s = (deadline_ns - measure_from_ns) / 1e9
        lags = np.full(int(load.client_rate_ops_s * window_s * 1.5) + 1024, -1, np.int64)
        done, outcome, err, challenge, reply, *counts = _core.play_open(
            self.sock.fileno(),
            self.latency_ns,
            seed,
            start_ns,
            deadline_ns,
            stop,
            measure_from_ns,
            load.client_rate_ops_s,
            _core.ARRIVALS[load.arrivals],
            int(op_timeout_s * 1e9),
            send_lag_ns=lags.data,
            spin_ns=load.spin_ns,
        )
        self.send_lag_ns = lags[lags >= 0]
        self.report = ClientReport(
            self.id, done, outcome, err, challenge, reply, OpenCounts(*counts)
        )

    def connect(self, host: str, port: int, op_timeout_s: float) -> str | None:
        """Open this run's connection and prove it with one exchange; what failed, or None."""
        try:
            self.sock = connect(host, port, op_timeout_s)
        except OSError as e:
            return f"client {self.id} could not connect to {host}:{port}: {e.strerror or e}"
        self.play(0, 0, 0, memoryview(bytearray(1)))
        assert self.report is not None
        if self.report.failed or self.report.completed != 1:
            return f"client {self.id} failed its first exchange: {self.report.describe()}"
        return None

    def disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def shut_down(self) -> None:
        """Unblock a play() stuck in recv; the peer may have closed already (ENOTCONN)."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main(plan: WorkerPlan, pipe: Connection) -> None:
    """Entry point of the worker process."""
    # Pinning comes first, so that every thread the worker starts inherits it.
    os.sched_setaffinity(0, {plan.cpu})
    # The coordinator owns Ctrl-C and the other stop signals, which reach the whole process
    # group (a terminal, `timeout`, `kill -- -PGID`); it ends its workers itself. A worker
    # whose coordinator dies must die too.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        return
    threading.stack_size(CLIENT_STACK_BYTES)
    with open(plan.samples_path, "r+b") as f:
        mapping = mmap.mmap(f.fileno(), 0)
    view = memoryview(mapping)
    samples = view[CONTROL_BYTES:].cast("q")
    clients = [
        Client(i, samples[i * plan.capacity : (i + 1) * plan.capacity]) for i in plan.client_ids
    ]
    team = Team(clients, view[:1], plan.op_timeout_s)
    try:
        pipe.send(("ready",))
        serve(pipe, plan, team)
    except (EOFError, BrokenPipeError):
        pass  # the coordinator is gone; nothing to report to
    finally:
        team.close()
        for client in clients:
            client.disconnect()


def serve(pipe: Connection, plan: WorkerPlan, team: Team) -> None:
    while True:
        message = pipe.recv()
        if message[0] == "close":
            return
        if message[0] == "connect":
            _, host, port = message
            failure = None
            for client in team.clients:
                failure = client.connect(host, port, plan.op_timeout_s)
                if failure:
                    break
            pipe.send(("failed", failure) if failure else ("connected",))
        elif message[0] == "run":
            _, start_ns, measure_from_ns, deadline_ns, *load = message
            team.load = load[0] if load else None
            switches = noise.involuntary_switches()
            reports = team.play_run(start_ns, measure_from_ns, deadline_ns)
            switches = noise.involuntary_switches() - switches
            entered = max(c.entered_ns for c in team.clients)
            pipe.send(("done", reports, switches, team.send_lags(), entered))
        elif message[0] == "disconnect":
            for client in team.clients:
                client.disconnect()
            pipe.send(("disconnected",))


class Team:
    """The worker's client threads, started once and woken for every run.

    Starting thousands of threads per run would take longer than a run on one busy
    CPU, and so would waking them through one shared Condition (they convoy on its lock),
    so each client thread waits on a lock of its own that the run releases.
    """

    def __init__(self, clients: list[Client], stop: memoryview, op_timeout_s: float) -> None:
        self.clients = clients
        self.op_timeout_s = op_timeout_s
        self.load: OpenLoad | None = None  # None: closed loop
        self.stop = stop
        self.start_ns = self.measure_from_ns = self.deadline_ns = 0
        self.closing = False
        # Finished clients report here; a queue, not a shared lock, which thousands of
        # threads ending together would convoy on (seconds per run at 5,000 clients).
        self.finished: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.go = [threading.Lock() for _ in clients]
        for client, go in zip(clients, self.go, strict=True):
            go.acquire()
            threading.Thread(target=self._run, args=(client, go), daemon=True).start()

    def _run(self, client: Client, go: threading.Lock) -> None:
        while True:
            go.acquire()
            if self.closing:
                return
            client.entered_ns = _core.monotonic_ns()
            if self.load is None:
                client.play(self.start_ns, self.measure_from_ns, self.deadline_ns, self.stop)
            else:
                client.play_open(
                    self.start_ns,
                    self.measure_from_ns,
                    self.deadline_ns,
                    self.stop,
                    self.load,
                    self.op_timeout_s,
                )
            self.finished.put(client.id)

    def play_run(
        self, start_ns: int, measure_from_ns: int, deadline_ns: int
    ) -> list[ClientReport | None]:
        """Play one run; once a stop is asked for, unblock any client stuck in recv."""
        self.start_ns, self.measure_from_ns, self.deadline_ns = (
            start_ns,
            measure_from_ns,
            deadline_ns,
        )
        playing = {c.id: c for c in self.clients}
        for go in self.go:
            go.release()
        stop_seen_at = None
        while playing:
            # Sleep through the run: a worker waking every few ms on the client CPU makes
            # a lone client's round trips measurably faster on some VMs. Wake once a second
            # to see a stop, and poll only once the run should be over or was stopped.
            now = _core.monotonic_ns()
            waiting = self.stop[0] or now >= deadline_ns
            timeout = POLL_S if waiting else min((deadline_ns - now) / 1e9, 1.0)
            try:
                del playing[self.finished.get(timeout=timeout)]
                continue
            except queue.Empty:
                pass
            if self.stop[0]:
                now = _core.monotonic_ns()
                stop_seen_at = stop_seen_at or now
                if now - stop_seen_at > STOP_GRACE_S * 1e9:
                    for client in list(playing.values()):
                        client.shut_down()
        return [c.report for c in self.clients]

    def send_lags(self) -> str | None:
        """The last run's send lags over every client, as an encoded Histogram (small
        enough for the pipe, and merged exactly across workers); None in closed loop."""
        if self.load is None:
            return None
        import numpy as np  # after pinning: see Client.play_open

        from volley.numbers import stats

        histogram = stats.Histogram()
        lags = [c.send_lag_ns for c in self.clients if c.send_lag_ns is not None]
        histogram.record(np.concatenate(lags) if lags else np.zeros(0, np.int64))
        return histogram.encode()

    def close(self) -> None:
        self.closing = True
        for go in self.go:
            if go.locked():
                go.release()

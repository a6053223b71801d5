"""The coordinator: the engine that plays runs. It owns the processes (the pinned workers,
a server per run), the shared memory the workers write latencies into, and the signals;
``volley.measure.runs`` decides how many runs to play and when to stop.

A run: a fresh server is started and waited for (or, with ``restart="connections"``, the
one server is kept), every client of every worker connects afresh, all clients start at
one absolute CLOCK_MONOTONIC instant, play a warm-up that is not recorded, then a measured
stretch until a common deadline; the clients disconnect and the server is ended as the
seed says.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import cast

import numpy as np

from volley import _core
from volley.engine import server, worker
from volley.engine.play import OpenRun, PlayedRun, RunFailed, RunRequest
from volley.engine.server import LOOPBACK
from volley.numbers import stats
from volley.numbers.units import Arrivals, IdleStates, Noisy, Restart, Target
from volley.system import machine, noise
from volley.system.cpus import Placement, spread

# Per-client latency buffer per run, capped so the shared mapping stays bounded
# (pages are only backed once written, so the cap is address space, not memory).
MAX_CAPACITY = 1 << 20
MAPPING_BUDGET_SAMPLES = 1 << 29
# How far ahead the common start of a run is fixed: time for every worker to receive the
# run and wake its client threads (start_slack_ns). Measured on the loaded 2-CPU VM of
# bench/scale (load average 15-36), the last client entered its loop 0.2-3 ms after the
# start was fixed with 2-32 clients, 7 ms with 80 and 11 ms with 320 sharing one CPU, where
# a fixed 20 ms floor left 18-24 ms unused in every run. The floor covers a worker woken a
# few ms late on a busy CPU; waking one client thread takes ~65 us there, 0.2 ms is the
# margin; and the slack grows to twice the slowest readiness of the last READY_RUNS runs
# when the machine is slower than that.
START_FLOOR_NS = 5_000_000
THREAD_START_NS = 200_000
READY_FACTOR = 2
READY_RUNS = 8
WORKER_CLOSE_S = 2.0
WORKER_START_S = 30.0  # for the workers to start, plus a second per worker
# Worse failures first: a wrong reply or a stall explains the others, not the other way round.
FAILURE_RANK = {
    _core.WRONG_REPLY: 0,
    _core.OP_TIMEOUT: 1,
    _core.FAILED_ERRNO: 2,
    _core.PEER_CLOSED: 3,
}
# Where a run's wall time goes (PlayedRun.phases_s), in the order they happen: the added
# phases sum to ``total``; ``start_skew`` (the spread of the workers' actual starts) and
# ``start_late`` (how long after the start instant the last worker started) lie inside
# ``start_slack`` and ``warmup_measure`` rather than after them, and ``start_margin`` (how
# long before the start instant the last worker was ready) inside ``start_slack``.
PHASES = (
    "server_start",
    "connect",
    "rendezvous",
    "meter",
    "start_slack",
    "warmup_measure",
    "collect",
    "disconnect",
    "server_stop",
)


class BenchError(RuntimeError):
    """The benchmark could not run at all (no result to report)."""


class Stopwatch:
    """A run's phases, timed with CLOCK_MONOTONIC between the steps of ``play``: never
    inside the hot loop, whose clock reads are its latencies."""

    def __init__(self) -> None:
        self.phases_s: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.phases_s.update(start_skew=0.0, start_late=0.0, start_margin=0.0, total=0.0)
        self.began_ns = self.last_ns = _core.monotonic_ns()

    def lap(self, phase: str) -> None:
        """Everything since the last lap was ``phase``."""
        now = _core.monotonic_ns()
        self.add(phase, now - self.last_ns)
        self.last_ns = now

    def add(self, phase: str, ns: int) -> None:
        self.phases_s[phase] = round(self.phases_s.get(phase, 0.0) + max(ns, 0) / 1e9, 6)

    def finish(self) -> None:
        self.phases_s["total"] = round((_core.monotonic_ns() - self.began_ns) / 1e9, 6)


@dataclass(frozen=True)
class BenchConfig:
    """Everything one measurement needs, checked: built once from the command line
    (``volley.cli.bench.make_config``) and passed whole."""

    server: str  # the binary, or "HOST:PORT" with --connect
    server_args: list[str]
    clients: int
    placement: Placement
    targets: list[Target]
    # No defaults here: the command line fills every field from units.BENCH_DEFAULTS.
    confidence: float
    max_time_s: float
    warmup_s: float
    run_time_s: float
    min_runs: int
    restart: Restart
    noisy: Noisy
    op_timeout_s: float
    startup_timeout_s: float
    port: int | None = None
    connect: tuple[str, int] | None = None  # measure a running server, leave it running
    # Where a server we start listens (given to it as -a unless the loopback), and where the
    # clients connect to it.
    server_address: str = LOOPBACK
    rate_ops_s: float | None = None  # open loop at this offered rate (all clients); None: closed
    arrivals: Arrivals = Arrivals.POISSON  # open loop: the gaps between a client's sends
    # Open loop: how long each client spins before a send rather than sleep to it, at most
    # (worker.spin_for: less where clients share a CPU, none on the server's CPUs).
    spin_ns: int = worker.SPIN_NS
    # Held shallow while measuring (machine.shallow_idle), or left to the machine's policy.
    idle_states: IdleStates = IdleStates.SHALLOW
    # Servers (binary, arguments) compared run by run; empty: just ``server``.
    alternatives: list[tuple[str, list[str]]] = field(default_factory=list)
    # Earlier sittings of this configuration (volley.measure.history): how many, and how much they
    # differ per statistic; None when not looked for.
    earlier_sittings: int | None = None
    between: dict[str, stats.Between] = field(default_factory=dict)
    # A fixed size instead of the stopping rule (RunPlan.runs, RunPlan.duration_s).
    runs: int | None = None
    duration_s: float | None = None
    # A rehearsal (--rehearse): the placement planned on the --topology file, which
    # ``placement`` folds onto this machine's CPUs (cpus.fold); None for a real measurement.
    planned: Placement | None = None
    topology: str | None = None  # the --topology file the CPUs were placed by

    @property
    def rehearsal(self) -> bool:
        return self.planned is not None

    def alternative(self, index: int) -> tuple[str, list[str]]:
        return self.alternatives[index] if self.alternatives else (self.server, self.server_args)


def raise_open_files_limit(clients: int) -> None:
    """Each client is one socket here and one in the server, which inherits our limit."""
    needed = clients + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(
            f"{clients} clients need {needed} open files but the hard limit is {hard}; "
            "raise it (ulimit -Hn, or limits.conf) or use fewer clients"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@contextlib.contextmanager
def engine_for(config: BenchConfig) -> Iterator[Coordinator]:
    """The engine for ``config``, up and catching signals; everything ended on the way out."""
    raise_open_files_limit(config.clients)
    # Until the engine catches them itself, a stop unwinds like Ctrl-C.
    with server.stop_signals(), Coordinator(config) as engine:
        yield engine


@dataclass
class SharedSamples:
    """The memory the workers write latencies into: a control byte (set: every client
    stops), then one row of samples per client."""

    memfd: int
    mapping: mmap.mmap
    capacity: int  # samples per client per run
    control: np.ndarray
    samples: np.ndarray

    @property
    def path(self) -> str:
        """Where a worker opens it: through /proc, as our descriptor."""
        return f"/proc/{os.getpid()}/fd/{self.memfd}"

    @staticmethod
    @contextlib.contextmanager
    def open(clients: int) -> Iterator[SharedSamples]:
        capacity = min(MAX_CAPACITY, max(1024, MAPPING_BUDGET_SAMPLES // clients))
        # An anonymous file: nothing in /dev/shm or /tmp to outlive a killed run.
        memfd = os.memfd_create("volley-samples", os.MFD_CLOEXEC)
        try:
            os.ftruncate(memfd, worker.CONTROL_BYTES + clients * capacity * 8)
            mapping = mmap.mmap(memfd, 0)
        except BaseException:
            os.close(memfd)
            raise
        control = np.frombuffer(mapping, dtype=np.uint8, count=1)
        samples = np.frombuffer(
            mapping, dtype=np.int64, count=clients * capacity, offset=worker.CONTROL_BYTES
        ).reshape(clients, capacity)
        shared = SharedSamples(memfd, mapping, capacity, control, samples)
        del control, samples
        try:
            yield shared
        finally:
            shared.close()

    def close(self) -> None:
        # numpy views keep the mapping exported; a traceback may still hold some, and
        # then the mapping goes when they do.
        self.__dict__.pop("control", None)
        self.__dict__.pop("samples", None)
        with contextlib.suppress(BufferError):
            self.mapping.close()
        with contextlib.suppress(OSError):
            os.close(self.memfd)


@dataclass
class Worker:
    process: multiprocessing.process.BaseProcess
    pipe: Connection
    plan: worker.WorkerPlan


@dataclass
class Coordinator:
    """The engine of ``volley.measure.runs.measure``: a context manager that holds the workers and
    the shared memory for the whole benchmark, and plays one run per ``play``."""

    config: BenchConfig
    workers: list[Worker] = field(default_factory=list)
    stopping: bool = False  # a stop was asked for (Ctrl-C, SIGTERM, SIGHUP)
    kept_server: server.ServerProcess | None = None  # restart="connections": one server
    server_pids: list[int] = field(default_factory=list)
    # Called once every client is connected, before the start instant is fixed: where the
    # hosts of a run on many hosts wait for each other (volley.measure.hosts).
    rendezvous: Callable[[RunRequest], None] | None = None
    # For each recent run, how long after its start was fixed its last client was ready.
    ready_ns: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=READY_RUNS)
    )

    @property
    def interrupted(self) -> bool:
        return self.stopping

    @property
    def restart(self) -> Restart:
        return Restart.CONNECTIONS if self.config.connect else self.config.restart

    def __enter__(self) -> Coordinator:
        config = self.config
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.start = time.monotonic()
        # What the coordinator holds until it ends: its stop-signal handlers and the CPUs'
        # idle states.
        self.held = contextlib.ExitStack()
        try:
            self.held.enter_context(server.stop_signals(self._stop))
            idle_states, _ = self.held.enter_context(machine.shallow_idle(config.idle_states))
            # Read before anything of ours runs: the load average is the machine's own.
            self.environment = machine.environment(
                None if config.connect else server.resolve(config.alternative(0)[0]),
                config.placement.client_cpus,
                [] if config.connect else config.placement.server_cpus,
                idle_states,
            )
            self.meter = noise.NoiseMeter(
                config.placement.client_cpus, [] if config.connect else config.placement.server_cpus
            )
            self.shared = self.held.enter_context(SharedSamples.open(config.clients))
            self.capacity, self.control = self.shared.capacity, self.shared.control
            self._start_workers(self.shared.path)
            if self.restart == Restart.CONNECTIONS and not config.connect:
                self.kept_server = self._start_server()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        close_workers(self.workers)
        if self.kept_server is not None:
            self.kept_server.stop()
            self.kept_server = None
        self.__dict__.pop("control", None)  # a view of the mapping the line below closes
        self.held.close()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        """A stop signal during runs: the clients stop at once and the result is kept."""
        if self.stopping:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for anything
        self.stopping = True
        if hasattr(self, "control"):
            self.control[0] = 1

    def _start_workers(self, samples_path: str) -> None:
        config = self.config
        context = multiprocessing.get_context("spawn")
        groups = spread(config.clients, config.placement.client_cpus)
        for index, client_ids in enumerate(groups):
            plan = worker.WorkerPlan(
                index=index,
                cpu=config.placement.client_cpus[index],
                client_ids=client_ids,
                op_timeout_s=config.op_timeout_s,
                samples_path=samples_path,
                capacity=self.capacity,
            )
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker.main, args=(plan, theirs), name=f"volley-worker-{index}", daemon=True
            )
            process.start()
            theirs.close()
            self.workers.append(Worker(process, ours, plan))
        # Each worker imports numpy and maps the samples: a second or more each where a
        # rehearsal starts dozens of them on one loaded CPU.
        collect(self.workers, WORKER_START_S + len(self.workers), "starting")

    def _start_server(self, alternative: int = 0) -> server.ServerProcess:
        config = self.config
        placement = config.placement
        path, server_args = config.alternative(alternative)
        port = config.port or server.choose_port(config.server_address)
        args = server.substitute(
            server_args, len(placement.server_cpus), len(placement.client_cpus)
        )
        process = server.start(
            server.resolve(path), args, port, placement.server_cpus, config.server_address
        )
        try:
            process.wait_listening(config.startup_timeout_s)
        except BaseException:
            process.stop()
            raise
        self.server_pids.append(process.pid)
        return process

    def play(self, request: RunRequest) -> PlayedRun:
        """One run: a server (fresh, kept, or someone else's), fresh connections, the
        warm-up and the measured stretch, then everything of the run ended."""
        watch = Stopwatch()
        fresh, (host, port) = self._serve(request, watch)
        try:
            if self.stopping:  # asked to stop while the server started: play nothing
                return PlayedRun([])
            failure = self._connect(host, port)
            watch.lap("connect")
            if failure:
                raise RunFailed(f"run {request.index}: {failure}")
            if self.rendezvous is not None:
                self.rendezvous(request)
                watch.lap("rendezvous")
            serving = fresh or self.kept_server
            self.meter.start(
                serving.pid if serving else None, [w.process.pid or 0 for w in self.workers]
            )
            watch.lap("meter")
            reports, switches, send_lags = self._play(request, watch)
            disturbance = self.meter.stop(switches)
            watch.lap("meter")
            worst = first_failure(reports)
            played = PlayedRun(
                latencies=[self.shared.samples[r.client, : r.completed] for r in reports],
                full=any(r.completed == self.capacity for r in reports),
                failure=describe_failure(self.workers, worst, request, serving)
                if worst and not self.stopping
                else None,
                server_pid=serving.pid if serving else None,
                noise=disturbance,
                open=open_run(reports, send_lags),
                phases_s=watch.phases_s,  # filled in until the run has ended
            )
            self._disconnect()
            watch.lap("disconnect")
            return played
        finally:
            if fresh is not None:
                fresh.stop()
                watch.lap("server_stop")
            watch.finish()

    def _serve(
        self, request: RunRequest, watch: Stopwatch
    ) -> tuple[server.ServerProcess | None, tuple[str, int]]:
        """The server this run plays against: a fresh one (returned, to be stopped after
        the run), the kept one, or the running one of --connect; and where it listens."""
        if self.config.connect:
            return None, self.config.connect
        try:
            fresh = None if self.kept_server else self._start_server(request.alternative)
        except server.ServerError as e:
            raise RunFailed(f"run {request.index}: {e}") from None
        watch.lap("server_start")
        serving = self.kept_server or fresh
        assert serving is not None
        return fresh, (serving.host, serving.port)

    def _connect(self, host: str, port: int) -> str | None:
        for w in self.workers:
            w.pipe.send(("connect", host, port))
        # Connecting thousands of clients takes a while; a stalled server is caught by the
        # workers' own op timeout, this bound is only for a worker that hangs.
        timeout = 2 * self.config.op_timeout_s + 30 + self.config.clients * 0.01
        replies = collect(self.workers, timeout, "connecting its clients")
        return next((reply[1] for reply in replies if reply[0] == "failed"), None)

    def _play(
        self, request: RunRequest, watch: Stopwatch
    ) -> tuple[list[worker.ClientReport], int, stats.Histogram | None]:
        """Every client's report, the workers' involuntary context switches, and the open
        loop's send lags over every client (None in closed loop); ``watch`` gets the start
        slack, the warm-up and measured stretch, the collection, and the workers' starts."""
        self.control[0] = 1 if self.stopping else 0  # a failed run's clients set it
        # The client threads that wake in turn on one CPU: a worker's, or in a rehearsal
        # every worker's folded onto it (else 1,280 clients on one CPU start up to 0.6 s
        # late, past the warm-up: bench/scale/README.md).
        per_cpu: collections.Counter[int] = collections.Counter()
        for w in self.workers:
            per_cpu[w.plan.cpu] += len(w.plan.client_ids)
        # Hosts each fix the start in their own clock from one word to go (the rendezvous),
        # so they keep to the planned slack, the same on every host, rather than adapt.
        recent = self.ready_ns if self.rendezvous is None else ()
        fixed_ns = _core.monotonic_ns()
        start_ns = fixed_ns + start_slack_ns(max(per_cpu.values()), recent)
        measure_from_ns = start_ns + int(request.warmup_s * 1e9)
        deadline_ns = measure_from_ns + int(request.measure_s * 1e9)
        run: tuple = ("run", start_ns, measure_from_ns, deadline_ns)
        for w in self.workers:
            load = self._open_load(w)
            w.pipe.send(run if load is None else (*run, load))
        timeout = (deadline_ns - _core.monotonic_ns()) / 1e9 + self.config.op_timeout_s + 10
        done = collect(self.workers, timeout, "playing a run")
        # The start instant and the deadline are absolute: the slack before the one, the
        # warm-up and measured stretch between them, collecting the reports after.
        watch.add("start_slack", start_ns - watch.last_ns)
        watch.add("warmup_measure", deadline_ns - start_ns)
        watch.last_ns = deadline_ns
        watch.lap("collect")
        # A worker whose clients all entered their loops before the start instant started
        # at it (the wake-up inside the loop is not seen: it reads no clock for us).
        entered = [d[4] for d in done]
        self.ready_ns.append(max(entered) - fixed_ns)
        starts = [max(e, start_ns) for e in entered]
        watch.add("start_skew", max(starts) - min(starts))
        watch.add("start_late", max(starts) - start_ns)
        watch.add("start_margin", start_ns - max(entered))
        reports = sorted((r for d in done for r in d[1]), key=lambda r: r.client)
        lags = [stats.Histogram.decode(d[3]) for d in done if d[3] is not None]
        for histogram in lags[1:]:
            lags[0].add(histogram)
        return reports, sum(d[2] for d in done), lags[0] if lags else None

    def spin_ns(self) -> int:
        """The open loop's spin before a send, the least of any worker's clients."""
        loads = [self._open_load(w) for w in self.workers]
        return min((load.spin_ns for load in loads if load is not None), default=0)

    def _open_load(self, w: Worker) -> worker.OpenLoad | None:
        """What one worker's clients play in the open loop; None in the closed loop."""
        config = self.config
        if config.rate_ops_s is None:
            return None
        share = config.rate_ops_s / config.clients
        spin = worker.spin_for(
            config.spin_ns,
            len(w.plan.client_ids),
            share,
            w.plan.cpu in config.placement.server_cpus and not config.connect,
        )
        return worker.OpenLoad(share, config.arrivals, spin)

    def _disconnect(self) -> None:
        for w in self.workers:
            w.pipe.send(("disconnect",))
        collect(self.workers, 10.0, "disconnecting its clients")


def start_slack_ns(threads_on_cpu: int, ready_ns: Iterable[int] = ()) -> int:
    """How long after now a run's clients start together: the floor and the wake-up of the
    most client threads sharing a CPU (a worker's, or in a rehearsal every worker's folded
    onto one), or twice the longest any recent run's clients took to be ready after the
    start was fixed (``ready_ns``), whichever is later."""
    planned = START_FLOOR_NS + threads_on_cpu * THREAD_START_NS
    return max(planned, READY_FACTOR * max(ready_ns, default=0))


def collect(workers: list[Worker], timeout_s: float, doing: str) -> list[tuple]:
    """One message from every worker, in worker order; BenchError if one dies or hangs."""
    replies: dict[int, tuple] = {}
    pending = {w.pipe: i for i, w in enumerate(workers)}
    deadline = time.monotonic() + timeout_s
    while pending:
        left = deadline - time.monotonic()
        ready = wait(list(pending), timeout=max(0.0, min(left, 0.5)))
        if not ready and left <= 0:
            index = next(iter(pending.values()))
            raise BenchError(
                f"worker {index} did not answer within {timeout_s:.0f} s while {doing}"
            )
        for pipe in ready:
            pipe = cast(Connection, pipe)
            index = pending.pop(pipe)
            try:
                replies[index] = pipe.recv()
            except (EOFError, OSError):
                code = workers[index].process.exitcode
                raise BenchError(
                    f"worker {index} (CPU {workers[index].plan.cpu}) "
                    f"died while {doing} (exit code {code})"
                ) from None
    return [replies[i] for i in range(len(workers))]


def close_workers(workers: list[Worker]) -> None:
    """Ask every worker to end; kill those that do not within WORKER_CLOSE_S."""
    for w in workers:
        try:
            w.pipe.send(("close",))
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + WORKER_CLOSE_S
    for w in workers:
        w.process.join(max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.pipe.close()


def describe_failure(
    workers: list[Worker],
    failure: worker.ClientReport,
    request: RunRequest,
    process: server.ServerProcess | None,
) -> str:
    """The failed client, its worker and run, what went wrong, and how the server ended."""
    index, plan = next(
        (i, w.plan) for i, w in enumerate(workers) if failure.client in w.plan.client_ids
    )
    message = (
        f"client {failure.client} (worker {index}, CPU {plan.cpu}), run {request.index}, "
        f"op {failure.completed + 1} measured: {failure.describe()}"
    )
    if process is not None:
        try:
            process.process.wait(timeout=0.2)
        except Exception:
            pass
        status = process.process.poll()
        if status is not None:
            message += f"; the server exited with {server.describe_status(status)}"
    return message


def first_failure(reports: list[worker.ClientReport]) -> worker.ClientReport | None:
    failed = [r for r in reports if r.failed]
    return min(failed, key=lambda r: (FAILURE_RANK.get(r.outcome, 9), r.client), default=None)


def open_run(
    reports: list[worker.ClientReport], send_lags: stats.Histogram | None = None
) -> OpenRun | None:
    """The run's open-loop counts over all its clients, and the percentiles of how late
    their sends left (``send_lags``); None for a closed-loop run."""
    counts = [r.counts for r in reports if r.counts is not None]
    if not counts:
        return None
    lag = None
    if send_lags is not None and send_lags.total:
        p50, p90, p99, most = send_lags.percentiles([50, 90, 99, 100])
        lag = {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(most)}
    return OpenRun(
        send_lag_ns=lag,
        window_s=max(c.window_ns for c in counts) / 1e9,
        due=sum(c.due for c in counts),
        late=sum(c.late for c in counts),
        replied=sum(c.replied for c in counts),
        max_outstanding=max(c.max_outstanding for c in counts),
        backlog_growth=sum(c.backlog_end - c.backlog_start for c in counts),
    )

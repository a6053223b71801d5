"""Clients on many hosts: one volley-bench per host, started and joined by MPI.

An MPI launcher (``mpiexec``, Slurm's ``srun``) starts one volley-bench per host and gives
each its rank. Every rank runs the local engine (``volley.engine.coordinator``) for its share of
the clients, on its own CPUs; rank 0 also runs the measuring loop (``volley.measure.runs``). Per
run, rank 0 sends the run to the others, every rank connects its clients, the ranks wait
for each other (the rendezvous), and each starts the run a fixed delay after the word to
go, in its own monotonic clock. A round trip is timed on the host that made it, so no
clock is ever compared between hosts. Each host then sends rank 0 its run as a summary
(moments, extremes, the histogram in HdrHistogram's encoding; never per-op latencies); rank 0
merges them, applies the stopping rule and writes the one result, one line per host.

Nothing here imports mpi4py unless a launcher started several ranks (``launched_size``).

Every wait for another host is bounded: a host that dies, hangs or cannot reach the
server ends the job with an error naming it (exit 1), rank 0 having written what was
measured before; a host that does not answer is ended with MPI_Abort on the way out.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from volley import __version__
from volley.engine import coordinator, server
from volley.engine.play import OpenRun, PlayedRun, RunFailed, RunRequest
from volley.measure import session
from volley.measure.runs import Measurement, Progress, measure
from volley.numbers import stats
from volley.records.results import FAILED, BenchResult, HostInfo
from volley.system.noise import Noise

# The world size each launcher puts in its ranks' environment (Open MPI; MPICH, Intel MPI
# and Slurm's PMI-2; MVAPICH). Under srun with PMIx only the step's task count says it.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
TAG = 16
POLL_S = 0.0005  # between looks for a message: the start of a run waits at most this long
HELLO_S = 120.0  # for every rank to start (imports on a busy host) and say hello
STOP_S = 15.0  # for a rank to end its workers once told to stop
SLACK_S = 10.0  # on top of the longest a rank could legitimately take
PARTIAL = (
    "partial result, saved after run {runs}: the job ended before it finished "
    "(a host died or was killed, or the launcher ended the job)"
)


class HostsError(RuntimeError):
    """The job cannot go on; ``status`` is the exit status it ends with."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Stopped(Exception):
    """Rank 0 ended the job; it reports why. The other ranks exit quietly."""


class Aborted(Exception):
    """Rank 0 called a run off before it started (a host could not connect)."""


def launched_size(environ: Mapping[str, str] = os.environ) -> int:
    """How many ranks a launcher started, read from the environment it gives them: 1 for
    a plain run (no launcher)."""
    for name in SIZE_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    if "PMIX_RANK" in environ and environ.get("SLURM_STEP_NUM_TASKS", "").isdigit():
        return int(environ["SLURM_STEP_NUM_TASKS"])
    return 1


def share(clients: int, hosts: int, rank: int) -> int:
    """Clients dealt evenly over the hosts: the first ``clients % hosts`` ranks get one more."""
    return clients // hosts + (1 if rank < clients % hosts else 0)


@dataclass(frozen=True)
class Hello:
    """What each rank tells rank 0 before anything runs."""

    rank: int
    host: str
    version: str
    cpus: list[int]  # client CPUs
    problem: str | None = None  # why this rank cannot run (its options, the server)
    status: int = 0  # the exit status the problem asks for


@dataclass(frozen=True)
class HostRun:
    """One host's run as it crosses to rank 0: the ops' moments and their histogram
    (HdrHistogram's compressed encoding), never the ops themselves."""

    n: int
    mean_ns: float
    m2: float
    min_ns: int
    max_ns: int
    histogram: str  # stats.Histogram.encode
    busiest_s: float
    full: bool
    failure: str | None
    noise: Noise | None
    open: OpenRun | None
    interrupted: bool
    phases_s: dict[str, float] | None = None  # where this host's run time went

    @classmethod
    def of(cls, played: PlayedRun, interrupted: bool) -> HostRun:
        record, busiest_s = played.summarized()
        return cls(
            n=record.n,
            mean_ns=record.mean_ns,
            m2=record.m2,
            min_ns=record.min_ns,
            max_ns=record.max_ns,
            histogram=record.histogram.encode(),
            busiest_s=busiest_s,
            full=played.full,
            failure=played.failure,
            noise=played.noise,
            open=played.open,
            interrupted=interrupted,
            phases_s=played.phases_s,
        )

    def record(self) -> stats.LatencyRecord:
        histogram = stats.Histogram.decode(self.histogram)
        return stats.LatencyRecord(
            self.n, self.mean_ns, self.m2, self.min_ns, self.max_ns, histogram
        )


class Team:
    """This process's place in the job: its rank, and bounded messages to the others."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        self.host = socket.gethostname()
        self.names: dict[int, str] = {self.rank: self.host}
        self.cpus: dict[int, list[int]] = {}  # each rank's client CPUs (rank 0 knows)
        self.sending: list[Any] = []  # sends in flight: MPI needs their buffers
        self.lost: set[int] = set()  # ranks that stopped answering
        self.stop_asked = False
        atexit.register(self._end)

    def name(self, rank: int) -> str:
        host = self.names.get(rank)
        return f"{host} (rank {rank})" if host else f"rank {rank}"

    @property
    def others(self) -> list[int]:
        return [r for r in range(self.size) if r != self.rank]

    def send(self, rank: int, kind: str, payload: Any = None) -> None:
        """Without waiting for the receiver: a dead host must not hang the sender."""
        if rank not in self.lost:
            self.sending.append(self.comm.isend((kind, payload), dest=rank, tag=TAG))
            self.sending = [r for r in self.sending if not r.Test()]

    def tell_all(self, kind: str, payload: Any = None) -> None:
        for rank in self.others:
            self.send(rank, kind, payload)

    def receive(self, rank: int, kinds: set[str], timeout_s: float, doing: str) -> tuple[str, Any]:
        """The next message of one of ``kinds`` from ``rank`` (others are left over from a
        run called off, and dropped); HostsError if none comes within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            while not self.comm.iprobe(source=rank, tag=TAG):
                if time.monotonic() > deadline:
                    self.lost.add(rank)
                    raise HostsError(
                        f"{self.name(rank)} sent nothing for {timeout_s:.0f} s while {doing}: "
                        "it died, hangs, or its network is down"
                    )
                time.sleep(POLL_S)
            kind, payload = self.comm.recv(source=rank, tag=TAG)
            if kind in kinds:
                return kind, payload

    def _end(self) -> None:
        # MPI_Finalize waits for every rank: with one gone it would hang. Abort instead,
        # which also ends whatever still runs on the other hosts.
        if self.lost:
            lost = ", ".join(self.name(rank) for rank in sorted(self.lost))
            print(
                f"volley: ending the job with MPI_Abort: {lost} stopped answering", file=sys.stderr
            )
            self.comm.Abort(1)


def join(environ: Mapping[str, str] = os.environ) -> Team | None:
    """This process's team when a launcher started several ranks; None for a plain run."""
    size = launched_size(environ)
    if size < 2:
        return None
    try:
        import mpi4py

        mpi4py.rc.thread_level = "funneled"  # MPI is only ever called from the main thread
        from mpi4py import MPI
    except ImportError:
        raise HostsError(
            f"started as one of {size} MPI ranks, but mpi4py is not installed: "
            "pip install 'volley[mpi]' on every host",
            2,
        ) from None
    team = Team(MPI.COMM_WORLD)
    return team if team.size > 1 else None


def start(
    team: Team,
    config: coordinator.BenchConfig | None,
    dealt: bool = True,
    problem: str | None = None,
    status: int = 0,
) -> list[int]:
    """Every rank says hello; rank 0 checks that all can run the same benchmark and deals
    the clients. Returns each rank's clients; HostsError on rank 0 if the job cannot run
    (naming the hosts), Stopped on the others."""
    if config is not None and problem is None and team.rank == 0 and config.connect is None:
        problem, status = (
            "clients on several hosts measure a server that is already running: "
            "give --connect HOST:PORT (the server's address as the hosts reach it)",
            2,
        )
    cpus = config.placement.client_cpus if config else []
    hello = Hello(team.rank, team.host, __version__, cpus, problem, status)
    if team.rank != 0:
        team.send(0, "hello", hello)
        _, shares = team.receive(0, {"verdict"}, HELLO_S, "waiting for the start")
        if shares is None:
            raise Stopped
        return list(shares)
    hellos = [hello]
    try:
        for rank in team.others:
            hellos.append(team.receive(rank, {"hello"}, HELLO_S, "starting")[1])
    except HostsError:
        team.tell_all("verdict", None)
        raise
    team.names.update({h.rank: h.host for h in hellos})
    team.cpus.update({h.rank: h.cpus for h in hellos})
    try:
        shares = deal(team, hellos, config.clients if config and dealt else None)
    except HostsError:
        team.tell_all("verdict", None)
        raise
    team.tell_all("verdict", shares)
    return shares


def deal(team: Team, hellos: list[Hello], clients: int | None) -> list[int]:
    """Each rank's clients: ``clients`` dealt evenly, or (None) one per client CPU of each."""
    versions = {h.version for h in hellos}
    if len(versions) > 1:
        each = ", ".join(f"{team.name(h.rank)} {h.version}" for h in hellos)
        raise HostsError(
            f"the hosts run different volley versions ({each}); install one version on all",
            2,
        )
    for h in hellos:
        if h.problem:
            raise HostsError(f"{team.name(h.rank)}: {h.problem}", h.status)
    if clients is None:
        return [len(h.cpus) for h in hellos]
    if clients < len(hellos):
        raise HostsError(
            f"--clients {clients} leaves some of the {len(hellos)} hosts without a client; "
            "give at least one per host",
            2,
        )
    return [share(clients, len(hellos), h.rank) for h in hellos]


def local_config(
    config: coordinator.BenchConfig, shares: list[int], rank: int
) -> coordinator.BenchConfig:
    """This rank's part of the benchmark: its clients, and its part of an open-loop rate."""
    clients = shares[rank]
    rate = config.rate_ops_s
    return replace(
        config,
        clients=clients,
        rate_ops_s=None if rate is None else rate * clients / sum(shares),
    )


def benchmark(
    team: Team,
    config: coordinator.BenchConfig,
    dealt: bool,
    progress: Progress | None = None,
    save: Callable[[BenchResult], None] | None = None,
) -> BenchResult | None:
    """The benchmark on every host: the result on rank 0, None on the others. ``dealt``:
    ``config.clients`` is the total to deal (else each host one per client CPU); ``save``
    is called on rank 0 with a partial result after every run, so that a job the launcher
    kills (Open MPI ends every rank when one dies) still leaves the runs before."""
    shares = start(team, config, dealt)
    mine = local_config(config, shares, team.rank)
    if team.rank != 0:
        follow(team, mine)
        return None
    progress = progress or Progress()
    try:
        with coordinator.engine_for(mine) as local:
            engine = Hosts(team, local, config, shares, Measurement(), save)
            engine.local_result = functools.partial(session.result, local)
            local.rendezvous = engine.rendezvous
            measure(engine, session.run_plan(config), progress, measurement=engine.measurement)
            return engine.result()
    finally:
        progress.done()
        stop(team)


def stop(team: Team) -> None:
    """Rank 0: tell every other rank to stop, and wait until each has ended its workers."""
    team.tell_all("stop")
    for rank in team.others:
        if rank not in team.lost:
            try:
                team.receive(rank, {"stopped"}, STOP_S, "stopping")
            except HostsError:
                pass  # lost: ended by MPI_Abort on the way out


def connect_bound_s(config: coordinator.BenchConfig) -> float:
    """The longest a rank may take to connect its clients beyond another: a connect that
    stalls is caught by the clients' op timeout."""
    return 2 * config.op_timeout_s + config.clients * 0.01 + SLACK_S


@dataclass
class Hosts:
    """Rank 0's engine for ``runs.measure``: plays each run on every host together
    and merges what they measured."""

    team: Team
    local: coordinator.Coordinator
    whole: coordinator.BenchConfig  # the benchmark over all hosts
    shares: list[int]
    measurement: Measurement
    save: Callable[[BenchResult], None] | None = None
    # Rank 0's own result of the merged measurement (session.result on the local engine),
    # to which the hosts are added.
    local_result: Callable[[Measurement], BenchResult] | None = None
    elsewhere_interrupted: bool = False
    started: bool = False  # the current run's word to go was given
    records: dict[int, stats.LatencyRecord] = dataclasses.field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.local.interrupted or self.elsewhere_interrupted

    def play(self, request: RunRequest) -> PlayedRun:
        if self.save and self.measurement.runs:
            self.measurement.settle(self.whole.confidence, self.whole.between)
            partial = self.result()
            error = PARTIAL.format(runs=len(self.measurement.runs))
            self.save(replace(partial, status=FAILED, error=error))
        self.team.tell_all("run", request)
        self.started = False
        try:
            played = self.local.play(request)
        finally:
            if not self.started:  # our own clients could not connect, or we were stopped
                self.team.tell_all("abort")
        if not self.started:
            return played
        began = time.monotonic()
        run = self.gather(request, played)
        if run.phases_s is not None:  # waiting for the other hosts' runs, and merging them
            gather_s = round(time.monotonic() - began, 6)
            run.phases_s["gather"] = gather_s
            run.phases_s["total"] = round(run.phases_s.get("total", 0.0) + gather_s, 6)
        return run

    def rendezvous(self, request: RunRequest) -> None:
        """Every host has connected its clients: give the word to go, or call the run off."""
        failures = []
        for rank in self.team.others:
            try:
                kind, text = self.team.receive(
                    rank, {"ready", "failed"}, self.connect_s(request), "connecting"
                )
            except HostsError as e:
                failures.append(str(e))
                continue
            if kind == "failed":
                failures.append(f"{self.team.name(rank)}: {text}")
        if failures:
            raise RunFailed(failures[0])
        self.team.tell_all("go")
        self.started = True

    def connect_s(self, request: RunRequest) -> float:
        # Before the first run the other hosts are still starting their workers.
        return connect_bound_s(self.local.config) if request.index > 1 else HELLO_S

    def gather(self, request: RunRequest, played: PlayedRun) -> PlayedRun:
        """Every host's part of the run, merged into one."""
        config = self.local.config
        parts = {0: HostRun.of(played, self.local.interrupted)}
        timeout_s = config.op_timeout_s + SLACK_S
        for rank in self.team.others:
            try:
                kind, part = self.team.receive(rank, {"played", "failed"}, timeout_s, "playing")
            except HostsError as e:
                raise RunFailed(f"run {request.index}: {e}") from None
            if kind == "failed":
                raise RunFailed(f"{self.team.name(rank)}: {part}")
            parts[rank] = part
        merged = stats.LatencyRecord()
        for part in parts.values():
            merged.merge(part.record())
        failures = [
            f"{self.team.name(rank)}: {p.failure}" for rank, p in parts.items() if p.failure
        ]
        disturbed = [p.noise for p in parts.values() if p.noise and p.noise.disturbed]
        self.elsewhere_interrupted |= any(p.interrupted for p in parts.values())
        run = PlayedRun(
            latencies=[],
            full=any(p.full for p in parts.values()),
            failure=failures[0] if failures else None,
            server_pid=played.server_pid,
            noise=disturbed[0] if disturbed else played.noise,
            open=merge_open([p.open for p in parts.values() if p.open]),
            record=merged,
            busiest_s=max(p.busiest_s for p in parts.values()),
            phases_s=slowest_phases([p.phases_s for p in parts.values()]),
        )
        if not session.run_plan(self.whole).drops(run):
            for rank, part in parts.items():
                self.records.setdefault(rank, stats.LatencyRecord()).merge(part.record())
        return run

    def result(self) -> BenchResult:
        assert self.local_result is not None
        result = self.local_result(self.measurement)
        hosts = []
        for rank in range(self.team.size):
            record = self.records.get(rank, stats.LatencyRecord())
            hosts.append(
                HostInfo(
                    host=self.team.names.get(rank, "?"),
                    rank=rank,
                    cpus=self.team.cpus.get(rank, []),
                    clients=self.shares[rank],
                    ops=record.n,
                    mean_ns=record.value("mean"),
                    p99_ns=record.value("p99"),
                )
            )
        load = result.load
        if load.rate_ops_s is not None:  # offered by all hosts' clients
            load = replace(load, rate_ops_s=self.whole.rate_ops_s)
        return replace(result, clients=sum(self.shares), hosts=hosts, load=load)


def slowest_phases(parts: list[dict[str, float] | None]) -> dict[str, float] | None:
    """A run's phases over its hosts: each the longest any host took (the run waits for
    the slowest; each host's start skew is within its own clock, never across hosts)."""
    known = [p for p in parts if p is not None]
    if not known:
        return None
    return {name: max(p.get(name, 0.0) for p in known) for name in known[0]}


def merge_open(parts: list[OpenRun]) -> OpenRun | None:
    """One open-loop run's counts over the hosts' clients."""
    if not parts:
        return None
    return OpenRun(
        window_s=max(p.window_s for p in parts),
        due=sum(p.due for p in parts),
        late=sum(p.late for p in parts),
        replied=sum(p.replied for p in parts),
        max_outstanding=max(p.max_outstanding for p in parts),
        backlog_growth=sum(p.backlog_growth for p in parts),
    )


def follow(team: Team, config: coordinator.BenchConfig) -> None:
    """A rank other than 0: play each run rank 0 sends, send back its summary, until told
    to stop; then end the workers and say so."""
    wait_s = config.warmup_s + config.run_time_s + connect_bound_s(config) + SLACK_S
    try:
        with coordinator.engine_for(config) as local:

            def rendezvous(request: RunRequest) -> None:
                team.send(0, "ready")
                kind, _ = team.receive(0, {"go", "abort", "stop"}, wait_s, "waiting to start")
                team.stop_asked = kind == "stop"
                if kind != "go":
                    raise Aborted

            local.rendezvous = rendezvous
            timeout_s = HELLO_S  # before the first run, rank 0 is still starting its workers
            while not team.stop_asked:
                kind, request = team.receive(0, {"run", "stop"}, timeout_s, "waiting for a run")
                timeout_s = wait_s
                if kind == "stop":
                    break
                try:
                    played = local.play(request)
                except Aborted:
                    continue
                except (RunFailed, coordinator.BenchError, server.ServerError) as e:
                    team.send(0, "failed", str(e))
                    continue
                team.send(0, "played", HostRun.of(played, local.interrupted))
    except (coordinator.BenchError, server.ServerError, OSError) as e:
        # Our engine could not start or broke: rank 0 hears it at its next run.
        team.send(0, "failed", str(e))
        while not team.stop_asked:
            kind, _ = team.receive(0, {"run", "stop"}, HELLO_S, "waiting to stop")
            team.stop_asked = kind == "stop"
            if kind == "run":
                team.send(0, "failed", str(e))
    team.send(0, "stopped")
    for request in team.sending:  # the last words must leave before MPI_Finalize
        request.Wait()

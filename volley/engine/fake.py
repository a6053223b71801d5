"""An engine with no sockets and no processes, for the tests: it plays what it is scripted
to play, on a clock it advances itself.

It answers ``play`` as the coordinator does (``volley.engine.play.Engine``): each run's
latencies come from a script (one mean for every run, one per alternative, or any function
of the run asked for), a run may raise (``RunFailed``, ``KeyboardInterrupt``), end with a
client's failure, or be the one during which a stop was asked for. ``run_seconds`` of its
``FakeClock`` pass per run, so a loop given that clock sees its time bounds reached in
microseconds. ``session`` stands it in for the coordinator of one benchmark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from volley.engine import worker
from volley.engine.coordinator import BenchConfig
from volley.engine.play import PlayedRun, RunRequest
from volley.system import machine
from volley.system.cpus import spread

# A run's mean latency (ns): one for every run, one per alternative, or per request.
Script = float | Sequence[float] | Callable[[RunRequest], float]
# Which runs an event happens in: a run index (of alternative 0) or (alternative, index).
Runs = dict[int | tuple[int, int], object]
# What a run costs besides its warm-up and measured stretch (a server's start, connecting).
OVERHEAD_S = 0.05


class FakeClock:
    """A monotonic clock that moves only when told to (``measure(..., clock=...)``)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def per_run(*alternatives: Sequence[float]) -> Callable[[RunRequest], float]:
    """A script from each alternative's run means in order: run i of alternative a has
    mean ``alternatives[a][i - 1]``."""
    return lambda request: float(alternatives[request.alternative][request.index - 1])


def _find(events: dict | set, request: RunRequest) -> object:
    """What ``events`` holds for ``request``'s run: keyed by (alternative, index), or by
    index alone for alternative 0."""
    keys = [(request.alternative, request.index)] + (
        [request.index] if not request.alternative else []
    )
    for key in keys:
        if key in events:
            return events[key] if isinstance(events, dict) else True
    return None


@dataclass
class FakeEngine:
    """Plays ``ops`` ops per client per run, spread evenly over ± ``spread`` of the run's
    mean so that the run's mean is exactly the scripted one."""

    latency_ns: Script = 100_000.0
    clients: int = 1
    ops: int = 16
    spread: float = 0.0
    clock: FakeClock = field(default_factory=FakeClock)
    overhead_s: float = OVERHEAD_S
    # run -> the exception its play raises (RunFailed: its server did not start).
    raises: dict = field(default_factory=dict)
    # run -> a client's failure said for a person (a wrong reply, a timeout).
    failures: dict = field(default_factory=dict)
    # runs during which a stop is asked for (Ctrl-C): played, then ``interrupted``.
    stops: set = field(default_factory=set)
    # runs whose client fills its buffer (PlayedRun.full).
    full: set = field(default_factory=set)
    interrupted: bool = False
    requests: list[RunRequest] = field(default_factory=list)

    def mean_ns(self, request: RunRequest) -> float:
        script = self.latency_ns
        if callable(script):
            return float(script(request))
        if isinstance(script, Sequence):
            return float(script[request.alternative])
        return float(script)

    def play(self, request: RunRequest) -> PlayedRun:
        self.requests.append(request)
        self.clock.advance(self.overhead_s + request.warmup_s + request.measure_s)
        raised = _find(self.raises, request)
        if isinstance(raised, BaseException):
            raise raised
        mean = self.mean_ns(request)
        offsets = np.linspace(-self.spread, self.spread, self.ops) * mean
        ops = np.round(mean + offsets).astype(np.int64)
        if _find(self.stops, request):
            self.interrupted = True
        failure = _find(self.failures, request)
        return PlayedRun(
            [ops.copy() for _ in range(self.clients)],
            full=bool(_find(self.full, request)),
            failure=None if failure is None else str(failure),
            server_pid=len(self.requests),
        )


@dataclass
class _Process:
    pid: int


@dataclass
class _Worker:
    """What a result records of a coordinator's worker."""

    process: _Process
    plan: worker.WorkerPlan


@dataclass
class FakeCoordinator(FakeEngine):
    """A ``FakeEngine`` that also says what a result records of its coordinator: the
    configuration, its workers' CPUs, the machine (read, not measured), its start."""

    config: BenchConfig | None = None
    start: float = 0.0
    started_at: str = ""
    workers: list[_Worker] = field(default_factory=list)
    environment: machine.Environment | None = None

    @property
    def restart(self) -> str:
        return self.config.restart if self.config else "server"

    def spin_ns(self) -> int:
        return 0

    def attach(self, config: BenchConfig) -> FakeCoordinator:
        """Stand in for the coordinator of ``config``: its clients, its workers' CPUs."""
        self.config, self.clients, self.start = config, config.clients, self.clock()
        # The wall clock's now: a history keeps sittings by their age.
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        cpus = config.placement.client_cpus
        self.workers = [
            _Worker(
                _Process(1000 + i),
                worker.WorkerPlan(i, cpus[i], ids, config.op_timeout_s, "", self.ops),
            )
            for i, ids in enumerate(spread(config.clients, cpus))
        ]
        self.environment = machine.environment(None, cpus, config.placement.server_cpus)
        return self


def starter(
    engine: FakeCoordinator,
) -> Callable[[BenchConfig], contextlib.AbstractContextManager[FakeCoordinator]]:
    """What ``volley.measure.session.start_engine`` is replaced with to play ``engine``."""

    @contextlib.contextmanager
    def start(config: BenchConfig) -> Iterator[FakeCoordinator]:
        yield engine.attach(config)

    return start

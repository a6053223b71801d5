"""The measuring loop: runs until every precision target is met, with a stopping rule that
keeps its coverage although it looks after every run.

A run is the unit of evidence: a fresh server (or fresh connections to the same one), a
warm-up that is played but not recorded, then a measured stretch. The loop only decides:
what the next run is, which failure to report, when to stop. Playing a run (processes,
sockets, shared memory) belongs to an ``Engine``, so that tests drive this loop with a fake.

The stopping rule is Stein's two-stage procedure with a sequential tail. The first
``min_runs`` runs are a pilot: their spread fixes how many runs in all the targets need
(a count decided before it can see the data it will judge), and from there the loop stops
at the first run at which every interval is within its target. Stopping at the first
narrow-enough interval from the start would stop preferentially on runs that happen to
agree, and undercover; the pilot makes that early luck unusable.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from volley import stats
from volley.results import FAILED, INTERRUPTED, NOT_SIGNIFICANT, SIGNIFICANT, RunSummary
from volley.units import Target

# Ten pilot runs: fewer and the pilot's variance is too rough to plan on (the t quantile
# for 9 degrees of freedom is already 2.26); more and a quiet server pays for nothing.
MIN_RUNS = 10
SHOWN = ("mean", "p99")  # always in the progress line, besides any targeted statistic


class RunFailed(RuntimeError):
    """A run could not be played (its server did not start, its clients could not connect)."""


@dataclass(frozen=True)
class RunPlan:
    """The policy of one benchmark: what to reach, and the bounds."""

    targets: list[Target]
    confidence: float = 0.95
    max_time_s: float = 180.0
    warmup_s: float = 0.25
    run_time_s: float = 0.5
    min_runs: int = MIN_RUNS


@dataclass(frozen=True)
class RunRequest:
    index: int  # 1-based
    warmup_s: float
    measure_s: float


@dataclass(frozen=True)
class OpenRun:
    """An open-loop run's load counts, summed over its clients."""

    window_s: float  # the measured window
    due: int  # words scheduled in it
    late: int  # of those, sent more than the tolerance late
    replied: int  # replies received in it
    max_outstanding: int  # on one connection
    backlog_growth: int  # words due and unanswered at the window's end, minus at its start


@dataclass
class PlayedRun:
    """What an engine hands back from one run."""

    latencies: list[npt.NDArray[np.int64]]  # per client: its recorded ops, in order
    full: bool = False  # a client filled its buffer and stopped early
    failure: str | None = None  # the worst thing that went wrong, said for a person
    server_pid: int | None = None
    open: OpenRun | None = None  # None: played closed-loop


class Engine(Protocol):
    @property
    def interrupted(self) -> bool: ...

    def play(self, request: RunRequest) -> PlayedRun: ...


@dataclass(frozen=True)
class RunProgress:
    """What a progress display needs after each run."""

    run: int
    planned: int  # runs the stopping rule wants at least
    n: int
    intervals: dict[str, stats.Interval]  # the shown and targeted statistics
    targets_ns: dict[str, float]  # half-width each targeted statistic must reach
    elapsed_s: float


class Progress:
    """Receives one RunProgress per run; the silent default."""

    def run(self, progress: RunProgress) -> None:
        pass

    def done(self) -> None:
        pass


@dataclass
class Measurement:
    status: str
    error: str | None
    record: stats.LatencyRecord
    runs: list[RunSummary] = field(default_factory=list)
    intervals: dict[str, stats.Interval] = field(default_factory=dict)
    measured_s: float = 0.0


def summarize(
    latency: npt.NDArray[np.int64], histogram: stats.Histogram, played: PlayedRun
) -> RunSummary:
    p50, p90, p99, p999 = histogram.percentiles(stats.PERCENTILES)
    summary = RunSummary(
        n=len(latency),
        duration_s=round(max((float(lat.sum()) for lat in played.latencies), default=0) / 1e9, 6),
        mean_ns=float(latency.mean()),
        p50_ns=float(p50),
        p90_ns=float(p90),
        p99_ns=float(p99),
        p99_9_ns=float(p999),
        server_pid=played.server_pid,
    )
    load = played.open
    if load is None:
        return summary
    # Open loop: ops overlap, so the run lasted its window, not the sum of its latencies.
    return dataclasses.replace(
        summary,
        duration_s=round(load.window_s, 6),
        achieved_ops_s=load.replied / load.window_s if load.window_s else 0.0,
        due=load.due,
        late=load.late,
        max_outstanding=load.max_outstanding,
        backlog_growth=load.backlog_growth,
    )


def intervals(
    record: stats.LatencyRecord,
    runs: list[RunSummary],
    confidence: float,
    statistics: tuple[str, ...] = stats.STATISTICS,
) -> dict[str, stats.Interval]:
    """An interval for each statistic: centred on all ops, as wide as the spread between
    runs says."""
    return {
        name: stats.run_interval(record.value(name), [r.value(name) for r in runs], confidence)
        for name in statistics
    }


@dataclass(frozen=True)
class Verdict:
    met: bool  # every target is met and the planned runs are done: stop
    planned: int
    intervals: dict[str, stats.Interval]  # of the targeted statistics
    targets_ns: dict[str, float]  # the half-width each must reach


@dataclass
class StoppingRule:
    """Stein's two-stage rule with a sequential tail, judged after every run."""

    targets: list[Target]
    confidence: float = 0.95
    min_runs: int = MIN_RUNS
    planned: int = 0

    def __post_init__(self) -> None:
        self.pilot = self.planned = max(self.min_runs, 2)

    def judge(self, centres: dict[str, float], values: dict[str, list[float]]) -> Verdict:
        """``centres``: each targeted statistic over all ops; ``values``: its per-run values,
        one per run so far."""
        runs = len(next(iter(values.values())))
        if runs == self.pilot:
            self.planned = max(
                stats.planned_runs(
                    values[t.statistic], t.half_width_ns(centres[t.statistic]), self.confidence
                )
                for t in self.targets
            )
        found = {
            t.statistic: stats.run_interval(
                centres[t.statistic], values[t.statistic], self.confidence
            )
            for t in self.targets
        }
        targets_ns = {t.statistic: t.half_width_ns(found[t.statistic].centre) for t in self.targets}
        met = runs >= self.planned and all(
            math.isfinite(iv.half_width) and iv.half_width <= targets_ns[name]
            for name, iv in found.items()
        )
        return Verdict(met, self.planned, found, targets_ns)


def measure(
    engine: Engine,
    plan: RunPlan,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Measurement:
    """Play runs until every target is met, ``max_time_s`` would be passed, a run fails or
    the engine is interrupted. Raises RunFailed only if the first run could not be played
    at all; otherwise what was measured until a failure or interruption is returned."""
    progress = progress or Progress()
    record = stats.LatencyRecord()
    runs: list[RunSummary] = []
    rule = StoppingRule(plan.targets, plan.confidence, plan.min_runs)
    shown = tuple(dict.fromkeys([*SHOWN, *(t.statistic for t in plan.targets)]))
    measure_s, last_run_s = plan.run_time_s, 0.0
    status, error = NOT_SIGNIFICANT, None
    start = clock()
    while True:
        if engine.interrupted:
            status = INTERRUPTED
            break
        # The bound holds for the whole benchmark: no run starts that would end past it.
        if runs and clock() - start + last_run_s > plan.max_time_s:
            break
        began = clock()
        try:
            played = engine.play(RunRequest(len(runs) + 1, plan.warmup_s, measure_s))
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, keep what we have
            status = INTERRUPTED
            break
        except RunFailed as e:
            if not runs:
                raise  # nothing measured at all: the benchmark could not run
            status, error = FAILED, str(e)
            break
        last_run_s = clock() - began
        latency = np.concatenate(played.latencies) if played.latencies else np.zeros(0, np.int64)
        if len(latency):
            histogram = stats.Histogram()
            histogram.record(latency)
            record.add(latency, histogram)
            runs.append(summarize(latency, histogram, played))
        if played.failure:
            status, error = FAILED, played.failure
            break
        if engine.interrupted:
            status = INTERRUPTED
            break
        if not runs:
            continue
        if played.full:
            # A client filled its buffer before the run's end: later runs are shorter.
            measure_s = min(measure_s, 0.8 * runs[-1].duration_s)
        verdict = rule.judge(
            {t.statistic: record.value(t.statistic) for t in plan.targets},
            {t.statistic: [r.value(t.statistic) for r in runs] for t in plan.targets},
        )
        progress.run(
            RunProgress(
                run=len(runs),
                planned=verdict.planned,
                n=record.n,
                intervals={**intervals(record, runs, plan.confidence, shown), **verdict.intervals},
                targets_ns=verdict.targets_ns,
                elapsed_s=clock() - start,
            )
        )
        if verdict.met:
            status = SIGNIFICANT
            break
    return Measurement(
        status=status,
        error=error,
        record=record,
        runs=runs,
        intervals=intervals(record, runs, plan.confidence),
        measured_s=sum(r.duration_s for r in runs),
    )

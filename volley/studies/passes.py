"""Sweeps in passes (``order = "interleaved"``, SweepOrder.IN_PASSES): randomized multiple
interleaved trials (Abedi and Brecht, ICPE 2017) over a sweep's points.

A sequential sweep plays all of one point's runs, then all of the next point's, so a machine
that drifts during the sweep (another tenant, the temperature) lands on some points and not
others. Here each pass plays one run of every point not yet done, in a fresh random order
(``random.Random(seed)``; the seed is in every record), so drift lands on every point alike.

One run of a point is one volley-bench process with ``--max-time`` set to one run's length
(warm-up plus run time): volley-bench starts no run that would end past its max-time, so it
plays exactly one, and its JSON holds that run. That run is played by the measuring loop
(``volley.measure.runs``), whose policy holds for it: its length drawn around the run time,
a disturbed run kept, dropped or failed as volley-bench's --noisy says. The sweep keeps each
point's runs and judges them with the loop's own policy for the plan each process is given
(``runs.StoppingRule.of`` and ``StoppingRule.look``: the first ``min_runs`` runs are Stein's
pilot that plans how many runs the targets need, then the point stops at the first run with
every interval within its target), so a point's verdict means what it means in a sequential
sweep. A point is done when its targets are met, when its runs have used its ``max-time``
(``runs.starts``: no run starts that would end past it; a run's time is its volley-bench's
elapsed time, which includes starting workers and server afresh: the price of interleaving,
measured in the README's Sweeps section), or when a run fails (a first run that fails gives
the point no result, as volley-bench gives none); then its record (its runs merged, and the
runs dropped as disturbed) is appended to ``results.jsonl`` and it leaves the later passes.
One part of the loop's policy does not carry over between processes: a run that filled a
client's buffer shortens later runs only within its own process.

Every run is appended to ``runs.jsonl`` (``volley.records.store``) as soon as it ends, so
``--resume`` goes on with the unfinished points and the runs they already have. A pass is
bounded: one run per point, each stopped if it takes longer than a run plus the timeouts.

Merging runs is exact: the moments merge, and the runs' histograms (``latency_ns.histogram``)
add up to the histogram of all their ops, from which the percentiles are read as volley-bench
reads its own.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from volley.measure.runs import RunPlan, StoppingRule, starts
from volley.numbers import stats
from volley.numbers.units import BENCH_DEFAULTS, parse_confidence, parse_target
from volley.records import store
from volley.records.experiment import POINT_OVERHEAD_S, Experiment, Point
from volley.records.results import (
    CLOSED,
    EXIT_CODES,
    FAILED,
    NOT_SIGNIFICANT,
    SIGNIFICANT,
    BenchResult,
    LatencySummary,
    LoadInfo,
    RunSummary,
)
from volley.records.store import RUNS_NAME, SweepInfo, SweepRecord
from volley.studies.sweep import (
    HANG_SLACK_S,
    Plan,
    Runner,
    Stopper,
    Summary,
    SweepProgress,
    bench_command,
    now,
    record_for,
)


@dataclass
class PointRuns:
    """An interleaved point: its runs so far (one volley-bench result each), judged by the
    measuring loop's own policy for ``plan`` (``runs.StoppingRule.of``, ``runs.starts``)."""

    point: Point
    plan: RunPlan  # what each of its volley-bench processes is asked for
    results: list[BenchResult] = field(default_factory=list)  # those with kept runs
    dropped: list[RunSummary] = field(default_factory=list)  # of results without kept runs
    used_s: float = 0.0  # the elapsed time of its runs
    last_s: float = 0.0
    latest: SweepRecord | None = None  # its last run
    status: str | None = None  # None: not done

    rule: StoppingRule = field(init=False)

    def __post_init__(self) -> None:
        self.rule = StoppingRule.of(self.plan)

    def add(self, record: SweepRecord) -> None:
        """Take one run and decide whether the point is done."""
        self.latest, result = record, record.result
        if result is not None and result.runs:
            self.results.append(result)
        elif result is not None:  # its run disturbed and dropped (--noisy drop)
            self.dropped += result.dropped_runs
        if record.status == FAILED or result is None:
            self.status = FAILED
            return
        # At least a millisecond a run, so that max-time ends a point however fast its runs.
        self.last_s = max(result.elapsed_s, 1e-3)
        self.used_s += self.last_s
        if self.results and self.met():
            self.status = SIGNIFICANT
        elif not starts(self.used_s, self.last_s, self.plan.max_time_s):
            self.status = NOT_SIGNIFICANT

    def met(self) -> bool:
        """The stopping rule's verdict on the runs so far (it must see every run in turn)."""
        merged = merge(self.results, NOT_SIGNIFICANT, None)
        assert merged.latency_ns is not None
        return self.rule.look(merged.latency_ns.value, merged.runs).met

    def record(self, sweep: SweepInfo) -> SweepRecord:
        """The point's line in results.jsonl, once it is done."""
        assert self.status is not None and self.latest is not None
        if not self.results:  # no run measured anything: its last run's record is the point's
            latest = self.latest.result
            if latest is not None:
                latest = dataclasses.replace(latest, dropped_runs=self.dropped)
            return dataclasses.replace(self.latest, sweep=sweep, result=latest)
        failed = self.status == FAILED
        merged = merge(self.results, self.status, self.latest.failure if failed else None)
        merged = dataclasses.replace(merged, dropped_runs=[*self.dropped, *merged.dropped_runs])
        exit_status = self.latest.exit_status if failed else EXIT_CODES[self.status]
        return SweepRecord(self.point, exit_status, sweep, merged)


def merge(results: Sequence[BenchResult], status: str, error: str | None) -> BenchResult:
    """One point's result from the results of its one-run volley-bench processes."""
    first = results[0]
    runs = [run for result in results for run in result.runs]
    n = sum(result.n for result in results)
    measured_s = sum(result.measured_s for result in results)
    load = first.load
    if load.model != CLOSED:
        assert load.rate_ops_s is not None and load.arrivals is not None
        load = LoadInfo.from_runs(load.rate_ops_s, load.arrivals, runs, load.late_tolerance_ns or 0)
    return dataclasses.replace(
        first,
        status=status,
        error=error,
        n=n,
        rounds=len(runs),
        ci_batches=len(runs),
        elapsed_s=round(sum(result.elapsed_s for result in results), 3),
        measured_s=round(measured_s, 3),
        throughput_ops_s=n / measured_s if measured_s else 0.0,
        latency_ns=merge_latency(results, runs),
        runs=runs,
        dropped_runs=[run for result in results for run in result.dropped_runs],
        load=load,
        # The merged intervals (merge_latency) draw on these runs alone, whatever history
        # the first one-run process saw: claiming its earlier sittings would be false.
        earlier_sittings=None,
        between_sittings_ns={},
        history=None,
    )


def merge_latency(results: Sequence[BenchResult], runs: list[RunSummary]) -> LatencySummary:
    """Exactly what one volley-bench of all these runs would report: the moments merged
    (Chan's update), the percentiles read from the runs' histograms added together."""
    summaries = [(r.n, r.latency_ns) for r in results if r.latency_ns is not None]
    n = sum(count for count, _ in summaries)
    mean = sum(count * s.mean for count, s in summaries) / n
    m2 = sum((count - 1) * s.stddev**2 + count * (s.mean - mean) ** 2 for count, s in summaries)
    histogram = stats.Histogram()
    for _, s in summaries:
        # One-run results come from this volley's volley-bench: format 4, with a histogram.
        assert s.histogram is not None, "a one-run result without its histogram"
        histogram.add(stats.Histogram.decode(s.histogram))
    wanted = stats.distribution_percentiles()
    curve = dict(zip(wanted, histogram.percentiles(wanted).tolist(), strict=True))
    centres = {"mean": mean} | {
        name: float(histogram.percentiles([stats.percentile_of(name)])[0])
        for name in stats.PERCENTILE_NAMES
    }
    confidence = results[0].confidence
    found = {
        name: stats.run_interval(centre, [run.value(name) for run in runs], confidence)
        for name, centre in centres.items()
    }
    return LatencySummary(
        mean=mean,
        stddev=math.sqrt(m2 / (n - 1)) if n > 1 else 0.0,
        ci_low=found["mean"].low,
        ci_high=found["mean"].high,
        min=min(s.min for _, s in summaries),
        max=max(s.max for _, s in summaries),
        p50=centres["p50"],
        p90=centres["p90"],
        p99=centres["p99"],
        p99_9=centres["p99.9"],
        distribution=list(curve.items()),
        intervals={name: (iv.low, iv.high) for name, iv in found.items() if name != "mean"},
        histogram=histogram.encode(),
    )


def plan_for(experiment: Experiment) -> RunPlan:
    """What each point's volley-bench is asked for: its target, confidence and bounds; the
    pilot is volley-bench's default, as an experiment cannot set another."""
    options = experiment.options
    return RunPlan(
        targets=[parse_target(options.get("precision", BENCH_DEFAULTS["precision"]))],
        confidence=parse_confidence(options.get("confidence", BENCH_DEFAULTS["confidence"])),
        max_time_s=experiment.seconds("max-time"),
        warmup_s=experiment.seconds("warmup"),
        run_time_s=experiment.seconds("run-time"),
    )


def restore(states: dict[Point, PointRuns], runs_path: Path) -> int:
    """Give each unfinished point the runs an interrupted sweep kept; the last pass number."""
    if not runs_path.exists():
        return 0
    records, _ = store.load(runs_path)
    for record in records:
        state = states.get(record.point)
        if state is not None and state.status is None:
            state.add(record)
    return max((r.sweep.pass_number or 0 for r in records), default=0)


def run_in_passes(
    experiment: Experiment,
    results_path: Path,
    the_plan: Plan,
    runner: Runner,
    progress: SweepProgress,
    seed: int | None = None,
) -> Summary:
    """Play the plan's points in passes of one run each until every point is done."""
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    sweep_info = SweepInfo.of(experiment, seed)
    runs_path = results_path.parent / RUNS_NAME
    point_plan = plan_for(experiment)
    one_run_s = point_plan.warmup_s + point_plan.run_time_s
    states = {p: PointRuns(p, point_plan) for p in the_plan.todo}
    pass_number = restore(states, runs_path)
    sweep = _Passes(experiment, the_plan, runner, progress, results_path, sweep_info, one_run_s)
    progress.begin(the_plan.total, len(the_plan.done), experiment.point_limit_s())
    with Stopper(runner) as stopper:
        for state in states.values():
            if state.status is not None:  # done by the runs it had, before it was recorded
                sweep.finish(state)
        while not stopper.interrupted:
            order = [state for state in states.values() if state.status is None]
            if not order:
                break
            rng.shuffle(order)
            pass_number += 1
            progress.note(f"pass {pass_number}: one run of each of {len(order)} points")
            info = dataclasses.replace(sweep_info, pass_number=pass_number)
            for state in order:
                if stopper.interrupted or not sweep.play_one(state, info, stopper):
                    break
    sweep.summary.interrupted = stopper.interrupted
    return sweep.summary


@dataclass
class _Passes:
    """What every run of a sweep in passes shares: where it goes, how it is played."""

    experiment: Experiment
    the_plan: Plan
    runner: Runner
    progress: SweepProgress
    results_path: Path
    sweep_info: SweepInfo
    one_run_s: float
    summary: Summary = field(default_factory=Summary)

    @property
    def timeout_s(self) -> float:
        return self.one_run_s + POINT_OVERHEAD_S + self.experiment.timeouts_s() + HANG_SLACK_S

    def finish(self, state: PointRuns) -> None:
        """Record a point that is done: its runs merged."""
        record = state.record(self.sweep_info)
        store.append(self.results_path, record)
        self.summary.recorded.append(record)
        self.progress.finished(state.point, record, state.used_s)

    def play_one(self, state: PointRuns, info: SweepInfo, stopper: Stopper) -> bool:
        """One run of a point, kept in runs.jsonl; False when it was stopped."""
        point, progress = state.point, self.progress
        progress.starting(point)
        started_at, began = now(), time.monotonic()
        command = bench_command(
            self.experiment, self.the_plan, point, max_time=f"{self.one_run_s:.6g}s"
        )
        outcome = self.runner.run(point, command, self.timeout_s)
        progress.warn(outcome)
        if stopper.stopped_by(outcome):
            progress.finished(point, None, time.monotonic() - began)
            return False
        record = record_for(self.experiment, point, outcome, started_at, info)
        store.append(self.results_path.parent / RUNS_NAME, record)
        state.add(record)
        if state.status is not None:
            self.finish(state)
        return True

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
agree, and undercover; the pilot makes that early luck unusable. Once the pilot is done,
its Forecast says what the targets need and what the time given reaches at its spread.

Fixed-size modes (``RunPlan.runs``, ``RunPlan.duration_s``) play the same runs with no
stopping rule: a count or a time fixed before any run, and one look after the last, so
no early luck to correct and nothing to stop on.

Each run's measured stretch is drawn uniformly from [0.5, 1.5] times ``run_time_s``
(``run_length_s``). Runs of one fixed length start at a fixed cadence, and a server that
stalls periodically (a timer, a GC cycle, a flush) is then sampled at the same phase run
after run, or at a phase that slides slowly: the run means drift through the stall's cycle
and their mean need not come near the server's (issue 25: a 200 ms freeze every second
read 7.2 ms instead of 20 ms at a 1.0 s cadence). With lengths that vary over a whole run
length, the phase at which the next run starts moves by an amount spread over at least
one period, for any period up to the run length, so run starts sample every phase alike
after a run or two; unlike a random idle gap before each run, this costs no wall time,
and the mean run length stays ``run_time_s``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from volley.engine.play import Engine, PlayedRun, RunFailed, RunRequest
from volley.numbers import stats
from volley.numbers.units import BENCH_DEFAULTS, Target, format_ns, parse_duration_s
from volley.records.results import (
    DURATION_MODE,
    FAILED,
    INTERRUPTED,
    NOT_SIGNIFICANT,
    PRECISION_MODE,
    RUNS_MODE,
    SIGNIFICANT,
    LatencySummary,
    PlacementEstimate,
    RunSummary,
)
from volley.system.noise import placement_threshold

# Ten pilot runs: fewer and the pilot's variance is too rough to plan on (the t quantile
# for 9 degrees of freedom is already 2.26); more and a quiet server pays for nothing.
MIN_RUNS = int(BENCH_DEFAULTS["min-runs"])
SHOWN = ("mean", "p99")  # always in the progress line, besides any targeted statistic
# A target out of reach stops the runs once their own variance is this share of the
# between-sittings variance: however many runs followed, the interval would narrow by at
# most a tenth (1 - 1/sqrt(1.25)).
SETTLED = 0.25
# Each run's measured stretch is this many times --run-time, uniformly (see above).
RUN_LENGTH_SPREAD = (0.5, 1.5)


def run_length_s(run_time_s: float, rng: random.Random) -> float:
    """One run's measured stretch: ``run_time_s`` times a uniform draw from
    RUN_LENGTH_SPREAD, so that run starts do not keep step with a periodic stall."""
    return run_time_s * rng.uniform(*RUN_LENGTH_SPREAD)


def _default_s(option: str) -> float:
    return parse_duration_s(BENCH_DEFAULTS[option], f"--{option}")


@dataclass(frozen=True)
class RunPlan:
    """The policy of one benchmark: what to reach, and the bounds."""

    targets: list[Target]
    confidence: float = float(BENCH_DEFAULTS["confidence"])
    max_time_s: float = _default_s("max-time")
    warmup_s: float = _default_s("warmup")
    run_time_s: float = _default_s("run-time")
    min_runs: int = MIN_RUNS
    # A run that other work disturbed (noise.Noise.disturbed): "keep" it (and say so),
    # "drop" it from the evidence, or "fail" the benchmark.
    noisy: str = BENCH_DEFAULTS["noisy"]
    # How much earlier sittings of this configuration differ beyond their runs, per
    # statistic (volley.measure.history): every interval and target includes it.
    between: dict[str, stats.Between] = field(default_factory=dict)
    # Fixed size, as hyperfine's --runs and pyperf's values: exactly ``runs`` measured runs
    # (max_time_s unused), or as many as fit in ``duration_s`` (in place of max_time_s).
    # Neither stops early on precision: the targets are judged once, after the last run.
    runs: int | None = None
    duration_s: float | None = None

    @property
    def mode(self) -> str:
        if self.runs is not None:
            return RUNS_MODE
        return PRECISION_MODE if self.duration_s is None else DURATION_MODE

    @property
    def bound_s(self) -> float:
        """No run starts that would end past this many seconds from the first."""
        if self.runs is not None:
            return math.inf
        return self.max_time_s if self.duration_s is None else self.duration_s

    def drops(self, played: PlayedRun) -> bool:
        """Whether the run is left out of the evidence (disturbed, with --noisy drop)."""
        return bool(played.noise and played.noise.disturbed) and self.noisy == "drop"


@dataclass(frozen=True)
class RunProgress:
    """What a progress display needs after each run."""

    run: int
    planned: int  # runs the stopping rule wants at least
    n: int
    intervals: dict[str, stats.Interval]  # the shown and targeted statistics
    targets_ns: dict[str, float]  # half-width each targeted statistic must reach
    elapsed_s: float
    disturbed: str | None = None  # what disturbed this run, if anything did


@dataclass(frozen=True)
class Forecast:
    """What the pilot runs say, once they are done: how many runs each target needs at
    their spread, and what the runs the mode allows (its count, or as many as fit in its
    time) reach at that spread."""

    mode: str
    bound_s: float  # the time given (--max-time or --duration); inf for --runs
    run_s: float  # one run's wall time so far: warm-up, measuring, starting afresh
    allowed: int  # runs the mode will play, as far as the pace so far tells
    targets: list[Target]
    centres: dict[str, float]  # each targeted statistic over all ops so far
    needs: dict[str, int]  # runs each target needs in all (Stein's count)
    reachable_ns: dict[str, float]  # each targeted statistic's half-width at ``allowed`` runs
    # Targets the spread between earlier sittings alone puts out of reach: the half-width
    # that spread gives however many runs follow.
    beyond_ns: dict[str, float] = field(default_factory=dict)

    @property
    def needed(self) -> int:
        return max(self.needs.values(), default=0)

    @property
    def in_reach(self) -> bool:
        return not self.beyond_ns and self.needed <= self.allowed


class Progress:
    """Receives one RunProgress per run, and the Forecast once; the silent default."""

    def run(self, progress: RunProgress) -> None:
        pass

    def plan(self, forecast: Forecast) -> None:
        pass

    def done(self) -> None:
        pass


@dataclass
class Measurement:
    """What the runs of one server measured so far, and how the benchmark ended."""

    status: str = NOT_SIGNIFICANT
    error: str | None = None
    record: stats.LatencyRecord = field(default_factory=stats.LatencyRecord)
    runs: list[RunSummary] = field(default_factory=list)
    intervals: dict[str, stats.Interval] = field(default_factory=dict)
    dropped: list[RunSummary] = field(default_factory=list)  # disturbed, with --noisy drop
    forecast: Forecast | None = None  # once the pilot runs are done

    @property
    def measured_s(self) -> float:
        return sum(r.duration_s for r in self.runs)

    def add(self, played: PlayedRun, dropped: bool = False) -> None:
        """Merge a run's ops, or with ``dropped`` only keep its summary aside (a disturbed
        run left out of the evidence). A run without any op leaves no trace."""
        began = time.monotonic()
        record, busiest_s = played.summarized()
        if not record.n:
            return
        run = summarize(record, busiest_s, played)
        if dropped:
            self.dropped.append(run)
            return
        self.record.merge(record)
        if played.phases_s is not None:  # merging the ops is the run's last phase
            merge_s = round(time.monotonic() - began, 6)
            total_s = round(played.phases_s.get("total", 0.0) + merge_s, 6)
            run = dataclasses.replace(
                run, phases_s={**played.phases_s, "merge": merge_s, "total": total_s}
            )
        self.runs.append(run)

    def latency_summary(self) -> LatencySummary | None:
        """The result's latency block: every op's statistics, the settled intervals, the
        distribution and the histogram; None when no op was measured."""
        record = self.record
        if not record.n:
            return None
        wanted = stats.distribution_percentiles()
        values = record.histogram.percentiles(wanted)
        return LatencySummary(
            mean=record.mean_ns,
            stddev=record.stddev_ns,
            ci_low=self.intervals["mean"].low,
            ci_high=self.intervals["mean"].high,
            min=float(record.min_ns),
            max=float(record.max_ns),
            p50=record.value("p50"),
            p90=record.value("p90"),
            p99=record.value("p99"),
            p99_9=record.value("p99.9"),
            distribution=[(p, float(v)) for p, v in zip(wanted, values, strict=True)],
            histogram=record.histogram.encode(),
            intervals={
                name: (iv.low, iv.high) for name, iv in self.intervals.items() if name != "mean"
            },
        )

    def settle(
        self, confidence: float, between: dict[str, stats.Between] | None = None
    ) -> Measurement:
        """Every interval, from every run so far (and ``between`` sittings)."""
        self.intervals = intervals(self.record, self.runs, confidence, between=between)
        return self


def summarize(record: stats.LatencyRecord, busiest_s: float, played: PlayedRun) -> RunSummary:
    p50, p90, p99, p999 = record.histogram.percentiles(stats.PERCENTILES)
    summary = RunSummary(
        n=record.n,
        duration_s=round(busiest_s, 6),
        mean_ns=record.mean_ns,
        p50_ns=float(p50),
        p90_ns=float(p90),
        p99_ns=float(p99),
        p99_9_ns=float(p999),
        server_pid=played.server_pid,
        noise=played.noise,
        phases_s=dict(played.phases_s) if played.phases_s is not None else None,
    )
    load = played.open
    if load is None:
        return summary
    # Open loop: ops overlap, so the run lasted its window, not the sum of its latencies.
    lag = load.send_lag_ns or {}
    return dataclasses.replace(
        summary,
        duration_s=round(load.window_s, 6),
        achieved_ops_s=load.replied / load.window_s if load.window_s else 0.0,
        due=load.due,
        late=load.late,
        max_outstanding=load.max_outstanding,
        backlog_growth=load.backlog_growth,
        send_lag_p50_ns=lag.get("p50"),
        send_lag_p90_ns=lag.get("p90"),
        send_lag_p99_ns=lag.get("p99"),
        send_lag_max_ns=lag.get("max"),
    )


def intervals(
    record: stats.LatencyRecord,
    runs: list[RunSummary],
    confidence: float,
    statistics: tuple[str, ...] = stats.STATISTICS,
    between: dict[str, stats.Between] | None = None,
) -> dict[str, stats.Interval]:
    """An interval for each statistic: centred on all ops, as wide as the spread between
    runs says, and between sittings when earlier sittings say it."""
    between = between or {}
    return {
        name: stats.run_interval(
            record.value(name), [r.value(name) for r in runs], confidence, between.get(name)
        )
        for name in statistics
    }


def by_placement(runs: list[RunSummary], confidence: float) -> list[PlacementEstimate]:
    """The near and the far runs' means, each with its interval over those runs, when the
    host moved the CPUs between runs (``noise.placement_threshold``); else none."""
    hops = [r.noise.cpu_hop_ns if r.noise else None for r in runs]
    middle = placement_threshold(hops)
    if middle is None:
        return []
    found = []
    for name, near in (("near", True), ("far", False)):
        placed = [(h, r.mean_ns) for h, r in zip(hops, runs, strict=True) if h is not None]
        placed = [(h, v) for h, v in placed if (h < middle) == near]
        values = [v for _, v in placed]
        interval = stats.run_interval(float(np.mean(values)), values, confidence)
        found.append(
            PlacementEstimate(
                name,
                len(values),
                min(h for h, _ in placed),
                max(h for h, _ in placed),
                interval.centre,
                interval.low,
                interval.high,
            )
        )
    return found


@dataclass(frozen=True)
class Verdict:
    met: bool  # every target is met and the planned runs are done: stop
    planned: int
    intervals: dict[str, stats.Interval]  # of the targeted statistics
    targets_ns: dict[str, float]  # the half-width each must reach
    # The targets that earlier sittings put out of reach (sittings alone differ by more),
    # once more runs would hardly narrow their intervals: stop, not significant.
    out_of_reach: list[str] = field(default_factory=list)

    @property
    def within(self) -> bool:
        """Every targeted interval is within its target, whether or not the rule may stop
        on it yet (a fixed-size mode looks once, at its end, and may)."""
        return within(self.intervals, self.targets_ns)


def within(found: dict[str, stats.Interval], targets_ns: dict[str, float]) -> bool:
    return all(
        math.isfinite(iv.half_width) and iv.half_width <= targets_ns[name]
        for name, iv in found.items()
    )


@dataclass
class StoppingRule:
    """Stein's two-stage rule with a sequential tail, judged after every run."""

    targets: list[Target]
    confidence: float = 0.95
    min_runs: int = MIN_RUNS
    planned: int = 0
    between: dict[str, stats.Between] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pilot = self.planned = max(self.min_runs, 2)
        self.needs: dict[str, int] = {}  # per target, from the pilot

    def judge(self, centres: dict[str, float], values: dict[str, list[float]]) -> Verdict:
        """``centres``: each targeted statistic over all ops; ``values``: its per-run values,
        one per run so far."""
        runs = len(next(iter(values.values())))
        targets_ns = {t.statistic: t.half_width_ns(centres[t.statistic]) for t in self.targets}
        if runs == self.pilot:
            self.needs = {
                t.statistic: stats.planned_runs(
                    values[t.statistic],
                    targets_ns[t.statistic],
                    self.confidence,
                    self.between.get(t.statistic),
                )
                for t in self.targets
            }
            self.planned = max(self.needs.values())
        found = {
            t.statistic: stats.run_interval(
                centres[t.statistic],
                values[t.statistic],
                self.confidence,
                self.between.get(t.statistic),
            )
            for t in self.targets
        }
        met = runs >= self.planned and within(found, targets_ns)
        # A target that the spread between sittings alone exceeds is never met here: under
        # stats.sitting_df (the one df rule of the interval and the plan) the half-width
        # only falls with more runs, towards between_alone, so this verdict never gives up
        # a target more runs could meet. Once the runs' own part is small beside that
        # spread, more runs buy nothing: say so now instead of playing until --max-time.
        hopeless = [
            name
            for name, target in targets_ns.items()
            if name in self.between
            and stats.between_alone(self.between[name], self.confidence) > target
        ]
        settled = all(
            stats.run_variance(values[name])[0] <= SETTLED * self.between[name].tau2
            for name in hopeless
        )
        if met or runs < self.pilot or not settled:
            hopeless = []
        return Verdict(met, self.planned, found, targets_ns, hopeless)


def measure(
    engine: Engine,
    plan: RunPlan,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
    measurement: Measurement | None = None,
    rng: random.Random | None = None,
) -> Measurement:
    """Play runs until every target is met (or, in a fixed-size mode, until its count or
    time is used), ``plan.bound_s`` would be passed, a run fails or the engine is
    interrupted. Raises RunFailed only if the first run could not be played at all;
    otherwise what was measured until a failure or interruption is returned.
    ``measurement``: the one to fill, for an engine that saves it between runs.
    Each run's measured stretch is ``run_length_s`` of ``run_time_s`` (drawn with ``rng``):
    uniform in [0.5, 1.5] times it, so that runs sample every phase of a periodic stall up
    to the run length alike instead of keeping step with it. After the pilot runs,
    ``progress.plan`` gets their Forecast (also kept in the measurement)."""
    # One loop with every way out of it (done, out of time, failed, interrupted, a full
    # buffer) in one place: the order of those checks is the policy.
    progress = progress or Progress()
    m = measurement if measurement is not None else Measurement()
    rule = StoppingRule(plan.targets, plan.confidence, plan.min_runs, between=plan.between)
    shown = tuple(dict.fromkeys([*SHOWN, *(t.statistic for t in plan.targets)]))
    rng = rng or random.Random()
    measure_s, last_run_s, last_length_s = plan.run_time_s, 0.0, 0.0
    verdict, plays = None, 0
    start = clock()
    while True:
        if engine.interrupted:
            m.status = INTERRUPTED
            break
        if plan.runs is not None and len(m.runs) >= plan.runs:
            break
        length_s = run_length_s(measure_s, rng)
        # The bound holds for the whole benchmark: no run starts that would end past it
        # (the last run's time besides its measured stretch, plus this one's stretch).
        if m.runs and clock() - start + last_run_s - last_length_s + length_s > plan.bound_s:
            break
        began = clock()
        try:
            played = engine.play(RunRequest(len(m.runs) + 1, plan.warmup_s, length_s))
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, keep what we have
            m.status = INTERRUPTED
            break
        except RunFailed as e:
            if not m.runs:
                raise  # nothing measured at all: the benchmark could not run
            m.status, m.error = FAILED, str(e)
            break
        plays += 1
        last_run_s, last_length_s = clock() - began, length_s
        disturbed = played.noise.describe() if played.noise and played.noise.disturbed else None
        m.add(played, dropped=plan.drops(played))
        if disturbed and plan.noisy == "fail":
            m.status, m.error = FAILED, f"run {len(m.runs)} was disturbed: {disturbed}"
            break
        if played.failure:
            m.status, m.error = FAILED, played.failure
            break
        if engine.interrupted:
            m.status = INTERRUPTED
            break
        if not m.runs:
            continue
        if played.full:
            # A client filled its buffer before the run's end: later runs are shorter, so
            # that even the longest draw fits.
            measure_s = min(measure_s, 0.8 * m.runs[-1].duration_s / RUN_LENGTH_SPREAD[1])
        verdict = rule.judge(
            {t.statistic: m.record.value(t.statistic) for t in plan.targets},
            {t.statistic: [r.value(t.statistic) for r in m.runs] for t in plan.targets},
        )
        progress.run(
            RunProgress(
                run=len(m.runs),
                planned=planned(plan, m.forecast, verdict.planned),
                n=m.record.n,
                intervals={
                    **intervals(m.record, m.runs, plan.confidence, shown, plan.between),
                    **verdict.intervals,
                },
                targets_ns=verdict.targets_ns,
                elapsed_s=clock() - start,
                disturbed=disturbed,
            )
        )
        if m.forecast is None and len(m.runs) >= rule.pilot:
            m.forecast = forecast(plan, m, rule.needs, (clock() - start) / plays)
            progress.plan(m.forecast)
        if plan.mode != PRECISION_MODE:
            continue  # a fixed size: no early stop, the targets are judged after its end
        if verdict.met:
            m.status = SIGNIFICANT
            break
        if verdict.out_of_reach:
            m.error = out_of_reach(verdict, plan)
            break
    if plan.mode != PRECISION_MODE and m.status == NOT_SIGNIFICANT and verdict and verdict.within:
        # One look, after a count or time fixed before any run: no early luck to correct.
        m.status = SIGNIFICANT
    return m.settle(plan.confidence, plan.between)


def planned(plan: RunPlan, found: Forecast | None, rule_wants: int) -> int:
    """The runs a progress line counts towards: the stopping rule's, or the mode's."""
    if plan.runs is not None:
        return plan.runs
    if plan.duration_s is not None and found is not None:
        return found.allowed
    return rule_wants


def forecast(plan: RunPlan, m: Measurement, needs: dict[str, int], run_s: float) -> Forecast:
    """The pilot runs' Forecast: ``needs`` from the stopping rule, each run ``run_s``."""
    if plan.runs is not None:
        allowed = plan.runs
    else:
        fit = int(plan.bound_s // run_s) if run_s > 0 else len(m.runs)
        allowed = max(len(m.runs), fit)
    centres = {t.statistic: m.record.value(t.statistic) for t in plan.targets}
    reachable, beyond = {}, {}
    for target in plan.targets:
        name, between = target.statistic, plan.between.get(target.statistic)
        values = [r.value(name) for r in m.runs]
        reachable[name] = stats.reachable_half_width(values, allowed, plan.confidence, between)
        alone = stats.between_alone(between, plan.confidence) if between else 0.0
        if alone > target.half_width_ns(centres[name]):
            beyond[name] = alone
    return Forecast(
        plan.mode, plan.bound_s, run_s, allowed, plan.targets, centres, needs, reachable, beyond
    )


def out_of_reach(verdict: Verdict, plan: RunPlan) -> str:
    """Why the runs stopped before their targets: earlier sittings differ by more."""
    parts = []
    for name in verdict.out_of_reach:
        between = plan.between[name]
        parts.append(
            f"{name} ± {format_ns(verdict.targets_ns[name])}: earlier sittings of this "
            f"configuration ({between.sittings}) differ by ± "
            f"{format_ns(stats.between_alone(between, plan.confidence))} alone"
        )
    return "target out of reach on this machine, " + "; ".join(parts)


def interleave(
    engine: Engine,
    plan: RunPlan,
    alternatives: int,
    judge: Callable[[list[Measurement], int, int], str | None],
    on_round: Callable[[int, list[Measurement]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> list[Measurement]:
    """Randomized multiple interleaved trials (Abedi and Brecht, ICPE 2017): every round
    plays one run of each alternative, in a fresh random order, so that a machine drifting
    during the comparison lands on every alternative alike instead of on whichever ran
    last. After each round from ``min_runs`` on, ``judge(found, rounds, left)`` (``left``:
    how many more rounds fit in ``max_time_s`` at the last round's pace; 0, this is the
    last) says whether to stop, with the status to stop with, or None to go on. Also stops
    when no further round fits, a run fails or the engine is interrupted; the status of
    every measurement says which."""
    rng = rng or random.Random()
    found = [Measurement() for _ in range(alternatives)]
    start, rounds = clock(), 0
    ended: tuple[str, str | None] | None = None
    while ended is None:
        if engine.interrupted:
            ended = (INTERRUPTED, None)
            break
        began = clock()
        order = list(range(alternatives))
        rng.shuffle(order)
        for alternative in order:
            try:
                played = engine.play(
                    RunRequest(rounds + 1, plan.warmup_s, plan.run_time_s, alternative)
                )
            except KeyboardInterrupt:
                ended = (INTERRUPTED, None)
                break
            except RunFailed as e:
                if not rounds:
                    raise
                ended = (FAILED, str(e))
                break
            found[alternative].add(played)
            if played.failure:
                ended = (FAILED, played.failure)
                break
            if engine.interrupted:
                ended = (INTERRUPTED, None)
                break
        if ended is not None:
            break
        rounds += 1
        now = clock()
        # The bound holds for the whole comparison: no round starts that would end past
        # it. Counted once, so that the judge's last look is the last round played.
        left = rounds_left(plan.max_time_s - (now - start), now - began)
        for m in found:
            m.settle(plan.confidence)
        if on_round:
            on_round(rounds, found)
        if rounds >= max(plan.min_runs, 2):
            stop = judge(found, rounds, left)
            ended = (stop, None) if stop else None
        if not left:
            break
    status, error = ended or (NOT_SIGNIFICANT, None)
    for m in found:
        m.status, m.error = status, error
        m.settle(plan.confidence)
    return found


def rounds_left(remaining_s: float, round_s: float) -> int:
    """How many more rounds of ``round_s`` fit in ``remaining_s``."""
    if remaining_s < round_s:
        return 0
    return int(remaining_s // round_s) if round_s > 0 else 1 << 30

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

One loop (``Loop``) plays the runs of both entry points: ``measure``, one configuration
until its stopping rule (or its fixed size) ends it (volley-bench, the hosts of an MPI
job), and ``alternate``, several alternatives run by run, one run of each per round in a
fresh random order, until a judge ends them (``volley compare --run``). One configuration
is the case of one alternative, every round one run, so this policy holds for both:

- Run lengths: every run's measured stretch is drawn by ``run_length_s``, per alternative.
- The bound: the first round always plays; no later round starts that would end past
  ``RunPlan.bound_s`` (``starts``; a run's time besides its stretch is taken from its
  alternative's last run). ``alternate``'s judge is told how many rounds still fit, 0
  exactly when the round just played is the last one.
- Evidence comes by rounds: a round's runs enter the measurements once the round is
  complete. A failure or an interruption in the middle of a round leaves that round out,
  so that alternatives stay paired by round (with one alternative every round that was
  played is complete: a run that failed or was interrupted keeps its ops).
- Disturbed runs (``RunPlan.noisy``): "keep" keeps them and says so in the progress line;
  "drop" leaves the whole round out of the evidence (each run's summary kept aside in
  ``Measurement.dropped``), for the same pairing; "fail" ends the loop FAILED.
- A full buffer (a client filled its buffer before the run's end) shortens that
  alternative's later runs, from the stretch the full run measured, so that even the
  longest draw fits.
- Failures: a run that cannot be played at all (RunFailed) raises when its alternative has
  no measured run yet, since nothing can be compared or reported; later it ends the loop
  FAILED, with what was measured. A played run that reports a failure ends it FAILED.
- Interruption (the engine's flag, before every round and after every run, or a second
  Ctrl-C during a run) ends the loop INTERRUPTED, with the complete rounds.
- Earlier sittings (``RunPlan.between``) widen one configuration's intervals and targets;
  alternatives compared run by run share their sitting and are judged paired by round, so
  ``alternate`` leaves them out.
- Progress: ``measure`` reports every run once one was kept (``Progress.run``, saying what
  disturbed it) and the Forecast after the pilot; ``alternate`` calls ``on_round`` after
  every round that added evidence, and its judge from ``min_runs`` rounds on and after the
  last round, never twice on the same rounds before that.
- Run numbers (``RunRequest.index``) count an alternative's runs played, dropped or not.

Interleaved sweeps (``volley.studies.interleave``) play one volley-bench process per run,
so each run is played by this loop; they judge a point's runs with the same
``StoppingRule.of`` a plan and ``StoppingRule.look``, and end it by the same ``starts``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
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

    def add(self, played: Played, dropped: bool = False) -> None:
        """Merge a run's ops, or with ``dropped`` only keep its summary aside (a disturbed
        run left out of the evidence). A run without any op leaves no trace."""
        if played.summary is None:
            return
        if dropped:
            self.dropped.append(played.summary)
            return
        began = time.monotonic()
        self.record.merge(played.record)
        summary, phases = played.summary, played.run.phases_s
        if phases is not None:  # summarizing and merging the ops is the run's last phase
            merge_s = round(played.summarize_s + time.monotonic() - began, 6)
            total_s = round(phases.get("total", 0.0) + merge_s, 6)
            summary = dataclasses.replace(
                summary, phases_s={**phases, "merge": merge_s, "total": total_s}
            )
        self.runs.append(summary)

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

    @classmethod
    def of(cls, plan: RunPlan) -> StoppingRule:
        """The rule of ``plan``: its targets, confidence, pilot and earlier sittings."""
        return cls(plan.targets, plan.confidence, plan.min_runs, between=plan.between)

    def look(self, centre: Callable[[str], float], runs: Sequence[RunSummary]) -> Verdict:
        """``judge`` on ``runs`` so far, each targeted statistic centred on ``centre(name)``
        (over all ops): the one way volley-bench and interleaved sweeps judge their runs."""
        names = [t.statistic for t in self.targets]
        return self.judge(
            {name: centre(name) for name in names},
            {name: [run.value(name) for run in runs] for name in names},
        )

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


Ending = tuple[str, str | None]  # how the loop ended: a status and its error


def starts(elapsed_s: float, next_s: float, bound_s: float) -> bool:
    """Whether the next run (or round) may start: it would end by the bound, ``next_s``
    being what it is expected to take. The bound holds for the whole benchmark, so no run
    starts that would end past it (interleaved sweeps judge their points by it too)."""
    return elapsed_s + next_s <= bound_s


@dataclass
class Side:
    """One alternative in the loop: its measurement, and the pace of its runs."""

    alternative: int
    measurement: Measurement
    run_time_s: float  # the mean measured stretch; shortened once a client's buffer fills
    plays: int = 0  # runs played, kept or dropped
    overhead_s: float = 0.0  # the last run's wall time besides its measured stretch
    overheads_s: float = 0.0  # the same, summed over every run played

    def played(self, wall_s: float, length_s: float) -> None:
        self.plays += 1
        self.overhead_s = wall_s - length_s
        self.overheads_s += self.overhead_s

    def shorten(self, filled_s: float) -> None:
        """A client filled its buffer after ``filled_s`` of measuring: later runs are
        shorter, so that even the longest draw fits."""
        self.run_time_s = min(self.run_time_s, 0.8 * filled_s / RUN_LENGTH_SPREAD[1])

    def mean_run_s(self) -> float:
        """A run's expected wall time: its mean overhead and its mean measured stretch."""
        return self.overheads_s / max(self.plays, 1) + self.run_time_s


@dataclass(frozen=True)
class Played:
    """One run, played and summarized, not yet in the evidence."""

    side: Side
    run: PlayedRun
    record: stats.LatencyRecord
    summary: RunSummary | None  # None: no op was measured
    disturbed: str | None  # what disturbed it, if anything did
    summarize_s: float = 0.0  # what summarizing its ops took (part of the merge phase)

    @classmethod
    def of(cls, side: Side, run: PlayedRun) -> Played:
        began = time.monotonic()
        record, busiest_s = run.summarized()
        summary = summarize(record, busiest_s, run) if record.n else None
        disturbed = run.noise.describe() if run.noise and run.noise.disturbed else None
        return cls(side, run, record, summary, disturbed, time.monotonic() - began)


class Loop:
    """What one configuration's runs and a comparison run by run share: the lengths of the
    runs, the bound, playing a run and what follows from it (kept, dropped, failed, a full
    buffer, interrupted), and the rounds. The module docstring states the policy."""

    def __init__(
        self,
        engine: Engine,
        plan: RunPlan,
        sides: list[Side],
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.engine, self.plan, self.sides = engine, plan, sides
        self.clock, self.rng = clock, rng
        self.start = clock()
        self.rounds = 0  # complete rounds played, kept or dropped
        self.last: list[Played] = []  # the last complete round's runs
        self.kept = False  # whether the last complete round entered the evidence
        self.lengths = self.draw()  # the next round's measured stretches, per side

    def elapsed(self) -> float:
        return self.clock() - self.start

    def draw(self) -> list[float]:
        return [run_length_s(side.run_time_s, self.rng) for side in self.sides]

    def next_round_s(self) -> float:
        pairs = zip(self.sides, self.lengths, strict=True)
        return sum(side.overhead_s + length_s for side, length_s in pairs)

    def fits(self) -> bool:
        """The first round always plays; no later one starts that would end past the
        bound (each run's overhead taken from its side's last run)."""
        return not self.rounds or starts(self.elapsed(), self.next_round_s(), self.plan.bound_s)

    def left(self) -> int:
        """Rounds that still fit: 0 exactly when the next does not (the last round was the
        last), else the next and as many mean rounds as fit in what then remains."""
        if not self.fits():
            return 0
        remaining_s = self.plan.bound_s - self.elapsed() - self.next_round_s()
        return 1 + rounds_left(remaining_s, sum(side.mean_run_s() for side in self.sides))

    def run(self, after: Callable[[], Ending | None]) -> Ending | None:
        """Rounds until one ends the loop, ``after`` (called after every complete round)
        ends it, or the bound does (None)."""
        while not self.engine.interrupted:
            if not self.fits():
                return None
            order = list(range(len(self.sides)))
            self.rng.shuffle(order)
            ended = self.play_round(order) or after()
            if ended:
                return ended
        return INTERRUPTED, None

    def play_round(self, order: list[int]) -> Ending | None:
        """One run of each side in ``order``; a complete round enters the evidence."""
        found: list[Played] = []
        ended = None
        for index in order:
            played, ended = self.play(self.sides[index], self.lengths[index])
            if played is not None:
                found.append(played)
            if ended:
                break
        if len(found) == len(order):
            self.keep(found)
        self.lengths = self.draw()
        return ended

    def play(self, side: Side, length_s: float) -> tuple[Played | None, Ending | None]:
        """One run of ``side``, and how it ends the loop, if it does."""
        request = RunRequest(side.plays + 1, self.plan.warmup_s, length_s, side.alternative)
        began = self.clock()
        try:
            run = self.engine.play(request)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, keep what we have
            return None, (INTERRUPTED, None)
        except RunFailed as e:
            if not side.measurement.runs:
                raise  # nothing measured at all: this alternative could not run
            return None, (FAILED, str(e))
        side.played(self.clock() - began, length_s)
        played = Played.of(side, run)
        if run.full and played.summary is not None:
            side.shorten(played.summary.duration_s)
        if played.disturbed and self.plan.noisy == "fail":
            return played, (FAILED, f"run {side.plays} was disturbed: {played.disturbed}")
        if run.failure:
            return played, (FAILED, run.failure)
        if self.engine.interrupted:
            return played, (INTERRUPTED, None)
        return played, None

    def keep(self, found: list[Played]) -> None:
        """A complete round into the evidence; with --noisy drop and any of its runs
        disturbed, none of it (each run's summary kept aside), so that alternatives stay
        paired by round."""
        dropped = any(self.plan.drops(played.run) for played in found)
        for played in found:
            played.side.measurement.add(played, dropped)
        self.rounds += 1
        self.last, self.kept = found, not dropped


class Watch:
    """``measure``'s look after every run: the stopping rule, the progress line, the
    forecast after the pilot, and whether the run count or the rule ends the runs."""

    def __init__(self, plan: RunPlan, progress: Progress, loop: Loop) -> None:
        self.plan, self.progress, self.loop = plan, progress, loop
        self.rule = StoppingRule.of(plan)
        self.shown = tuple(dict.fromkeys([*SHOWN, *(t.statistic for t in plan.targets)]))
        self.verdict: Verdict | None = None

    def __call__(self) -> Ending | None:
        plan, side = self.plan, self.loop.sides[0]
        m = side.measurement
        if not m.runs:
            return None
        self.verdict = verdict = self.rule.look(m.record.value, m.runs)
        self.progress.run(
            RunProgress(
                run=len(m.runs),
                planned=planned(plan, m.forecast, verdict.planned),
                n=m.record.n,
                intervals={
                    **intervals(m.record, m.runs, plan.confidence, self.shown, plan.between),
                    **verdict.intervals,
                },
                targets_ns=verdict.targets_ns,
                elapsed_s=self.loop.elapsed(),
                disturbed=self.loop.last[0].disturbed,
            )
        )
        if m.forecast is None and len(m.runs) >= self.rule.pilot:
            m.forecast = forecast(plan, m, self.rule.needs, self.loop.elapsed() / side.plays)
            self.progress.plan(m.forecast)
        return self.ending(m, verdict)

    def ending(self, m: Measurement, verdict: Verdict) -> Ending | None:
        if self.plan.runs is not None:
            return (NOT_SIGNIFICANT, None) if len(m.runs) >= self.plan.runs else None
        if self.plan.mode != PRECISION_MODE:
            return None  # a fixed size: no early stop, the targets are judged after its end
        if verdict.met:
            return SIGNIFICANT, None
        if verdict.out_of_reach:
            return NOT_SIGNIFICANT, out_of_reach(verdict, self.plan)
        return None

    def final(self, ending: Ending) -> Ending:
        """A fixed size's one look, after a count or time fixed before any run: no early
        luck to correct, so every target within its interval is met."""
        fixed = self.plan.mode != PRECISION_MODE and ending == (NOT_SIGNIFICANT, None)
        if fixed and self.verdict is not None and self.verdict.within:
            return SIGNIFICANT, None
        return ending


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
    Each run's measured stretch is ``run_length_s`` of ``run_time_s`` (drawn with ``rng``).
    After the pilot runs, ``progress.plan`` gets their Forecast (also kept in the
    measurement). The loop's policy is the module docstring's, with one alternative."""
    m = measurement if measurement is not None else Measurement()
    loop = Loop(engine, plan, [Side(0, m, plan.run_time_s)], clock, rng or random.Random())
    watch = Watch(plan, progress or Progress(), loop)
    m.status, m.error = watch.final(loop.run(watch) or (NOT_SIGNIFICANT, None))
    return m.settle(plan.confidence, plan.between)


def alternate(
    engine: Engine,
    plan: RunPlan,
    alternatives: int,
    judge: Callable[[list[Measurement], int, int], str | None],
    on_round: Callable[[int, list[Measurement]], None] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> list[Measurement]:
    """Alternatives played run by run: randomized multiple interleaved trials (Abedi and
    Brecht, ICPE 2017). Every round plays one run of each alternative, in a fresh random
    order, so that a machine drifting during the comparison lands on every alternative
    alike instead of on whichever ran last. After each round that added evidence, from
    ``min_runs`` rounds on (and after the last round in any case), ``judge(found, rounds,
    left)`` (``left``: how many more rounds fit in ``max_time_s``; 0, this is the last)
    says whether to stop, with the status to stop with, or None to go on; ``on_round``
    sees every round that added evidence. Also stops when no further round fits, a run
    fails or the engine is interrupted; the status of every measurement says which. The
    loop's policy is the module docstring's."""
    found = [Measurement() for _ in range(alternatives)]
    sides = [Side(i, m, plan.run_time_s) for i, m in enumerate(found)]
    loop = Loop(engine, plan, sides, clock, rng or random.Random())

    def after() -> Ending | None:
        rounds, left = len(found[0].runs), loop.left()
        if not loop.kept and left:
            return None  # a dropped round: nothing new to see, and not the last look
        for m in found:
            m.settle(plan.confidence)
        if on_round and loop.kept:
            on_round(rounds, found)
        if rounds < max(plan.min_runs, 2):
            return None
        stop = judge(found, rounds, left)
        return (stop, None) if stop else None

    status, error = loop.run(after) or (NOT_SIGNIFICANT, None)
    for m in found:
        m.status, m.error = status, error
        m.settle(plan.confidence)
    return found


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


def rounds_left(remaining_s: float, round_s: float) -> int:
    """How many more rounds of ``round_s`` fit in ``remaining_s``."""
    if remaining_s < round_s:
        return 0
    return int(remaining_s // round_s) if round_s > 0 else 1 << 30

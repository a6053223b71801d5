"""The measuring loop (volley.runs) driven by fake engines: no sockets, no processes.

The coverage tests run the stopping rule as it runs (it looks after every run and stops at
the first success) on synthetic run-level values, seeded, 400 trials each: how often does
the reported 95% interval for the mean hold the true mean?
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from volley.results import FAILED, INTERRUPTED, NOT_SIGNIFICANT
from volley.runs import (
    PlayedRun,
    Progress,
    RunFailed,
    RunPlan,
    RunProgress,
    RunRequest,
    StoppingRule,
    measure,
)
from volley.units import Target, parse_target

RUN_S = 0.75  # warm-up + measured stretch of a default run, in fake seconds
OPS = 16  # ops per fake run: enough for a mean, cheap enough for 400 trials


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SeriesEngine:
    """Plays run i with mean ``values[i]``: every op of the run is that latency, give or
    take a spread that averages out exactly, so the run mean is the drawn value."""

    def __init__(self, values: np.ndarray, clock: FakeClock, spread: float = 0.05) -> None:
        self.values = values
        self.clock = clock
        self.spread = spread
        self.requests: list[RunRequest] = []
        self.interrupted = False

    def play(self, request: RunRequest) -> PlayedRun:
        self.requests.append(request)
        self.clock.now += request.warmup_s + request.measure_s + 0.05
        value = self.values[request.index - 1]
        offsets = np.linspace(-self.spread, self.spread, OPS) * value
        return PlayedRun([np.round(value + offsets).astype(np.int64)], server_pid=request.index)


def run_values(
    rng: np.random.Generator,
    n: int,
    *,
    cv: float = 0.028,
    drift: float = 0.0,
    tau_s: float = 1.0,
    bimodal: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Run means around 100 us: independent per-run spread (``cv``, as measured between
    invocations on the development VM), an AR(1) drift of the machine with correlation time
    ``tau_s`` and standard deviation ``drift``, and a share of server instances that land
    ``bimodal`` slower (a step between runs). Returns the values and the true mean."""
    mu = 100_000.0
    values = mu + rng.normal(0, cv * mu, n)
    if drift:
        phi = math.exp(-(RUN_S + 0.05) / tau_s)
        d = np.empty(n)
        d[0] = rng.normal(0, drift * mu)
        innovations = rng.normal(0, drift * mu * math.sqrt(1 - phi**2), n)
        for i in range(1, n):
            d[i] = phi * d[i - 1] + innovations[i]
        values += d
    true = mu
    if bimodal:
        values += np.where(rng.random(n) < 0.3, bimodal * mu, 0.0)
        true += 0.3 * bimodal * mu
    return values, true


def coverage(trials: int = 400, seed: int = 9, **model: float) -> tuple[float, float]:
    """Share of trials whose interval for the mean holds the true mean when the stopping
    rule judges after every run and stops at its first success; and the median runs."""
    rng = np.random.default_rng(seed)
    held, played = 0, []
    for _ in range(trials):
        values, true = run_values(rng, 600, **model)
        rule = StoppingRule([Target("mean", relative=0.01)])
        for n in range(1, len(values) + 1):
            seen = values[:n]
            verdict = rule.judge({"mean": float(seen.mean())}, {"mean": list(seen)})
            if verdict.met:
                break
        assert verdict.met, "600 runs did not reach the target"
        held += verdict.intervals["mean"].low <= true <= verdict.intervals["mean"].high
        played.append(n)
    return held / trials, float(np.median(played))


# Drift amplitudes: the 1 s drift is as large as a third of the spread between runs; a
# 10 s drift cannot be told from a constant within a 30 s measurement, so only a small
# one keeps coverage (README, "How it measures", gives the measured limits).
@pytest.mark.parametrize(
    "model",
    [
        {},
        {"drift": 0.01, "tau_s": 1.0},
        {"drift": 0.002, "tau_s": 10.0},
        {"bimodal": 0.08},
    ],
    ids=["independent", "drift-1s", "drift-10s", "step-between-runs"],
)
def test_stopping_rule_keeps_coverage(model):
    held, runs = coverage(**model)
    assert held >= 0.93, f"coverage {held:.3f} after a median of {runs} runs"


def test_pilot_runs_plan_more_runs_for_a_wider_spread():
    rng = np.random.default_rng(1)
    plan = RunPlan(targets=[Target("mean", relative=0.01)], max_time_s=1e9)
    counts = []
    for cv in (0.01, 0.05):
        clock = FakeClock()
        values, _ = run_values(rng, 2000, cv=cv)
        counts.append(len(measure(SeriesEngine(values, clock), plan, clock=clock).runs))
    assert counts[0] == plan.min_runs  # 1% spread: the pilot alone is enough
    assert counts[1] > 4 * counts[0]


class Recorder(Progress):
    def __init__(self) -> None:
        self.lines: list[RunProgress] = []

    def run(self, progress: RunProgress) -> None:
        self.lines.append(progress)


def test_progress_after_every_run_with_the_planned_count():
    clock = FakeClock()
    values, _ = run_values(np.random.default_rng(2), 500)
    recorder = Recorder()
    plan = RunPlan(targets=[parse_target("1%"), parse_target("p99:5%")], max_time_s=1e9)
    m = measure(SeriesEngine(values, clock), plan, recorder, clock=clock)
    assert [p.run for p in recorder.lines] == list(range(1, len(m.runs) + 1))
    assert all(p.planned == plan.min_runs for p in recorder.lines[: plan.min_runs - 1])
    assert set(recorder.lines[-1].targets_ns) == {"mean", "p99"}
    assert {"mean", "p99"} <= set(recorder.lines[-1].intervals)
    # The rule stopped at the first run at which every target was met, not before.
    last = recorder.lines[-1]
    assert all(last.intervals[k].half_width <= v for k, v in last.targets_ns.items())
    assert len(m.runs) >= last.planned


def test_max_time_bounds_the_whole_benchmark():
    clock = FakeClock()
    values, _ = run_values(np.random.default_rng(3), 500, cv=0.2)
    plan = RunPlan(targets=[Target("mean", relative=0.001)], max_time_s=10.0)
    m = measure(SeriesEngine(values, clock), plan, clock=clock)
    assert m.status == NOT_SIGNIFICANT
    assert clock.now <= 10.0
    assert len(m.runs) == int(10.0 // (RUN_S + 0.05))


class FullBufferEngine(SeriesEngine):
    """A client fills its buffer after 0.2 s of measuring, whatever the run asked for."""

    def play(self, request: RunRequest) -> PlayedRun:
        self.requests.append(request)
        self.clock.now += request.warmup_s + request.measure_s
        ops = int(min(request.measure_s, 0.2) * 1e9 / 100_000)
        return PlayedRun([np.full(ops, 100_000, np.int64)], full=request.measure_s > 0.2)


def test_a_full_buffer_shortens_later_runs():
    clock = FakeClock()
    engine = FullBufferEngine(np.zeros(0), clock)
    measure(engine, RunPlan(targets=[Target("mean", relative=0.01)]), clock=clock)
    asked = [r.measure_s for r in engine.requests]
    assert asked[0] == 0.5
    assert all(s == pytest.approx(0.16) for s in asked[1:])


class FailingEngine(SeriesEngine):
    def __init__(self, fail_at: int, how: str, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.fail_at, self.how = fail_at, how

    def play(self, request: RunRequest) -> PlayedRun:
        played = super().play(request)
        if request.index == self.fail_at:
            if self.how == "raise":
                raise RunFailed("run 4: server exited with status 1 before listening")
            if self.how == "interrupt":
                self.interrupted = True
            if self.how == "second-ctrl-c":
                raise KeyboardInterrupt
            if self.how == "wrong-reply":
                played.failure = "client 0, run 4: wrong reply"
        return played


@pytest.mark.parametrize(
    ("how", "status", "runs", "error"),
    [
        ("raise", FAILED, 3, "server exited"),
        ("wrong-reply", FAILED, 4, "wrong reply"),
        ("interrupt", INTERRUPTED, 4, None),
        ("second-ctrl-c", INTERRUPTED, 3, None),
    ],
)
def test_a_failed_or_interrupted_run_keeps_what_was_measured(how, status, runs, error):
    clock = FakeClock()
    values, _ = run_values(np.random.default_rng(4), 50)
    engine = FailingEngine(4, how, values, clock)
    m = measure(engine, RunPlan(targets=[Target("mean", relative=0.01)]), clock=clock)
    assert m.status == status
    assert len(m.runs) == runs
    assert m.record.n == runs * OPS
    assert (m.error is None) == (error is None) and (error is None or error in m.error)
    assert math.isfinite(m.intervals["mean"].half_width)


def test_run_summaries_carry_each_runs_values():
    clock = FakeClock()
    values = np.array([100_000.0, 120_000.0] * 20)
    plan = RunPlan(targets=[Target("mean", relative=0.5)], min_runs=2)
    m = measure(SeriesEngine(values, clock, spread=0.0), plan, clock=clock)
    assert [r.mean_ns for r in m.runs[:3]] == [100_000.0, 120_000.0, 100_000.0]
    assert [r.server_pid for r in m.runs[:3]] == [1, 2, 3]
    assert m.runs[1].p99_ns == pytest.approx(120_000, rel=1e-3)
    assert m.intervals["mean"].centre == pytest.approx(np.mean(values[: len(m.runs)]))


def test_a_first_run_that_cannot_be_played_is_an_error_not_a_result():
    clock = FakeClock()
    engine = FailingEngine(1, "raise", np.full(20, 100_000.0), clock)
    with pytest.raises(RunFailed, match="before listening"):
        measure(engine, RunPlan(targets=[Target("mean", relative=0.01)]), clock=clock)

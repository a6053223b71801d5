"""volley compare: the statistics on synthetic runs, the refusals, the gates and the outputs
(no sockets), and one real comparison of a server against itself made 20 us slower."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from helpers import FIXTURES, SERVERS, Completed, bench, strict_loads, volley
from typer.testing import CliRunner

from volley.cli import app as commands
from volley.numbers import stats
from volley.numbers.stats import RunMean, t_quantile
from volley.numbers.units import STATISTICS, Target
from volley.records import store
from volley.records.experiment import Point
from volley.records.results import (
    FAILED,
    OPEN,
    SIGNIFICANT,
    BenchResult,
    LatencySummary,
    LoadInfo,
    RunSummary,
    WorkerInfo,
    dumps,
)
from volley.records.store import SweepInfo, SweepRecord
from volley.studies import compare
from volley.studies.compare import (
    FASTER,
    MIN_RUNS_PER_SIDE,
    NO_DIFFERENCE,
    SLOWER,
    TOO_FEW_RUNS,
    compare_results,
)
from volley.system.cpus import usable_cpus
from volley.system.machine import Environment

# A server's typical statistics (ns); runs scatter around them.
TYPICAL_NS = {
    "mean": 50_000.0,
    "p50": 45_000.0,
    "p90": 70_000.0,
    "p99": 110_000.0,
    "p99.9": 160_000.0,
}


# --- building synthetic results through the typed records ----------------------------------


def make_runs(
    rng: np.random.Generator, count: int, scale: float = 1.0, spread: float = 0.02
) -> list[RunSummary]:
    """``count`` runs whose every statistic is TYPICAL_NS * scale, scattered by ``spread``
    (relative standard deviation, normal) from run to run."""

    def draw(statistic: str) -> float:
        return TYPICAL_NS[statistic] * scale * (1 + spread * rng.standard_normal())

    return [
        RunSummary(
            n=20_000,
            duration_s=1.0,
            mean_ns=draw("mean"),
            p50_ns=draw("p50"),
            p90_ns=draw("p90"),
            p99_ns=draw("p99"),
            p99_9_ns=draw("p99.9"),
            server_pid=4000 + i,
        )
        for i in range(count)
    ]


def make_result(runs: list[RunSummary], **changes: object) -> BenchResult:
    """A format-2 result holding ``runs``: values are the run means, intervals t intervals."""

    def summary(statistic: str) -> tuple[float, tuple[float, float]]:
        if not runs:
            return TYPICAL_NS[statistic], (math.nan, math.nan)
        m = RunMean.of([run.value(statistic) for run in runs])
        half = t_quantile(0.95, m.runs - 1) * math.sqrt(m.variance) if m.runs > 1 else math.inf
        return m.mean, (m.mean - half, m.mean + half)

    values = {s: summary(s) for s in STATISTICS}
    latency = LatencySummary(
        mean=values["mean"][0],
        stddev=20_000.0,
        ci_low=values["mean"][1][0],
        ci_high=values["mean"][1][1],
        min=10_000.0,
        max=2_000_000.0,
        p50=values["p50"][0],
        p90=values["p90"][0],
        p99=values["p99"][0],
        p99_9=values["p99.9"][0],
        intervals={s: values[s][1] for s in STATISTICS if s != "mean"},
    )
    fields: dict[str, object] = dict(
        status=SIGNIFICANT,
        server="target/servers/c-epoll",
        server_args=[],
        clients=1,
        client_cores=[1],
        server_cores=[0],
        n=sum(run.n for run in runs),
        rounds=len(runs),
        elapsed_s=float(len(runs)) + 1,
        measured_s=float(len(runs)),
        throughput_ops_s=20_000.0,
        confidence=0.95,
        precision="1%",
        ci_batches=len(runs),
        latency_ns=latency,
        workers=[WorkerInfo(pid=123, cpus=[1], clients=1)],
        host=Environment(kernel="6.1", cpu_model="test cpu", cpus=2),
        started_at="2026-11-26T10:00:00+00:00",
        warmup_s=0.5,
        runs=runs,
        restart="server",
        targets=["mean:1%"],
    )
    fields.update(changes)
    return BenchResult(**fields)  # type: ignore[arg-type]


def pair(
    seed: int, runs: int = 10, scale: float = 1.0, spread: float = 0.02
) -> tuple[BenchResult, BenchResult]:
    rng = np.random.default_rng(seed)
    a = make_result(make_runs(rng, runs, 1.0, spread))
    b = make_result(make_runs(rng, runs, scale, spread), server="target/servers/c-threaded")
    return a, b


def write(path: Path, result: BenchResult) -> Path:
    path.write_text(dumps(result))
    return path


def write_sweep(path: Path, points: dict[Point, BenchResult]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    for point, result in points.items():
        store.append(path, SweepRecord(point, 0, SweepInfo("test", "test.toml"), result))
    return path


# --- the statistics ------------------------------------------------------------------------


def called_different(row) -> bool:
    return row.verdict in (FASTER, SLOWER)


def false_verdicts(runs: int, trials: int, rules=(called_different,)) -> list[tuple[dict, float]]:
    """A and B drawn alike (every statistic with noise of its own: the rows independent, the
    worst case for a family), ``trials`` seeded comparisons. For each rule (whether a row is
    called different): per statistic the share so called, and the share with any row."""
    differ = [{s: 0 for s in STATISTICS} for _ in rules]
    anywhere = [0 for _ in rules]
    for seed in range(trials):
        a, b = pair(seed, runs=runs)
        rows = compare_results(a, b, 0.95).rows
        for i, rule in enumerate(rules):
            for row in rows:
                differ[i][row.statistic] += rule(row)
            anywhere[i] += any(rule(row) for row in rows)
    return [
        ({s: count / trials for s, count in shares.items()}, total / trials)
        for shares, total in zip(differ, anywhere, strict=True)
    ]


def binomial_bound(rate: float, trials: int, sds: float = 2.5) -> float:
    """The most a share measured over ``trials`` may show when the true rate is ``rate``."""
    return rate + sds * math.sqrt(rate * (1 - rate) / trials)


@pytest.mark.real
def test_identical_distributions_are_called_different_within_the_family_error():
    """Issue 25, items 2 and 4. Five statistics each tested at 5% called identical servers
    different somewhere in 18% of comparisons with independent rows (the old rule, judged
    here on the same comparisons). The family rule keeps any row's false verdict within 5%:
    the mean's within 2.5%, each percentile's within 0.625%. (The test is a little
    conservative, the long-run variance never below the plain one: at 600 trials any row
    3.0%, the mean 1.7%, the percentiles 0.2-0.5%, and the old rule 17.7%.)

    A --fail-if-slower gate on every statistic (at 0.1%, next to nothing) trips only where
    a row's own verdict is "slower": on identical servers in at most half the family's 5%,
    where gates on the old verdicts tripped in about 10%."""
    trials = 300

    def any_gate(row) -> bool:  # the row's own gate; any row's: any gate
        return compare.trips(Target(row.statistic, relative=0.001), row)

    def any_old_gate(row) -> bool:
        return different_at_95(row) and row.ratio is not None and row.ratio.value > 1.001

    (shares, anywhere), (_, old), (_, trips), (_, old_trips) = false_verdicts(
        5, trials, (called_different, different_at_95, any_gate, any_old_gate)
    )
    assert anywhere <= binomial_bound(0.05, trials), (anywhere, shares)
    for statistic, share in shares.items():
        assert share <= binomial_bound(compare.SHARES[statistic] * 0.05, trials), shares
    assert old > 0.10, old
    assert trips <= binomial_bound(0.025, trials) and old_trips > 0.05, (trips, old_trips)


def different_at_95(row) -> bool:
    """The old rule: whether the row's difference, at 95% instead of its own level,
    excludes zero (the same Welch interval, its t quantile at 95%)."""
    d = row.difference_ns
    if d is None:
        return False
    half = (d.high - d.value) * t_quantile(0.95, row.df) / t_quantile(row.level, row.df)
    return abs(d.value) > half


@pytest.mark.real
def test_a_three_percent_shift_is_found_with_the_right_sign():
    trials, covered = 50, 0
    for seed in range(trials):
        a, b = pair(seed, runs=12, scale=1.03, spread=0.01)
        slower = compare_results(a, b, 0.95)
        faster = compare_results(b, a, 0.95)
        for row in slower.rows:
            assert row.verdict == SLOWER, (seed, row)
            assert row.difference_ns and row.difference_ns.low > 0
        assert all(row.verdict == FASTER for row in faster.rows)
        ratio = slower.row("mean").ratio
        assert ratio is not None
        covered += ratio.low < 1.03 < ratio.high
        mean = slower.row("mean")
        assert mean.ratio and mean.ratio.value == pytest.approx(1.03, abs=0.01)
        assert mean.difference_ns and mean.difference_ns.value == pytest.approx(1500, abs=500)
    assert covered >= 0.85 * trials  # the ratio's interval holds the true 1.03 (97.5% here)


def test_too_few_runs_is_not_a_verdict():
    rng = np.random.default_rng(1)
    plenty = make_result(make_runs(rng, 10))
    few = make_result(make_runs(rng, MIN_RUNS_PER_SIDE - 1, scale=2.0))
    old = make_result([], restart=None, version=1)
    for a, b in [(plenty, few), (few, plenty), (old, old)]:
        for row in compare_results(a, b, 0.95).rows:
            assert row.verdict == TOO_FEW_RUNS
            assert row.difference_ns is None and row.ratio is None
    exactly = make_result(make_runs(rng, MIN_RUNS_PER_SIDE, scale=2.0))
    assert compare_results(plenty, exactly, 0.95).row("mean").verdict == SLOWER


def test_welch_interval_by_hand():
    a = RunMean.of([10.0, 12.0, 14.0])  # mean 12, s^2 4, variance of the mean 4/3
    b = RunMean.of([22.0, 20.0, 24.0, 21.0, 23.0])  # mean 22, s^2 2.5, 0.5 (no drift)
    df = stats.welch_df(a, b)
    assert df == pytest.approx((4 / 3 + 0.5) ** 2 / ((4 / 3) ** 2 / 2 + 0.5**2 / 4))
    d = stats.difference(a, b, 0.95)
    half = t_quantile(0.95, df) * math.sqrt(4 / 3 + 0.5)
    assert (d.value, d.low, d.high) == pytest.approx((10, 10 - half, 10 + half))
    # df is 3.53: the t quantile lies between those of 3 and 4 df (3.182, 2.776).
    assert 2.776 < t_quantile(0.95, df) < 3.182


def test_two_sittings_compare_with_how_much_their_sittings_differ():
    # A 3% shift that 10 quiet runs a side find; but earlier sittings of each
    # configuration differed by 4% (sd): two sittings cannot tell 3% apart.
    a, b = pair(3, runs=10, scale=1.03, spread=0.01)
    assert compare_results(a, b, 0.95).row("mean").verdict == SLOWER
    tau = {"mean": 0.04 * TYPICAL_NS["mean"]}
    a = replace(a, earlier_sittings=8, between_sittings_ns=tau)
    b = replace(b, earlier_sittings=8, between_sittings_ns=tau)
    row = compare_results(a, b, 0.95).row("mean")
    assert row.verdict == NO_DIFFERENCE
    # Welch-Satterthwaite over four parts: each side's runs and each side's sittings.
    runs_a, runs_b = (
        RunMean.of([r.mean_ns for r in side.runs], side.latency_ns.mean) for side in (a, b)
    )
    parts = [(runs_a.variance, 9), (runs_b.variance, 9), (tau["mean"] ** 2, 7)] + [
        (tau["mean"] ** 2, 7)
    ]
    df = sum(v for v, _ in parts) ** 2 / sum(v * v / d for v, d in parts)
    assert row.df == pytest.approx(df)
    assert row.level == 0.975  # the mean's share of the family's 5%
    half = t_quantile(0.975, df) * math.sqrt(sum(v for v, _ in parts))
    assert row.difference_ns and row.difference_ns.high - row.difference_ns.value == (
        pytest.approx(half)
    )


def test_fieller_ratio_agrees_with_the_difference_about_the_verdict():
    rng = np.random.default_rng(7)
    for _ in range(500):
        a = RunMean.of(list(rng.normal(100, rng.uniform(1, 10), rng.integers(3, 8))))
        b = RunMean.of(list(rng.normal(rng.uniform(95, 105), rng.uniform(1, 10), 5)))
        d, r = stats.difference(a, b, 0.9), stats.ratio(a, b, 0.9)
        assert (d.low <= 0 <= d.high) == (r.low <= 1 <= r.high)
        assert r.low <= r.value <= r.high
        assert r.value == pytest.approx(b.mean / a.mean)


def test_ratio_is_unbounded_when_the_baseline_is_not_told_from_zero():
    r = stats.ratio(RunMean.of([-1.0, 1.0, 3.0]), RunMean.of([5.0, 6.0, 7.0]), 0.95)
    assert r.low == -math.inf and r.high == math.inf


def test_the_difference_is_between_the_values_shown():
    a, b = pair(3)
    # Over all ops a statistic differs a little from the mean of its per-run values.
    b = replace(b, latency_ns=replace(b.latency_ns, p99=b.latency_ns.p99 + 500))
    row = compare_results(a, b, 0.95).row("p99")
    assert a.latency_ns and row.baseline.value == a.latency_ns.p99
    assert (row.baseline.low, row.baseline.high) == a.latency_ns.interval("p99")
    assert row.difference_ns and row.ratio
    assert row.difference_ns.value == pytest.approx(row.subject.value - row.baseline.value)
    assert row.ratio.value == pytest.approx(row.subject.value / row.baseline.value)


def test_runs_that_drift_widen_the_interval():
    rng = np.random.default_rng(8)
    a = make_result(make_runs(rng, 10))
    steady = make_runs(rng, 10)
    drifting = sorted(steady, key=lambda run: run.mean_ns)  # the same values, one trend
    widths = [
        compare_results(a, make_result(runs), 0.95).row("mean").difference_ns
        for runs in (steady, drifting)
    ]
    assert widths[0] and widths[1]
    assert widths[1].high - widths[1].low > 1.2 * (widths[0].high - widths[0].low)


def drifting_rounds(seed: int, rounds: int, scale: float) -> tuple[BenchResult, BenchResult]:
    """A and B (B ``scale`` times A) played in the same rounds on a machine that slows
    down by up to 10% from round to round, with 1% of noise of their own."""
    rng = np.random.default_rng(seed)
    machine = 1 + 0.1 * rng.random(rounds)
    a, b = make_runs(rng, rounds, 1.0, 0.01), make_runs(rng, rounds, scale, 0.01)

    def slowed(runs: list[RunSummary]) -> list[RunSummary]:
        return [
            replace(run, **{f: getattr(run, f) * m for f in ("mean_ns", "p50_ns", "p99_ns")})
            for run, m in zip(runs, machine, strict=True)
        ]

    return make_result(slowed(a)), make_result(slowed(b), server="target/servers/c-threaded")


def test_rounds_compared_paired_cancel_what_each_round_shared():
    a, b = drifting_rounds(9, 12, 1.02)
    unpaired = compare_results(a, b, 0.95).row("mean")
    by_round = compare_results(a, b, 0.95, rounds=True).row("mean")
    assert not unpaired.paired and unpaired.verdict == NO_DIFFERENCE
    assert by_round.paired and by_round.verdict == SLOWER and by_round.df == 11
    assert by_round.difference_ns and by_round.ratio
    runs = [np.mean([r.mean_ns for r in side.runs]) for side in (a, b)]
    assert by_round.difference_ns.value == pytest.approx(runs[1] - runs[0])  # the rounds'
    assert by_round.ratio.low > 1 and by_round.ratio.value == pytest.approx(1.02, abs=0.01)
    # Alike servers in the same rounds: no difference, however much the machine drifted.
    alike = [compare_results(*drifting_rounds(s, 12, 1.0), 0.95, rounds=True) for s in range(40)]
    assert sum(c.row("mean").verdict != NO_DIFFERENCE for c in alike) <= 4


@pytest.mark.real
def test_paired_ratio_agrees_with_the_paired_difference_about_the_verdict():
    rng = np.random.default_rng(10)
    for seed in range(300):
        a, b = drifting_rounds(seed, int(rng.integers(3, 10)), rng.uniform(0.97, 1.03))
        row = compare_results(a, b, 0.9, rounds=True).row("p50")
        assert row.paired and row.difference_ns and row.ratio
        d, r = row.difference_ns, row.ratio
        assert (d.low <= 0 <= d.high) == (r.low <= 1 <= r.high)
        assert r.low <= r.value <= r.high


def test_paired_ratio_bounds_are_where_the_rounds_test_of_b_minus_rho_a_flips():
    """Each finite bound of the paired ratio is the rho at which the rounds' b_i - rho a_i
    stop telling B - rho A apart from zero, also when the machine trends so steeply that
    the long-run variances imply a covariance larger than the two variances allow."""
    rng = np.random.default_rng(12)
    for seed in range(40):
        a, b = drifting_rounds(seed, 10, rng.uniform(0.7, 1.3))
        trend = np.linspace(1.0, 1.6, 10) if seed % 2 else np.ones(10)
        a_runs = np.array([r.p99_ns for r in a.runs]) * trend
        b_runs = np.array([r.p99_ns for r in b.runs]) * trend * rng.uniform(0.9, 1.1, 10)
        side_a, side_b = stats.RunMean.of(a_runs), stats.RunMean.of(b_runs)
        _, r, df = stats.paired(side_a, side_b, a_runs, b_runs, 0.95)
        t = t_quantile(0.95, df)

        def rejected(rho: float, a_runs=a_runs, b_runs=b_runs, mean_a=side_a.mean, t=t) -> bool:
            spread = stats.long_run_variance(b_runs - rho * a_runs) / len(a_runs)
            return (b_runs.mean() - rho * mean_a) ** 2 > t * t * spread

        assert not rejected(r.value)
        for bound, inward in ((r.low, 1), (r.high, -1)):
            assert math.isfinite(bound)
            step = 1e-6 * abs(bound)
            assert not rejected(bound + inward * step) and rejected(bound - inward * step)


def test_rounds_with_unequal_run_counts_are_compared_unpaired():
    a, b = drifting_rounds(11, 8, 1.0)
    b = make_result(b.runs[:-1])  # a comparison that failed mid-round
    row = compare_results(a, b, 0.95, rounds=True).row("mean")
    assert not row.paired and row.df != 6


# --- refusals ------------------------------------------------------------------------------


MISMATCHES = {
    "clients": {"clients": 4},
    "client CPUs": {"client_cores": [1, 2]},
    "server CPUs": {"server_cores": [0, 3]},
    "restart": {"restart": "connections"},
}


@pytest.mark.parametrize("field", MISMATCHES)
def test_mismatched_configurations_are_refused_naming_the_field(tmp_path, field):
    a, b = pair(5)
    path_a = write(tmp_path / "a.json", a)
    path_b = write(tmp_path / "b.json", replace(b, **MISMATCHES[field]))
    done = volley("compare", path_a, path_b)
    assert done.status == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert f": {field} " in done.stderr and "--force" in done.stderr
    forced = volley("compare", "--force", path_a, path_b)
    assert forced.status == 0
    assert "compared anyway (--force)" in forced.stdout and field in forced.stdout


def test_idle_states_are_checked():
    a, b = pair(5)
    held = replace(a, host=replace(a.host, idle_states="shallow"))
    allowed = replace(b, host=replace(b.host, idle_states="any"))
    [mismatch] = compare.mismatches(held, allowed)
    assert str(mismatch) == "idle states shallow vs any"
    assert compare.mismatches(held, replace(b, host=held.host)) == []


def test_load_model_is_checked():
    a, b = pair(5)
    open_loop = replace(b, load=LoadInfo(OPEN, 10_000.0, "poisson"))
    [mismatch] = compare.mismatches(a, open_loop)
    assert str(mismatch) == "load closed loop vs open loop at 10000 ops/s, poisson arrivals"
    faster = replace(b, load=LoadInfo(OPEN, 20_000.0, "poisson"))
    [mismatch] = compare.mismatches(open_loop, faster)
    assert "10000 ops/s, poisson arrivals vs open loop at 20000 ops/s" in str(mismatch)


def test_a_failed_result_is_refused(tmp_path):
    a, b = pair(5)
    failed = replace(b, status=FAILED, error="the server closed the connection")
    path_a, path_b = write(tmp_path / "a.json", a), write(tmp_path / "b.json", failed)
    done = volley("compare", path_a, path_b)
    assert done.status == 2
    assert "b.json failed (the server closed the connection)" in done.stderr
    assert volley("compare", "--force", path_a, path_b).status == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["only.json"], "at least two"),
        (["missing.json", "b.json"], "cannot read"),
        (["a.json", "b.json", "--confidence", "2"], "--confidence"),
        (["a.json", "b.json", "--fail-if-slower", "2"], "--fail-if-slower"),
        (["a.json", "b.json", "--fail-if-slower", "p42:2%"], "not a target"),
        (["a.json", "b.json", "--json", "-", "--markdown"], "not both"),
        (["a.json", "sweep"], "not both"),
        (["a.json", "garbage.txt"], "not JSON"),
    ],
)
def test_bad_input_exits_2_in_one_line(tmp_path, args, words):
    a, b = pair(5)
    write(tmp_path / "a.json", a)
    write(tmp_path / "b.json", b)
    write(tmp_path / "only.json", a)
    (tmp_path / "garbage.txt").write_text("{not json")
    write_sweep(tmp_path / "sweep" / "results.jsonl", {Point("c-epoll", 1, 1, 1): a})
    done = volley(
        "compare",
        *[tmp_path / arg if arg[0] != "-" and not arg[0].isdigit() else arg for arg in args],
    )
    assert done.status == 2, done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1


# --- gates ---------------------------------------------------------------------------------


@pytest.mark.real
def test_gates_exit_1_only_when_significantly_slower_by_more(tmp_path):
    a, b = pair(11, runs=10, scale=1.03, spread=0.01)
    path_a, path_b = write(tmp_path / "a.json", a), write(tmp_path / "b.json", b)

    def gate(*gates: str) -> Completed:
        return volley(
            "compare", path_a, path_b, *[x for g in gates for x in ("--fail-if-slower", g)]
        )

    tripped = gate("2%")
    assert tripped.status == 1
    assert "b.json: mean is 3." in tripped.stderr and "% slower than the baseline" in tripped.stderr
    assert "more than --fail-if-slower mean:2%" in tripped.stderr
    assert gate("5%").status == 0
    assert gate("p99:2%").status == 1
    assert gate("5%", "p99.9:2%").status == 1
    assert gate("mean:10%", "p50:10%").status == 0
    # B faster than A never trips a gate, however large the change.
    assert volley("compare", path_b, path_a, "--fail-if-slower", "0.1%").status == 0
    # A time: B's p99 is about 3.3 us slower (3% of 110 us).
    assert gate("p99:2us").status == 1
    assert gate("p99:10us").status == 0


def test_a_gate_that_cannot_decide_is_bad_input(tmp_path):
    rng = np.random.default_rng(2)
    path_a = write(tmp_path / "a.json", make_result(make_runs(rng, 2)))
    path_b = write(tmp_path / "b.json", make_result(make_runs(rng, 10)))
    assert volley("compare", path_a, path_b).status == 0
    done = volley("compare", path_a, path_b, "--fail-if-slower", "2%")
    assert done.status == 2 and "needs 3 runs" in done.stderr


# --- outputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimate", "signed", "text"),
    [
        # A difference near zero with a wide interval: the unit is the interval's.
        (stats.Estimate(-35.56, -352_425.27, 352_354.16), True, "-0.04 us [-352.4, +352.4] us"),
        (stats.Estimate(63_090.0, 62_000.0, 64_190.0), False, "63.09 us [62.00, 64.19] us"),
        (stats.Estimate(150_300.0, 148_200.0, 152_400.0), False, "150.3 us [148.2, 152.4] us"),
        # A bound below the value's unit still reads in the widest's.
        (stats.Estimate(900.0, 400.0, 1_400.0), False, "0.90 us [0.40, 1.40] us"),
        (stats.Estimate(2e6, -math.inf, math.inf), True, "+2.00 ms [?, ?] ms"),
        (stats.Estimate(50_000.0, math.nan, math.nan), False, "50.00 us"),
    ],
)
def test_an_estimate_reads_in_the_unit_of_its_widest_bound(estimate, signed, text):
    assert compare.format_estimate(estimate, signed) == text


def test_table_for_people(tmp_path):
    a, b = pair(11, runs=10, scale=1.03, spread=0.01)
    done = volley("compare", write(tmp_path / "a.json", a), write(tmp_path / "b.json", b))
    assert done.status == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("A: ") and "c-epoll, 10 runs, each a fresh server" in lines[0]
    assert lines[1].startswith("B: ") and "c-threaded" in lines[1]
    assert "1 client on 1 CPU, server on 1 CPU, closed loop" in lines[2]
    mean = next(line for line in lines if line.startswith("mean "))
    assert mean.split()[-2:] == ["97.5%", "slower"] and " us [" in mean and "1.03" in mean
    p99 = next(line for line in lines if line.startswith("p99 "))
    assert "99.375%" in p99
    assert lines[-1] == (
        "verdicts: family error <= 5% (mean 2.5%, each percentile 0.625%; Bonferroni)"
    )


def test_json_is_strict_and_versioned(tmp_path):
    a, b = pair(11, runs=10, scale=1.03, spread=0.01)
    old = make_result([], restart=None, version=1)
    paths = [write(tmp_path / f"{n}.json", r) for n, r in (("a", a), ("b", b), ("c", a))]
    data = strict_loads(volley("compare", "--json", "-", *paths).stdout)
    assert data["version"] == compare.FORMAT_VERSION and data["confidence"] == 0.95
    assert [p["subject"] for p in data["pairings"]] == [str(paths[1]), str(paths[2])]
    rows = data["pairings"][0]["comparisons"][0]["rows"]
    assert [r["statistic"] for r in rows] == list(STATISTICS)
    mean = rows[0]
    assert mean["verdict"] == SLOWER and mean["subject"]["runs"] == 10
    assert data["family"]["alpha"] == 0.05 and data["family"]["shares"]["p99_9"] == 0.125
    side = data["pairings"][0]["comparisons"][0]["baseline"]["configuration"]
    assert set(side) == {"clients", "client_cpus", "server_cpus", "restart", "load", "idle_states"}
    assert data["family"]["text"].startswith("verdicts: family error <= 5% (mean 2.5%")
    assert [r["level"] for r in rows] == [0.975] + [0.99375] * 4
    assert data["pairings"][0]["comparisons"][0]["sequential"] is None
    assert mean["difference_ns"]["low"] > 0 and 1 < mean["ratio"]["value"] < 1.05
    assert data["pairings"][1]["comparisons"][0]["rows"][0]["verdict"] == NO_DIFFERENCE
    # Unknown numbers are null, never NaN.
    path_old = write(tmp_path / "old.json", old)
    text = volley("compare", "--json", "-", path_old, path_old).stdout
    row = strict_loads(text)["pairings"][0]["comparisons"][0]["rows"][1]
    assert row["verdict"] == TOO_FEW_RUNS and row["baseline"]["low_ns"] is None
    assert row["difference_ns"] is None and row["ratio"] is None


def test_markdown_tables(tmp_path):
    a, b = pair(11, runs=10, scale=1.03, spread=0.01)
    done = volley(
        "compare", "--markdown", write(tmp_path / "a.json", a), write(tmp_path / "b.json", b)
    )
    assert done.status == 0
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| statistic | A | B | B - A | B / A | level | verdict |"
    assert table[1] == "| --- | --- | --- | --- | --- | --- | --- |"
    assert len(table) == 2 + len(STATISTICS)
    assert all(line.count(" | ") == 6 and line.endswith(" |") for line in table)
    assert table[2].startswith("| mean |") and table[2].endswith("| 97.5% | slower |")
    assert done.stdout.endswith("Bonferroni)\n") and "side  \nverdicts: family" in done.stdout


# --- sweeps --------------------------------------------------------------------------------


@pytest.mark.real
def test_sweeps_are_matched_point_by_point(tmp_path):
    rng = np.random.default_rng(4)

    def point(server: str, clients: int) -> Point:
        return Point(server, clients, 1, 1)

    def at(clients: int, scale: float = 1.0) -> BenchResult:
        return make_result(make_runs(rng, 8, scale, 0.01), clients=clients)

    a = write_sweep(
        tmp_path / "a" / "results.jsonl",
        {point("c-epoll", 1): at(1), point("c-epoll", 4): at(4), point("go", 1): at(1)},
    )
    write_sweep(
        tmp_path / "b" / "results.jsonl",
        {point("c-epoll", 1): at(1, 1.05), point("c-epoll", 4): at(4), point("rust", 1): at(1)},
    )
    done = volley("compare", a, tmp_path / "b")  # a directory means its results.jsonl
    assert done.status == 0, done.stderr
    lines = done.stdout.splitlines()
    one = next(line for line in lines if line.startswith("c-epoll, 1 client "))
    four = next(line for line in lines if line.startswith("c-epoll, 4 clients "))
    assert "  slower  " in one and "p99 slower" in one
    assert NO_DIFFERENCE in four
    assert "only in A: go, 1 client on 1 core, server on 1 core" in lines
    assert "only in B: rust, 1 client on 1 core, server on 1 core" in lines
    data = strict_loads(volley("compare", "--json", "-", a, tmp_path / "b").stdout)
    pairing = data["pairings"][0]
    assert pairing["sweep"] and len(pairing["comparisons"]) == 2
    assert pairing["only_baseline"] == [point("go", 1).to_json()]
    assert pairing["only_subject"] == [point("rust", 1).to_json()]
    assert volley("compare", a, tmp_path / "b", "--fail-if-slower", "2%").status == 1


def test_a_sweep_point_that_failed_before_measuring_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    good = make_result(make_runs(rng, 5))
    at = Point("crashy", 1, 1, 1)
    a = write_sweep(tmp_path / "a" / "results.jsonl", {at: good})
    b = tmp_path / "b" / "results.jsonl"
    b.parent.mkdir()
    store.append(b, SweepRecord(at, 1, SweepInfo("test", "test.toml"), None, "it crashed"))
    done = volley("compare", a, b)
    assert done.status == 2 and "at crashy, 1 client" in done.stderr
    assert "failed (it crashed)" in done.stderr
    forced = volley("compare", "--force", a, b)
    assert forced.status == 0 and "(compared anyway: B failed)" in forced.stdout


# --- end to end ----------------------------------------------------------------------------

DELAY_US = 20


@pytest.fixture(scope="module")
def delay_server(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    binary = tmp_path_factory.mktemp("delay") / "delay_server"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", "-pthread", "-o", binary, FIXTURES / "delay_server.c"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return binary


@pytest.mark.real
def test_delay_server_keeps_the_contract(delay_server):
    done = volley("check", delay_server, "--", "-d", str(DELAY_US), timeout=90)
    assert done.status == 0, done.stdout + done.stderr


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.skipif(len(usable_cpus()) < 2, reason="needs two usable CPUs")
# Real servers timed on a shared VM: in the full suite this VM's one-client median went
# from 70 us to 200 us for a while (regimes the tests before leave or the host brings).
@pytest.mark.flaky(reruns=2, reruns_delay=10)
def test_a_server_made_20us_slower_is_reported_slower_by_about_20us(tmp_path, delay_server):
    """The median reply is the one to check: on a loaded 2-vCPU machine the mean (and p90
    up) are ruled by preemptions of milliseconds, so there B - A is noise-dominated (with a
    load average of 15-24 on this VM its sign came out wrong in 1 of 5 tries), while the
    median moved by 10-55 us in those tries: the bounds are loose on purpose."""
    start = time.monotonic()
    paths = {}
    for delay in (0, DELAY_US):
        path = tmp_path / f"delay-{delay}.json"
        done = bench(
            "--server-cores", "0", "--cores", "1", "--clients", "1",
            "--min-runs", "8", "--warmup", "0.1s", "--run-time", "0.3s", "--max-time", "20s",
            "--precision", "50%", "--quiet", "--json", path,
            delay_server, "--", "-d", str(delay),
            timeout=60,
        )  # fmt: skip
        assert done.status in (0, 3), done.stderr
        paths[delay] = path
    done = volley("compare", "--json", "-", paths[0], paths[DELAY_US])
    assert done.status == 0, done.stderr
    rows = {
        r["statistic"]: r
        for r in strict_loads(done.stdout)["pairings"][0]["comparisons"][0]["rows"]
    }
    p50 = rows["p50"]
    seen = {s: (r["verdict"], r["difference_ns"]) for s, r in rows.items()}
    assert p50["verdict"] == SLOWER, seen
    assert 0.3 * DELAY_US * 1e3 < p50["difference_ns"]["value"] < 3 * DELAY_US * 1e3, seen
    assert time.monotonic() - start < 90


@pytest.mark.real
def test_compare_run_measures_servers_interleaved_and_writes_every_result(tmp_path):
    # Two bundled servers, a few short rounds: the mechanics, not the verdict.
    out = tmp_path / "ab"
    done = volley(
        "compare", "--run", "--clients", "1", "--min-runs", "3", "--max-time", "4s",
        "--warmup", "0.05s", "--run-time", "0.1s", "-o", out,
        SERVERS / "c-threaded", SERVERS / "c-epoll",
        timeout=60,
    )  # fmt: skip
    assert done.status in (0, 3), done.stderr
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["0-c-threaded.json", "1-c-epoll.json"]
    a, b = (strict_loads(p.read_text()) for p in written)
    # One run of each per round: the same number of runs, each with its own fresh server.
    assert len(a["runs"]) == len(b["runs"]) >= 3
    assert not {r["server_pid"] for r in a["runs"]} & {r["server_pid"] for r in b["runs"]}
    assert "round 1:" in done.stderr and "verdict" in done.stdout
    assert "B - A (paired by round) and B / A (Fieller)" in done.stdout
    # The plan and its looks, in both results; the verdict printed is at the last look.
    assert a["sequential"] == b["sequential"] and a["sequential"]["rounds"]
    assert a["sequential"]["rounds"][-1] == len(a["runs"])
    assert "sequential: " in done.stdout and "look 1 of " in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "x"], "at least two servers"),
        (["--run", "--equivalence", "p99:1%", "a", "b"], "--equivalence"),
        (["--clients", "2", "a.json", "b.json"], "--clients measures servers: give --run"),
        (["--max-time", "9s", "a.json", "b.json"], "--max-time measures servers: give --run"),
    ],
)
def test_compare_run_bad_input(args, message):
    done = volley("compare", *args)
    assert done.status == 2 and message in done.stderr, done.stderr


def test_compare_run_takes_volley_benchs_options_for_every_side():
    runner = CliRunner()
    shown = runner.invoke(commands.app, ["compare", "--help"], terminal_width=200).output
    bench_help = runner.invoke(commands.app, ["bench", "--help"], terminal_width=200).output
    for option in ("--idle-states", "--rate", "--arrivals", "--spin", "--noisy", "--restart",
                   "--server-address", "--op-timeout", "--startup-timeout", "--port"):  # fmt: skip
        # The same definition: the same help line as volley-bench's.
        line = next(x for x in bench_help.splitlines() if x.strip().startswith(option))
        assert line in shown.splitlines(), option


@pytest.mark.real
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--idle-states", "deep"], "--idle-states 'deep' is not one of"),
        (["--rate", "fast"], "--rate 'fast' is not a rate"),
        (["--spin", "10us"], "--spin applies to the open loop"),
        (["--noisy", "maybe"], "--noisy 'maybe' is not one of"),
    ],
)
def test_compare_run_refuses_a_bad_bench_option_in_one_line(args, message):
    servers = [str(SERVERS / "c-threaded"), f"{SERVERS / 'c-epoll'} -x 1"]
    done = CliRunner().invoke(commands.app, ["compare", "--run", *args, *servers])
    assert done.exit_code == 2, done.output
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.real
def test_compare_run_warns_even_when_quiet(tmp_path):
    # On one CPU the server and the clients share it: a warning, which -q does not hide.
    cpu = usable_cpus()[0]
    command = [
        sys.executable, "-m", "volley", "compare", "--run", "-q", "--clients", "1",
        "--min-runs", "3", "--max-time", "2s", "--warmup", "0.05s", "--run-time", "0.1s",
        "-o", str(tmp_path / "ab"), str(SERVERS / "c-threaded"), str(SERVERS / "c-epoll"),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    assert done.returncode in (0, 3), done.stderr
    assert f"warning: server and clients share CPU {cpu}" in done.stderr
    assert "round 1:" not in done.stderr  # the progress is what -q hides


def test_a_run_side_is_a_server_and_its_arguments_in_one_word(tmp_path):
    spaced = tmp_path / "my server"
    spaced.write_text("")
    assert commands.server_command("target/servers/go -t 4") == ("target/servers/go", ["-t", "4"])
    assert commands.server_command("c-epoll") == ("c-epoll", [])
    assert commands.server_command(str(spaced)) == (str(spaced), [])
    assert commands.server_command("'a b' -x") == ("a b", ["-x"])


# --- a machine that drifts -----------------------------------------------------------------

# The machine gets this much slower per reply partway through (delay_server's DELAY_DRIFT,
# reached within 0.1 s: a step): well above the scatter of one run's median from run to run
# here (sd 3-15 us, up to 50 us while others work), so that sequential order cannot miss it.
# Interleaved rounds compared paired cancel it, but for the one round it splits.
DRIFT_US = 60
# One client on one CPU, the server on the other; about 0.3 s a run with the server's start.
DRIFT_BENCH = ["--server-cores", "0", "--cores", "1", "--clients", "1", "--warmup", "0.05s",
               "--run-time", "0.15s"]  # fmt: skip
SEQUENTIAL_S = 4  # --max-time of each side in sequential order: about 12 runs
INTERLEAVED_S = 14  # --max-time of an interleaved comparison: about 24 rounds
# 99%: a false "slower" between identical servers in 1% of tries, not 5%.
CONFIDENCE = ["--confidence", "0.99"]


def drifting(epoch: float) -> dict[str, str]:
    """The environment of servers that all get DRIFT_US slower at ``epoch`` (wall time)."""
    return {"DELAY_DRIFT": f"{epoch:.3f},{DRIFT_US * 10},{DRIFT_US}"}


def delayed(binary: Path, directory: Path, name: str, delay_us: int) -> Path:
    """A server that is ``binary -d delay_us``, under its own name (its result's file)."""
    script = directory / name
    script.write_text(f'#!/bin/sh\nexec {binary} -d {delay_us} "$@"\n')
    script.chmod(0o755)
    return script


@pytest.mark.real
def test_compare_run_starts_each_side_with_its_own_arguments(tmp_path, delay_server):
    out = tmp_path / "ab"
    done = volley(
        "compare", "--run", "-q", "--clients", "1", "--min-runs", "3", "--max-time", "3s",
        "--warmup", "0.05s", "--run-time", "0.1s", "-o", out,
        f"{delay_server} -d 0", f"{delay_server} -d 300",
        timeout=60,
    )  # fmt: skip
    assert done.status in (0, 3), done.stderr
    a, b = (strict_loads((out / f"{i}-delay_server.json").read_text()) for i in (0, 1))
    assert a["server_args"] == ["-d", "0"] and b["server_args"] == ["-d", "300"]
    # 300 us more a reply: B's median is far above A's whatever the machine does.
    assert b["latency_ns"]["p50"] > a["latency_ns"]["p50"] + 200_000


def p50_row(done: Completed) -> dict:
    """The median's row of a one-pair ``volley compare --json``."""
    assert done.status in (0, 3), done.stderr
    rows = done.json()["pairings"][0]["comparisons"][0]["rows"]
    return next(r for r in rows if r["statistic"] == "p50")


def interleaved(tmp_path: Path, a: Path, b: Path) -> dict:
    """The median's row of ``volley compare --run A B`` on servers that slow down 5 s
    after it starts (a few rounds in, or 1 s in when loaded); at least 16 rounds (9 s
    unloaded), so that it cannot end just after the drift."""
    out = tmp_path / f"rounds-{b.name}"
    epoch = time.time() + 5
    done = volley(
        "compare", "--run", "--json", "-", *CONFIDENCE, *DRIFT_BENCH, "--min-runs", "16",
        "--max-time", f"{INTERLEAVED_S}s", "-o", out, a, b,
        env=drifting(epoch), timeout=INTERLEAVED_S + 60,
    )  # fmt: skip
    row = p50_row(done)
    # The drift came during the rounds, with rounds before and after it (started_at is
    # whole seconds, rounded down).
    result = strict_loads((out / f"0-{a.name}.json").read_text())
    started = datetime.fromisoformat(result["started_at"]).timestamp()
    assert started + 1 < epoch < started + result["elapsed_s"] - 2, (started, epoch, result)
    return row


def cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs since boot; steal counts as busy."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def settle(bound_s: float = 60.0, idle_share: float = 0.8) -> None:
    """Wait, at most ``bound_s``, until the CPUs were ``idle_share`` idle over one second: the
    tests before this one can leave work behind for a while (thousands of client threads
    winding down, a JVM's compiler), which a timing test would read as its servers' noise."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        idle, total = cpu_times()
        time.sleep(1.0)
        idle_after, total_after = cpu_times()
        if idle_after - idle >= idle_share * max(1, total_after - total):
            return


def sequential_row(tmp_path: Path, delay_server: Path, attempt: str) -> dict:
    """All of A, then all of B on the machine slowed down since A ended: the median's row of
    their comparison. Each run starts a fresh server, which reads the epoch: A's servers all
    ended before it, so they need none (the epoch is only known once A is done, however long
    A took to start)."""
    paths = []
    for side in ("a", "b"):
        env = drifting(time.time()) if side == "b" else {}
        path = tmp_path / f"sequential-{attempt}-{side}.json"
        done = volley(
            "bench", *DRIFT_BENCH, "--min-runs", "12", "--max-time", f"{SEQUENTIAL_S}s",
            "--precision", "50%", "--quiet", "--json", path, delay_server,
            env=env, timeout=SEQUENTIAL_S + 60,
        )  # fmt: skip
        assert done.status in (0, 3), done.stderr
        paths.append(path)
    return p50_row(volley("compare", "--json", "-", *CONFIDENCE, *paths))


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.skipif(len(usable_cpus()) < 2, reason="needs two usable CPUs")
@pytest.mark.flaky(reruns=2, reruns_delay=10)  # real servers timed: see the test above
def test_interleaved_order_survives_a_machine_that_slows_down_and_sequential_does_not(
    tmp_path, delay_server
):
    """Issue 15. Two identical servers on a machine that gets DRIFT_US slower per reply
    partway through: all of A then all of B calls B slower; interleaved rounds call them
    equal; and interleaved rounds still find a server 20 us slower per reply. The median
    is the statistic checked (see the test above: the mean is preemption noise here).
    Compared unpaired, interleaved rounds keep the drift out of the difference but not out
    of its interval, and on this shared machine other work drifts by 100 us at times: then
    20 us went unseen in 2 of 4 tries with a 15-25 us step. Paired by round (compare --run
    does so), what a round's two runs share cancels."""
    start = time.monotonic()
    settle()
    sequential = sequential_row(tmp_path, delay_server, "first")
    baseline = sequential["baseline"]
    if (
        sequential["verdict"] != SLOWER
        and baseline["high_ns"] - baseline["low_ns"] > 2e3 * DRIFT_US
    ):
        # A's own runs scattered more than the drift: the machine was too busy to show
        # anything, which is no verdict on the order. Once more, after it settles.
        settle()
        sequential = sequential_row(tmp_path, delay_server, "second")
    assert sequential["verdict"] == SLOWER, sequential
    # At least the drift; no upper bound: this VM also changes regime on its own for seconds
    # at a time (one client's median 70 us, then 340 us), which sequential order adds in too.
    assert sequential["difference_ns"]["value"] > 0.3 * DRIFT_US * 1e3, sequential
    assert not sequential["paired"]

    # Interleaved, the same two servers: no difference, though the drift happened during it.
    settle()
    a = delayed(delay_server, tmp_path, "a", 0)
    equal = interleaved(tmp_path, a, delayed(delay_server, tmp_path, "same-as-a", 0))
    assert equal["verdict"] == NO_DIFFERENCE and equal["paired"], equal

    # Interleaved, B 20 us slower per reply: found, by about that much.
    found = interleaved(tmp_path, a, delayed(delay_server, tmp_path, "slower", DELAY_US))
    assert found["verdict"] == SLOWER, found
    assert 0.3 * DELAY_US * 1e3 < found["difference_ns"]["value"] < 3 * DELAY_US * 1e3, found
    assert time.monotonic() - start < 240  # 40 s on a quiet machine; settling waits 60 s at most

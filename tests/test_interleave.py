"""Interleaved sweeps: passes of one run per unfinished point in a fresh seeded order, the
stopping rule per point, runs kept for --resume, and merging one-run results into a point's."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, server, volley
from test_sweep import MINIMAL, WARNED, bench_result, experiment_in, two_cpus

from volley.numbers.stats import Histogram
from volley.present import progress, relative
from volley.records import store
from volley.records.experiment import Experiment, Point
from volley.records.results import RunSummary
from volley.studies import passes as in_passes
from volley.studies import sweep
from volley.studies.sweep import Outcome

INTERLEAVED = MINIMAL + 'order = "interleaved"\n\n[bench]\nmax-time = "30s"\nprecision = "1%"\n'


def one_run(point: Point, mean: float, index: int = 0):
    """A one-run volley-bench result, as a --max-time of one run gives: 1000 ops spread
    evenly over mean +- 10%."""
    ops = np.linspace(0.9 * mean, 1.1 * mean, 1000).astype(np.int64)
    histogram = Histogram()
    histogram.record(ops)
    result = bench_result(point, "not-significant", mean)
    assert result.latency_ns is not None
    latency = dataclasses.replace(
        result.latency_ns,
        mean=float(ops.mean()),
        stddev=float(ops.std(ddof=1)),
        histogram=histogram.encode(),
    )
    run = RunSummary(1000, 0.5, mean, mean, mean, mean, mean, 4000 + index)
    return dataclasses.replace(
        result, n=1000, rounds=1, ci_batches=1, runs=[run], latency_ns=latency
    )


class OneRunner:
    """Plays one run per call: every point's runs the same (it meets 1% after the pilot),
    except ``noisy`` points, whose runs scatter by 20% (they run until max-time)."""

    def __init__(self, noisy: tuple[str, ...] = (), signal_at: int | None = None, fail=None):
        self.ran: list[Point] = []
        self.commands: list[list[str]] = []
        self.noisy = noisy
        self.signal_at = signal_at
        self.fail = fail or {}  # point -> the run (1-based) that fails
        self.interrupted = False

    def run(self, point: Point, command: list[str], timeout_s: float) -> Outcome:
        self.ran.append(point)
        self.commands.append(command)
        count = self.ran.count(point)
        if self.signal_at == len(self.ran):
            os.kill(os.getpid(), signal.SIGINT)
            return Outcome(130, None, "interrupted")
        if self.fail.get(point) == count:
            return Outcome(1, None, "the server crashed")
        wobble = 0.2 * (-1) ** count if point.server in self.noisy else 0.0
        return Outcome(3, one_run(point, 50_000.0 * (1 + wobble), count))

    def interrupt(self) -> None:
        self.interrupted = True


def run_sweep(exp: Experiment, out: Path, runner: OneRunner, resume: bool = False, seed=7):
    path, done, _ = sweep.open_results(out, exp, resume)
    the_plan = sweep.plan(exp, [0, 1], done)
    summary = in_passes.run_in_passes(exp, path, the_plan, runner, progress.QuietSweep(), seed=seed)
    return summary, path


class WarningRunner(OneRunner):
    def run(self, point: Point, command: list[str], timeout_s: float) -> Outcome:
        outcome = super().run(point, command, timeout_s)
        return dataclasses.replace(outcome, warnings=WARNED[: 1 + (point.clients > 1)])


def test_the_runs_warnings_are_shown_once_each_even_when_quiet(tmp_path):
    exp = experiment_in(tmp_path, INTERLEAVED)
    path, done, _ = sweep.open_results(tmp_path / "out", exp, False)
    shown = io.StringIO()
    the_plan = sweep.plan(exp, [0, 1], done)
    in_passes.run_in_passes(exp, path, the_plan, WarningRunner(), progress.QuietSweep(shown))
    assert shown.getvalue().splitlines() == list(WARNED)


def passes(ran: list[Point], size: int) -> list[set[Point]]:
    return [set(ran[i : i + size]) for i in range(0, len(ran), size)]


def test_every_pass_plays_each_unfinished_point_once_in_a_shuffled_order(tmp_path):
    exp = experiment_in(tmp_path, INTERLEAVED)
    runner = OneRunner()
    summary, path = run_sweep(exp, tmp_path / "out", runner)
    points = exp.points()
    # Identical runs meet 1% at the end of the pilot: ten passes of all four points.
    assert len(runner.ran) == 4 * 10
    assert all(p == set(points) for p in passes(runner.ran, 4))
    orders = {tuple(runner.ran[i : i + 4]) for i in range(0, 40, 4)}
    assert len(orders) > 1  # shuffled afresh, not one fixed order
    assert all(
        "--max-time" in c and c[c.index("--max-time") + 1] == "0.75s" for c in runner.commands
    )
    records, _ = store.load(path)
    assert not summary.interrupted and sorted(r.point for r in records) == sorted(points)
    for record in records:
        assert record.status == "significant" and record.exit_status == 0
        assert record.result is not None and record.result.rounds == 10
        assert record.result.n == 10_000 and record.sweep.order == "interleaved"
        assert record.sweep.seed == 7 and record.sweep.pass_number is None
    runs, _ = store.load(path.parent / store.RUNS_NAME)
    assert [r.sweep.pass_number for r in runs] == [k for k in range(1, 11) for _ in range(4)]


def test_the_same_seed_plays_the_same_order(tmp_path):
    exp = experiment_in(tmp_path, INTERLEAVED)
    first, second = OneRunner(), OneRunner()
    run_sweep(exp, tmp_path / "one", first)
    run_sweep(exp, tmp_path / "two", second)
    assert first.ran == second.ran


def test_a_done_point_leaves_the_later_passes(tmp_path):
    exp = experiment_in(tmp_path, INTERLEAVED.replace('"30s"', '"15s"'))
    runner = OneRunner(noisy=("b",))
    run_sweep(exp, tmp_path / "out", runner)
    a_runs = [p for p in runner.ran if p.server == "a"]
    b_runs = [p for p in runner.ran if p.server == "b"]
    assert len(a_runs) == 2 * 10  # met at the pilot
    # b's runs scatter by 20%: it plays until its max-time (1 s a run: 15 runs, the last
    # ending at 15 s), and after pass 10 only b's points are in a pass.
    assert len(b_runs) == 2 * 15
    assert {p.server for p in runner.ran[40:]} == {"b"}
    records = {r.point: r for r in store.load(tmp_path / "out" / "results.jsonl")[0]}
    b = records[Point("b", 1, 1, 1)]
    assert b.status == "not-significant" and b.exit_status == 3
    assert b.result is not None and b.result.rounds == 15


def test_a_failed_run_ends_its_point_with_what_it_measured(tmp_path):
    exp = experiment_in(tmp_path, INTERLEAVED)
    crash = {Point("a", 4, 1, 1): 3, Point("b", 1, 1, 1): 1}
    run_sweep(exp, tmp_path / "out", OneRunner(fail=crash))
    records = {r.point: r for r in store.load(tmp_path / "out" / "results.jsonl")[0]}
    late = records[Point("a", 4, 1, 1)]
    assert late.status == "failed" and late.failure == "the server crashed"
    assert late.result is not None and late.result.rounds == 2 and late.exit_status == 1
    first = records[Point("b", 1, 1, 1)]
    assert first.result is None and first.failure == "the server crashed"
    assert first.sweep.pass_number is None  # the point's record, not its run's


class DroppingRunner(OneRunner):
    """Every run disturbed and dropped (--noisy drop): no evidence, only time spent."""

    def run(self, point: Point, command: list[str], timeout_s: float) -> Outcome:
        outcome = super().run(point, command, timeout_s)
        assert outcome.result is not None
        dropped = outcome.result.runs
        return Outcome(3, dataclasses.replace(outcome.result, runs=[], dropped_runs=dropped))


def test_a_point_whose_runs_are_all_dropped_still_ends_at_its_max_time(tmp_path):
    exp = experiment_in(tmp_path, INTERLEAVED.replace('"30s"', '"5s"'))
    runner = DroppingRunner()
    run_sweep(exp, tmp_path / "out", runner)
    assert len(runner.ran) == 4 * 5  # 1 s a run: five runs each
    records, _ = store.load(tmp_path / "out" / "results.jsonl")
    assert len(records) == 4 and all(r.status == "not-significant" for r in records)
    # Each point's record keeps every run it dropped, not only its last process's.
    assert all(r.result is not None and len(r.result.dropped_runs) == 5 for r in records)


def test_resume_continues_the_runs_an_interrupted_sweep_kept(tmp_path):
    exp = experiment_in(tmp_path, INTERLEAVED)
    out = tmp_path / "out"
    stopped = OneRunner(signal_at=7)  # in the second pass
    summary, path = run_sweep(exp, out, stopped)
    assert summary.interrupted and len(stopped.ran) == 7
    assert not path.exists() or store.load(path)[0] == []  # no point done yet
    with pytest.raises(sweep.SweepError, match="--resume"):
        sweep.open_results(out, exp, resume=False)
    rest = OneRunner()
    summary, path = run_sweep(exp, out, rest, resume=True, seed=8)
    assert not summary.interrupted
    assert len(rest.ran) == 40 - 6  # the six runs kept are not played again
    records, _ = store.load(path)
    assert len(records) == 4 and all(r.result and r.result.rounds == 10 for r in records)
    runs, _ = store.load(out / store.RUNS_NAME)
    assert runs[6].sweep.pass_number == 3  # the passes go on from where they stopped


def test_merging_one_run_results_is_exact():
    point = Point("a", 1, 1, 1)
    slow, fast = one_run(point, 60_000.0), one_run(point, 40_000.0)
    merged = in_passes.merge([slow, fast, fast], "significant", None)
    latency = merged.latency_ns
    assert latency is not None and merged.n == 3000 and merged.rounds == 3
    # What one benchmark of all 3000 ops would say.
    ops = np.concatenate(
        [np.linspace(0.9 * m, 1.1 * m, 1000).astype(np.int64) for m in (60e3, 40e3, 40e3)]
    )
    assert latency.mean == pytest.approx(ops.mean(), rel=1e-6)
    assert latency.stddev == pytest.approx(ops.std(ddof=1), rel=1e-6)
    everything = Histogram()
    everything.record(ops)
    assert latency.histogram == everything.encode()
    assert latency.p50 == pytest.approx(np.percentile(ops, 50), rel=2e-3)
    assert latency.p99 == pytest.approx(np.percentile(ops, 99), rel=2e-3)
    assert latency.ci_low < latency.mean < latency.ci_high  # from the three runs' means


def test_a_merged_record_claims_no_earlier_sittings_its_intervals_did_not_use():
    point = Point("a", 1, 1, 1)
    runs = [
        dataclasses.replace(
            one_run(point, mean), earlier_sittings=5, between_sittings_ns={"mean": 9_000.0}
        )
        for mean in (40_000.0, 41_000.0, 39_000.0)
    ]
    merged = in_passes.merge(runs, "significant", None)
    assert merged.earlier_sittings is None and merged.between_sittings_ns == {}
    latency = merged.latency_ns
    assert latency is not None
    # Its interval is the three runs' alone, far narrower than a 9 us spread would make it.
    assert latency.ci_high - latency.ci_low < 2 * 1.96 * 9_000.0


def test_progress_says_each_pass(tmp_path):
    exp = experiment_in(tmp_path, INTERLEAVED)
    stream = io.StringIO()
    path, done, _ = sweep.open_results(tmp_path / "out", exp, False)
    in_passes.run_in_passes(
        exp, path, sweep.plan(exp, [0, 1], done), OneRunner(), progress.SweepLines(stream)
    )
    lines = stream.getvalue().splitlines()
    assert lines[0] == "pass 1: one run of each of 4 points"
    assert sum(line.startswith("pass ") for line in lines) == 10
    assert sum(line.startswith("[") for line in lines) == 4


@pytest.mark.real
@two_cpus
@pytest.mark.slow
def test_a_real_interleaved_sweep_of_twin_servers_alternates_and_comes_out_equal(tmp_path):
    """One server under two names: two tiny points, played in alternation; relative to one
    another they measure about the same."""
    server("c-threaded")
    experiment = tmp_path / "twins.toml"
    experiment.write_text(
        f'servers-dir = "{ROOT}/target/servers"\n'
        'servers = ["c-threaded", { name = "twin", path = "c-threaded" }]\n'
        'clients = 1\nserver-cpus = 1\nclient-cpus = 1\norder = "interleaved"\n\n'
        '[bench]\nprecision = "50%"\nmax-time = "8s"\nwarmup = "0.1s"\nround-time = "0.2s"\n'
    )
    out = tmp_path / "out"
    began = time.monotonic()
    done = volley("sweep", experiment, "-o", out, timeout=120)
    assert done.status == 0, done.stderr
    assert time.monotonic() - began < 100
    runs, _ = store.load(out / store.RUNS_NAME)
    by_pass: dict[int, list[str]] = {}
    for run in runs:
        assert run.result is not None and run.result.rounds == 1
        by_pass.setdefault(run.sweep.pass_number or 0, []).append(run.point.server)
    # Every pass plays each point not yet done once: both, until one of them is done (8 s
    # leaves room for two runs each even when a loaded machine makes a run take 3 s).
    assert len(by_pass) >= 2, done.stderr
    assert sorted(by_pass[1]) == sorted(by_pass[2]) == ["c-threaded", "twin"]
    assert all(len(names) == len(set(names)) for names in by_pass.values())
    assert "pass 2: one run of each of 2 points" in done.stderr
    records, _ = store.load(out / "results.jsonl")
    assert sorted(r.point.server for r in records) == ["c-threaded", "twin"]
    for record in records:
        runs_of = [r for r in runs if r.point == record.point]
        assert record.result is not None and record.result.rounds == len(runs_of)
        assert record.status in ("significant", "not-significant")

    plotted = volley("plot", out / "results.jsonl", "--baseline", "c-threaded", timeout=60)
    assert plotted.status == 0, plotted.stderr
    assert (out / "perf-relative.png").stat().st_size > 10_000
    mean = next(
        r for r in relative.ratios(out / "results.jsonl", "c-threaded") if r.statistic == "mean"
    )
    # The same server: about 1 (loose: a loaded 2-vCPU machine moves a few runs by 10-20%).
    assert 0.7 < mean.estimate.value < 1.4

"""Earlier sittings of a configuration (volley.measure.history): kept, read, and in the
intervals."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import QUICK, bench, strict_loads
from test_sweep import bench_result

from volley.cli import bench as cli
from volley.measure import history
from volley.numbers import stats
from volley.present.report import sittings_summary
from volley.records.experiment import Point
from volley.records.results import FAILED
from volley.system.noise import Noise

BRIEF_RUNS = ["--max-time", "2s", "--precision", "50%", *QUICK]


def sitting(
    mean: float, variance: float = 1.0e4, at: str = "2026-11-27T00:00:00"
) -> history.Sitting:
    return history.Sitting(
        at,
        {name: mean for name in stats.STATISTICS},
        {name: variance for name in stats.STATISTICS},
    )


def test_the_server_is_known_by_its_bytes_not_its_name(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b"server one")
    b.write_bytes(b"server one")
    c.write_bytes(b"server two")

    def place_of(path):
        config = SimpleNamespace(
            server=str(path),
            server_args=[],
            clients=1,
            placement=SimpleNamespace(client_cpus=[1], server_cpus=[0]),
            restart="server",
            idle_states="shallow",
            warmup_s=0.25,
            run_time_s=0.5,
            rate_ops_s=None,
            arrivals="poisson",
            connect=None,
        )
        return history.History(tmp_path / "h", history.configuration(config)).path

    assert place_of(a) == place_of(b)
    assert place_of(a) != place_of(c)


def test_history_keeps_the_last_sittings_and_skips_what_it_cannot_read(tmp_path):
    found = history.History(tmp_path, {"server": "x"})
    for i in range(history.KEPT + 5):
        found.add(sitting(1000.0 + i))
    with found.path.open("a") as f:
        f.write('{"not": "a sitting"}\n')
    again = history.History(tmp_path, {"server": "x"})
    assert [s.values["mean"] for s in again.sittings] == [
        1000.0 + i for i in range(5, history.KEPT + 5)
    ]
    kept = found.path.read_text().splitlines()[:-1]  # the last: the line it could not read
    assert len(kept) == history.KEPT
    assert all(json.loads(line)["key"] == {"server": "x"} for line in kept)


def test_sittings_are_kept_with_snake_case_keys_and_older_lines_still_read(tmp_path):
    found = history.History(tmp_path, {"server": "x"})
    found.add(sitting(1000.0))
    line = json.loads(found.path.read_text())
    assert "p99_9" in line["values"] and "p99.9" not in line["within_variances"]
    dotted = {k: {"p99.9" if s == "p99_9" else s: v for s, v in line[k].items()}
              for k in ("values", "within_variances")}  # fmt: skip
    found.path.write_text(json.dumps(line | dotted) + "\n")
    again = history.History(tmp_path, {"server": "x"})
    assert again.sittings[0].values["p99.9"] == 1000.0


def _q(values, within, tau2):
    """The generalised Q statistic, written out independently of volley.numbers.stats."""
    w = [1 / (v + tau2) for v in within]
    mean = sum(wi * y for wi, y in zip(w, values, strict=True)) / sum(w)
    return sum(wi * (y - mean) ** 2 for wi, y in zip(w, values, strict=True))


def test_paule_mandel_sets_the_generalised_q_to_k_minus_one():
    # Equal within variances: Q = 400 / (30 + tau2) = 3 by hand.
    values = np.array([990.0, 1010.0, 990.0, 1010.0])
    assert stats.paule_mandel(values, np.full(4, 30.0)) == pytest.approx(400 / 3 - 30)
    # Unequal: the tau2 found makes Q exactly k - 1.
    values = np.array([100.0, 130.0, 90.0, 160.0, 110.0])
    within = np.array([10.0, 400.0, 50.0, 900.0, 20.0])
    tau2 = stats.paule_mandel(values, within)
    assert tau2 > 0
    assert _q(values, within, tau2) == pytest.approx(4, rel=1e-6)
    assert stats.paule_mandel(values, within * 1e3) == 0  # the runs explain it all
    assert stats.Between.of([1.0], [0.0]) is None


def test_few_sittings_are_floored_by_their_spread_around_the_weighted_mean():
    values = [990.0, 1010.0, 990.0, 1010.0]
    between = stats.Between.of(values, [30.0] * 4)
    assert between is not None and between.sittings == 4
    assert between.tau2 == pytest.approx(400 / 3)  # the floor: above Paule-Mandel's 103
    # Two sittings that agree within their runs still give a between part, not 0.
    two = stats.Between.of([1000.0, 1010.0], [1e4, 1e4])
    assert two is not None and two.tau2 == pytest.approx(50.0)
    many = stats.Between.of([990.0, 1010.0] * 4, [1e6] * 8)
    assert many is not None and many.tau2 == 0  # enough sittings: Paule-Mandel alone


def _coverage(earlier: int, ratio: float, trials: int, seed: int, disturbed: bool = False):
    """As bench/calibration/history_sim.py: runs sd 1, sittings' sd ``ratio``, truth 0."""
    rng = np.random.default_rng(seed)
    held = 0
    for _ in range(trials):
        found = [rng.normal(rng.normal(0, ratio), 1, 10) for _ in range(earlier)]
        if disturbed:
            found[0] = rng.normal(4 * math.sqrt(ratio**2 + 0.1), 1, 10)
        between = stats.Between.of(
            [float(x.mean()) for x in found], [float(x.var(ddof=1)) / 10 for x in found]
        )
        runs = rng.normal(rng.normal(0, ratio), 1, 10)
        interval = stats.run_interval(float(runs.mean()), runs, 0.95, between)
        held += interval.low <= 0 <= interval.high
    return held / trials


@pytest.mark.parametrize(("earlier", "ratio"), [(2, 1.0), (3, 0.5), (3, 1.0)])
def test_two_or_three_earlier_sittings_cover_the_configuration(earlier, ratio):
    # The method of moments, truncated at 0, covered 82-91% here.
    assert _coverage(earlier, ratio, 600, seed=earlier * 10 + int(ratio * 2)) >= 0.93


def test_one_disturbed_sitting_is_left_out_and_does_not_set_tau2():
    rng = np.random.default_rng(3)
    values = list(1000 + rng.normal(0, 10, 8))
    within = [25.0] * 8
    calm = stats.Between.of(values, within)
    disturbed = stats.Between.of([*values, 1000 + 5 * 14.0 * 4], [*within, 25.0])
    assert calm is not None and disturbed is not None
    assert disturbed.left_out == 1 and disturbed.sittings == 8
    assert disturbed.tau2 == pytest.approx(calm.tau2)
    assert _coverage(8, 0.5, 300, seed=5, disturbed=True) >= 0.93


def _key(monkeypatch, release, model):
    monkeypatch.setattr(history.platform, "release", lambda: release)
    monkeypatch.setattr(history.machine, "_cpuinfo", lambda: (model, set()))
    config = SimpleNamespace(
        server="127.0.0.1:9000", server_args=[], clients=1,
        placement=SimpleNamespace(client_cpus=[1], server_cpus=[0]), restart="server",
        idle_states="shallow", warmup_s=0.25, run_time_s=0.5, rate_ops_s=None,
        arrivals="poisson", connect="127.0.0.1:9000",
    )  # fmt: skip
    return history.configuration(config)


def test_the_key_changes_with_the_kernel_and_the_cpu_model(monkeypatch):
    first = _key(monkeypatch, "6.1.0", "Xeon A")
    assert first == _key(monkeypatch, "6.1.0", "Xeon A")
    assert first != _key(monkeypatch, "6.8.0", "Xeon A")
    assert first != _key(monkeypatch, "6.1.0", "EPYC B")


def test_sittings_older_than_the_kept_age_are_ignored(tmp_path):
    now = datetime.now(UTC)
    found = history.History(tmp_path, {"server": "x"})
    old = (now - timedelta(days=history.MAX_AGE_DAYS + 1)).isoformat(timespec="seconds")
    found.add(sitting(1000.0, at=old))
    found.add(sitting(2000.0, at=now.isoformat(timespec="seconds")))
    again = history.History(tmp_path, {"server": "x"})
    assert [s.values["mean"] for s in again.sittings] == [2000.0]


def test_a_sitting_that_differs_from_the_history_is_reported_and_not_kept(tmp_path, monkeypatch):
    now = datetime.now(UTC).isoformat(timespec="seconds")
    found = history.History(tmp_path, {"server": "x"})
    for mean in (1000.0, 1010.0, 990.0, 1005.0, 995.0, 1002.0):
        found.add(sitting(mean, variance=25.0, at=now))
    near, far = sitting(1003.0, 25.0, now), sitting(1500.0, 25.0, now)
    assert found.check(near).consistent
    check = found.check(far)
    assert not check.consistent and set(check.differs) == set(stats.STATISTICS)
    low, high = check.prediction_interval_ns["mean"]
    assert low < 1003.0 < high < 1500.0

    monkeypatch.setattr(history.Sitting, "of", classmethod(lambda cls, result: far))
    result = bench_result(Point("a", 1, 1, 1), "significant", 1500.0)
    kept = cli._keep_sitting(result, found)
    assert kept.history is not None and kept.history["consistent"] is False
    assert kept.history["earlier_sittings"] == 6
    assert len(history.History(tmp_path, {"server": "x"}).sittings) == 6
    assert "this sitting differs from the 6 earlier ones" in sittings_summary(
        replace(kept, earlier_sittings=6)
    )


@pytest.mark.real
def test_a_failed_sitting_is_not_kept(c_threaded, tmp_path):
    done = bench(*BRIEF_RUNS, "--history", tmp_path, "--json", tmp_path / "r.json", c_threaded)
    assert done.status == 0, done.stderr
    result = history.BenchResult.from_json(strict_loads((tmp_path / "r.json").read_text()))
    assert history.Sitting.of(result) is not None
    assert history.Sitting.of(replace(result, status=FAILED)) is None


@pytest.mark.real
def test_sittings_that_differ_widen_the_next_interval_and_put_a_tight_target_out_of_reach(
    c_threaded, tmp_path
):
    place = tmp_path / "sittings"
    first = []
    for i in range(2):
        out = tmp_path / f"{i}.json"
        done = bench(*BRIEF_RUNS, "--history", place, "--json", out, c_threaded)
        assert done.status == 0, done.stderr
        first.append(strict_loads(out.read_text()))
    assert [r["earlier_sittings"] for r in first] == [0, 1]
    assert "the intervals cover this sitting only" in done.stdout
    # Make the two kept sittings differ by a factor of three, as a host that moved the
    # CPUs or ran another guest between them could.
    (kept,) = place.iterdir()
    lines = [json.loads(line) for line in kept.read_text().splitlines()]
    assert len(lines) == 2
    lines[1]["values"] = {k: 3 * v for k, v in lines[1]["values"].items()}
    kept.write_text("".join(json.dumps(line) + "\n" for line in lines))

    out = tmp_path / "third.json"
    done = bench(
        "--max-time", "20s", "--precision", "1%", *QUICK, "--history", place,
        "--json", out, c_threaded,
    )  # fmt: skip
    third = strict_loads(out.read_text())
    assert done.status == 0, done.stderr  # measured: not significant, and early
    assert third["status"] == "not-significant"
    assert third["earlier_sittings"] == 2
    tau = third["between_sittings_ns"]["mean"]
    half = (third["latency_ns"]["ci_high"] - third["latency_ns"]["ci_low"]) / 2
    # The runs' part and the sittings' part, at the smaller of the runs' df and the
    # sittings' (1: two earlier sittings).
    runs = [r["mean_ns"] for r in third["runs"]]
    expected = stats.run_interval(
        third["latency_ns"]["mean"], runs, 0.95, stats.Between(tau * tau, 2)
    )
    assert half == pytest.approx(expected.half_width, rel=1e-6)
    assert half >= 1.96 * tau > 1.96 * stats.run_interval(0.0, runs, 0.95).half_width
    # Stopped once more runs could not help, not at --max-time 20s: the error says why
    # (tests/test_fake.py checks the same on the fake engine's clock).
    assert "out of reach" in third["error"]
    assert "2 earlier sittings of this configuration differ" in done.stdout
    assert "why: target out of reach" in done.stdout
    assert len(kept.read_text().splitlines()) == 3


@pytest.mark.real
def test_a_history_that_cannot_be_used_is_a_warning_not_a_lost_result(c_threaded, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = tmp_path / "r.json"
    done = bench(*BRIEF_RUNS, "--history", blocker / "sittings", "--json", out, c_threaded)
    assert done.status == 0, done.stderr
    assert "warning: cannot read earlier sittings" in done.stderr
    assert strict_loads(out.read_text())["earlier_sittings"] is None  # measured without


def _with_noise(result, disturbed: list[bool]):
    """``result`` with one run per flag, each with the noise meter's verdict."""
    (run,) = result.runs[:1]
    runs = [
        replace(run, noise=Noise(0.5, [], None, None, None, flag), mean_ns=run.mean_ns + i)
        for i, flag in enumerate(disturbed)
    ]
    return replace(result, runs=runs)


def test_a_sitting_other_work_disturbed_is_not_kept_and_says_so(tmp_path, capsys):
    now = datetime.now(UTC).isoformat(timespec="seconds")
    result = bench_result(Point("a", 1, 1, 1), "significant", 1000.0)
    calm = _with_noise(result, [False] * 9 + [True])  # one run in ten: bad luck, kept
    busy = _with_noise(result, [False] * 8 + [True] * 2)
    assert history.too_disturbed(calm) is None
    assert history.too_disturbed(busy) == (
        "2 of its 10 runs were disturbed by other work on the pinned CPUs"
    )
    # Runs dropped for noise (--noisy drop) count as disturbed too.
    dropped = replace(calm, dropped_runs=list(busy.runs[:2]))
    assert history.too_disturbed(dropped) is not None

    found = history.History(tmp_path, {"server": "x"})
    for value in (calm, busy):
        found_now = replace(value, started_at=now)
        cli._keep_sitting(found_now, found)
    assert len(history.History(tmp_path, {"server": "x"}).sittings) == 1
    assert "not kept in the history: 2 of its 10 runs were disturbed" in capsys.readouterr().err

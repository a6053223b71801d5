"""End to end on the fake engine (volley.engine.fake): the measuring loop, volley-bench and
``volley compare --run`` through typer's CliRunner, with scripted latencies, failures and
a clock the engine advances. No socket, no process: each test takes milliseconds."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
import typer
from helpers import QUICK, strict_loads
from typer.testing import CliRunner

from volley.cli.app import app
from volley.cli.bench import bench
from volley.engine.fake import FakeClock, FakeCoordinator, FakeEngine, per_run
from volley.engine.play import RunFailed, RunRequest
from volley.measure.runs import RunPlan, alternate, measure
from volley.numbers import stats
from volley.numbers.units import Target
from volley.records.results import FAILED, INTERRUPTED, NOT_SIGNIFICANT, SIGNIFICANT

SERVER = sys.executable  # any executable: the fake engine never starts it
B_SERVER = f"{sys.executable} -B"


def noisy(means: list[float], cv: float = 0.02, rng_seed: int = 1):
    """A script: each alternative's runs spread by ``cv`` around its mean."""
    rng = random.Random(rng_seed)
    return lambda request: means[request.alternative] * rng.gauss(1, cv)


def volley_bench() -> typer.Typer:
    single = typer.Typer(add_completion=False)
    single.command()(bench)
    return single


# --- the fake engine itself ---


def test_the_fake_plays_its_script_per_alternative_per_run_and_on_its_clock():
    clock = FakeClock()
    engine = FakeEngine(per_run([10.0, 20.0], [30.0, 40.0]), clients=2, ops=4, clock=clock)
    played = engine.play(RunRequest(2, 0.25, 0.5, alternative=1))
    assert [list(lat) for lat in played.latencies] == [[40] * 4, [40] * 4]
    assert clock() == pytest.approx(0.05 + 0.25 + 0.5)
    assert FakeEngine([1.0, 2.0]).mean_ns(RunRequest(1, 0, 0, alternative=1)) == 2.0
    spread = FakeEngine(100.0, ops=5, spread=0.1).play(RunRequest(1, 0, 0)).latencies[0]
    assert list(spread) == [90, 95, 100, 105, 110] and spread.mean() == 100


def test_the_fake_fails_raises_and_stops_on_the_runs_it_is_told():
    engine = FakeEngine(
        raises={2: RunFailed("run 2: no server"), (1, 1): KeyboardInterrupt()},
        failures={3: "client 0: wrong reply"},
        stops={4},
        full={(1, 2)},
    )
    assert engine.play(RunRequest(1, 0, 0)).failure is None
    with pytest.raises(RunFailed, match="no server"):
        engine.play(RunRequest(2, 0, 0))
    with pytest.raises(KeyboardInterrupt):
        engine.play(RunRequest(1, 0, 0, alternative=1))
    assert engine.play(RunRequest(3, 0, 0)).failure == "client 0: wrong reply"
    assert not engine.interrupted
    engine.play(RunRequest(4, 0, 0))
    assert engine.interrupted
    assert engine.play(RunRequest(2, 0, 0, alternative=1)).full
    assert not engine.play(RunRequest(3, 0, 0, alternative=1)).full
    assert [r.index for r in engine.requests] == [1, 2, 1, 3, 4, 2, 3]


# --- the measuring loop ---


def test_the_loop_stops_at_the_time_bound_on_the_engines_clock():
    engine = FakeEngine(noisy([100_000.0], cv=0.3), spread=0.05)
    plan = RunPlan(targets=[Target("mean", relative=0.0001)], max_time_s=30.0)
    m = measure(engine, plan, clock=engine.clock)
    assert m.status == NOT_SIGNIFICANT
    assert 25.0 < engine.clock() <= 30.0 and len(m.runs) == len(engine.requests)


@pytest.mark.parametrize(
    ("events", "status", "runs"),
    [
        ({"raises": {3: RunFailed("run 3: the server exited")}}, FAILED, 2),
        ({"failures": {3: "client 0: wrong reply"}}, FAILED, 3),
        ({"stops": {3}}, INTERRUPTED, 3),
    ],
)
def test_the_loop_keeps_what_was_measured_before_a_failure_or_a_stop(events, status, runs):
    engine = FakeEngine(noisy([100_000.0]), **events)
    m = measure(engine, RunPlan(targets=[Target("mean", relative=0.001)]), clock=engine.clock)
    assert (m.status, len(m.runs)) == (status, runs)
    assert (m.error is not None) == (status == FAILED)


def test_interleave_plays_every_alternative_once_per_round_in_a_fresh_order():
    engine = FakeEngine(noisy([100_000.0, 130_000.0]))
    plan = RunPlan(targets=[Target("mean", relative=0.01)], min_runs=3, max_time_s=1e6)
    judge = lambda found, rounds, left: SIGNIFICANT if rounds == 12 else None  # noqa: E731
    found = alternate(engine, plan, 2, judge, clock=engine.clock, rng=random.Random(2))
    order = [r.alternative for r in engine.requests]
    rounds = [tuple(order[i : i + 2]) for i in range(0, 24, 2)]
    assert all(sorted(r) == [0, 1] for r in rounds) and len(set(rounds)) == 2
    assert [len(m.runs) for m in found] == [12, 12]
    assert found[1].intervals["mean"].centre > found[0].intervals["mean"].centre


# --- volley-bench, end to end ---


def test_volley_bench_measures_on_the_fake_and_writes_its_result(fake_session, tmp_path):
    engine = fake_session(FakeCoordinator(noisy([100_000.0]), spread=0.05))
    out = tmp_path / "r.json"
    done = CliRunner().invoke(volley_bench(), [*QUICK, "--json", str(out), SERVER])
    assert done.exit_code == 0, done.output
    result = strict_loads(out.read_text())
    assert result["status"] == SIGNIFICANT and result["rounds"] == len(engine.requests)
    assert result["latency_ns"]["mean"] == pytest.approx(100_000, rel=0.05)
    assert result["elapsed_s"] == pytest.approx(engine.clock(), abs=1e-3)


@pytest.mark.parametrize(
    ("events", "args", "status", "said"),
    [
        ({"failures": {4: "client 0 (worker 0), run 4: wrong reply"}}, [], 1, "wrong reply"),
        ({"raises": {1: RunFailed("run 1: the server exited with status 1")}}, [], 1, "exited"),
        ({"stops": {3}}, [], 130, None),
        ({}, ["--precision", "0.01%", "--max-time", "20s", "--require-precision"], 3, None),
        ({}, ["--precision", "0.01%", "--max-time", "20s"], 0, None),
    ],
)
def test_volley_bench_exit_statuses(fake_session, events, args, status, said):
    fake_session(FakeCoordinator(noisy([100_000.0], cv=0.1), **events))
    done = CliRunner().invoke(volley_bench(), [*QUICK, *args, SERVER])
    assert done.exit_code == status, done.output
    assert "Traceback" not in done.output
    if said:
        assert said in done.output


def test_a_first_run_that_fails_is_one_line_and_no_result(fake_session, tmp_path):
    fake_session(FakeCoordinator(raises={1: RunFailed("run 1: the server never listened")}))
    out = tmp_path / "r.json"
    done = CliRunner().invoke(volley_bench(), [*QUICK, "--json", str(out), SERVER])
    assert done.exit_code == 1
    assert done.output.strip().splitlines()[-1].endswith("run 1: the server never listened")
    assert not out.exists()


def test_earlier_sittings_that_differ_widen_the_interval_on_the_fake(fake_session, tmp_path):
    """The history end to end: two sittings kept, one tripled, and the third sitting's
    interval carries their spread, which puts a tight target out of reach early."""
    place = tmp_path / "sittings"
    found = []
    for i in range(2):
        fake_session(FakeCoordinator(noisy([100_000.0], rng_seed=i), spread=0.05))
        out = tmp_path / f"{i}.json"
        args = ["--precision", "50%", *QUICK, "--history", str(place), "--json", str(out)]
        done = CliRunner().invoke(volley_bench(), [*args, SERVER])
        assert done.exit_code == 0, done.output
        found.append(strict_loads(out.read_text()))
    assert [r["earlier_sittings"] for r in found] == [0, 1]
    (kept,) = place.iterdir()
    lines = [json.loads(line) for line in kept.read_text().splitlines()]
    lines[1]["values"] = {k: 3 * v for k, v in lines[1]["values"].items()}
    kept.write_text("".join(json.dumps(line) + "\n" for line in lines))

    engine = fake_session(FakeCoordinator(noisy([100_000.0], rng_seed=3), spread=0.05))
    out = tmp_path / "third.json"
    args = ["--max-time", "60s", "--precision", "1%", *QUICK, "--history", str(place)]
    done = CliRunner().invoke(volley_bench(), [*args, "--json", str(out), SERVER])
    assert done.exit_code == 0, done.output
    third = strict_loads(out.read_text())
    assert third["status"] == NOT_SIGNIFICANT and third["earlier_sittings"] == 2
    assert "out of reach" in third["error"]
    tau = third["between_sittings_ns"]["mean"]
    runs = [r["mean_ns"] for r in third["runs"]]
    half = (third["latency_ns"]["ci_high"] - third["latency_ns"]["ci_low"]) / 2
    between = stats.Between(tau * tau, 2)
    assert half == pytest.approx(
        stats.run_interval(third["latency_ns"]["mean"], runs, 0.95, between).half_width,
        rel=1e-6,
    )
    # Stopped once more runs could not help: well before the bound, on the engine's clock.
    assert engine.clock() < 30
    assert len(kept.read_text().splitlines()) == 3


# --- volley compare --run, end to end ---


def test_compare_run_interleaves_on_the_fake_and_gates_on_a_slower_b(fake_session, tmp_path):
    engine = fake_session(FakeCoordinator(noisy([100_000.0, 130_000.0]), spread=0.05))
    args = ["compare", "--run", SERVER, B_SERVER, *QUICK, "--max-time", "60s"]
    done = CliRunner().invoke(app, [*args, "--fail-if-slower", "2%", "--output", str(tmp_path)])
    assert done.exit_code == 1, done.output
    assert "slower" in done.output
    order = [r.alternative for r in engine.requests]
    assert all(sorted(order[i : i + 2]) == [0, 1] for i in range(0, len(order), 2))
    written = sorted(tmp_path.glob("*.json"))
    assert len(written) == 2
    a, b = (strict_loads(p.read_text()) for p in written)
    assert a["rounds"] == b["rounds"] == len(order) // 2
    assert b["latency_ns"]["mean"] / a["latency_ns"]["mean"] == pytest.approx(1.3, rel=0.03)


def test_compare_run_of_equal_servers_trips_no_gate(fake_session, tmp_path):
    fake_session(FakeCoordinator(noisy([100_000.0, 100_000.0]), spread=0.05))
    args = ["compare", "--run", SERVER, B_SERVER, *QUICK, "--max-time", "60s"]
    done = CliRunner().invoke(app, [*args, "--fail-if-slower", "2%", "--output", str(tmp_path)])
    # Equivalent, or unresolved at --max-time (3): the rounds' random order decides which.
    assert done.exit_code in (0, 3), done.output
    assert "Traceback" not in done.output and "slower by" not in done.output


def test_compare_run_that_fails_mid_way_exits_1(fake_session, tmp_path):
    fake_session(FakeCoordinator(noisy([1e5, 1e5]), failures={(1, 3): "client 0: wrong reply"}))
    args = ["compare", "--run", SERVER, B_SERVER, *QUICK, "--output", str(tmp_path)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 1 and "wrong reply" in done.output, done.output
    assert "Traceback" not in done.output


def test_the_fake_coordinator_records_its_workers_as_the_coordinator_does():
    engine = FakeCoordinator()
    assert engine.restart == "server" and engine.spin_ns() == 0
    played = engine.play(RunRequest(1, 0.1, 0.2))
    assert played.server_pid == 1 and np.all(played.latencies[0] == 100_000)


def test_compare_run_stopped_mid_way_exits_130_with_what_it_measured(fake_session, tmp_path):
    fake_session(FakeCoordinator(noisy([1e5, 1e5]), stops={(1, 5)}))
    args = ["compare", "--run", SERVER, B_SERVER, *QUICK, "--output", str(tmp_path)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 130, done.output
    written = sorted(tmp_path.glob("*.json"))
    assert [strict_loads(p.read_text())["status"] for p in written] == [INTERRUPTED] * 2


def test_compare_run_stopped_hard_in_its_first_run_exits_130_with_no_runs(fake_session, tmp_path):
    # A second Ctrl-C raises out of the run being played: nothing of it is kept.
    fake_session(FakeCoordinator(raises={1: KeyboardInterrupt()}))
    args = ["compare", "--run", SERVER, B_SERVER, *QUICK, "--output", str(tmp_path)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 130, done.output
    assert "Traceback" not in done.output
    written = [strict_loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert [r["status"] for r in written] == [INTERRUPTED] * 2
    # A's first run raised; B's played first or not at all, as the round's order fell.
    assert written[0]["rounds"] == 0 and written[1]["rounds"] in (0, 1)

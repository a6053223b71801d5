"""Earlier sittings of a configuration (volley.history): kept, read, and in the intervals."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
from helpers import QUICK, bench, strict_loads

from volley import history, stats
from volley.results import FAILED

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


def test_between_is_the_spread_their_runs_do_not_explain():
    # Values 10 apart (variance 100 each way) whose runs explain a variance of 30.
    values = [990.0, 1010.0, 990.0, 1010.0]
    between = stats.Between.of(values, [30.0] * 4)
    assert between is not None and between.sittings == 4
    assert between.tau2 == pytest.approx(400 / 3 - 30)
    assert stats.Between.of(values, [1e6] * 4).tau2 == 0  # runs explain it all
    assert stats.Between.of([1.0], [0.0]) is None


def test_a_failed_sitting_is_not_kept(c_threaded, tmp_path):
    done = bench(*BRIEF_RUNS, "--history", tmp_path, "--json", tmp_path / "r.json", c_threaded)
    assert done.status == 0, done.stderr
    result = history.BenchResult.from_json(strict_loads((tmp_path / "r.json").read_text()))
    assert history.Sitting.of(result) is not None
    assert history.Sitting.of(replace(result, status=FAILED)) is None


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
    assert done.status == 3, done.stderr  # not significant, and early
    assert third["earlier_sittings"] == 2
    tau = third["between_sittings_ns"]["mean"]
    half = (third["latency_ns"]["ci_high"] - third["latency_ns"]["ci_low"]) / 2
    # The runs' part and the sittings' part, with Satterthwaite's df between 1 (the two
    # earlier sittings) and the runs' own.
    runs = [r["mean_ns"] for r in third["runs"]]
    expected = stats.run_interval(
        third["latency_ns"]["mean"], runs, 0.95, stats.Between(tau * tau, 2)
    )
    assert half == pytest.approx(expected.half_width, rel=1e-6)
    assert half >= 1.96 * tau > 1.96 * stats.run_interval(0.0, runs, 0.95).half_width
    assert third["elapsed_s"] < 15  # stopped once more runs could not help
    assert "out of reach" in third["error"]
    assert "2 earlier sittings of this configuration differ" in done.stdout
    assert "why: target out of reach" in done.stdout
    assert len(kept.read_text().splitlines()) == 3


def test_a_history_that_cannot_be_used_is_a_warning_not_a_lost_result(c_threaded, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = tmp_path / "r.json"
    done = bench(*BRIEF_RUNS, "--history", blocker / "sittings", "--json", out, c_threaded)
    assert done.status == 0, done.stderr
    assert "warning: cannot read earlier sittings" in done.stderr
    assert strict_loads(out.read_text())["earlier_sittings"] is None  # measured without

"""The result record, its JSON, and what a person reads (no sockets)."""

import io
import math
from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest
from helpers import strict_loads

from volley.measure.runs import RunProgress
from volley.numbers.stats import Histogram, Interval
from volley.numbers.units import format_ns
from volley.present.report import StreamProgress, summary
from volley.records.results import (
    FORMAT_VERSION,
    BenchResult,
    LatencySummary,
    RunSummary,
    WorkerInfo,
    dumps,
    interval_log,
)
from volley.system.machine import Environment


def result(**changes) -> BenchResult:
    fields = dict(
        status="significant",
        server="target/servers/c-threaded",
        server_args=[],
        clients=4,
        client_cores=[1],
        server_cores=[0],
        n=1000,
        rounds=2,
        elapsed_s=4.5,
        measured_s=3.0,
        throughput_ops_s=333.3,
        confidence=0.95,
        precision="mean:1%",
        ci_batches=2,
        latency_ns=LatencySummary(
            mean=50_000.0,
            stddev=9_000.0,
            ci_low=49_600.0,
            ci_high=50_400.0,
            min=20_000.0,
            max=2_000_000.0,
            p50=48_000.0,
            p90=60_000.0,
            p99=90_000.0,
            p99_9=150_000.0,
            distribution=[(50.0, 48_000.0), (99.0, 90_000.0)],
            intervals={
                "p50": (47_000.0, 49_000.0),
                "p90": (59_000.0, 61_000.0),
                "p99": (86_000.0, 94_000.0),
                "p99.9": (140_000.0, 160_000.0),
            },
        ),
        workers=[WorkerInfo(pid=123, cpus=[1], clients=4)],
        host=Environment(kernel="6.1", cpu_model="test cpu", cpus=2),
        started_at="2026-11-26T10:00:00+00:00",
        warmup_s=1.0,
        runs=[
            RunSummary(500, 1.5, 49_000.0, 47_000.0, 59_000.0, 88_000.0, 140_000.0, 77),
            RunSummary(500, 1.5, 51_000.0, 49_000.0, 61_000.0, 92_000.0, 160_000.0, 78),
        ],
        restart="server",
        targets=["mean:1%"],
    )
    fields.update(changes)
    return BenchResult(**fields)


def test_json_round_trip_keeps_everything():
    original = result()
    data = strict_loads(dumps(original))
    assert data["version"] == FORMAT_VERSION and data["significant"] is True
    assert data["latency_ns"]["p99_9"] == 150_000.0 and "p99.9" not in data["latency_ns"]
    assert data["latency_ns"]["intervals"]["p99_9"] == [140_000.0, 160_000.0]
    assert data["runs"][1]["p99_9_ns"] == 160_000.0 and data["runs"][1]["server_pid"] == 78
    assert BenchResult.from_json(data) == original


def test_every_key_written_is_snake_case():
    tau = {"mean": 900.0, "p99.9": 4_000.0}
    check = {"consistent": True, "differs": [], "prediction_interval_ns": {"p99.9": [1.0, 2.0]}}
    original = result(earlier_sittings=3, between_sittings_ns=tau, history=check)
    data = strict_loads(dumps(original))

    def keys(value: object) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        if isinstance(value, list):
            return {k for v in value for k in keys(v)}
        return set()

    assert {k for k in keys(data) if not k.isidentifier() or k != k.lower()} == set()
    assert data["between_sittings_ns"]["p99_9"] == 4_000.0
    assert data["history"]["prediction_interval_ns"]["p99_9"] == [1.0, 2.0]
    assert BenchResult.from_json(data) == original


def test_format_4_keys_with_a_dot_still_read():
    data = strict_loads(dumps(result(between_sittings_ns={"p99.9": 4_000.0})))
    data["version"] = 4
    latency = data["latency_ns"]
    latency["p99.9"] = latency.pop("p99_9")
    latency["intervals"]["p99.9"] = latency["intervals"].pop("p99_9")
    data["between_sittings_ns"] = {"p99.9": data["between_sittings_ns"].pop("p99_9")}
    for run in data["runs"]:
        run["p99.9_ns"] = run.pop("p99_9_ns")
    old = BenchResult.from_json(data)
    assert old.latency_ns.value("p99.9") == 150_000.0
    assert old.latency_ns.interval("p99.9") == (140_000.0, 160_000.0)
    assert [run.value("p99.9") for run in old.runs] == [140_000.0, 160_000.0]
    assert old.between_sittings_ns == {"p99.9": 4_000.0}


def test_values_and_intervals_by_statistic_name():
    r = result()
    assert r.latency_ns.value("p99.9") == 150_000.0
    assert r.latency_ns.interval("mean") == (49_600.0, 50_400.0)
    assert r.latency_ns.interval("p90") == (59_000.0, 61_000.0)
    assert [run.value("p99") for run in r.runs] == [88_000.0, 92_000.0]


def test_format_1_results_still_load_without_runs():
    data = strict_loads(dumps(result()))
    data["version"] = 1
    for key in ("runs", "restart", "targets"):
        del data[key]
    del data["latency_ns"]["intervals"]
    old = BenchResult.from_json(data)
    assert old.runs == [] and old.restart is None and old.latency_ns.intervals == {}


def test_format_3_results_load_without_a_histogram():
    data = strict_loads(dumps(result(latency_ns=replace(result().latency_ns, histogram="HISTF"))))
    assert data["latency_ns"]["histogram"] == "HISTF"
    assert BenchResult.from_json(data).latency_ns.histogram == "HISTF"
    data["version"] = 3
    del data["latency_ns"]["histogram"]
    old = BenchResult.from_json(data)
    assert old.latency_ns.histogram is None and old.latency_ns.p99 == 90_000.0


def test_interval_log_has_one_line_per_result_with_a_histogram_in_time_order():
    ops = Histogram()
    ops.record(np.array([40_000, 50_000, 2_000_000]))
    latency = replace(result().latency_ns, histogram=ops.encode())
    later = result(latency_ns=latency, started_at="2026-11-26T10:00:10+00:00")
    first = result(latency_ns=latency)
    old = result()  # format 3: no histogram, no line
    text = interval_log([("b", later), ("a,1", first), ("old", old)])
    lines = text.splitlines()
    assert lines[0] == "#[Histogram log format version 1.3]"
    start = datetime.fromisoformat("2026-11-26T10:00:00+00:00").timestamp()
    assert f"#[StartTime: {start:.3f} (seconds since epoch), " in text
    assert f"#[BaseTime: {start:.3f} (seconds since epoch)]" in lines
    assert (
        lines[-3]
        == '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"'
    )
    assert lines[-2] == f"Tag=a_1,0.000,3.000,2.000,{ops.encode()}"
    assert lines[-1] == f"Tag=b,10.000,3.000,2.000,{ops.encode()}"


def test_newer_format_is_refused_with_advice():
    data = strict_loads(dumps(result()))
    data["version"] = FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="upgrade volley"):
        BenchResult.from_json(data)


def test_numbers_not_known_are_null_not_nan_or_infinity():
    # Issue 10, item 4: fewer than two batches gave "ci_low": -Infinity, which is not JSON.
    latency = LatencySummary(
        **{**result().latency_ns.__dict__, "ci_low": -math.inf, "ci_high": math.inf},
    )
    original = result(latency_ns=latency, throughput_ops_s=math.nan)
    text = dumps(original)
    data = strict_loads(text)
    assert data["latency_ns"]["ci_low"] is None and data["latency_ns"]["ci_high"] is None
    assert data["throughput_ops_s"] is None
    back = BenchResult.from_json(data)
    assert back.latency_ns is not None and math.isnan(back.latency_ns.ci_low)
    assert math.isnan(back.throughput_ops_s)
    assert strict_loads(dumps(back)) == data


def test_failed_run_without_ops_serialises():
    data = strict_loads(dumps(result(status="failed", n=0, latency_ns=None, error="boom")))
    assert data["latency_ns"] is None and data["significant"] is False
    assert data["error"] == "boom"


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (850, "850 ns"),
        (23_410, "23.41 us"),
        (123_456, "123 us"),
        (2_500_000, "2.50 ms"),
        (3e9, "3.00 s"),
        (float("inf"), "?"),
    ],
)
def test_format_ns(ns, text):
    assert format_ns(ns) == text


def test_summary_has_the_numbers_and_the_verdict():
    text = summary(result())
    assert "4 clients on CPU 1, server on CPU 0" in text
    assert "50.00 us ± 400 ns (95% CI, 0.8% of mean)" in text
    assert "p99 90.00 us ± 4.00 us" in text and "p99.9 150 us ± 10.00 us" in text
    assert "max 2.00 ms" in text and "2 runs, each with a fresh server" in text
    assert "n 1,000 ops in 2 runs" in text and "significant: yes" in text
    one = summary(
        result(clients=1, runs=result().runs[:1], status="not-significant", restart="connections")
    )
    assert "1 client on CPU" in one and "in 1 run " in one
    assert "1 run reconnecting to one server instance: the intervals cover that instance" in one
    assert "significant: NO (max time reached" in one


def test_summary_leads_with_the_answer_its_precision_and_then_the_verdict():
    met = summary(result(targets=["mean:1%"])).splitlines()
    assert met[0] == "mean 50.00 us ± 400 ns (95% CI, 0.8%): target ±1% on the mean met"
    assert met[1] == "  significant: yes" and met[2] == "target/servers/c-threaded"
    # Out of time: the precision reached, and what the target would have taken.
    short = summary(
        result(
            status="not-significant",
            targets=["mean:0.5%", "p99:2%"],
            planned_runs=40,
            elapsed_s=44.6,
        )
    ).splitlines()
    assert short[0] == (
        "mean 50.00 us ± 400 ns (95% CI, 0.8%), p99 90.00 us ± 4.00 us (95% CI, 4.4%): "
        "target ±0.5% on the mean and ±2% on p99 out of reach in 45 s (~40 runs needed at "
        "this spread, 2 played): give it longer (--max-time), or see `volley system`"
    )
    assert short[1].startswith("  significant: NO (max time reached")
    # Stopped early: earlier sittings alone differ by more than the target.
    early = summary(
        result(status="not-significant", targets=["mean:0.5%"], error="target out of reach ...")
    ).splitlines()
    assert early[0].endswith("target ±0.5% on the mean out of reach on this machine: see "
                             "`volley system`")  # fmt: skip
    assert early[2] == "  why: target out of reach ..."
    fixed = summary(result(status="not-significant", mode="runs", targets=["mean:0.5%"]))
    assert fixed.splitlines()[0].endswith("target ±0.5% on the mean not met by these 2 runs")
    assert "significant: NO (the fixed runs did not reach the target precision)" in fixed


def test_the_mode_and_the_planned_runs_are_in_the_json_and_older_files_read_as_precision():
    data = result(mode="duration", planned_runs=40).to_json()
    assert data["mode"] == "duration" and data["planned_runs"] == 40
    assert BenchResult.from_json(data).mode == "duration"
    del data["mode"], data["planned_runs"]
    older = BenchResult.from_json(data)
    assert older.mode == "precision" and older.planned_runs is None


def test_summary_of_a_failure_says_so():
    text = summary(result(status="failed", error="client 3 ...: wrong reply", latency_ns=None))
    assert "no op completed" in text and "incomplete" in text
    assert "error: client 3" in text


def progress(target_ns: float) -> RunProgress:
    return RunProgress(
        run=7,
        planned=10,
        n=5000,
        intervals={"mean": Interval(78_900.0, 1200.0, 7), "p99": Interval(139_000.0, 6000.0, 7)},
        targets_ns={"mean": target_ns, "p99": 7000.0},
        elapsed_s=9.4,
    )


def test_progress_is_plain_lines_off_a_terminal():
    out = io.StringIO()
    p = StreamProgress(out)
    p.run(progress(789.0))
    p.done()
    assert out.getvalue().splitlines() == [
        "run 7 (≥ 10): mean 78.90 us ± 1.20 us, p99 139 us ± 6.00 us "
        "(targets ± 789 ns, ± 7.00 us), 9.4 s",
    ]


def test_progress_rewrites_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    p = StreamProgress(out)
    p.run(progress(500.0))
    p.run(progress(500.0))
    p.done()
    assert out.getvalue().count("\r\033[K") == 2 and out.getvalue().endswith("\n")
    assert out.getvalue().count("\n") == 1

"""A real result's histogram read by HdrHistogram's own package, and the interval log."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from fractions import Fraction

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
from helpers import BRIEF, bench

from volley.numbers.stats import HDR_HIGHEST_NS, HDR_LOWEST_NS, HDR_SIGNIFICANT_DIGITS, Histogram
from volley.records import export, store
from volley.records.experiment import Point
from volley.records.results import BenchResult, interval_log
from volley.records.store import SweepInfo, SweepRecord

# Every test here starts real servers or volley processes (the slow tier).
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real_result(c_threaded, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("hdr") / "out.json"
    done = bench("--clients", "2", *BRIEF, "--json", out, c_threaded)
    assert done.status in (0, 3), done.stderr  # 3: not significant, still a full result
    return json.loads(out.read_text())


def test_hdrhistogram_reads_the_same_percentiles_as_the_summary(real_result):
    latency = real_result["latency_ns"]
    theirs = HdrHistogram.decode(latency["histogram"])
    n = real_result["n"]
    assert theirs.get_total_count() == n
    assert theirs.get_min_value() == theirs.get_lowest_equivalent_value(int(latency["min"]))
    assert theirs.values_are_equivalent(theirs.get_max_value(), int(latency["max"]))
    for name in ("p50", "p90", "p99", "p99.9"):
        summary = latency[name.replace(".", "_")]
        # HdrHistogram rounds the rank to the nearest op where we take the next one up (the
        # nearest-rank definition): in a sparse tail those can be far apart, so it is asked
        # at our rank. It reports a bucket's highest value, we its midpoint.
        rank = max(1, math.ceil(Fraction(name[1:]) * n / 100))
        value = theirs.get_value_at_percentile(100 * rank / n)
        low = theirs.get_lowest_equivalent_value(value)
        assert low <= summary <= theirs.get_highest_equivalent_value(value)
        assert summary == low + (theirs.get_highest_equivalent_value(value) - low) / 2


def test_the_histogram_survives_the_typed_record_and_gives_the_distribution(real_result):
    result = BenchResult.from_json(real_result)
    assert result.latency_ns.histogram == real_result["latency_ns"]["histogram"]
    ours = Histogram.decode(result.latency_ns.histogram)
    wanted = [p for p, _ in result.latency_ns.distribution]
    assert ours.percentiles(wanted).tolist() == [v for _, v in result.latency_ns.distribution]


def test_interval_log_reads_back_in_hdrhistogram(real_result, tmp_path):
    result = BenchResult.from_json(real_result)
    failed = BenchResult.from_json({**real_result, "status": "failed", "latency_ns": None})
    path = tmp_path / "results.hlog"
    path.write_text(interval_log([("c-threaded, 2 clients", result), ("failed", failed)]))
    text = path.read_text()
    assert text.count("HISTF") == 1 and "Tag=c-threaded__2_clients," in text
    reader = HistogramLogReader(
        str(path), HdrHistogram(HDR_LOWEST_NS, HDR_HIGHEST_NS, HDR_SIGNIFICANT_DIGITS)
    )
    interval = reader.get_next_interval_histogram()
    assert interval.get_total_count() == result.n
    assert interval.get_tag() == "c-threaded__2_clients"
    assert interval.get_end_time_stamp() - interval.get_start_time_stamp() == pytest.approx(
        1000 * result.measured_s, abs=1
    )
    assert reader.get_next_interval_histogram() is None
    reader.close()


def test_sweep_export_hlog_writes_one_interval_per_point(real_result, tmp_path):
    point = Point("c-threaded", 2, 1, 1)
    result = BenchResult.from_json(real_result)
    info = SweepInfo("hdr", "hdr.toml")
    results_path = tmp_path / "results.jsonl"
    for record in (
        SweepRecord(point, 0, info, result),
        SweepRecord(replace(point, clients=4), 0, info, result),
        SweepRecord(replace(point, clients=8), 1, info, None, "it crashed"),
    ):
        store.append(results_path, record)
    assert export.check_exports(["hlog"]) == ["hlog"]
    (written,) = export.export(results_path, ["hlog"])
    reader = HistogramLogReader(
        str(written), HdrHistogram(HDR_LOWEST_NS, HDR_HIGHEST_NS, HDR_SIGNIFICANT_DIGITS)
    )
    tags, total = [], 0
    while (interval := reader.get_next_interval_histogram()) is not None:
        tags.append(interval.get_tag())
        total += interval.get_total_count()
    reader.close()
    assert tags == [
        "c-threaded/clients=2/server_cores=1/client_cores=1",
        "c-threaded/clients=4/server_cores=1/client_cores=1",
    ]
    assert total == 2 * real_result["n"]

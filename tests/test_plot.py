"""volley plot: figures from a recorded results file (tests/fixtures/results-sample.jsonl,
written by a real tiny sweep: c-threaded and c-epoll at 1, 4 and 16 clients, plus a server
that crashes, whose points failed)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import FIXTURES, volley

from volley.numbers.stats import Histogram
from volley.present import figures, plot, relative
from volley.records import store
from volley.records.experiment import Point
from volley.records.store import SweepInfo, SweepRecord

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

SAMPLE = FIXTURES / "results-sample.jsonl"
FASTER = ("mean", "ci_low", "ci_high", "p99")


def records() -> list[SweepRecord]:
    return store.load(SAMPLE)[0]


def write_records(path: Path, records: list[SweepRecord]) -> Path:
    for record in records:
        store.append(path, record)
    return path


def test_the_sample_is_a_real_sweep_with_a_failed_point():
    lines = records()
    assert 4 <= len(lines) <= 12
    assert {r.status for r in lines} >= {"failed"}
    assert all(r.result and r.result.latency_ns for r in lines if r.status != "failed")


def test_load_skips_failed_points_with_a_note():
    results = plot.load(SAMPLE)
    good = [r for r in records() if r.status != "failed"]
    assert len(results.measurements) == len(good)
    assert results.failed == len(records()) - len(good)
    assert any("failed point" in note and "crashy" in note for note in results.notes)
    assert results.confidences() == [0.95] and "CPUs" in results.hosts[0]


def test_throughput_is_clients_over_latency_with_the_interval_mapped():
    x, low, high = plot.ops_interval(4, mean_ns=50_000, low_ns=40_000, high_ns=62_500)
    assert x == pytest.approx(80_000)
    assert low == pytest.approx(64_000)  # the slow end of the latency CI
    assert high == pytest.approx(100_000)
    for m in plot.load(SAMPLE).measurements:
        x, low, high = m.throughput_ops_s()
        assert low < x < high


def png_size(path: Path) -> tuple[int, int]:
    height, width = imread(path).shape[:2]
    return width, height


def test_plot_writes_three_pngs_of_sane_size(tmp_path):
    written, notes = figures.plot(SAMPLE, tmp_path / "perf.png")
    assert [p.name for p in written] == ["perf.png", "perf-latency.png", "perf-distribution.png"]
    for path in written:
        assert 20_000 < path.stat().st_size < 2_000_000, path
        width, height = png_size(path)
        assert 800 <= width <= 4000 and 500 <= height <= 3000, (path, width, height)
    assert notes


def test_svg_too(tmp_path):
    written, _ = figures.plot(SAMPLE, tmp_path / "perf.svg")
    assert [p.suffix for p in written] == [".svg"] * 3
    assert all("<svg" in p.read_text()[:2000] for p in written)


def test_figures_say_what_they_show():
    mpl = plot.require_matplotlib()
    results = plot.load(SAMPLE)
    throughput = figures.throughput_figure(mpl, results)
    (ax,) = [a for a in throughput.axes if a.get_visible()]
    assert ax.get_ylabel() == "mean throughput (ops/s)" and ax.get_xlabel() == "server"
    caption = throughput.get_supxlabel()
    assert "95% confidence" in caption and "Machine:" in caption and "CPUs" in caption
    assert "Little's law" in caption and "failed point" in caption
    assert "Throughput" in throughput.get_suptitle()
    latency = figures.latency_figure(mpl, results)
    assert latency.axes[0].get_ylabel() == "latency (µs)"
    distribution = figures.distribution_figure(mpl, results)
    panels = [a for a in distribution.axes if a.get_visible()]
    assert len(panels) == len({m.clients for m in results.measurements})
    assert all(a.get_xlabel() == "percentile" for a in panels)
    assert "99.999%" in [t.get_text() for t in panels[0].get_xticklabels()]


def many_cores(tmp_path: Path) -> Path:
    """The sample spread over 1, 2 and 4 server cores (synthetic: a 2-CPU machine cannot)."""
    lines = []
    for record in records():
        for cores in (1, 2, 4):
            result, point = record.result, replace(record.point, server_cores=cores)
            if result and result.latency_ns:
                latency = result.latency_ns
                faster = {k: getattr(latency, k) / cores**0.5 for k in FASTER}
                result = replace(result, latency_ns=replace(latency, **faster))
            lines.append(replace(record, point=point, result=result))
    return write_records(tmp_path / "results.jsonl", lines)


def test_with_several_core_counts_cores_are_the_x_axis(tmp_path):
    mpl = plot.require_matplotlib()
    results = plot.load(many_cores(tmp_path))
    figure = figures.throughput_figure(mpl, results)
    panels = [a for a in figure.axes if a.get_visible()]
    assert [a.get_title() for a in panels] == ["1 client", "4 clients", "16 clients"]
    assert all(a.get_xlabel() == "server CPU cores" for a in panels)
    assert len(panels[0].get_lines()) >= 2  # a line per server
    written, _ = figures.plot(results_path := tmp_path / "results.jsonl", tmp_path / "perf.png")
    assert results_path.exists() and all(p.stat().st_size > 20_000 for p in written)
    # The distribution shows the largest core count unless told otherwise.
    assert "4 server cores" in figures.distribution_figure(mpl, results).get_suptitle()
    assert "2 server cores" in figures.distribution_figure(mpl, results, cores=2).get_suptitle()


def test_distribution_stops_where_the_data_does():
    m = plot.load(SAMPLE).measurements[0]
    pairs = figures.distribution_points(m)
    assert pairs and all(p <= figures.MAX_PERCENTILE for p, _ in pairs)
    assert all((1 - p / 100) * m.n >= 1 for p, _ in pairs)
    assert [v for _, v in pairs] == sorted(v for _, v in pairs)
    assert figures.percentile_x(99.9) == pytest.approx(1000)


def test_filters_and_bad_input(tmp_path):
    results = plot.load(SAMPLE, servers=["c-epoll"], clients=[4])
    assert {(m.server, m.clients) for m in results.measurements} == {("c-epoll", 4)}
    with pytest.raises(plot.PlotError, match="not in"):
        plot.load(SAMPLE, servers=["nginx"])
    with pytest.raises(plot.PlotError, match="no point to plot"):
        plot.load(SAMPLE, servers=["crashy"])
    with pytest.raises(plot.PlotError, match=".png or .svg"):
        plot.output_paths(tmp_path / "perf.pdf")
    with pytest.raises(plot.PlotError, match="does not exist"):
        plot.output_paths(tmp_path / "nowhere" / "perf.png")
    with pytest.raises(plot.PlotError, match="--cores 3"):
        figures.plot(SAMPLE, tmp_path / "perf.png", cores=3)


def test_without_matplotlib_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(plot.MissingMatplotlib, match=r"pip install 'volley\[plot\]'"):
        figures.plot(SAMPLE, tmp_path / "perf.png")


@pytest.mark.real
def test_cli(tmp_path):
    done = volley("plot", SAMPLE, "-o", tmp_path / "perf.png")
    assert done.status == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"wrote {tmp_path / name}"
        for name in ("perf.png", "perf-latency.png", "perf-distribution.png")
    ]
    assert "note: " in done.stderr and "failed point" in done.stderr
    # Without -o the figures go beside the results.
    copy = tmp_path / "sweep" / "results.jsonl"
    copy.parent.mkdir()
    copy.write_text(SAMPLE.read_text())
    assert volley("plot", copy).status == 0 and (copy.parent / "perf-distribution.png").exists()
    bad = volley("plot", SAMPLE, "-o", tmp_path / "perf.jpg")
    assert bad.status == 2 and bad.stderr.startswith("volley: error: -o ")
    assert volley("plot", tmp_path / "missing.jsonl").status == 2


def test_p99_interval_is_read_where_the_result_has_one(tmp_path):
    lines = records()
    good = next(r for r in lines if r.status != "failed")
    assert good.result and good.result.latency_ns
    latency = good.result.latency_ns
    latency = replace(latency, intervals={"p99": (latency.p99 * 0.9, 2e9)})
    good = replace(good, result=replace(good.result, latency_ns=latency))
    path = write_records(tmp_path / "results.jsonl", [good, lines[0]])
    first = plot.load(path).measurements[0]
    assert first.p99_low_ns == pytest.approx(latency.p99 * 0.9)
    low, high = figures.p99_error([first])
    assert low[0] == pytest.approx(first.p99_ns * 0.1 / 1e3) and high[0] > 1e6
    # An old result without percentile intervals gets no p99 bar rather than a made-up one.
    old = plot.load(SAMPLE).measurements[0]
    assert figures.p99_error([old]) == [[0.0], [0.0]]


def test_distribution_is_read_from_the_histogram_where_the_result_has_one(tmp_path):
    good = next(r for r in records() if r.status != "failed")
    assert good.result and good.result.latency_ns
    ops = Histogram()
    ops.record(np.arange(1, 100_001))  # op k takes k ns: percentile p is p * 1000 ns
    latency = replace(good.result.latency_ns, histogram=ops.encode())
    good = replace(good, result=replace(good.result, latency_ns=latency, n=100_000))
    path = write_records(tmp_path / "results.jsonl", [good])
    pairs = dict(figures.distribution_points(plot.load(path).measurements[0]))
    assert pairs[50.0] == pytest.approx(50_000, rel=1e-3)
    assert pairs[99.99] == pytest.approx(99_990, rel=1e-3)
    assert max(pairs) == 99.999  # one op lies beyond it
    # An older result has only its stored points.
    old = plot.load(SAMPLE).measurements[0]
    assert old.histogram is None
    stored = figures.distribution_points(old)
    assert stored and set(stored) <= set(old.distribution)


# --- relative to a baseline ----------------------------------------------------------------


def twins(tmp_path: Path) -> Path:
    """A sweep where "twin" measured exactly what c-threaded did, and "slow" 10% more."""
    from test_sweep import bench_result

    lines = []
    for clients in (1, 4):
        for name, scale in (("c-threaded", 1.0), ("twin", 1.0), ("slow", 1.1)):
            point = Point(name, clients, 1, 1)
            result = bench_result(point, mean=50_000.0 * scale)
            runs = [
                replace(r, mean_ns=r.mean_ns * scale, p99_ns=r.p99_ns * scale) for r in result.runs
            ]
            result = replace(result, runs=runs)
            lines.append(SweepRecord(point, 0, SweepInfo("twins", "twins.toml"), result))
    return write_records(tmp_path / "results.jsonl", lines)


def test_ratios_to_a_baseline_have_fieller_intervals(tmp_path):
    found = relative.ratios(twins(tmp_path), "c-threaded")
    assert {r.point.server for r in found} == {"twin", "slow"}
    assert len(found) == 2 * 2 * len(relative.STATISTICS)
    for r in found:
        low, value, high = r.estimate.low, r.estimate.value, r.estimate.high
        if r.point.server == "twin":
            assert value == pytest.approx(1.0) and low <= 1.0 <= high
        else:
            assert value == pytest.approx(1.1) and low > 1.0  # 10% slower, and it shows
    with pytest.raises(plot.PlotError, match="--baseline 'nginx'"):
        relative.ratios(tmp_path / "results.jsonl", "nginx")


@pytest.mark.real
def test_the_relative_figure(tmp_path):
    path = twins(tmp_path)
    done = volley("plot", path, "--baseline", "c-threaded", "-o", tmp_path / "perf.png")
    assert done.status == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"wrote {tmp_path / 'perf-relative.png'}"
    assert png_size(tmp_path / "perf-relative.png")[0] > 600
    bad = volley("plot", path, "--baseline", "nginx", "-o", tmp_path / "other.png")
    assert bad.status == 2 and "--baseline 'nginx'" in bad.stderr
    assert not (tmp_path / "other.png").exists()  # refused before drawing anything


def test_points_that_differ_only_in_their_cpus_are_series_of_their_own(tmp_path):
    # Same server, clients and CPU counts; one server on CPU 1, one on CPU 3 (a client's
    # sibling, say): on one x in one series they would hide each other.
    first = next(r for r in records() if r.status != "failed")
    point = first.point
    placed = [
        replace(first, point=replace(point, server_cpu_list=cpus, server_cores=1))
        for cpus in ("1", "3")
    ]
    found = plot.load(write_records(tmp_path / "r.jsonl", placed))
    assert sorted(m.server for m in found.measurements) == [
        f"{point.server} (server CPU 1)",
        f"{point.server} (server CPU 3)",
    ]
    # Lists that give different counts are points of one series, as counts are.
    spread = [
        placed[0],
        replace(first, point=replace(point, server_cpu_list="1-2", server_cores=2)),
    ]
    found = plot.load(write_records(tmp_path / "s.jsonl", spread))
    assert {m.server for m in found.measurements} == {point.server}

"""A sweep relative to a baseline server (``volley plot --baseline c-threaded``).

Absolute latencies differ between machines of the same kind, and drift on one machine over
minutes; a server's latency divided by a baseline server's at the same point (same clients,
client and server cores, offered rate) of the same sweep is what carries over, and more so
when the sweep was interleaved. Each ratio gets Fieller's interval from both points' runs,
exactly as ``volley compare`` gives B / A (``volley.numbers.stats.ratio``: Welch's degrees of
freedom, so the interval holds 1 exactly when the difference's holds 0).

``perf-relative.png``: one panel per server-core count, the servers along x (the baseline
left out), a marker per client count: the mean latency's ratio (filled) and p99's (open),
with their intervals as bars, and a line at 1 (the baseline).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volley.numbers import stats
from volley.numbers.units import BadInput
from volley.present import figures, plot
from volley.records import store
from volley.records.experiment import Point
from volley.records.results import FAILED, SIGNIFICANT, BenchResult, refuse_rehearsal
from volley.studies import compare

STATISTICS = ("mean", "p99")


@dataclass(frozen=True)
class Ratio:
    """One statistic of a server at a point, over the baseline's at the same point."""

    point: Point  # the server's
    statistic: str
    estimate: stats.Estimate  # NaN bounds: too few runs for an interval
    significant: bool  # both points met their targets
    confidence: float


def ratios(path: Path, baseline: str) -> list[Ratio]:
    """Every ratio the results file allows; PlotError if it has no point of ``baseline``."""
    try:
        records, _ = store.load(path)
        for record in records:
            if record.result is not None:
                refuse_rehearsal(record.result, f"{path} ({record.point.server})", "plot")
    except (store.StoreError, BadInput) as e:
        raise plot.PlotError(str(e)) from None
    measured = {
        point: record.result
        for point, record in store.latest(records).items()
        if record.status != FAILED and record.result and record.result.latency_ns
    }
    if not any(point.server == baseline for point in measured):
        servers = sorted({point.server for point in measured})
        raise plot.PlotError(
            f"--baseline {baseline!r} has no measured point in {path}; it has "
            f"{', '.join(servers) or 'none'}"
        )
    found = []
    for point, result in measured.items():
        base = measured.get(dataclasses.replace(point, server=baseline))
        if point.server == baseline or base is None:
            continue
        for statistic in STATISTICS:
            found.append(
                Ratio(
                    point,
                    statistic,
                    ratio(base, result, statistic),
                    SIGNIFICANT == base.status == result.status,
                    result.confidence,
                )
            )
    return found


def ratio(baseline: BenchResult, subject: BenchResult, statistic: str) -> stats.Estimate:
    a = stats.RunMean.of(compare.run_values(baseline, statistic), _value(baseline, statistic))
    b = stats.RunMean.of(compare.run_values(subject, statistic), _value(subject, statistic))
    if min(a.runs, b.runs) < compare.MIN_RUNS_PER_SIDE:
        return stats.Estimate(b.mean / a.mean, math.nan, math.nan)
    return stats.ratio(a, b, subject.confidence)


def _value(result: BenchResult, statistic: str) -> float:
    assert result.latency_ns is not None
    return result.latency_ns.value(statistic)


def figure(
    mpl: Any, results: plot.Results, found: Sequence[Ratio], baseline: str, output: Path
) -> Path:
    """Draw and write perf-relative.png (or .svg) beside ``output``."""
    shown = {(m.server, m.clients, m.server_cores, m.client_cores) for m in results.measurements}
    found = [
        r
        for r in found
        if (r.point.server, r.point.clients, r.point.server_cores, r.point.client_cores) in shown
        and r.point.rate_ops_s is None
    ]
    if not found:
        raise plot.PlotError(f"no point to compare with {baseline!r} (after --server/--clients)")
    servers = [s for s in results.servers() if any(r.point.server == s for r in found)]
    groups = sorted({(r.point.clients, r.point.client_cores) for r in found})
    cores = sorted({r.point.server_cores for r in found})
    width = min(16.0, max(7.0, 0.35 * len(servers) * len(groups) + 3))
    fig = figures.new_figure(mpl, width, 4.2 * len(cores) + 1.2)
    axes = fig.subplots(len(cores), 1, squeeze=False)[:, 0]
    palette, slot = mpl.colormaps["viridis"], 0.8 / len(groups)
    for ax, count in zip(axes, cores, strict=True):
        for g, group in enumerate(groups):
            color = palette(0.15 + 0.7 * g / max(1, len(groups) - 1))
            for statistic in MARKERS:
                chosen = _chosen(found, servers, (count, *group), statistic)
                _markers(ax, chosen, color, (g, slot))
        ax.axhline(1.0, color="black", linewidth=0.9)
        ax.set_xticks(range(len(servers)), servers, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(servers) - 0.4)
        ax.set_ylabel(f"latency / {baseline}'s")
        ax.set_title(f"server on {count} core{'s' if count != 1 else ''}")
        ax.grid(True, axis="y", alpha=0.3)
    handles = [
        mpl.lines.Line2D(
            [], [], color=palette(0.15 + 0.7 * g / max(1, len(groups) - 1)), marker="o"
        )
        for g in range(len(groups))
    ] + [
        mpl.lines.Line2D([], [], color="black", linestyle="none", marker="o"),
        mpl.lines.Line2D([], [], color="black", linestyle="none", marker="^", mfc="white"),
    ]
    labels = [figures.group_label(group, results) for group in groups] + ["mean", "p99"]
    fig.legend(handles, labels, loc="outside right center", title="concurrency")
    what = (
        f"Each server's latency divided by {baseline}'s at the same point of this sweep "
        "(below 1: faster); filled: mean, open: p99; bars: Fieller's {confidence} interval "
        "of the ratio from both points' runs (as volley compare). Hollow circles: a point "
        "that did not reach its target precision."
    )
    figures.finish(fig, f"Latency relative to {baseline}", figures.caption(results, what, weak=""))
    path = output.with_name(f"{output.stem}-relative{output.suffix}")
    fig.savefig(path, dpi=figures.DPI, bbox_inches="tight")
    return path


MARKERS = {"mean": "o", "p99": "^"}  # p99's drawn hollow, as in the other figures


def _chosen(
    found: Sequence[Ratio], servers: list[str], where: tuple[int, int, int], statistic: str
) -> list[tuple[int, Ratio]]:
    """The ratios of one statistic at one point of the grid (server cores, clients, client
    cores), each with its server's place on the x axis."""
    return [
        (servers.index(r.point.server), r)
        for r in found
        if r.statistic == statistic
        and (r.point.server_cores, r.point.clients, r.point.client_cores) == where
        and r.point.server in servers
    ]


def _markers(ax: Any, chosen: list[tuple[int, Ratio]], color: Any, slot: tuple[int, float]) -> None:
    """One group's markers (and interval bars) for one statistic across the servers;
    ``slot``: the group's index and the width each group takes."""
    g, width = slot
    for s, r in chosen:
        # Mean and p99 side by side within the group's slot.
        x = s - 0.4 + width * (g + (0.3 if r.statistic == "mean" else 0.7))
        value, low, high = r.estimate.value, r.estimate.low, r.estimate.high
        bars = [[value - low], [high - value]] if math.isfinite(low + high) else None
        marker = MARKERS[r.statistic]
        hollow = marker == "^" or not r.significant
        ax.errorbar(
            x,
            value,
            yerr=bars,
            color=color,
            marker=marker,
            markersize=6,
            markerfacecolor="white" if hollow else color,
            capsize=2,
            linestyle="none",
        )


def plot_relative(
    results_path: Path,
    output: Path,
    baseline: str,
    servers: Sequence[str] | None = None,
    clients: Sequence[int] | None = None,
) -> Path:
    """Write perf-relative.png beside ``output``; PlotError for a baseline not in the sweep."""
    plot.output_paths(output)
    found = ratios(results_path, baseline)
    results = plot.load(results_path, servers, clients)
    return figure(plot.require_matplotlib(), results, found, baseline, output)

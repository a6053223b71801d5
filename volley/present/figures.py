"""The figures of a sweep (``plot`` says what each shows), drawn with matplotlib's
object API from ``plot.Results``, imported only when drawing."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from volley.numbers.stats import Histogram, distribution_percentiles
from volley.present.plot import (
    Measurement,
    PlotError,
    Results,
    load,
    output_paths,
    require_matplotlib,
)

DPI = 150
MAX_PERCENTILE = 99.999  # the distribution's x axis ends here (1 in 100,000 ops)
NOT_SIGNIFICANT_NOTE = "not significant: target precision not reached within max-time"


def p99_error(points: Sequence[Measurement]) -> list[list[float]]:
    """p99's interval as error bars, in microseconds; none where it is not known."""
    return [
        [(m.p99_ns - m.p99_low_ns) / 1e3 if math.isfinite(m.p99_low_ns) else 0.0 for m in points],
        [(m.p99_high_ns - m.p99_ns) / 1e3 if math.isfinite(m.p99_high_ns) else 0.0 for m in points],
    ]


def new_figure(mpl: Any, width: float, height: float) -> Any:
    return mpl.figure.Figure(figsize=(width, height), layout="constrained")


def _colors(mpl: Any, names: Sequence[Any]) -> dict[Any, Any]:
    """One colour per name, the same in every figure of a run."""
    if len(names) <= 10:
        palette = mpl.colormaps["tab10"]
        return {name: palette(i) for i, name in enumerate(names)}
    # tab20's dark shades first, then its light ones: the first ten stay far apart.
    palette = mpl.colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return {name: palette(order[i % 20]) for i, name in enumerate(names)}


def caption(results: Results, what: str, weak: str = "Hollow markers") -> str:
    confidence = ", ".join(f"{c:.0%}" for c in results.confidences())
    hosts = "; ".join(results.hosts)
    if len(results.hosts) > 1:
        hosts = f"MIXED MACHINES: {hosts}"
    dates = sorted(d for d in results.dates if d)
    when = dates[0] if len(set(dates)) == 1 else f"{dates[0]} to {dates[-1]}" if dates else ""
    lines = [
        f"Machine: {hosts}.  volley {', '.join(results.versions)}, {when}; target precision "
        f"{', '.join(results.precisions)} of the mean at {confidence} confidence.",
        what.format(confidence=confidence),
    ]
    if weak and any(not m.significant for m in results.measurements):
        lines.append(f"{weak}: {NOT_SIGNIFICANT_NOTE}.")
    if results.failed:
        lines.append(
            f"Not shown: {results.failed} failed point"
            f"{'s' if results.failed > 1 else ''} ({', '.join(results.failed_servers)})."
        )
    return "\n".join(lines)


def finish(fig: Any, title: str, caption: str) -> None:
    fig.suptitle(title, fontsize=13, fontweight="bold")
    # About 15 characters of 8-point text per inch: wrap to the figure, not beyond it.
    width = max(60, int(fig.get_figwidth() * 15))
    text = "\n".join(textwrap.fill(line, width) for line in caption.splitlines())
    fig.supxlabel(text, fontsize=8, x=0.0, ha="left", multialignment="left", color="0.25")


def _single_cores(results: Results) -> bool:
    return len({m.server_cores for m in results.measurements}) == 1


def _groups(results: Results) -> list[tuple[int, int]]:
    """(clients, client cores) combinations, in order."""
    return sorted({(m.clients, m.client_cores) for m in results.measurements})


def group_label(group: tuple[int, int], results: Results) -> str:
    clients, client_cores = group
    label = f"{clients} client{'s' if clients != 1 else ''}"
    if len({m.client_cores for m in results.measurements}) > 1:
        label += f" on {client_cores} core{'s' if client_cores != 1 else ''}"
    return label


def _setting(results: Results) -> str:
    """What is fixed in the figure: '1 server core, 1 client core'."""
    server = sorted({m.server_cores for m in results.measurements})
    client = sorted({m.client_cores for m in results.measurements})

    def spell(counts: list[int], who: str) -> str:
        if len(counts) == 1:
            return f"{who} on {counts[0]} core{'s' if counts[0] != 1 else ''}"
        return f"{who} on {counts[0]}-{counts[-1]} cores"

    return f"{spell(server, 'server')}, {spell(client, 'clients')}"


def _panels(fig: Any, count: int) -> list[Any]:
    columns = min(3, count)
    rows = math.ceil(count / columns)
    axes = fig.subplots(rows, columns, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_visible(False)
    return flat[:count]


def _plain_log_ticks(mpl: Any, ax: Any) -> None:
    """Label a log y axis with plain numbers (20, 50, 100): at 1, 2, 5 x 10^k when it spans
    decades, evenly spaced when it spans less than that (else it might show no label)."""
    low, high = ax.get_ylim()
    if low > 0 and high / low < 20:
        ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator(nbins=6))
    else:
        ax.yaxis.set_major_locator(mpl.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())


def _by_cores(mpl: Any, results: Results) -> tuple[Any, Any, list[tuple[Any, int]]]:
    """A figure with one panel per client count (the seed's layout): figure, server colours,
    and (axes, clients) pairs."""
    counts = sorted({m.clients for m in results.measurements})
    fig = new_figure(mpl, 4.6 * min(3, len(counts)) + 2.6, 3.8 * math.ceil(len(counts) / 3) + 1.4)
    panels = list(zip(_panels(fig, len(counts)), counts, strict=True))
    return fig, _colors(mpl, results.servers()), panels


def _line(results: Results, clients: int, series: tuple[str, int]) -> list[Measurement]:
    """The points of one server's line in one client-count panel, by server cores."""
    return sorted(
        (
            m
            for m in results.measurements
            if m.clients == clients and (m.server, m.client_cores) == series
        ),
        key=lambda m: m.server_cores,
    )


def _series(results: Results) -> list[tuple[str, int]]:
    """Lines in the by-cores figures: (server, client cores)."""
    return list(dict.fromkeys((m.server, m.client_cores) for m in results.measurements))


def _series_label(series: tuple[str, int], results: Results) -> str:
    if len({m.client_cores for m in results.measurements}) > 1:
        return f"{series[0]} ({series[1]} client cores)"
    return series[0]


def throughput_figure(mpl: Any, results: Results) -> Any:
    """Mean ops/s with CI error bars: against server cores, or per server on one core count."""
    what = (
        "Throughput = clients / mean latency (Little's law: each client has one op in "
        "flight); error bars: the {confidence} confidence interval of the mean latency, "
        "mapped the same way."
    )
    if _single_cores(results):
        fig = _bars(mpl, results, "mean throughput (ops/s)", lambda m: m.throughput_ops_s())
        finish(
            fig,
            f"Throughput per server ({_setting(results)})",
            caption(results, what, "Hatched bars"),
        )
        return fig
    fig, colors, panels = _by_cores(mpl, results)
    styles = _styles(results)
    for ax, clients in panels:
        for series in _series(results):
            points = _line(results, clients, series)
            if not points:
                continue
            ops = [m.throughput_ops_s() for m in points]
            y = [o[0] for o in ops]
            err = [[o[0] - o[1] for o in ops], [o[2] - o[0] for o in ops]]
            line = (colors[series[0]], styles[series[1]])
            _errorbar(ax, points, (y, err), line, _series_label(series, results))
        ax.set_title(f"{clients} client{'s' if clients != 1 else ''}")
        ax.set_xlabel("server CPU cores")
        ax.set_ylabel("mean throughput (ops/s)")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(mpl.ticker.EngFormatter(sep=""))
        ax.grid(True, alpha=0.3)
    fig.legend(*_legend_from(fig), loc="outside right center", title="server")
    finish(fig, f"Throughput against server cores ({_setting(results)})", caption(results, what))
    return fig


def _styles(results: Results) -> dict[int, str]:
    cores = sorted({m.client_cores for m in results.measurements})
    return {c: ["-", "--", "-.", ":"][i % 4] for i, c in enumerate(cores)}


def _errorbar(
    ax: Any,
    points: list[Measurement],
    values: tuple[list[float], list[list[float]]],
    line: tuple[Any, str],
    label: str,
) -> None:
    """A line through the points by server cores: ``values`` (y and its error bars), in
    ``line`` (colour and line style)."""
    x = [m.server_cores for m in points]
    (y, err), (color, style), marker = values, line, "o"
    ax.errorbar(
        x,
        y,
        yerr=err,
        color=color,
        linestyle=style,
        marker=marker,
        markersize=5,
        capsize=3,
        linewidth=1.5,
        label=label,
    )
    _hollow(ax, (x, y), points, color, (marker, 5))


def _hollow(
    ax: Any,
    xy: tuple[Sequence[float], Sequence[float]],
    points: Sequence[Measurement],
    color: Any,
    shape: tuple[str, float],
) -> None:
    """Redraw the markers (``shape``: the marker and its size) of not-significant points
    hollow."""
    (x, y), (marker, size) = xy, shape
    weak = [(xi, yi) for xi, yi, m in zip(x, y, points, strict=True) if not m.significant]
    if weak:
        ax.plot(
            *zip(*weak, strict=True),
            linestyle="none",
            marker=marker,
            markersize=size,
            markerfacecolor="white",
            markeredgecolor=color,
            zorder=5,
        )


def _legend_from(fig: Any) -> tuple[list[Any], list[str]]:
    """Every labelled artist of the figure once, in order of first appearance."""
    seen: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def _side_by_side(mpl: Any, results: Results) -> tuple[Any, Any, list[str], Any, Any, float]:
    """A figure with the servers along x and one slot per (clients, client cores) group."""
    servers = results.servers()  # in the experiment's order
    groups = _groups(results)
    fig = new_figure(mpl, min(16.0, max(7.0, 0.35 * len(servers) * len(groups) + 3)), 5.2)
    return fig, fig.subplots(), servers, groups, mpl.colormaps["viridis"], 0.8 / len(groups)


def _bars(mpl: Any, results: Results, ylabel: str, values: Any) -> Any:
    """Servers side by side, one bar per (clients, client cores) group, CI whiskers."""
    fig, ax, servers, groups, palette, width = _side_by_side(mpl, results)
    for g, group in enumerate(groups):
        color = palette(0.15 + 0.7 * g / max(1, len(groups) - 1))
        for s, server in enumerate(servers):
            found = [
                m
                for m in results.measurements
                if m.server == server and (m.clients, m.client_cores) == group
            ]
            if not found:
                continue
            m = found[0]
            y, low, high = values(m)
            x = s - 0.4 + width * (g + 0.5)
            ax.bar(
                x,
                y,
                width * 0.92,
                color=color,
                edgecolor="black",
                linewidth=0.4,
                hatch=None if m.significant else "////",
                label=group_label(group, results)
                if s == 0
                or not any(
                    (m2.clients, m2.client_cores) == group
                    for m2 in results.measurements
                    if m2.server in servers[:s]
                )
                else None,
            )
            ax.errorbar(x, y, yerr=[[y - low], [high - y]], color="black", capsize=2, linewidth=0.9)
    ax.set_xticks(range(len(servers)), servers, rotation=30, ha="right")
    ax.set_xlabel("server")
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_formatter(mpl.ticker.EngFormatter(sep=""))
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_xlim(-0.6, len(servers) - 0.4)
    handles, labels = _legend_from(fig)
    if any(not m.significant for m in results.measurements):
        handles.append(mpl.patches.Patch(facecolor="white", edgecolor="black", hatch="////"))
        labels.append("not significant")
    fig.legend(handles, labels, title="concurrency", loc="outside right center")
    return fig


def latency_figure(mpl: Any, results: Results) -> Any:
    """Mean latency and p99, each with its CI as error bars, in microseconds on a log axis."""
    what = (
        "Filled markers, solid: mean latency; open triangles, dashed: 99th percentile "
        "(p99); each with its {confidence} confidence interval as error bars. Log scale."
    )
    if _single_cores(results):
        fig = _latency_dots(mpl, results)
        finish(
            fig,
            f"Latency per server ({_setting(results)})",
            caption(results, what.replace(", dashed", "")),
        )
        return fig
    fig, colors, panels = _by_cores(mpl, results)
    for ax, clients in panels:
        for series in _series(results):
            points = _line(results, clients, series)
            if not points:
                continue
            x = [m.server_cores for m in points]
            y = [m.mean_ns / 1e3 for m in points]
            err = [
                [(m.mean_ns - m.ci_low_ns) / 1e3 for m in points],
                [(m.ci_high_ns - m.mean_ns) / 1e3 for m in points],
            ]
            color = colors[series[0]]
            _errorbar(ax, points, (y, err), (color, "-"), _series_label(series, results))
            ax.errorbar(
                x,
                [m.p99_ns / 1e3 for m in points],
                yerr=p99_error(points),
                color=color,
                linestyle="--",
                marker="^",
                markersize=5,
                markerfacecolor="white",
                linewidth=1,
                capsize=2,
            )
        ax.set_title(f"{clients} client{'s' if clients != 1 else ''}")
        ax.set_xlabel("server CPU cores")
        ax.set_ylabel("latency (µs)")
        ax.set_yscale("log")
        _plain_log_ticks(mpl, ax)
        ax.grid(True, which="both", alpha=0.25)
    _mean_p99_legend(mpl, fig, "server", ("-", "--"))
    finish(fig, f"Latency against server cores ({_setting(results)})", caption(results, what))
    return fig


def _latency_dots(mpl: Any, results: Results) -> Any:
    fig, ax, servers, groups, palette, width = _side_by_side(mpl, results)
    for g, group in enumerate(groups):
        color = palette(0.15 + 0.7 * g / max(1, len(groups) - 1))
        points = [
            (s, m)
            for s, server in enumerate(servers)
            for m in results.measurements
            if m.server == server and (m.clients, m.client_cores) == group
        ]
        if not points:
            continue
        x = [s - 0.4 + width * (g + 0.5) for s, _ in points]
        _mean_p99_dots(ax, x, [m for _, m in points], color, group_label(group, results))
    for s in range(1, len(servers)):
        ax.axvline(s - 0.5, color="0.85", linewidth=0.8)
    ax.set_xticks(range(len(servers)), servers, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(servers) - 0.4)
    ax.set_xlabel("server")
    ax.set_ylabel("latency (µs)")
    ax.set_yscale("log")
    _plain_log_ticks(mpl, ax)
    ax.grid(True, axis="y", which="both", alpha=0.25)
    _mean_p99_legend(mpl, fig, "concurrency", ("none", "none"))
    return fig


def _mean_p99_dots(ax: Any, x: list[float], ms: list[Measurement], color: Any, label: str) -> None:
    """Each point's mean (a filled circle, hollow where not significant) and p99 (an open
    triangle), with their intervals."""
    y = [m.mean_ns / 1e3 for m in ms]
    err = [
        [(m.mean_ns - m.ci_low_ns) / 1e3 for m in ms],
        [(m.ci_high_ns - m.mean_ns) / 1e3 for m in ms],
    ]
    ax.errorbar(
        x,
        y,
        yerr=err,
        color=color,
        linestyle="none",
        marker="o",
        markersize=6,
        capsize=2,
        label=label,
    )
    _hollow(ax, (x, y), ms, color, ("o", 6))
    ax.errorbar(
        x,
        [m.p99_ns / 1e3 for m in ms],
        yerr=p99_error(ms),
        linestyle="none",
        marker="^",
        markersize=6,
        markerfacecolor="white",
        markeredgecolor=color,
        color=color,
        capsize=2,
    )


def _mean_p99_legend(mpl: Any, fig: Any, title: str, styles: tuple[str, str]) -> None:
    """The figure's series, then what a filled circle (mean) and an open triangle (p99) are."""
    handles, labels = _legend_from(fig)
    mean, p99 = styles
    handles += [
        mpl.lines.Line2D([], [], color="black", linestyle=mean, marker="o"),
        mpl.lines.Line2D([], [], color="black", linestyle=p99, marker="^", markerfacecolor="white"),
    ]
    labels += ["mean (CI bars)", "p99 (CI bars)"]
    fig.legend(handles, labels, loc="outside right center", title=title)


# The distribution's x axis: percentile p is drawn at 1 / (1 - p/100), on a log scale, so
# 90%, 99%, 99.9%, ... are evenly spaced (as HdrHistogram's percentile plots are).
PERCENTILE_TICKS = {
    1.0: "0%",
    10.0: "90%",
    100.0: "99%",
    1e3: "99.9%",
    1e4: "99.99%",
    1e5: "99.999%",
}


def percentile_x(percentile: float) -> float:
    return 1.0 / (1.0 - percentile / 100.0)


def distribution_points(m: Measurement) -> list[tuple[float, float]]:
    """The (percentile, latency ns) pairs worth drawing: up to 99.999%, and only where at
    least one measured op lies beyond the percentile (the rest repeat the maximum). Read
    from the histogram when the result has one, else from its stored points."""
    pairs = m.distribution
    if m.histogram:
        wanted = distribution_percentiles()
        values = Histogram.decode(m.histogram).percentiles(wanted)
        pairs = tuple(zip(wanted, values.tolist(), strict=True))
    return [(p, v) for p, v in pairs if p <= MAX_PERCENTILE and (1 - p / 100) * m.n >= 1]


def distribution_figure(mpl: Any, results: Results, cores: int | None = None) -> Any:
    """Latency by percentile for the points of one server-core count."""
    available = sorted({m.server_cores for m in results.measurements})
    if cores is None:
        cores = available[-1]
    elif cores not in available:
        raise PlotError(
            f"--cores {cores}: the results have server core counts {', '.join(map(str, available))}"
        )
    chosen = [m for m in results.measurements if m.server_cores == cores]
    client_cores = max(m.client_cores for m in chosen)
    chosen = [m for m in chosen if m.client_cores == client_cores]
    panels = sorted({m.clients for m in chosen})
    fig = new_figure(mpl, 4.8 * min(3, len(panels)) + 2.6, 4.0 * math.ceil(len(panels) / 3) + 1.4)
    servers = results.servers()
    colors = _colors(mpl, servers)
    for ax, clients in zip(_panels(fig, len(panels)), panels, strict=True):
        for server in servers:
            for m in chosen:
                if m.server == server and m.clients == clients:
                    # Past ten servers colours repeat in a lighter shade: dash those too.
                    dashed = servers.index(server) >= 10
                    _distribution_curve(ax, m, colors[server], dashed)
        _distribution_axes(mpl, ax, clients)
    fig.legend(*_legend_from(fig), loc="outside right center", title="server")
    what = (
        f"Latency of every measured op by percentile, for the points with {cores} server "
        f"core{'s' if cores != 1 else ''} and {client_cores} client "
        f"core{'s' if client_cores != 1 else ''}; a curve ends where fewer than one op lies "
        "beyond the percentile. Log scales."
    )
    text = caption(results, what, weak="")
    finish(
        fig,
        f"Latency distribution ({cores} server core{'s' if cores != 1 else ''}, "
        f"{client_cores} client core{'s' if client_cores != 1 else ''})",
        text,
    )
    return fig


def _distribution_curve(ax: Any, m: Measurement, color: Any, dashed: bool) -> None:
    pairs = distribution_points(m)
    if pairs:
        ax.plot(
            [percentile_x(p) for p, _ in pairs],
            [v / 1e3 for _, v in pairs],
            color=color,
            linewidth=1.4,
            label=m.server,
            linestyle="--" if dashed else "-",
        )


def _distribution_axes(mpl: Any, ax: Any, clients: int) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1, percentile_x(MAX_PERCENTILE))
    ax.set_xticks(list(PERCENTILE_TICKS), list(PERCENTILE_TICKS.values()))
    ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
    _plain_log_ticks(mpl, ax)
    ax.set_title(f"{clients} client{'s' if clients != 1 else ''}")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (µs)")
    ax.grid(True, which="both", alpha=0.25)


def load_figure(mpl: Any, results: Results, points: Sequence[Measurement]) -> Any:
    """Latency against achieved throughput for a rate sweep: p50 dashed, p99 solid, one
    colour per server (and client count, if several); saturated points get a cross."""
    series = list(dict.fromkeys((m.server, m.clients) for m in points))
    several_counts = len({c for _, c in series}) > 1
    colors = _colors(mpl, series)
    fig = new_figure(mpl, 7.5, 4.8)
    ax = fig.add_subplot()
    for key in series:
        line = sorted(
            (m for m in points if (m.server, m.clients) == key),
            key=lambda m: m.rate_ops_s or 0.0,
        )
        label = f"{key[0]} ({key[1]} clients)" if several_counts else key[0]
        x = [m.achieved_ops_s / 1e3 for m in line]
        for values, style, name in (("p99_ns", "-", "p99"), ("p50_ns", "--", "p50")):
            y = [getattr(m, values) / 1e3 for m in line]
            ax.plot(x, y, style, marker="o", ms=3, color=colors[key], label=f"{label} {name}")
            hot = [(xi, yi) for xi, yi, m in zip(x, y, line, strict=True) if m.saturated]
            if hot:
                ax.plot(*zip(*hot, strict=True), "x", ms=8, mew=1.5, color=colors[key])
    ax.set_yscale("log")
    _plain_log_ticks(mpl, ax)
    ax.set_xlabel("achieved throughput (thousand ops/s)")
    ax.set_ylabel("latency (us, log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    finish(
        fig,
        "Latency against load (open loop)",
        caption(
            results,
            "Each point one offered rate; x marks a saturated point "
            "(replies short of the offered load by over 1%, or a growing backlog)",
            weak="",
        ),
    )
    return fig


def plot(
    results_path: Path,
    output: Path,
    servers: Sequence[str] | None = None,
    clients: Sequence[int] | None = None,
    cores: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Write the three figures; return their paths and notes for the user."""
    paths = output_paths(output)
    results = load(results_path, servers, clients)
    mpl = require_matplotlib()

    opened = [m for m in results.measurements if m.rate_ops_s is not None]
    closed = [m for m in results.measurements if m.rate_ops_s is None]
    written: list[Path] = []
    if opened:
        path = output.with_name(f"{output.stem}-load{output.suffix}")
        figure = load_figure(mpl, results, opened)
        figure.savefig(path, dpi=DPI, bbox_inches="tight")
        written.append(path)
    if closed:
        results.measurements = closed
        drawn = [
            throughput_figure(mpl, results),
            latency_figure(mpl, results),
            distribution_figure(mpl, results, cores),
        ]
        for figure, path in zip(drawn, paths, strict=True):
            figure.savefig(path, dpi=DPI, bbox_inches="tight")
        written = paths + written
    return written, results.notes

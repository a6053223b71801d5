"""Figures of a sweep, drawn from its results file (``results.jsonl``) and nothing else.

``plot(results, Path("perf.png"))`` writes three figures beside each other, PNG or SVG by
the suffix it is given:

  perf.png               throughput: mean ops/s against server cores, one line per server,
                         one panel per client count (the seed's figure);
  perf-latency.png       mean latency (with its confidence interval) and p99 against
                         server cores, same panels;
  perf-distribution.png  latency by percentile (HdrHistogram-style, 0 to 99.999%) for the
                         points of one server-core count, one panel per client count;
  perf-load.png          for a rate sweep (open loop, ``rates = [...]``): p50 and p99
                         latency against achieved throughput, one line per server, log
                         latency axis, saturated points marked with a cross: the
                         latency-versus-load curve. Open-loop points appear only here;
                         the other three figures are drawn from closed-loop points.

When every point has the same server-core count (a sweep on a small machine), cores make no
x axis: the throughput and latency figures then put the servers side by side instead, with
one bar or marker per client count.

Throughput and its error bars. A volley client has exactly one op in flight and sends the
next as soon as the reply arrives (a closed loop with no think time), so by Little's law the
throughput of ``clients`` clients is X = clients / mean latency. The map m -> clients / m is
strictly decreasing, so an interval [lo, hi] that covers the mean latency with probability
95% gives the interval [clients / hi, clients / lo] that covers X with the same probability:
the throughput interval is the latency interval mapped through Little's law, and therefore
slightly asymmetric. This is the seed's plot.R (ops = clients / time) with its +-10 us
placeholder bars replaced by the measured interval. volley-bench's ``throughput_ops_s`` (ops
counted over the measured time) agrees with X but has no interval of its own, so it is not
what is plotted.

matplotlib is optional (``pip install 'volley[plot]'``) and imported only when drawing; the
figures are made with the object API (no pyplot), so no display is ever needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from volley.numbers.units import BadInput
from volley.records import store
from volley.records.experiment import Point
from volley.records.results import (
    FAILED,
    OPEN,
    SIGNIFICANT,
    BenchResult,
    LatencySummary,
    refuse_rehearsal,
)


class PlotError(ValueError):
    """Results that cannot be plotted, or an output that cannot be written."""


class MissingMatplotlib(RuntimeError):
    """matplotlib is not installed."""


@dataclass(frozen=True)
class Measurement:
    """One plotted point: a finished sweep point's numbers, in ns."""

    server: str
    clients: int
    server_cores: int
    client_cores: int
    status: str
    n: int
    mean_ns: float
    ci_low_ns: float
    ci_high_ns: float
    p99_ns: float
    confidence: float
    # p99's interval; NaN for results older than format 2, which have none
    p99_low_ns: float = math.nan
    p99_high_ns: float = math.nan
    distribution: tuple[tuple[float, float], ...] = ()
    histogram: str | None = None  # every op, HdrHistogram-encoded (format 4 on)
    # Open loop only: the offered rate, the achieved one, p50, and the saturation flag.
    rate_ops_s: float | None = None
    achieved_ops_s: float = math.nan
    p50_ns: float = math.nan
    saturated: bool = False
    # The CPU lists the experiment named ("server CPU 0-1, clients CPU 2-3"); "" by count.
    cpus: str = ""

    @property
    def significant(self) -> bool:
        return self.status == SIGNIFICANT

    def throughput_ops_s(self) -> tuple[float, float, float]:
        """(X, low, high): Little's law X = clients / mean latency, the CI mapped through it."""
        return ops_interval(self.clients, self.mean_ns, self.ci_low_ns, self.ci_high_ns)


def ops_interval(
    clients: int, mean_ns: float, low_ns: float, high_ns: float
) -> tuple[float, float, float]:
    """clients / latency for the mean and both CI ends; the high latency gives the low X."""

    def rate(ns: float) -> float:
        return clients * 1e9 / ns if ns > 0 else math.inf

    return rate(mean_ns), rate(high_ns), rate(low_ns)


@dataclass
class Results:
    measurements: list[Measurement]
    notes: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    precisions: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)
    failed: int = 0
    failed_servers: list[str] = field(default_factory=list)

    def servers(self) -> list[str]:
        return list(dict.fromkeys(m.server for m in self.measurements))

    def confidences(self) -> list[float]:
        return sorted({m.confidence for m in self.measurements})


def _check_plottable(
    path: Path, records: list[store.SweepRecord], servers: Sequence[str] | None
) -> None:
    """PlotError for a rehearsal among the points, or a --server the file does not have."""
    for record in records:
        if record.result is not None:
            try:
                refuse_rehearsal(record.result, f"{path} ({record.point.server})", "plot")
            except BadInput as e:
                raise PlotError(str(e)) from None
    known = {r.point.server for r in records}
    for name in servers or ():
        if name not in known:
            raise PlotError(
                f"--server {name!r} is not in {path}; it has "
                f"{', '.join(sorted(known)) or 'no points'}"
            )


def load(
    path: Path, servers: Sequence[str] | None = None, clients: Sequence[int] | None = None
) -> Results:
    """Read a results file; failed points become a note, not a point."""
    if not path.is_file():
        raise PlotError(f"{path} is not a file; give a sweep's results.jsonl")
    try:
        records, problems = store.load(path)
    except store.StoreError as e:
        raise PlotError(str(e)) from None
    results = Results([], notes=list(problems))
    _check_plottable(path, records, servers)
    failed = []
    for record in records:
        point, result = record.point, record.result
        if servers and point.server not in servers:
            continue
        if clients and point.clients not in clients:
            continue
        if record.status == FAILED or result is None or result.latency_ns is None:
            failed.append(
                f"{point.server} with {point.clients} clients ({record.failure or 'no result'})"
            )
            _add(results.failed_servers, point.server)
            continue
        results.measurements.append(measurement(point, result, result.latency_ns))
        # The machine's model and state (governor, SMT, virtual) in the caption.
        _add(results.hosts, result.host.caption())
        _add(results.precisions, result.precision)
        _add(results.versions, result.volley_version)
        _add(results.dates, result.started_at[:10])
    results.measurements = tell_apart(results.measurements)
    results.failed = len(failed)
    if failed:
        results.notes.append(
            f"{len(failed)} failed point{'s' if len(failed) > 1 else ''} not "
            f"plotted: {'; '.join(failed)}"
        )
    if not results.measurements:
        raise PlotError(
            f"{path} has no point to plot"
            + (" (after --server/--clients)" if servers or clients else "")
        )
    return results


def named_cpus(point: Point) -> str:
    """The CPU lists ``point`` names ("server CPU 0-1, clients CPU 2-3"); "" by count."""
    sides = [
        f"{who} CPU {listed}"
        for who, listed in (("server", point.server_cpu_list), ("clients", point.client_cpu_list))
        if listed is not None
    ]
    return ", ".join(sides)


def tell_apart(measurements: list[Measurement]) -> list[Measurement]:
    """Points that differ only in the CPUs they were given (a server on a core of its own
    against one on a client's sibling, both 1 CPU) would share an x in their server's
    series: each becomes a series of its own, named with its CPUs."""

    def counts(m: Measurement) -> tuple[str, int, int, int]:
        return m.server, m.clients, m.server_cores, m.client_cores

    lists: dict[tuple[str, int, int, int], set[str]] = {}
    for m in measurements:
        lists.setdefault(counts(m), set()).add(m.cpus)
    return [
        replace(m, server=f"{m.server} ({m.cpus or 'placed by count'})")
        if len(lists[counts(m)]) > 1
        else m
        for m in measurements
    ]


def measurement(point: Point, result: BenchResult, latency: LatencySummary) -> Measurement:
    """A finished point's plotted numbers."""
    p99_low, p99_high = latency.interval("p99")
    load = result.load
    opened = load.model == OPEN
    return Measurement(
        cpus=named_cpus(point),
        server=point.server,
        clients=point.clients,
        server_cores=point.server_cores,
        client_cores=point.client_cores,
        status=result.status,
        n=result.n,
        mean_ns=latency.mean,
        ci_low_ns=latency.ci_low,
        ci_high_ns=latency.ci_high,
        p99_ns=latency.p99,
        confidence=result.confidence,
        p99_low_ns=p99_low,
        p99_high_ns=p99_high,
        distribution=tuple((float(p), float(v)) for p, v in latency.distribution),
        histogram=latency.histogram,
        rate_ops_s=load.rate_ops_s if opened else None,
        achieved_ops_s=_known(load.achieved_ops_s) if opened else math.nan,
        p50_ns=latency.p50 if opened else math.nan,
        saturated=bool(load.saturated) if opened else False,
    )


def _known(value: float | None) -> float:
    """A number from a result; one that is not known becomes NaN."""
    return math.nan if value is None else float(value)


def _add(values: list[str], value: str) -> None:
    if value not in values:
        values.append(value)


def output_paths(output: Path) -> list[Path]:
    """perf.png -> perf.png, perf-latency.png, perf-distribution.png (or .svg)."""
    if output.suffix.lower() not in (".png", ".svg"):
        raise PlotError(f"-o {output}: give a .png or .svg file name")
    if not output.parent.is_dir():
        raise PlotError(f"-o {output}: directory {output.parent} does not exist")
    return [
        output,
        *(
            output.with_name(f"{output.stem}-{kind}{output.suffix}")
            for kind in ("latency", "distribution")
        ),
    ]


def require_matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.figure
        import matplotlib.lines
        import matplotlib.patches
        import matplotlib.ticker
    except ImportError:
        raise MissingMatplotlib(
            "volley plot needs matplotlib: pip install 'volley[plot]'"
        ) from None
    return matplotlib

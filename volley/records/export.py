"""Exports of a sweep's results: a CSV table of every point, the seed's ``plot.dat``, and
HdrHistogram's interval log of the points' histograms.

Each exporter turns the typed records (``volley.records.store``) into text; ``export`` writes the
asked ones beside the results file.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from volley.records import store
from volley.records.experiment import Point
from volley.records.results import FAILED, interval_log, write_atomically
from volley.records.store import SweepRecord
from volley.system import cpus

CSV_COLUMNS = (
    "server",
    "clients",
    "server_cores",
    "client_cores",
    "status",
    "significant",
    "exit_status",
    "n",
    "rounds",
    "mean_ns",
    "stddev_ns",
    "ci_low_ns",
    "ci_high_ns",
    "min_ns",
    "p50_ns",
    "p90_ns",
    "p99_ns",
    "p99.9_ns",
    "max_ns",
    "p50_ci_low_ns",
    "p50_ci_high_ns",
    "p90_ci_low_ns",
    "p90_ci_high_ns",
    "p99_ci_low_ns",
    "p99_ci_high_ns",
    "p99.9_ci_low_ns",
    "p99.9_ci_high_ns",
    "restart",
    "throughput_ops_s",
    "confidence",
    "precision",
    "elapsed_s",
    "measured_s",
    "server_cpus",
    "client_cpus",
    "server_path",
    "started_at",
    "error",
)
DAT_COLUMNS = ("server", "clients", "cores", "mean", "stddev", "n")


RESULT_COLUMNS = ("n", "rounds", "throughput_ops_s", "confidence", "precision")
LATENCY_COLUMNS = (
    "mean",
    "stddev",
    "ci_low",
    "ci_high",
    "min",
    "p50",
    "p90",
    "p99",
    "p99.9",
    "max",
)


def _row(record: SweepRecord) -> dict[str, Any]:
    point, result = record.point, record.result
    row: dict[str, Any] = {
        "server": point.server,
        "clients": point.clients,
        "server_cores": point.server_cores,
        "client_cores": point.client_cores,
        "status": record.status,
        "significant": result.significant if result else False,
        "exit_status": record.exit_status,
        "error": record.failure,
        "started_at": result.started_at if result else record.started_at,
        "n": 0,
    }
    if result is None:
        return row
    row |= {key: getattr(result, key) for key in RESULT_COLUMNS}
    row |= {
        "elapsed_s": result.elapsed_s,
        "measured_s": result.measured_s,
        "restart": result.restart,
        "server_cpus": cpus.format_cpu_list(result.server_cores),
        "client_cpus": cpus.format_cpu_list(result.client_cores),
        "server_path": result.server,
    }
    latency = result.latency_ns
    if latency is None:
        return row
    for key in LATENCY_COLUMNS:
        row[f"{key}_ns"] = getattr(latency, key) if key != "p99.9" else latency.p99_9
    for key, (low, high) in latency.intervals.items():
        row[f"{key}_ci_low_ns"], row[f"{key}_ci_high_ns"] = low, high
    return row


def _cell(value: Any) -> Any:
    """Empty where nothing is known: no value, or a number that is not known (NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def export_csv(records: Iterable[SweepRecord]) -> str:
    """Every recorded point, one row each; latencies in ns, empty where a point failed."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _cell(v) for k, v in _row(record).items()})
    return out.getvalue()


def export_dat(records: Iterable[SweepRecord]) -> str:
    """The seed's plot.dat: ``server clients cores mean stddev n``, space-separated, no
    header, times in microseconds written like the seed's client (``41.20us``); ``cores`` is
    the server's core count. Points without a mean (failed) are left out."""
    rows = []
    for record in records:
        result = record.result
        if record.status == FAILED or result is None or result.latency_ns is None:
            continue
        point, latency = record.point, result.latency_ns
        rows.append(
            (
                point.server,
                point.clients,
                point.server_cores,
                latency.mean / 1e3,
                latency.stddev / 1e3,
                result.n,
            )
        )
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return "".join(f"{s} {c} {k} {m:.2f}us {d:.2f}us {n}\n" for s, c, k, m, d, n in rows)


def export_hlog(records: Iterable[SweepRecord]) -> str:
    """HdrHistogram's interval log: one interval per point that has a histogram (format 4
    on), tagged with the point."""

    def tag(point: Point) -> str:
        return "/".join(f"{k}={v}" if k != "server" else str(v) for k, v in point.to_json().items())

    return interval_log(
        (tag(r.point), r.result)
        for r in records
        if r.result and r.result.latency_ns and r.result.latency_ns.histogram
    )


EXPORTERS: dict[str, tuple[str, Callable[[Iterable[SweepRecord]], str]]] = {
    "csv": ("results.csv", export_csv),
    "dat": ("plot.dat", export_dat),
    "hlog": ("results.hlog", export_hlog),
}


def check_exports(formats: list[str]) -> list[str]:
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown:
        raise ValueError(
            f"--export {unknown[0]!r} is not a format; choose from {', '.join(EXPORTERS)}"
        )
    return list(dict.fromkeys(formats))


def export(results_path: Path, formats: list[str]) -> list[Path]:
    """Write each asked export beside the results file; return the paths written."""
    if not results_path.exists():
        return []
    records, _ = store.load(results_path)
    written = []
    for name in formats:
        filename, exporter = EXPORTERS[name]
        path = results_path.parent / filename
        write_atomically(path, exporter(records))
        written.append(path)
    return written

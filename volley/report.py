"""What a person reads: the live progress line during a run and the summary after it."""

from __future__ import annotations

import io
import math
import sys
from typing import TextIO

from volley.coordinator import Progress, RoundProgress
from volley.cpus import format_cpu_list
from volley.results import INTERRUPTED, NOT_SIGNIFICANT, SIGNIFICANT, BenchResult


def format_ns(ns: float) -> str:
    """A latency with a unit that keeps three or four significant digits."""
    if not math.isfinite(ns):
        return "?"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return (
                f"{ns / scale:.3g} {unit}" if abs(ns) >= 100 * scale else f"{ns / scale:.2f} {unit}"
            )
    return f"{ns:.0f} ns"


class StreamProgress(Progress):
    """One line per round; on a terminal the line is rewritten in place."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.open_line = False

    def round(self, p: RoundProgress) -> None:
        if p.warmup:
            text = f"warm-up ({p.elapsed_s:.1f} s)"
        else:
            ratio = p.half_width_ns / p.target_ns if p.target_ns > 0 else math.inf
            text = (
                f"round {p.round}: {p.n:,} ops, mean {format_ns(p.mean_ns)} "
                f"± {format_ns(p.half_width_ns)} (target ± {format_ns(p.target_ns)}, "
                f"{'met' if ratio <= 1 else f'{ratio:.{1 if ratio < 10 else 0}f}x too wide'}), "
                f"{p.elapsed_s:.1f} s"
            )
        if self.live:
            self.write("\r\033[K" + text)
            self.open_line = True
        else:
            self.write(text + "\n")

    def done(self) -> None:
        if self.open_line:
            self.write("\n")
            self.open_line = False

    def write(self, text: str) -> None:
        """A progress line is not worth a run: a reader gone away (EPIPE, or EIO from a
        hung-up terminal) ends the progress, not the benchmark."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.stream = io.StringIO()


VERDICTS = {
    SIGNIFICANT: "significant: yes",
    NOT_SIGNIFICANT: "significant: NO (max time reached before the target precision)",
    INTERRUPTED: "significant: NO (interrupted; partial result)",
}


def summary(result: BenchResult) -> str:
    """The human summary printed on stdout."""
    lines = [
        f"{result.server} {' '.join(result.server_args)}".rstrip(),
        f"  {result.clients} client{'' if result.clients == 1 else 's'} on CPU "
        f"{format_cpu_list(result.client_cores)}, "
        + (
            f"server on CPU {format_cpu_list(result.server_cores)}"
            if result.server_cores
            else "server already running (not started or pinned by volley)"
        ),
    ]
    lat = result.latency_ns
    if lat is None:
        lines.append("  no op completed")
    else:
        half = (lat.ci_high - lat.ci_low) / 2
        share = f", {100 * half / lat.mean:.2g}% of mean" if math.isfinite(half) else ""
        lines += [
            f"  latency    {format_ns(lat.mean)} ± {format_ns(half)} "
            f"({result.confidence:.0%} CI{share})   stddev {format_ns(lat.stddev)}",
            f"  percentile p50 {format_ns(lat.p50)}  p90 {format_ns(lat.p90)}  "
            f"p99 {format_ns(lat.p99)}  p99.9 {format_ns(lat.p99_9)}  max {format_ns(lat.max)}",
        ]
    lines += [
        f"  n {result.n:,} ops in {result.rounds} round{'' if result.rounds == 1 else 's'} "
        f"({result.measured_s:.1f} s measured, "
        f"{result.elapsed_s:.1f} s elapsed), {result.throughput_ops_s:,.0f} ops/s",
        "  " + VERDICTS.get(result.status, "significant: NO (failed; incomplete result)"),
    ]
    if result.error:
        lines.append(f"  error: {result.error}")
    return "\n".join(lines)

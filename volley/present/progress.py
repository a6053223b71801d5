"""Progress while Volley measures: one line per run of volley-bench, and a sweep's points
done with elapsed time and ETA.

On a terminal the current line is redrawn in place by rich's live display (typer's own
dependency), which also takes back a line wider than the terminal; anywhere else (a file,
a pipe, CI) every update is a plain line of its own. A reader that goes away (EPIPE, or EIO
from a hung-up terminal) ends the progress, never the measurement.
"""

from __future__ import annotations

import io
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from volley.measure.runs import Forecast, Progress, RunProgress
from volley.numbers.units import format_duration, format_ns
from volley.present.report import forecast_line
from volley.records.experiment import Point
from volley.records.store import SweepRecord
from volley.studies.sweep import Outcome, SweepProgress, describe


class StatusLine:
    """A stream of progress: ``show`` a line that the next one replaces (on a terminal
    only), ``note`` a line that stays. ``transient``: the shown line goes when closed."""

    def __init__(self, stream: TextIO, transient: bool = False) -> None:
        self.stream = stream
        self.transient = transient
        self.console = Console(file=stream, highlight=False, markup=False, emoji=False)
        self.on_terminal = self.console.is_terminal
        self.live: Live | None = None

    def show(self, text: str) -> None:
        if not self.on_terminal:
            return
        try:
            if self.live is None:
                self.live = Live(
                    console=self.console,
                    auto_refresh=False,
                    transient=self.transient,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                self.live.start()
            self.live.update(Text(text), refresh=True)
        except (OSError, ValueError):
            self._gone()

    def note(self, text: str) -> None:
        try:
            if self.live is not None:
                # Above the live line, which stays; left to the terminal to wrap, so that
                # a copied line is one line.
                self.live.console.print(Text(text), soft_wrap=True)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()
        except (OSError, ValueError):
            self._gone()

    def close(self) -> None:
        """End the live line where it stands (it stays on the screen)."""
        live, self.live = self.live, None
        if live is not None:
            try:
                live.stop()
            except (OSError, ValueError):
                self._gone()

    def _gone(self) -> None:
        self.live = None
        self.on_terminal = False
        self.stream = io.StringIO()
        self.console = Console(file=self.stream)


class StreamProgress(Progress):
    """volley-bench's runs: the latest run's intervals on one line."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.line = StatusLine(stream)

    def run(self, p: RunProgress) -> None:
        values = ", ".join(
            f"{name} {format_ns(iv.centre)} ± {format_ns(iv.half_width)}"
            for name, iv in p.intervals.items()
        )
        targets = ", ".join(f"± {format_ns(ns)}" for ns in p.targets_ns.values())
        text = (
            f"run {p.run} (≥ {p.planned}): {values} "
            f"(target{'s' if len(p.targets_ns) > 1 else ''} {targets}), {p.elapsed_s:.1f} s"
            + (f"  DISTURBED: {p.disturbed}" if p.disturbed else "")
        )
        if self.line.on_terminal:
            self.line.show(text)
        else:
            self.line.note(text)

    def plan(self, forecast: Forecast) -> None:
        self.line.note(forecast_line(forecast))

    def done(self) -> None:
        self.line.close()


class SweepLines(SweepProgress):
    """A sweep's points done / total, elapsed and ETA: a bar on a terminal, lines otherwise."""

    WIDTH = 24

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        # The bar shows the point running; between points it goes.
        self.line = StatusLine(stream, transient=True)
        self.warned: set[str] = set()
        self.total = self.done = 0
        self.start = time.monotonic()
        self.durations: list[float] = []
        self.limit_s = 0.0

    def begin(self, total: int, done: int, limit_s: float) -> None:
        self.total, self.done, self.limit_s = total, done, limit_s
        self.start = time.monotonic()

    def eta(self) -> str:
        left = self.total - self.done
        if not self.durations:
            return f"ETA ≤ {format_duration(left * self.limit_s)}"
        return f"ETA {format_duration(left * sum(self.durations) / len(self.durations))}"

    def status(self) -> str:
        elapsed = format_duration(time.monotonic() - self.start)
        return f"{self.done}/{self.total} points, {elapsed} elapsed, {self.eta()}"

    def starting(self, point: Point) -> None:
        filled = self.WIDTH * self.done // max(1, self.total)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.line.show(f"[{bar}] {self.status()}  running: {point}")

    def finished(self, point: Point, record: SweepRecord | None, seconds: float) -> None:
        if record is None:  # interrupted: not done
            self.note(f"interrupted: {point} (not recorded; --resume runs it again)")
            self.line.close()
            return
        self.done += 1
        self.durations.append(seconds)
        line = f"[{self.done}/{self.total}] {point}: {describe(record)} ({seconds:.1f} s)"
        if not self.line.on_terminal:
            line += f"; {self.status()}"
        self.note(line)
        self.line.close()

    def warn(self, outcome: Outcome) -> None:
        """The points' warnings, each the first time it comes (every point on the same
        CPUs would say the same)."""
        for line in outcome.warnings:
            if line not in self.warned:
                self.warned.add(line)
                self.note(line)

    def note(self, text: str) -> None:
        self.line.note(text)


class QuietSweep(SweepProgress):
    """No progress; the points' warnings still go to stderr (--quiet hides no warning)."""

    def __init__(self, warnings: TextIO | None = None) -> None:
        self.warnings = SweepLines(warnings or sys.stderr)

    def warn(self, outcome: Outcome) -> None:
        self.warnings.warn(outcome)

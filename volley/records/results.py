"""The result of one benchmark run, and its versioned JSON form.

Format history (``version`` in the JSON):
  1  first format: the volley-bench keys listed in the README.
  2  replicated runs: ``runs`` (one object per run), ``restart``, ``targets``, and
     ``latency_ns.intervals`` (a confidence interval for each percentile). ``rounds`` and
     ``ci_batches`` now count runs; the mean's interval rests on run-level values.
  3  open loop: ``load`` = {"model": "closed"} or {"model": "open", "rate_ops_s",
     "arrivals", "achieved_ops_s", "late_sends_share", "max_outstanding", "saturated"};
     open-loop runs also carry ``achieved_ops_s``, ``due``, ``late``, ``max_outstanding``
     and ``backlog_growth``. Older files read as closed loop. ``host`` is the whole
     environment (``volley.system.machine.Environment``; format 1's three keys kept), each run
     has its ``noise``, and ``dropped_runs`` holds disturbed runs left out (--noisy drop).
  4  the whole distribution: ``latency_ns.histogram`` is the histogram of every measured
     op in HdrHistogram's compressed encoding (``volley.numbers.stats.Histogram.encode``), so that
     results merge exactly and read at any percentile. Older files have none: only their
     percentiles and ``distribution`` points. Clients on many hosts (under mpiexec or
     srun): ``hosts``, one object per host with ``host``, ``rank``, ``cpus``, ``clients``,
     ``ops``, ``mean_ns`` and ``p99_ns`` (empty for a run on one machine); ``clients``
     and ``n`` are then totals over the hosts. Later in format 4 (readers of 4 ignore it
     or take it as absent): ``server_address``, where the server listened; ``host``'s
     ``cpuidle_driver`` and ``idle_states`` (``shallow`` or ``any``); each run's
     ``noise.cpu_hop_ns``; ``earlier_sittings`` and ``between_sittings_ns`` (the
     intervals include how much earlier invocations of the same configuration differed);
     ``placements``: where the host moved the CPUs between runs, the mean of the near and
     of the far runs, each with its interval (``PlacementEstimate``).
     ``history`` (null when none was looked for or fewer than two earlier sittings):
     {"earlier_sittings", "between_sittings_ns", "consistent", "prediction_interval_ns"
     (per statistic, [low, high]), "differs" (the statistics outside it)}: this sitting
     against what the earlier ones predict; one that differs was not kept.
     ``sequential``, in results written by ``volley compare --run`` only: the plan of
     looks its rounds were judged by and the looks taken, the last where it stopped
     (``volley.numbers.sequential.Looks``); absent elsewhere and in older files (one look).
     Later still (optional, absent in older files): open-loop runs'
     ``send_lag_p50_ns``, ``send_lag_p90_ns``, ``send_lag_p99_ns`` and ``send_lag_max_ns``
     (how late the run's sends left their schedule, over all its clients); ``load.spin_ns``
     (how long each client spun before a send) and ``load.send_lag_ns`` {"p50", "p90",
     "p99", "max"} (the median over runs of each run's percentile; max: the largest); and
     ``run_pattern``, a sentence when the run means drift or fall in two groups (else
     null; derived from ``runs`` on reading). ``mode``: ``precision`` (runs until the
     targets are met, within --max-time), ``runs`` (a fixed count, --runs) or ``duration``
     (as many runs as fit in --duration); older files read as ``precision``.
     ``planned_runs``: how many runs the targets needed at the pilot runs' spread (null
     when the pilot did not complete).
  5  snake_case keys throughout: ``latency_ns.p99_9`` (was ``p99.9``), each run's
     ``p99_9_ns`` (was ``p99.9_ns``), and ``p99_9`` among the keys of
     ``latency_ns.intervals``, ``between_sittings_ns`` and ``history``'s
     ``between_sittings_ns`` and ``prediction_interval_ns``. Statistic names as values
     (``history.differs``, ``targets``) stay as typed: ``p99.9``. Files of 4 and before
     read as they did.
  6  rehearsals and where a run's time goes: ``rehearsal`` (true for ``volley-bench
     --rehearse``: another machine's plan folded onto this one's CPUs; its latencies are not
     meaningful, and ``volley compare``, ``volley plot`` and the history refuse it),
     ``topology`` (the --topology file the CPUs were placed by, else null),
     ``planned_server_cores`` and ``planned_client_cores`` (a rehearsal's CPUs on that
     topology; ``server_cores`` and ``client_cores`` are where it ran, one entry per planned
     CPU; empty elsewhere), and each run's ``phases_s`` (optional: seconds per phase of the
     run's wall time: ``server_start``, ``connect``, ``rendezvous``, ``meter``,
     ``start_slack``, ``warmup_measure``, ``collect``, ``disconnect``, ``server_stop``,
     ``merge``, their sum ``total``, and inside them ``start_skew``, the spread of the
     workers' starts, ``start_late``, how long after the start instant the last one
     started, and ``start_margin``, how long before it the last one was ready; ``gather``
     too under MPI). Files of 5 and before have none of these and read as measurements.

Readers accept every version up to ``FORMAT_VERSION``; writers always write the newest.
Files are read through ``read_result`` / ``parse_result``, which check every value against
the type its dataclass declares and raise ``ResultError`` (a one-line ``BadInput``) for
anything else, so that no later step fails on a value's type.

Every JSON Volley writes is strict JSON: a number that is not known (the interval's bounds
with fewer than two batches, a mean of no ops) is written ``null``, never NaN or Infinity,
which jq, JavaScript and Go refuse. Readers turn ``null`` back into NaN.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
import tempfile
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from volley import __version__
from volley.numbers.sequential import Looks
from volley.numbers.stats import run_pattern
from volley.numbers.units import STATISTICS, BadInput, json_keys, statistic_keys
from volley.system.machine import Environment
from volley.system.noise import Noise

FORMAT_VERSION = 6


class ResultError(BadInput):
    """A result file this volley cannot read: the message, one line, names the file (and
    line), what is wrong and what to do."""


SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "not-significant"
INTERRUPTED = "interrupted"
FAILED = "failed"
# volley-bench's exit status for each status under --require-precision (bad input, with no
# status, exits 2); without it a measurement that completed exits 0 whatever its precision.
EXIT_CODES = {SIGNIFICANT: 0, FAILED: 1, NOT_SIGNIFICANT: 3, INTERRUPTED: 130}
# How the runs were bounded: until every precision target is met (the stopping rule, within
# --max-time), a fixed count (--runs), or as many as fit in a fixed time (--duration).
PRECISION_MODE, RUNS_MODE, DURATION_MODE = "precision", "runs", "duration"


@dataclass(frozen=True)
class LatencySummary:
    """Latency statistics in nanoseconds. Percentiles are within 0.1% (histogram buckets)."""

    mean: float
    stddev: float
    ci_low: float
    ci_high: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    p99_9: float
    # (percentile, latency_ns) pairs for a distribution plot
    distribution: list[tuple[float, float]] = field(default_factory=list)
    # Confidence interval (low, high) of each percentile, keyed "p50", "p90", "p99", "p99.9"
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Every measured op, in HdrHistogram's encoded form ("HISTFAAA..."); None before format 4
    histogram: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["distribution"] = [list(pair) for pair in self.distribution]
        data["intervals"] = json_keys({k: list(v) for k, v in self.intervals.items()})
        return finite(data)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencySummary:
        histogram = data.get("histogram")
        data = {k: unknown_as_nan(v) for k, v in data.items() if k != "histogram"}
        data["histogram"] = histogram
        if "p99.9" in data:  # format 4 and before
            data["p99_9"] = data.pop("p99.9")
        data["distribution"] = [tuple(pair) for pair in data.get("distribution", [])]
        intervals = statistic_keys(data.get("intervals") or {})
        data["intervals"] = {k: tuple(unknown_as_nan(x) for x in v) for k, v in intervals.items()}
        return cls(**data)

    def interval(self, statistic: str) -> tuple[float, float]:
        """(low, high) of "mean" or a percentile name such as "p99"."""
        if statistic == "mean":
            return self.ci_low, self.ci_high
        return self.intervals.get(statistic, (math.nan, math.nan))

    def value(self, statistic: str) -> float:
        """The point value of "mean" or a percentile name such as "p99.9"."""
        return float(getattr(self, STATISTIC_FIELDS[statistic]))


# The statistics a result reports with an interval, and the LatencySummary field of each.
STATISTIC_FIELDS = {name: name.replace(".", "_") for name in STATISTICS}


@dataclass(frozen=True)
class RunSummary:
    """One run: a fresh server (or fresh connections), its warm-up discarded, then a
    measured stretch. The run is the unit of evidence: intervals rest on these values."""

    n: int
    duration_s: float
    mean_ns: float
    p50_ns: float
    p90_ns: float
    p99_ns: float
    p99_9_ns: float
    server_pid: int | None = None
    noise: Noise | None = None  # what else ran on the pinned CPUs during the run
    # Open loop only (None in closed loop): replies per second of the measured window,
    # words scheduled in it, of those sent late, the most outstanding on one
    # connection, and how much the backlog (due, unanswered) grew over the window.
    achieved_ops_s: float | None = None
    due: int | None = None
    late: int | None = None
    max_outstanding: int | None = None
    backlog_growth: int | None = None
    # Open loop, where measured: how late the run's sends left their schedule, over all its
    # clients (ns). The latencies count from the schedule, so this lag is inside them.
    send_lag_p50_ns: float | None = None
    send_lag_p90_ns: float | None = None
    send_lag_p99_ns: float | None = None
    send_lag_max_ns: float | None = None
    # Where the run's wall time went (seconds per phase; see the format history); None in
    # older files.
    phases_s: dict[str, float] | None = None

    def value(self, statistic: str) -> float:
        """This run's "mean" or percentile ("p50" ... "p99.9"), in nanoseconds."""
        return float(getattr(self, STATISTIC_FIELDS[statistic] + "_ns"))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["noise"] = self.noise.to_json() if self.noise else None
        if self.achieved_ops_s is None:  # a closed-loop run has no open-loop counts
            for name in OPEN_RUN_FIELDS:
                del data[name]
        if self.send_lag_p50_ns is None:  # closed loop, or lags not measured (older files)
            for name in SEND_LAG_FIELDS.values():
                del data[name]
        if self.phases_s is None:
            del data["phases_s"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSummary:
        data = {k.replace("p99.9", "p99_9"): v for k, v in data.items()}
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("duration_s", "mean_ns", "p50_ns", "p90_ns", "p99_ns", "p99_9_ns"):
            data[name] = unknown_as_nan(data.get(name))
        data["noise"] = Noise.from_json(data["noise"]) if data.get("noise") else None
        return cls(**data)


OPEN_RUN_FIELDS = ("achieved_ops_s", "due", "late", "max_outstanding", "backlog_growth")
# The send lag's statistics, and the RunSummary field of each.
SEND_LAG_FIELDS = {name: f"send_lag_{name}_ns" for name in ("p50", "p90", "p99", "max")}

CLOSED, OPEN = "closed", "open"
# Saturated: the replies fall short of the words the schedule offered by more than this
# share, or the backlog grows by more than this share of them over the measured windows.
SATURATION_SHARE = 0.01


@dataclass(frozen=True)
class LoadInfo:
    """How the load was applied: closed loop (the next word after the last reply) or open
    loop (words on a schedule at ``rate_ops_s`` over all clients)."""

    model: str = CLOSED
    rate_ops_s: float | None = None  # offered, over all clients
    arrivals: str | None = None  # "poisson" or "fixed"
    achieved_ops_s: float | None = None  # replies per second of the measured windows
    late_sends_share: float | None = None  # sends more than late_tolerance_ns late
    max_outstanding: int | None = None  # words outstanding on one connection, at most
    saturated: bool | None = None  # the point's latency is not a steady-state figure
    late_tolerance_ns: int | None = None
    # How long each client spun before a send instead of sleeping to it (the least, where
    # workers differ); None: not recorded (older files).
    spin_ns: int | None = None
    # How late the sends left their schedule: "p50", "p90", "p99" are the median over runs
    # of each run's percentile, "max" the largest; None where no run measured it.
    send_lag_ns: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.model == CLOSED:
            return {"model": CLOSED}
        data = asdict(self)
        for name in ("spin_ns", "send_lag_ns"):
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LoadInfo:
        return cls(**data) if data else cls()

    @classmethod
    def from_runs(
        cls,
        rate_ops_s: float,
        arrivals: str,
        runs: list[RunSummary],
        late_tolerance_ns: int,
        spin_ns: int | None = None,
    ) -> LoadInfo:
        """The benchmark's open-loop load from its runs' counts."""
        window_s = sum(r.duration_s for r in runs)
        replied = sum((r.achieved_ops_s or 0.0) * r.duration_s for r in runs)
        due = sum(r.due or 0 for r in runs)
        growth = sum(r.backlog_growth or 0 for r in runs)
        # Compared with the words the schedule offered, not with the nominal rate, so that
        # a Poisson schedule's count noise is not mistaken for saturation.
        saturated = due > 0 and (
            replied < (1 - SATURATION_SHARE) * due or growth > SATURATION_SHARE * due
        )
        return cls(
            model=OPEN,
            rate_ops_s=rate_ops_s,
            arrivals=arrivals,
            achieved_ops_s=replied / window_s if window_s else 0.0,
            late_sends_share=sum(r.late or 0 for r in runs) / due if due else 0.0,
            max_outstanding=max((r.max_outstanding or 0 for r in runs), default=0),
            saturated=bool(saturated) if runs else None,
            late_tolerance_ns=late_tolerance_ns,
            spin_ns=spin_ns,
            send_lag_ns=send_lag_over(runs),
        )


def send_lag_over(runs: list[RunSummary]) -> dict[str, float] | None:
    """The benchmark's send lag from its runs': the median over runs of each percentile
    (runs have their own lengths, so a typical run's figure, not a pooled one), and the
    largest max. None when no run measured it."""
    measured = [r for r in runs if r.send_lag_p50_ns is not None]
    if not measured:
        return None
    found = {
        name: float(statistics.median(getattr(r, field) for r in measured))
        for name, field in SEND_LAG_FIELDS.items()
        if name != "max"
    }
    found["max"] = float(max(r.send_lag_max_ns or 0.0 for r in measured))
    return found


@dataclass(frozen=True)
class WorkerInfo:
    pid: int
    cpus: list[int]
    clients: int


@dataclass(frozen=True)
class HostInfo:
    """One host's share of a run on many hosts: its clients and what they measured."""

    host: str
    rank: int
    cpus: list[int]  # its client CPUs
    clients: int
    ops: int
    mean_ns: float
    p99_ns: float


@dataclass(frozen=True)
class PlacementEstimate:
    """The mean of the runs at one CPU placement (``near`` or ``far``: how far apart the
    host had put the server's and the clients' CPUs, by the run's cache-line probe), with
    its interval over those runs. On a virtual machine these reproduce across sittings far
    better than the pooled mean, which mixes the placements in whatever share a sitting got
    (bench/calibration/placement.py)."""

    placement: str
    runs: int
    hop_low_ns: float
    hop_high_ns: float
    mean_ns: float
    ci_low_ns: float
    ci_high_ns: float


@dataclass(frozen=True)
class BenchResult:
    """One volley-bench run. ``status`` says whether the numbers can be trusted."""

    status: str
    server: str
    server_args: list[str]
    clients: int
    client_cores: list[int]
    server_cores: list[int]
    n: int
    rounds: int
    elapsed_s: float
    measured_s: float
    throughput_ops_s: float
    confidence: float
    precision: str
    ci_batches: int
    latency_ns: LatencySummary | None
    workers: list[WorkerInfo]
    host: Environment
    started_at: str
    warmup_s: float
    error: str | None = None
    runs: list[RunSummary] = field(default_factory=list)
    # What each run started afresh: "server" (and connections) or only "connections".
    restart: str | None = None
    targets: list[str] = field(default_factory=list)  # e.g. ["mean:1%", "p99:5%"]
    # Runs left out of the evidence because other work disturbed them (--noisy drop).
    dropped_runs: list[RunSummary] = field(default_factory=list)
    load: LoadInfo = field(default_factory=LoadInfo)
    hosts: list[HostInfo] = field(default_factory=list)  # clients on many hosts
    # Where the server listened (--server-address, or --connect's host); None in files
    # written before it was recorded: 127.0.0.1, unless the server was at --connect.
    server_address: str | None = None
    # Earlier sittings of this configuration on this machine (volley.measure.history) that the
    # intervals drew on; None: none were looked for (--history off, or an older file).
    earlier_sittings: int | None = None
    # Per statistic, how much those sittings differ beyond their runs (the standard
    # deviation, ns): the intervals include it.
    between_sittings_ns: dict[str, float] = field(default_factory=dict)
    # Where the host moved the CPUs between runs: the near and the far runs' means.
    placements: list[PlacementEstimate] = field(default_factory=list)
    # This sitting against the earlier ones' prediction interval (volley.measure.history.Check).
    history: dict[str, Any] | None = None
    # The sequential plan and looks of the ``volley compare --run`` that wrote it.
    sequential: Looks | None = None
    # How the runs were bounded (PRECISION_MODE, RUNS_MODE, DURATION_MODE), and how many
    # runs the targets needed at the pilot runs' spread (None: no pilot completed).
    mode: str = PRECISION_MODE
    planned_runs: int | None = None
    # A rehearsal (volley-bench --rehearse): the plan for the machine of ``topology`` played
    # here, its CPUs folded onto this machine's; its latencies say nothing of either.
    rehearsal: bool = False
    topology: str | None = None
    planned_server_cores: list[int] = field(default_factory=list)
    planned_client_cores: list[int] = field(default_factory=list)
    version: int = FORMAT_VERSION
    volley_version: str = __version__

    @property
    def significant(self) -> bool:
        return self.status == SIGNIFICANT

    @property
    def run_pattern(self) -> str | None:
        """What a person should hear when the run means drift, wander or fall in two
        groups (``stats.run_pattern``); None when they look like independent draws."""
        return run_pattern([r.mean_ns for r in self.runs])

    def phase_medians(self) -> dict[str, float]:
        """The median over the runs that recorded their phases of each phase's seconds,
        and ``overhead``: the median of each run's wall time beyond its warm-up and
        measured stretch (empty when no run recorded them: older files)."""
        timed = [r.phases_s for r in self.runs if r.phases_s is not None]
        if not timed:
            return {}
        names = list(dict.fromkeys(name for phases in timed for name in phases))
        found = {name: statistics.median(p.get(name, 0.0) for p in timed) for name in names}
        found["overhead"] = statistics.median(
            p.get("total", 0.0) - p.get("warmup_measure", 0.0) for p in timed
        )
        return found

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["significant"] = self.significant
        data["run_pattern"] = self.run_pattern
        data["latency_ns"] = self.latency_ns.to_json() if self.latency_ns else None
        data["runs"] = [run.to_json() for run in self.runs]
        data["dropped_runs"] = [run.to_json() for run in self.dropped_runs]
        data["load"] = self.load.to_json()
        data["between_sittings_ns"] = json_keys(self.between_sittings_ns)
        data["history"] = history_json(self.history, json_keys)
        if self.sequential is None:
            del data["sequential"]
        else:
            data["sequential"] = self.sequential.to_json()
        return finite(data)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        version = data.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"result format version {version!r} is not one this volley reads "
                f"(up to {FORMAT_VERSION}); upgrade volley"
            )
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("elapsed_s", "measured_s", "throughput_ops_s", "confidence", "warmup_s"):
            if name in data:
                data[name] = unknown_as_nan(data[name])
        latency = data.get("latency_ns")
        data["latency_ns"] = LatencySummary.from_json(latency) if latency else None
        data["workers"] = [WorkerInfo(**w) for w in data["workers"]]
        data["host"] = Environment.from_json(data["host"])
        data["runs"] = [RunSummary.from_json(run) for run in data.get("runs", [])]
        data["dropped_runs"] = [RunSummary.from_json(r) for r in data.get("dropped_runs", [])]
        data["load"] = LoadInfo.from_json(data.get("load"))
        data["between_sittings_ns"] = statistic_keys(data.get("between_sittings_ns") or {})
        data["history"] = history_json(data.get("history"), statistic_keys)
        data["placements"] = [
            PlacementEstimate(**{k: unknown_as_nan(v) for k, v in p.items()})
            for p in data.get("placements", [])
        ]
        looks = data.get("sequential")
        data["sequential"] = Looks.from_json(looks) if looks else None
        data["hosts"] = [
            HostInfo(**{k: unknown_as_nan(v) for k, v in h.items()}) for h in data.get("hosts", [])
        ]
        return cls(**data)


# --- reading result files ------------------------------------------------------------------

REMEDY = "give a file volley-bench --json wrote (measure again if it was cut or edited)"


def read_result(path: Path) -> BenchResult:
    """A volley-bench --json file; ResultError if it is not one this volley can read."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ResultError(f"cannot read {path}: {e.strerror}") from None
    return parse_result(loads_strict(raw, str(path), REMEDY), str(path))


def loads_strict(raw: bytes, where: str, remedy: str) -> Any:
    """The value of ``raw``, which must be UTF-8 and strict JSON (no NaN or Infinity, which
    Volley never writes); ResultError naming ``where`` and the ``remedy`` otherwise."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise ResultError(f"{where}: not UTF-8 text (byte {e.start}); {remedy}") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise ResultError(f"{where}: not JSON ({e.msg}: character {e.pos}); {remedy}") from None
    except ValueError as e:  # a NaN or Infinity
        raise ResultError(f"{where}: {e}; {remedy}") from None
    except RecursionError:
        raise ResultError(f"{where}: JSON nested too deeply; {remedy}") from None


def refuse_rehearsal(result: BenchResult, where: str, doing: str) -> None:
    """ResultError (one line, naming ``where``) if ``result`` is a rehearsal: its latencies
    were measured with another machine's plan folded onto this one, and mean nothing."""
    if result.rehearsal:
        raise ResultError(
            f"{where} is a rehearsal (volley-bench --rehearse), whose latencies are not "
            f"meaningful: {doing} results measured without --rehearse"
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (Volley writes a number it does not know as null)")


def parse_result(data: Any, where: str) -> BenchResult:
    """The result in ``data`` (parsed JSON), checked down to each number's type;
    ResultError, naming ``where`` and the first value at fault, if it is not one."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ResultError(f"{where}: a JSON {kind}, not a result (an object); {REMEDY}")
    version = data.get("version")
    if version is None:
        raise ResultError(f"{where}: no format version: not a volley-bench result; {REMEDY}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ResultError(f"{where}: result format version {version!r} is not one volley wrote")
    if version > FORMAT_VERSION:
        raise ResultError(
            f"{where}: result format version {version} is not one this volley reads "
            f"(up to {FORMAT_VERSION}); upgrade volley"
        )
    try:
        result = BenchResult.from_json(data)
    except KeyError as e:
        missing = e.args[0]
        raise ResultError(f"{where}: no {missing!r}: not a volley-bench result; {REMEDY}") from None
    except (TypeError, AttributeError, ValueError, ArithmeticError) as e:
        detail = " ".join(str(e).split())[:120]
        raise ResultError(f"{where}: a value of the wrong kind ({detail}); {REMEDY}") from None
    problem = misfit(result) or _status_problem(result)
    if problem:
        raise ResultError(f"{where}: {problem}; {REMEDY}")
    return result


def _status_problem(result: BenchResult) -> str | None:
    if result.status not in EXIT_CODES:
        return f"status is {_shown(result.status)}, not one of {', '.join(EXIT_CODES)}"
    try:
        if result.started_at:
            datetime.fromisoformat(result.started_at)
    except ValueError:
        return f"started_at is {_shown(result.started_at)}, not a date and time (ISO 8601)"
    return None


def misfit(record: Any, prefix: str = "") -> str | None:
    """The first field of the dataclass ``record`` (however deep) whose value is not of its
    declared type, said as "runs[2].mean_ns is "fast", not a number"; None when all fit.
    NaN is a number (null in the file: not known); infinity is not (Volley never writes
    it)."""
    hints = _hints(type(record))
    for item in dataclasses.fields(record):
        found = _misfit(getattr(record, item.name), hints[item.name], prefix + item.name)
        if found:
            return found
    return None


def _hints(kind: type) -> dict[str, Any]:
    found = _HINTS.get(kind)
    if found is None:
        found = _HINTS[kind] = typing.get_type_hints(kind)
    return found


_HINTS: dict[type, dict[str, Any]] = {}


def _misfit(value: Any, hint: Any, name: str) -> str | None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_misfit(value, kind, name) for kind in args if kind is not type(None)]
        return None if None in problems else problems[0]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return misfit(value, name + ".") if isinstance(value, hint) else _wrong(value, name, hint)
    if origin in (list, tuple):
        return _misfit_items(value, hint, name)
    if origin is dict:
        if not isinstance(value, dict):
            return _wrong(value, name, hint)
        for key, item in value.items():
            problem = _misfit(item, args[1], f"{name}.{key}")
            if problem:
                return problem
        return None
    return _misfit_scalar(value, hint, name)


def _misfit_items(value: Any, hint: Any, name: str) -> str | None:
    if not isinstance(value, list | tuple):
        return _wrong(value, name, hint)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            return f"{name} has {len(value)} items, not {len(args)}"
        kinds = list(args)
    else:
        kinds = [args[0] if args else Any] * len(value)
    for number, (item, kind) in enumerate(zip(value, kinds, strict=True)):
        found = _misfit(item, kind, f"{name}[{number}]")
        if found:
            return found
    return None


def _misfit_scalar(value: Any, hint: Any, name: str) -> str | None:
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _wrong(value, name, hint)
        if isinstance(value, float) and math.isinf(value):
            return f"{name} is {'-' if value < 0 else ''}Infinity, not a finite number"
        return None
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        return _wrong(value, name, hint)
    if hint in (str, bool) and not isinstance(value, hint):
        return _wrong(value, name, hint)
    return None  # Any, and what the file format leaves open


_KINDS = {float: "a number", int: "a whole number", str: "a string", bool: "true or false"}


def _wrong(value: Any, name: str, hint: Any) -> str:
    origin = typing.get_origin(hint) or hint
    kind = _KINDS.get(origin) or {list: "a list", tuple: "a list"}.get(origin, "an object")
    return f"{name} is {_shown(value)}, not {kind}"


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def history_json(
    check: dict[str, Any] | None, keys: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any] | None:
    """A result's ``history`` with its per-statistic dicts keyed by ``keys``."""
    if not check:
        return check
    return check | {
        name: keys(check[name])
        for name in ("between_sittings_ns", "prediction_interval_ns")
        if isinstance(check.get(name), dict)
    }


HLOG_FORMAT_VERSION = "1.3"


def interval_log(results: Iterable[tuple[str, BenchResult]]) -> str:
    """HdrHistogram's interval log of ``(name, result)`` pairs: one line per result that
    has a histogram, tagged with its name (``Tag=``), so HdrHistogram's log tools can read
    each point apart or merge them. A line starts when its result started and lasts the
    result's measured seconds (the time its ops took: count / length is the throughput);
    times are seconds since the earliest start (``BaseTime``), the maximum in ms."""
    lines = []
    for name, result in results:
        latency = result.latency_ns
        if latency is None or latency.histogram is None:
            continue
        started = datetime.fromisoformat(result.started_at).timestamp()
        tag = re.sub(r"[\s,]", "_", name)  # a tag ends at the first comma
        length_s = result.measured_s if math.isfinite(result.measured_s) else 0.0
        lines.append((started, tag, length_s, latency.max / 1e6, latency.histogram))
    lines.sort(key=lambda line: line[0])
    text = [
        f"#[Histogram log format version {HLOG_FORMAT_VERSION}]",
        f"#[Written by volley {__version__}: one interval per benchmark result, latencies in ns]",
    ]
    base = lines[0][0] if lines else 0.0
    if lines:
        text += [
            f"#[StartTime: {base:.3f} (seconds since epoch), "
            f"{datetime.fromtimestamp(base).astimezone().isoformat()}]",
            f"#[BaseTime: {base:.3f} (seconds since epoch)]",
        ]
    text.append('"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"')
    for started, tag, length_s, max_ms, histogram in lines:
        text.append(f"Tag={tag},{started - base:.3f},{length_s:.3f},{max_ms:.3f},{histogram}")
    return "\n".join(text) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either nothing or all of it."""
    directory = path.parent
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private; a result file gets the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def finite(data: Any) -> Any:
    """``data`` with every NaN or infinite float, however deep, replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite(v) for v in data]
    return data


def unknown_as_nan(value: Any) -> Any:
    return math.nan if value is None else value


def strict_dumps(data: Any, **options: Any) -> str:
    """Strict JSON text of ``data``: a number that is not known becomes null."""
    return json.dumps(finite(data), allow_nan=False, **options)


def dumps(result: BenchResult) -> str:
    return strict_dumps(result.to_json(), indent=2) + "\n"


def check_writable(path: Path) -> None:
    """Fail before a long run, not after it, if the result could not be written."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OSError(f"cannot write {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise OSError(f"cannot write {path}: directory {directory} is not writable")
    if path.is_dir():
        raise OSError(f"cannot write {path}: it is a directory")

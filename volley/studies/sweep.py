"""Sweeps: an experiment (``volley.records.experiment``) names a grid of points, and each point is
measured by volley-bench; this module plans the points and plays them.

A side the experiment gives as a count of CPUs is placed on the machine's topology as
volley-bench places its default (``cpus.place_point``): server and clients on physical
cores of their own, on one socket and NUMA node, SMT siblings left idle; a side given as a
CPU list runs there, as given. A point that does not fit the CPUs this process may use is
skipped. volley-bench runs as its own process, so a crashing point cannot take the sweep
down with it.

Each finished point is appended to ``results.jsonl`` (``volley.records.store``) and fsynced as soon
as it is done. A failed point is recorded too, with its error; an interrupted point is not
recorded at all (it is not done), so ``--resume`` plays it again.

Order (the experiment's ``order``). Sequential: one volley-bench per point, its whole
benchmark, point after point. Interleaved: passes, each playing one run of every point not
yet done, in a fresh random order (seeded; the seed is in every record) -- see
``interleaved``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Protocol

from volley.engine.server import spawn, stop_signals
from volley.numbers.units import format_duration, format_ns
from volley.records import store
from volley.records.experiment import Experiment, Point, ServerSpec
from volley.records.results import (
    EXIT_CODES,
    FAILED,
    INTERRUPTED,
    NOT_SIGNIFICANT,
    SIGNIFICANT,
    BenchResult,
)
from volley.records.store import RESULTS_NAME, RUNS_NAME, SweepInfo, SweepRecord
from volley.system import cpus
from volley.system.cpus import Placement
from volley.system.topology import Topology, parse_cpu_list

# volley-bench's exit statuses for a complete run (significant or not)
FINISHED = (EXIT_CODES[SIGNIFICANT], EXIT_CODES[NOT_SIGNIFICANT])
# A point still running this long after its own limits is hung; it is stopped and failed.
HANG_SLACK_S = 60.0
STOP_GRACE_S = 30.0
ERROR_TAIL_LINES = 6


class SweepError(RuntimeError):
    """The sweep cannot go on (its results file is unusable)."""


# --- planning ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a sweep will run, and what it will not and why."""

    todo: list[Point]
    done: list[Point]  # already in the results file (--resume)
    too_big: list[Point]  # do not fit the CPUs this process may use
    missing: list[ServerSpec]  # not built: no executable at the path
    usable: list[int]
    placements: dict[Point, Placement] = field(default_factory=dict)  # of every point that fits
    topology: Topology | None = None  # what counts were placed on; None: every CPU a core
    topology_file: str | None = None  # --topology FILE, passed on to volley-bench

    @property
    def total(self) -> int:
        return len(self.todo) + len(self.done)


def placement_of(point: Point, usable: list[int], topology: Topology | None) -> Placement | None:
    """Where the point runs (None: it does not fit): its CPU lists, its counts placed."""

    def choice(side: str) -> list[int] | int:
        chosen = point.side(side)
        return parse_cpu_list(chosen) if isinstance(chosen, str) else chosen

    return cpus.place_point(choice("server"), choice("client"), usable, topology)


def server_missing(spec: ServerSpec) -> str | None:
    """Why the server cannot be run, or None if it can."""
    if not os.path.isfile(spec.path):
        return f"{spec.path} does not exist"
    if not os.access(spec.path, os.X_OK):
        return f"{spec.path} is not executable"
    return None


def plan(
    experiment: Experiment,
    usable: list[int],
    done: set[Point],
    topology: Topology | None = None,
    topology_file: str | None = None,
) -> Plan:
    missing = [spec for spec in experiment.servers if server_missing(spec)]
    absent = {spec.name for spec in missing}
    todo, finished, too_big = [], [], []
    placements: dict[Point, Placement] = {}
    for point in experiment.points():
        placement = placement_of(point, usable, topology)
        if placement is None:
            too_big.append(point)
            continue
        placements[point] = placement
        if point in done:
            finished.append(point)
        elif point.server not in absent:
            todo.append(point)
    return Plan(todo, finished, too_big, missing, usable, placements, topology, topology_file)


def bench_command(
    experiment: Experiment, the_plan: Plan, point: Point, **overrides: str
) -> list[str]:
    """The volley-bench command line for one point, with ``overrides`` of the experiment's
    options (``max_time="1s"``). Its JSON comes on stdout, not in a file: a sweep killed
    mid-point leaves no temporary file behind."""
    placement = the_plan.placements[point]
    server_cpus, client_cpus = placement.server_cpus, placement.client_cpus
    spec = experiment.server(point.server)
    command = [
        sys.executable,
        "-m",
        "volley",
        "bench",
        "--server-cores",
        cpus.format_cpu_list(server_cpus),
        "--cores",
        cpus.format_cpu_list(client_cpus),
        "--clients",
        str(point.clients),
    ]
    options = experiment.options | {k.replace("_", "-"): v for k, v in overrides.items()}
    for key, value in options.items():
        command += [f"--{key}", value]
    if point.rate_ops_s is not None:
        command += ["--rate", f"{point.rate_ops_s:.12g}"]
    if the_plan.topology_file is not None:  # its warnings then judge the CPUs as placed
        command += ["--topology", the_plan.topology_file]
    # Exit 3 for a point that missed its targets, as its record has always said.
    command += ["--require-precision", "--json", "-", "--quiet", spec.path]
    if spec.args:
        command += ["--", *spec.args]
    return command


# --- running points ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one volley-bench run left: its exit status and the JSON it wrote, if any."""

    exit_status: int
    result: BenchResult | None = None
    error: str | None = None  # why it failed, when it wrote no result
    warnings: tuple[str, ...] = ()  # what volley-bench warned of (its --quiet keeps them)


class Runner(Protocol):
    """Runs one point's command. ``interrupt`` is called from the SIGINT handler."""

    def run(self, point: Point, command: list[str], timeout_s: float) -> Outcome: ...

    def interrupt(self) -> None: ...


class ProcessRunner:
    """Runs volley-bench as a child process in its own session and process group
    (``server.spawn``, as volley-bench starts a server).

    The child's own group keeps a terminal's Ctrl-C from reaching it twice (once from the
    terminal, once forwarded); the sweep forwards exactly one SIGINT, on which volley-bench
    finishes its round, writes a partial result and exits 130.

    If the sweep dies without forwarding anything (SIGKILL), the child goes with it the way
    volley-bench's own server does (``volley.engine.server``): a parent-death signal, and a
    watchdog that kills the child's process group and descendants, its server included.
    """

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.interrupted = False

    def run(self, point: Point, command: list[str], timeout_s: float) -> Outcome:
        # Spawned from the main thread, where the sweep runs (see pinned_and_tied).
        child, watchdog = spawn(command, None, subprocess.PIPE, subprocess.PIPE)
        self.child = child
        if self.interrupted:  # the signal came while the child was being started
            child.send_signal(signal.SIGINT)
        hung = False
        try:
            try:
                output, errors = child.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                hung = True
                child.send_signal(signal.SIGINT)
                try:
                    output, errors = child.communicate(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    child.kill()
                    output, errors = child.communicate()
        finally:
            self.child = None
            if child.poll() is not None:
                watchdog.dismiss()
        stderr = errors.decode(errors="replace")
        result = _parse_result(output.decode(errors="replace"))
        if hung:
            return Outcome(
                1, None, f"volley-bench did not finish within {timeout_s:.0f} s and was stopped"
            )
        status = child.returncode
        if status < 0:  # killed by a signal
            status = 128 - status
        warned = tuple(line for line in stderr.splitlines() if line.startswith(WARNING))
        return Outcome(status, result, None if result else failure_message(stderr, status), warned)

    def interrupt(self) -> None:
        self.interrupted = True
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)


WARNING = "warning: "  # how volley-bench starts a warning line


def failure_message(stderr: str, status: int) -> str:
    """Why volley-bench failed, in one line: its own error line, or the end of a crash."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if ": error: " in line:
            return line.split(": error: ", 1)[1]
    if lines and lines[0].startswith("Traceback"):
        return f"volley-bench crashed: {lines[-1]}"
    return " | ".join(lines[-ERROR_TAIL_LINES:]) or f"volley-bench exited with status {status}"


def _parse_result(text: str) -> BenchResult | None:
    """volley-bench's JSON on stdout, checked at the boundary; None if it wrote none."""
    if not text.strip():
        return None
    try:
        return BenchResult.from_json(json.loads(text))
    except (json.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None


def record_for(
    experiment: Experiment,
    point: Point,
    outcome: Outcome,
    started_at: str,
    sweep: SweepInfo | None = None,
) -> SweepRecord:
    """The results line for a finished point: volley-bench's result and where it came from."""
    return SweepRecord(
        point,
        outcome.exit_status,
        sweep or SweepInfo.of(experiment),
        outcome.result,
        None if outcome.result else outcome.error,
        started_at,
    )


# --- progress ------------------------------------------------------------------------------


class SweepProgress:
    """What a sweep tells as it goes: each point starting and finished, its warnings, notes
    between points. Silent here; ``volley.present.progress`` draws it for a person."""

    def begin(self, total: int, done: int, limit_s: float) -> None:
        pass

    def starting(self, point: Point) -> None:
        pass

    def finished(self, point: Point, record: SweepRecord | None, seconds: float) -> None:
        pass

    def warn(self, outcome: Outcome) -> None:
        pass

    def note(self, text: str) -> None:
        pass


def describe(record: SweepRecord) -> str:
    """One result in a few words: mean ± half-width and the verdict."""
    result = record.result
    if record.status == FAILED or result is None or result.latency_ns is None:
        return f"FAILED: {record.failure or 'no result'}"
    latency = result.latency_ns
    half = (latency.ci_high - latency.ci_low) / 2
    if not math.isfinite(half):
        half = math.inf
    status = record.status
    verdict = "significant" if status == SIGNIFICANT else status.replace("-", " ")
    return f"{format_ns(latency.mean)} ± {format_ns(half)}, {verdict}"


# --- the sweep -----------------------------------------------------------------------------


@dataclass
class Summary:
    recorded: list[SweepRecord] = field(default_factory=list)  # this session's lines
    interrupted: bool = False


def open_results(
    out_dir: Path, experiment: Experiment, resume: bool
) -> tuple[Path, set[Point], list[str]]:
    """Create DIR, check the results file, and return the points it already has."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot create {out_dir}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise SweepError(f"cannot write results in {out_dir}: not writable")
    path = out_dir / RESULTS_NAME
    notes: list[str] = []
    if resume:
        notes += remove_stale(out_dir)
    started = [p for p in (path, out_dir / RUNS_NAME) if p.exists() and p.stat().st_size]
    if not started:
        return path, set(), notes
    if not resume:
        raise SweepError(
            f"{started[0]} already has results; add --resume to continue that sweep, "
            "or choose another -o DIR"
        )
    records: list[SweepRecord] = []
    for file in started:
        notes += [note for note in [store.repair_tail(file)] if note]
        try:
            found, problems = store.load(file)
        except store.StoreError as e:
            raise SweepError(str(e)) from None
        notes += problems
        records += found if file == path else []
        for record in found:
            options = record.sweep.options
            if options != experiment.options:
                raise SweepError(
                    f"{file} was recorded with other volley-bench options ({_spell(options)}) "
                    f"than {experiment.path} now has ({_spell(experiment.options)}); resuming "
                    "would mix them: choose another -o DIR"
                )
    return path, {record.point for record in records}, notes


# Earlier sweeps had each point write its JSON to a temporary file here (and volley-bench's
# atomic write put its own beside it); a sweep killed mid-point left them behind.
STALE_PATTERNS = (".point-*.json", "..point-*.json.*.tmp")


def remove_stale(out_dir: Path) -> list[str]:
    """Remove the temporary files a killed sweep left in DIR; one note if there were any."""
    removed = 0
    for pattern in STALE_PATTERNS:
        for path in out_dir.glob(pattern):
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return [f"{out_dir}: removed {removed} temporary files of an earlier sweep"] if removed else []


def _spell(options: dict[str, str]) -> str:
    return " ".join(f"--{k} {v}" for k, v in options.items()) or "defaults"


class Stopper:
    """SIGINT, SIGTERM and SIGHUP while a sweep runs: forwarded to the running point (which is then
    not recorded); the sweep stops after it and reports itself interrupted."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.interrupted = False

    def __enter__(self) -> Stopper:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.interrupted = True
            self.runner.interrupt()

        self.signals = stop_signals(stop)
        self.signals.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.signals.__exit__(None, None, None)

    def stopped_by(self, outcome: Outcome) -> bool:
        """After a signal only a finished result counts: a failure may be the signal's doing."""
        if outcome.exit_status == EXIT_CODES[INTERRUPTED] or (
            self.interrupted and outcome.exit_status not in FINISHED
        ):
            self.interrupted = True
        return self.interrupted and outcome.exit_status not in FINISHED


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_sequential(
    experiment: Experiment,
    results_path: Path,
    the_plan: Plan,
    runner: Runner,
    progress: SweepProgress,
) -> Summary:
    """Play the plan's points one after the other, each to its end, appending each finished
    one (``passes.run_in_passes`` plays them in passes instead)."""
    summary = Summary()
    limit_s = experiment.point_limit_s()
    timeout_s = limit_s + experiment.timeouts_s() + HANG_SLACK_S
    progress.begin(the_plan.total, len(the_plan.done), limit_s)
    with Stopper(runner) as stopper:
        for point in the_plan.todo:
            if stopper.interrupted:
                break
            progress.starting(point)
            started_at, began = now(), time.monotonic()
            outcome = runner.run(point, bench_command(experiment, the_plan, point), timeout_s)
            progress.warn(outcome)
            if stopper.stopped_by(outcome):
                progress.finished(point, None, time.monotonic() - began)
                break
            record = record_for(experiment, point, outcome, started_at)
            store.append(results_path, record)
            summary.recorded.append(record)
            progress.finished(point, record, time.monotonic() - began)
    summary.interrupted = stopper.interrupted
    return summary


def estimate_s(experiment: Experiment, points: int) -> float:
    return points * experiment.point_limit_s()


def _points(count: int) -> str:
    return f"{count} point{'' if count == 1 else 's'}"


def _wants(point: Point, side: str) -> str:
    chosen = point.side(side)
    if isinstance(chosen, str):
        return f"{side} CPU {chosen}"
    return f"{chosen} {side} core{'' if chosen == 1 else 's'}"


def skip_lines(the_plan: Plan, experiment: Experiment) -> list[str]:
    """Why points are skipped, grouped: one line for the points that do not fit this
    machine (by their CPUs), one for the servers that are not built."""
    lines = []
    usable = the_plan.usable
    if the_plan.too_big:
        shapes = Counter(f"{_wants(p, 'server')} + {_wants(p, 'client')}" for p in the_plan.too_big)
        needs = ", ".join(f"{shape} ({_points(n)})" for shape, n in shapes.items())
        topology = the_plan.topology or Topology.flat(usable)
        lines.append(
            f"skip {_points(len(the_plan.too_big))} that do not fit the CPUs this process may "
            f"use ({cpus.format_cpu_list(usable)}: {len(topology.cores(usable))} physical "
            f"cores, a count of CPUs takes one CPU a core): {needs}"
        )
    if the_plan.missing:
        names = {spec.name for spec in the_plan.missing}
        count = sum(
            1 for p in experiment.points() if p.server in names and p in the_plan.placements
        )
        lines.append(
            "not built: "
            + ", ".join(f"{spec.name} ({server_missing(spec)})" for spec in the_plan.missing)
            + f"; {'its' if len(names) == 1 else 'their'} {_points(count)} are skipped "
            "(build with make servers)"
        )
    return lines


def dry_run_lines(the_plan: Plan, experiment: Experiment) -> list[str]:
    """What a sweep would do, in a few lines: the points to run grouped by where they run,
    the longest it may take, and what it skips and why."""
    todo = the_plan.todo
    limit_s = experiment.point_limit_s()
    lines = [
        f"sweep {experiment.name} (dry run): {_points(len(todo))} to run of "
        f"{len(experiment.points())} in the grid, up to about "
        f"{format_duration(estimate_s(experiment, len(todo)))} "
        f"(at most {format_duration(limit_s)} a point: warm-up, max-time, the server's start)"
    ]
    shapes: dict[tuple[str, str], list[Point]] = {}
    for point in todo:
        placement = the_plan.placements[point]
        where = (
            cpus.format_cpu_list(placement.server_cpus),
            cpus.format_cpu_list(placement.client_cpus),
        )
        shapes.setdefault(where, []).append(point)
    for (server_cpus, client_cpus), points in shapes.items():
        servers = sorted({p.server for p in points})
        clients = sorted({p.clients for p in points})
        rates = sorted({p.rate_ops_s for p in points if p.rate_ops_s is not None})
        lines.append(
            f"  server on CPU {server_cpus}, clients on CPU {client_cpus}: "
            f"{_points(len(points))}; "
            f"{len(servers)} server{'' if len(servers) == 1 else 's'} ({', '.join(servers)}), "
            f"clients {', '.join(map(str, clients))}"
            + (f", rates {', '.join(f'{r:g}' for r in rates)} ops/s" if rates else "")
        )
    return lines + placement_warnings(the_plan) + skip_lines(the_plan, experiment)


def placement_warnings(the_plan: Plan) -> list[str]:
    """What the placements of the points to run cost the measurement (CPU lists sharing
    cores, sides on two nodes), each warning once: volley-bench warns of them as it runs."""
    counted = Counter(
        warning for point in the_plan.todo for warning in the_plan.placements[point].warnings
    )
    return [f"warning: {warning} ({_points(n)})" for warning, n in counted.items()]


def of_plan(records: list[SweepRecord], the_plan: Plan) -> list[SweepRecord]:
    """The records of the plan's points (a results file may hold others)."""
    points = {*the_plan.todo, *the_plan.done}
    return [record for record in records if record.point in points]

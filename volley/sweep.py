"""Sweeps: an experiment file names a grid of points, and each point is one volley-bench run.

An experiment file (TOML) names the servers and the counts to vary; every combination of
server x clients x server cores x client cores (x rate, if ``rates`` is given) is a point::

    name = "Vary cores"
    servers-dir = "../target/servers"       # relative paths are relative to this file
    servers = ["c-threaded", "rust", { name = "go", args = ["-procs", "{server_cores}"] }]
    clients = [40, 80, 200]                 # a count, a list, or a range "1..40" / "2..40 step 2"
    server-cores = ["1..40"]
    client-cores = 40
    rates = ["10k..200k step 10k"]          # optional: open loop at each offered rate (ops/s)

    [bench]                                 # volley-bench options for every point
    precision = "1%"
    max-time = "180s"

A point's server runs on the first S usable CPUs and its clients on the next C, so points
never share a CPU between server and clients; a point that needs more CPUs than this process
may use is skipped. Each point runs as its own ``volley bench`` process, so a crashing point
cannot take the sweep down with it.

Results file (``results.jsonl``): one line per finished point, appended and fsynced as soon
as the point ends. A line is the volley-bench JSON (see ``volley.results``) plus
  ``point``        {server, clients, server_cores, client_cores[, rate_ops_s]}: the name
                   and the counts, and the offered rate of an open-loop point
                   (the volley-bench keys ``server_cores``/``client_cores`` are CPU lists);
  ``exit_status``  volley-bench's exit status (0 significant, 3 not significant, 1 failed);
  ``sweep``        {experiment, file, options}: where the point came from.
A failed point is recorded too, with its ``error``; an interrupted point is not recorded at
all (it is not done), so ``--resume`` runs it again.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TextIO

from volley import cpus
from volley.results import FAILED, FORMAT_VERSION, SIGNIFICANT, strict_dumps
from volley.server import Watchdog, pinned_and_tied
from volley.units import (
    BENCH_DEFAULTS,
    BadInput,
    format_duration,
    format_ns,
    parse_confidence,
    parse_duration_s,
    parse_rate,
    parse_target,
)

RESULTS_NAME = "results.jsonl"
DEFAULT_SERVERS_DIR = "target/servers"
EXIT_INTERRUPTED = 130
FINISHED = (0, 3)  # volley-bench's exit statuses for a complete run (significant or not)
# volley-bench's defaults, for the time estimate when the experiment does not set them.
BENCH_DEFAULTS_S = {
    key: parse_duration_s(str(BENCH_DEFAULTS[key]), key)
    for key in ("max-time", "warmup", "startup-timeout", "op-timeout")
}
POINT_OVERHEAD_S = 2.5  # starting and stopping the server and workers, the last round
# A point still running this long after its own limits is hung; it is stopped and failed.
HANG_SLACK_S = 60.0
STOP_GRACE_S = 30.0
ERROR_TAIL_LINES = 6

GRID_KEYS = ("clients", "server-cores", "client-cores")
TOP_KEYS = ("name", "description", "servers", "servers-dir", *GRID_KEYS, "rates", "bench")
DURATION_OPTIONS = ("max-time", "warmup", "run-time", "round-time", "op-timeout", "startup-timeout")
BENCH_KEYS = ("precision", "confidence", *DURATION_OPTIONS, "args")
SERVER_KEYS = ("name", "path", "args")
_RANGE = re.compile(r"\s*(\d+)\s*\.\.\s*(\d+)\s*(?:step\s+(\d+)\s*)?")
_RATE_RANGE = re.compile(r"\s*(\S+?)\s*\.\.\s*(\S+?)\s+step\s+(\S+)\s*")
PointKey = tuple[Any, ...]


class ExperimentError(ValueError):
    """An experiment file that cannot be run; the message names the file and line."""


class SweepError(RuntimeError):
    """The sweep cannot go on (its results file is unusable)."""


@dataclass(frozen=True)
class ServerSpec:
    name: str  # the label in results and plots
    path: str  # as resolved against the experiment file
    args: tuple[str, ...] = ()  # {server_cores} and {client_cores} become the counts


@dataclass(frozen=True, order=True)
class Point:
    """One run of the grid. Core counts are counts; the CPUs are chosen when it runs."""

    server: str
    clients: int
    server_cores: int
    client_cores: int
    rate_ops_s: float | None = None  # open loop at this offered rate; None: closed loop

    def key(self) -> PointKey:
        # A closed-loop point keeps the key it had before rates existed (for --resume).
        rate = () if self.rate_ops_s is None else (self.rate_ops_s,)
        return (self.server, self.clients, self.server_cores, self.client_cores, *rate)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "server": self.server,
            "clients": self.clients,
            "server_cores": self.server_cores,
            "client_cores": self.client_cores,
        }
        if self.rate_ops_s is not None:
            data["rate_ops_s"] = self.rate_ops_s
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Point:
        rate = data.get("rate_ops_s")
        return cls(
            str(data["server"]),
            int(data["clients"]),
            int(data["server_cores"]),
            int(data["client_cores"]),
            None if rate is None else float(rate),
        )

    def __str__(self) -> str:
        def cores(n: int) -> str:
            return f"{n} core{'s' if n != 1 else ''}"

        rate = "" if self.rate_ops_s is None else f" at {self.rate_ops_s:,.0f} ops/s"
        return (
            f"{self.server}, {self.clients} client{'s' if self.clients != 1 else ''} on "
            f"{cores(self.client_cores)}, server on {cores(self.server_cores)}{rate}"
        )


@dataclass(frozen=True)
class Experiment:
    path: Path
    name: str
    servers: tuple[ServerSpec, ...]
    clients: tuple[int, ...]
    server_cores: tuple[int, ...]
    client_cores: tuple[int, ...]
    options: dict[str, str] = field(default_factory=dict)  # volley-bench option -> value
    rates: tuple[float | None, ...] = (None,)  # offered rates (ops/s); None: closed loop

    def points(self) -> list[Point]:
        """The grid in run order. Servers vary fastest, so that whatever drifts during a long
        sweep (temperature, background load) touches every server alike."""
        return [
            Point(spec.name, clients, s, c, rate)
            for s in self.server_cores
            for c in self.client_cores
            for clients in self.clients
            for rate in self.rates
            for spec in self.servers
        ]

    def server(self, name: str) -> ServerSpec:
        return next(spec for spec in self.servers if spec.name == name)

    def point_limit_s(self) -> float:
        """The longest one point can take if every server behaves."""
        seconds = {
            **BENCH_DEFAULTS_S,
            **{k: _duration_s(v) for k, v in self.options.items() if k in BENCH_DEFAULTS_S},
        }
        return seconds["warmup"] + seconds["max-time"] + POINT_OVERHEAD_S


# --- experiment files ----------------------------------------------------------------------


def load(path: Path) -> Experiment:
    try:
        text = path.read_text()
    except OSError as e:
        raise ExperimentError(f"cannot read experiment file {path}: {e.strerror}") from None
    return parse(text, path)


def parse(text: str, path: Path) -> Experiment:
    """Parse and check an experiment file; ExperimentError names the line at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = re.search(r"at line (\d+)", str(e))
        place = f"{path}:{line.group(1)}" if line else str(path)
        raise ExperimentError(f"{place}: not valid TOML: {e}") from None
    where = _Locator(text, path)
    data = _normalized(data, where, "", TOP_KEYS)
    for key in ("servers", *GRID_KEYS):
        if key not in data:
            raise ExperimentError(
                f"{path}: missing {key} = ... (the experiment must name "
                f"{'the servers' if key == 'servers' else f'its {key}'})"
            )
    name = data.get("name", path.stem)
    if not isinstance(name, str):
        raise where.error("", "name", "must be a string")
    bench = data.get("bench", {})
    if not isinstance(bench, dict):
        raise where.error("", "bench", "must be a table: [bench]")
    bench = _normalized(bench, where, "bench", BENCH_KEYS)
    options = {
        key: _bench_option(key, value, where) for key, value in bench.items() if key != "args"
    }
    default_args = _strings(bench.get("args", []), where, "bench", "args")
    servers_dir = data.get("servers-dir", None)
    if servers_dir is not None and not isinstance(servers_dir, str):
        raise where.error("", "servers-dir", "must be a string (a directory)")
    base = path.parent
    directory = base / servers_dir if servers_dir is not None else Path(DEFAULT_SERVERS_DIR)
    servers = _servers(data["servers"], where, directory, base, default_args)
    return Experiment(
        path=path,
        name=name,
        servers=servers,
        clients=_counts(data["clients"], where, "clients"),
        server_cores=_counts(data["server-cores"], where, "server-cores"),
        client_cores=_counts(data["client-cores"], where, "client-cores"),
        options=options,
        rates=_rates(data["rates"], where) if "rates" in data else (None,),
    )


class _Locator:
    """Finds the line of a key, so errors can point at it (tomllib only does for syntax)."""

    def __init__(self, text: str, path: Path) -> None:
        self.lines = text.splitlines()
        self.path = path

    def line_of(self, table: str, key: str) -> int | None:
        current = ""
        spellings = {key, key.replace("-", "_")}
        for number, line in enumerate(self.lines, 1):
            stripped = line.strip()
            header = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\]\s*(#.*)?", stripped)
            if header:
                current = header.group(1).strip('"')
                continue
            found = re.match(r'"?([A-Za-z0-9_-]+)"?\s*=', stripped)
            if current == table and found and found.group(1) in spellings:
                return number
        return None

    def error(self, table: str, key: str, problem: str) -> ExperimentError:
        line = self.line_of(table, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        name = f"{table}.{key}" if table else key
        return ExperimentError(f"{where}: {name} {problem}")


def _normalized(
    data: dict[str, Any], where: _Locator, table: str, known: tuple[str, ...]
) -> dict[str, Any]:
    """Keys with ``_`` read as ``-`` (max_time = max-time); unknown keys are errors."""
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        if name not in known:
            hint = ""
            if not table and name in BENCH_KEYS:
                hint = "; volley-bench options go under [bench]"
            raise ExperimentError(
                f"{where.error(table, key, 'is not a key this file may have')}{hint} "
                f"(known: {', '.join(known)})"
            )
        if name in result:
            raise where.error(table, key, "is given twice (with - and with _)")
        result[name] = value
    return result


def _counts(value: Any, where: _Locator, key: str) -> tuple[int, ...]:
    """``4``, ``[1, 2, "4..40 step 4"]`` or ``"1..40"`` -> the counts, in order, once each."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise where.error("", key, "is an empty list; give at least one count")
    counts: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            if item < 1:
                raise where.error("", key, f"has {item}; counts must be at least 1")
            counts.append(item)
        elif isinstance(item, str):
            match = _RANGE.fullmatch(item)
            if not match:
                raise where.error(
                    "",
                    key,
                    f"has {item!r}, which is neither a count nor a "
                    'range like "1..40" or "2..40 step 2"',
                )
            first, last, step = int(match[1]), int(match[2]), int(match[3] or 1)
            if first < 1 or last < first or step < 1:
                raise where.error(
                    "", key, f"has the range {item!r}, which is empty or starts below 1"
                )
            counts.extend(range(first, last + 1, step))
        else:
            raise where.error("", key, f'has {item!r}; write counts (4) or ranges ("1..40")')
    return tuple(dict.fromkeys(counts))


def _rates(value: Any, where: _Locator) -> tuple[float | None, ...]:
    """``[1000, "50k"]`` or ``"10k..200k step 10k"`` -> the offered rates in ops/s, once each."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise where.error("", "rates", "is an empty list; give at least one rate")
    rates: list[float] = []
    try:
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                rates.append(parse_rate(str(item), "rates"))
            elif isinstance(item, str) and (match := _RATE_RANGE.fullmatch(item)):
                first, last, step = (parse_rate(match[i], "rates") for i in (1, 2, 3))
                if last < first:
                    raise BadInput(f"rates has the empty range {item!r}")
                count = int((last - first) / step + 1e-9) + 1
                rates.extend(first + i * step for i in range(count))
            elif isinstance(item, str):
                rates.append(parse_rate(item, "rates"))
            else:
                raise BadInput(f'rates has {item!r}; write rates (50000, "50k") or ranges')
    except BadInput as e:
        raise where.error("", "rates", str(e).removeprefix("rates ")) from None
    return tuple(dict.fromkeys(rates))


def _strings(value: Any, where: _Locator, table: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(table, key, 'must be a list of strings, like ["-t", "{server_cores}"]')
    return tuple(value)


def _servers(
    value: Any, where: _Locator, directory: Path, base: Path, default_args: tuple[str, ...]
) -> tuple[ServerSpec, ...]:
    if not isinstance(value, list) or not value:
        raise where.error("", "servers", 'must be a non-empty list, like ["c-threaded", "go"]')
    specs: list[ServerSpec] = []
    for item in value:
        if isinstance(item, str) and item:
            # A bare name is a built server; anything with a / is a path.
            path = base / item if "/" in item else directory / item
            specs.append(ServerSpec(Path(item).name, str(path), default_args))
        elif isinstance(item, dict):
            unknown = set(item) - set(SERVER_KEYS)
            if unknown or not isinstance(item.get("name"), str) or not item["name"]:
                raise where.error(
                    "",
                    "servers",
                    "entries that are tables need a name, and may "
                    'have path and args: { name = "go", args = [...] }'
                    + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""),
                )
            raw = item.get("path", item["name"])
            if not isinstance(raw, str):
                raise where.error("", "servers", f"entry {item['name']!r}: path must be a string")
            path = base / raw if "/" in raw else directory / raw
            args = _strings(item["args"], where, "", "servers") if "args" in item else default_args
            specs.append(ServerSpec(item["name"], str(path), args))
        else:
            raise where.error("", "servers", f"has {item!r}; give names or tables")
    names = [spec.name for spec in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise where.error("", "servers", f"names {', '.join(twice)} more than once")
    return tuple(specs)


def _bench_option(key: str, value: Any, where: _Locator) -> str:
    """Check one [bench] option the way volley-bench would, and spell it for its command line."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise where.error("bench", key, f'has {value!r}; write a string like "10s" or a number')
    text = str(value)
    try:
        if key == "precision":
            if not isinstance(value, str):
                raise BadInput(f'{value!r} needs a unit: write it like "2%" or "5us"')
            parse_target(text)
        elif key == "confidence":
            parse_confidence(text)
        else:
            parse_duration_s(text, f"--{key}", allow_zero=key == "warmup")
    except (BadInput, ValueError) as e:
        raise where.error("bench", key, f"is not usable: {e}") from None
    return text


def _duration_s(text: str) -> float:
    return parse_duration_s(text, "duration", allow_zero=True)


# --- planning ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a sweep will run, and what it will not and why."""

    todo: list[Point]
    done: list[Point]  # already in the results file (--resume)
    too_big: list[Point]  # need more CPUs than this process may use
    missing: list[ServerSpec]  # not built: no executable at the path
    usable: list[int]

    @property
    def total(self) -> int:
        return len(self.todo) + len(self.done)


def assign_cpus(point: Point, usable: list[int]) -> tuple[list[int], list[int]]:
    """The server gets the first S usable CPUs and the clients the next C."""
    if point.server_cores + point.client_cores > len(usable):
        raise ValueError(f"{point} needs {point.server_cores + point.client_cores} CPUs")
    server = usable[: point.server_cores]
    return server, usable[point.server_cores : point.server_cores + point.client_cores]


def server_missing(spec: ServerSpec) -> str | None:
    """Why the server cannot be run, or None if it can."""
    if not os.path.isfile(spec.path):
        return f"{spec.path} does not exist"
    if not os.access(spec.path, os.X_OK):
        return f"{spec.path} is not executable"
    return None


def plan(experiment: Experiment, usable: list[int], done: set[PointKey]) -> Plan:
    missing = [spec for spec in experiment.servers if server_missing(spec)]
    absent = {spec.name for spec in missing}
    todo, finished, too_big = [], [], []
    for point in experiment.points():
        if point.server_cores + point.client_cores > len(usable):
            too_big.append(point)
        elif point.key() in done:
            finished.append(point)
        elif point.server not in absent:
            todo.append(point)
    return Plan(todo, finished, too_big, missing, usable)


def bench_command(experiment: Experiment, point: Point, usable: list[int]) -> list[str]:
    """The volley-bench command line for one point. Its JSON comes on stdout, not in a file:
    a sweep killed mid-point leaves no temporary file behind."""
    server_cpus, client_cpus = assign_cpus(point, usable)
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
    for key, value in experiment.options.items():
        command += [f"--{key}", value]
    if point.rate_ops_s is not None:
        command += ["--rate", f"{point.rate_ops_s:.12g}"]
    command += ["--json", "-", "--quiet", spec.path]
    if spec.args:
        command += ["--", *spec.args]
    return command


# --- running points ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one volley-bench run left: its exit status and the JSON it wrote, if any."""

    exit_status: int
    result: dict[str, Any] | None = None
    error: str | None = None  # why it failed, when it wrote no result


class Runner(Protocol):
    """Runs one point's command. ``interrupt`` is called from the SIGINT handler."""

    def run(self, point: Point, command: list[str], timeout_s: float) -> Outcome: ...

    def interrupt(self) -> None: ...


class ProcessRunner:
    """Runs volley-bench as a child process in its own process group.

    The child's own group keeps a terminal's Ctrl-C from reaching it twice (once from the
    terminal, once forwarded); the sweep forwards exactly one SIGINT, on which volley-bench
    finishes its round, writes a partial result and exits 130.

    If the sweep dies without forwarding anything (SIGKILL), the child goes with it the way
    volley-bench's own server does (``volley.server``): a parent-death signal, and a
    watchdog that kills the child's process group and descendants, its server included.
    """

    def __init__(self) -> None:
        self.child: subprocess.Popen[str] | None = None
        self.interrupted = False

    def run(self, point: Point, command: list[str], timeout_s: float) -> Outcome:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            process_group=0,
            preexec_fn=pinned_and_tied(None),  # the sweep runs in the main thread
        )
        watchdog = Watchdog.start(child.pid)
        self.child = child
        if self.interrupted:  # the signal came while the child was being started
            child.send_signal(signal.SIGINT)
        hung = False
        try:
            try:
                stdout, stderr = child.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                hung = True
                child.send_signal(signal.SIGINT)
                try:
                    stdout, stderr = child.communicate(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    child.kill()
                    stdout, stderr = child.communicate()
        finally:
            self.child = None
            if child.poll() is not None:
                watchdog.dismiss()
        result = _parse_json(stdout)
        if hung:
            return Outcome(
                1, None, f"volley-bench did not finish within {timeout_s:.0f} s and was stopped"
            )
        status = child.returncode
        if status < 0:  # killed by a signal
            status = 128 - status
        return Outcome(status, result, None if result else failure_message(stderr, status))

    def interrupt(self) -> None:
        self.interrupted = True
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)


def failure_message(stderr: str, status: int) -> str:
    """Why volley-bench failed, in one line: its own error line, or the end of a crash."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if ": error: " in line:
            return line.split(": error: ", 1)[1]
    if lines and lines[0].startswith("Traceback"):
        return f"volley-bench crashed: {lines[-1]}"
    return " | ".join(lines[-ERROR_TAIL_LINES:]) or f"volley-bench exited with status {status}"


def _parse_json(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def record_for(
    experiment: Experiment, point: Point, outcome: Outcome, started_at: str
) -> dict[str, Any]:
    """The results line for a finished point: volley-bench's JSON plus where it came from."""
    spec = experiment.server(point.server)
    if outcome.result is not None:
        record = dict(outcome.result)
    else:  # it failed before it could measure anything: keep the same keys, no numbers
        record = {
            "status": FAILED,
            "server": spec.path,
            "server_args": list(spec.args),
            "clients": point.clients,
            "n": 0,
            "latency_ns": None,
            "significant": False,
            "started_at": started_at,
            "error": outcome.error,
            "version": FORMAT_VERSION,
        }
    record["point"] = point.to_json()
    record["exit_status"] = outcome.exit_status
    record["sweep"] = {
        "experiment": experiment.name,
        "file": str(experiment.path),
        "options": experiment.options,
    }
    return record


# --- the results file ----------------------------------------------------------------------


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a results file, and one note per line that could not be read."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                Point.from_json(record["point"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                problems.append(f"{path}:{number}: not a sweep result line; ignored")
                continue
            records.append(record)
    return records, problems


def repair_tail(path: Path) -> str | None:
    """Cut a last line that was being written when the machine stopped; say so if it was."""
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return None
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return f"{path}: dropped an incomplete last line ({len(data) - keep} bytes)"


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one line and make it durable before the next point starts."""
    line = strict_dumps(record, separators=(",", ":")) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


# --- progress ------------------------------------------------------------------------------


class SweepProgress:
    """Points done / total, elapsed and ETA on stderr: a bar on a terminal, lines otherwise."""

    WIDTH = 24

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.total = self.done = 0
        self.start = time.monotonic()
        self.durations: list[float] = []
        self.limit_s = 0.0
        self.bar_shown = False

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
        if self.live:
            filled = self.WIDTH * self.done // max(1, self.total)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            text = f"[{bar}] {self.status()}  running: {point}"
            # One screen line, or the carriage return could not take it back.
            width = shutil.get_terminal_size((100, 24)).columns
            self.write("\r\033[K" + text[: max(20, width - 1)])
            self.bar_shown = True

    def finished(self, point: Point, record: dict[str, Any] | None, seconds: float) -> None:
        if record is None:  # interrupted: not done
            self.note(f"interrupted: {point} (not recorded; --resume runs it again)")
            return
        self.done += 1
        self.durations.append(seconds)
        line = f"[{self.done}/{self.total}] {point}: {describe(record)} ({seconds:.1f} s)"
        if not self.live:
            line += f"; {self.status()}"
        self.note(line)

    def note(self, text: str) -> None:
        if self.bar_shown:
            self.write("\r\033[K")
            self.bar_shown = False
        self.write(text + "\n")

    def write(self, text: str) -> None:
        """A reader gone away (EPIPE, or EIO from a hung-up terminal) ends the progress
        display, never the sweep."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.stream = io.StringIO()


class QuietProgress(SweepProgress):
    def __init__(self) -> None:
        super().__init__(io.StringIO())


def describe(record: dict[str, Any]) -> str:
    """One result in a few words: mean ± half-width and the verdict."""

    latency = record.get("latency_ns")
    status = record.get("status", "?")
    if status == FAILED or not latency:
        return f"FAILED: {record.get('error') or 'no result'}"
    low, high = latency.get("ci_low"), latency.get("ci_high")
    half = (high - low) / 2 if low is not None and high is not None else math.inf
    verdict = "significant" if status == SIGNIFICANT else status.replace("-", " ")
    mean = latency.get("mean")
    return f"{format_ns(math.nan if mean is None else mean)} ± {format_ns(half)}, {verdict}"


# --- the sweep -----------------------------------------------------------------------------


@dataclass
class Summary:
    recorded: list[dict[str, Any]] = field(default_factory=list)  # this session's lines
    interrupted: bool = False


def open_results(
    out_dir: Path, experiment: Experiment, resume: bool
) -> tuple[Path, set[PointKey], list[str]]:
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
    if not path.exists() or path.stat().st_size == 0:
        return path, set(), notes
    if not resume:
        raise SweepError(
            f"{path} already has results; add --resume to continue that sweep, "
            "or choose another -o DIR"
        )
    repaired = repair_tail(path)
    if repaired:
        notes.append(repaired)
    records, problems = read_records(path)
    notes += problems
    for record in records:
        options = record.get("sweep", {}).get("options")
        if options is not None and options != experiment.options:
            raise SweepError(
                f"{path} was recorded with other volley-bench options ({_spell(options)}) "
                f"than {experiment.path} now has ({_spell(experiment.options)}); resuming "
                "would mix them: choose another -o DIR"
            )
    return path, {Point.from_json(r["point"]).key() for r in records}, notes


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


def run(
    experiment: Experiment,
    results_path: Path,
    the_plan: Plan,
    runner: Runner,
    progress: SweepProgress,
) -> Summary:
    """Run the plan's points one after another, appending each finished one.

    SIGINT or SIGTERM: forwarded to the running point, which is then not recorded; the
    sweep stops after it and reports itself interrupted.
    """
    summary = Summary()

    def stop(signum: int, frame: FrameType | None) -> None:
        summary.interrupted = True
        runner.interrupt()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    limit_s = experiment.point_limit_s()
    timeout_s = limit_s + _timeouts_s(experiment) + HANG_SLACK_S
    progress.begin(the_plan.total, len(the_plan.done), limit_s)
    try:
        for point in the_plan.todo:
            if summary.interrupted:
                break
            progress.starting(point)
            started_at = datetime.now(UTC).isoformat(timespec="seconds")
            began = time.monotonic()
            command = bench_command(experiment, point, the_plan.usable)
            outcome = runner.run(point, command, timeout_s)
            # After a signal only a finished result counts: a failure may be the signal's doing.
            if outcome.exit_status == EXIT_INTERRUPTED or (
                summary.interrupted and outcome.exit_status not in FINISHED
            ):
                summary.interrupted = True
                progress.finished(point, None, time.monotonic() - began)
                break
            record = record_for(experiment, point, outcome, started_at)
            append_record(results_path, record)
            summary.recorded.append(record)
            progress.finished(point, record, time.monotonic() - began)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return summary


def _timeouts_s(experiment: Experiment) -> float:
    seconds = {
        **BENCH_DEFAULTS_S,
        **{k: _duration_s(v) for k, v in experiment.options.items() if k in BENCH_DEFAULTS_S},
    }
    return seconds["startup-timeout"] + seconds["op-timeout"]


# --- exports -------------------------------------------------------------------------------

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


def _row(record: dict[str, Any]) -> dict[str, Any]:
    point = record["point"]
    latency = record.get("latency_ns") or {}
    row: dict[str, Any] = {
        "server": point["server"],
        "clients": point["clients"],
        "server_cores": point["server_cores"],
        "client_cores": point["client_cores"],
        "server_cpus": cpus.format_cpu_list(record.get("server_cores") or []),
        "client_cpus": cpus.format_cpu_list(record.get("client_cores") or []),
        "server_path": record.get("server"),
    }
    for key in (
        "status",
        "significant",
        "exit_status",
        "n",
        "rounds",
        "throughput_ops_s",
        "confidence",
        "precision",
        "elapsed_s",
        "measured_s",
        "started_at",
        "error",
        "restart",
    ):
        row[key] = record.get(key)
    for key in ("mean", "stddev", "ci_low", "ci_high", "min", "p50", "p90", "p99", "p99.9", "max"):
        row[f"{key}_ns"] = latency.get(key)
    for key, (low, high) in (latency.get("intervals") or {}).items():
        row[f"{key}_ci_low_ns"], row[f"{key}_ci_high_ns"] = low, high
    return row


def export_csv(records: Iterable[dict[str, Any]]) -> str:
    """Every recorded point, one row each; latencies in ns, empty where a point failed."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in _row(record).items()})
    return out.getvalue()


def export_dat(records: Iterable[dict[str, Any]]) -> str:
    """The seed's plot.dat: ``server clients cores mean stddev n``, space-separated, no
    header, times in microseconds written like the seed's client (``41.20us``); ``cores`` is
    the server's core count. Points without a mean (failed) are left out."""
    rows = []
    for record in records:
        latency = record.get("latency_ns")
        if record.get("status") == FAILED or not latency:
            continue
        point = record["point"]
        rows.append(
            (
                point["server"],
                point["clients"],
                point["server_cores"],
                latency["mean"] / 1e3,
                latency["stddev"] / 1e3,
                record.get("n", 0),
            )
        )
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return "".join(f"{s} {c} {k} {m:.2f}us {d:.2f}us {n}\n" for s, c, k, m, d, n in rows)


def export_hlog(records: Iterable[dict[str, Any]]) -> str:
    """HdrHistogram's interval log: one interval per point that has a histogram (format 4
    on), tagged with the point."""
    from volley.results import BenchResult, interval_log

    def tag(point: dict[str, Any]) -> str:
        return "/".join(f"{k}={v}" if k != "server" else str(v) for k, v in point.items())

    return interval_log(
        (tag(r["point"]), BenchResult.from_json(r))
        for r in records
        if (r.get("latency_ns") or {}).get("histogram")
    )


EXPORTERS: dict[str, tuple[str, Callable[[Iterable[dict[str, Any]]], str]]] = {
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
    from volley.results import write_atomically

    if not results_path.exists():
        return []
    records, _ = read_records(results_path)
    written = []
    for name in formats:
        filename, exporter = EXPORTERS[name]
        path = results_path.parent / filename
        write_atomically(path, exporter(records))
        written.append(path)
    return written


def estimate_s(experiment: Experiment, points: int) -> float:
    return points * experiment.point_limit_s()


def skip_lines(the_plan: Plan, experiment: Experiment) -> list[str]:
    """One line per point that does not fit this machine and per server that is not built."""
    lines = [
        f"skip {point}: needs {point.server_cores + point.client_cores} CPUs, this process "
        f"may use {len(the_plan.usable)} ({cpus.format_cpu_list(the_plan.usable)})"
        for point in the_plan.too_big
    ]
    for spec in the_plan.missing:
        count = sum(
            1
            for p in experiment.points()
            if p.server == spec.name and p.server_cores + p.client_cores <= len(the_plan.usable)
        )
        lines.append(
            f"not built: {spec.name} ({server_missing(spec)}); its {count} points are "
            "skipped (build it with make servers)"
        )
    return lines


def of_plan(records: list[dict[str, Any]], the_plan: Plan) -> list[dict[str, Any]]:
    """The records of the plan's points (a results file may hold others)."""
    keys = {point.key() for point in [*the_plan.todo, *the_plan.done]}
    return [r for r in records if Point.from_json(r["point"]).key() in keys]


def totals(records: list[dict[str, Any]]) -> str:
    """``"40 significant, 2 not significant"``: the statuses in a results file."""
    counts: dict[str, int] = {}
    for record in records:
        status = str(record.get("status", "?")).replace("-", " ")
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"

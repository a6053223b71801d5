"""Experiment files: the TOML that names a sweep's grid, parsed and checked with errors that
name the line at fault.

An experiment file names the servers and what to vary; every combination of
server x clients x server CPUs x client CPUs (x rate, if ``rates`` is given) is a point::

    name = "Vary cores"
    servers-dir = "../target/servers"       # relative paths are relative to this file
    servers = ["c-threaded", "rust", { name = "go", args = ["-procs", "{server_cpus}"] }]
    clients = [40, 80, 200]                 # a count, a list, or a range "1..40" / "2..40 step 2"
    server-cpus = ["1..40"]                 # counts of CPUs, which Volley places
    client-cpus = 40
    rates = ["10k..200k step 10k"]          # optional: open loop at each offered rate (ops/s)
    order = "sequential"                    # optional, default "interleaved": see SweepOrder

    [bench]                                 # volley-bench options for every point
    precision = "1%"
    max-time = "180s"
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volley.numbers.units import (
    BENCH_DEFAULTS,
    BadInput,
    SweepOrder,
    parse_confidence,
    parse_duration_s,
    parse_rate,
    parse_target,
)
from volley.system.topology import CpuError, format_cpu_list, parse_cpu_list

DEFAULT_SERVERS_DIR = "target/servers"
POINT_OVERHEAD_S = 2.5  # starting and stopping the server and workers, the last round
# The order a sweep plays its points in (SweepOrder). "sequential": each point's whole benchmark,
# one point after another. "interleaved": one run of every unfinished point per pass, in a fresh
# random order each pass (randomized multiple interleaved trials), so that a machine drifting
# during the sweep lands on every point alike. Interleaved is the default: on the development VM a
# server's ratio to a baseline server varied between repeated sweeps by a median 2.1% and 5.7%
# (two series) interleaved, 12.8% and 8.6% sequential, at most 9.3% against 27.5%
# (bench/README.md, "Sequential or interleaved"), for about 1.5 times the wall time: every run of
# an interleaved point is its own volley-bench process.

# Each side's CPUs, by one of two keys: ``server-cores`` a CPU list (or a grid of them),
# exactly as volley-bench's --server-cores takes it, used as given; ``server-cpus`` a count
# (or counts, ranges), placed by Volley on the topology (``cpus.place_point``).
SIDES = ("server", "client")
LIST_FLAGS = {"server": "--server-cores", "client": "--cores"}
GRID_KEYS = ("clients", "server-cores", "server-cpus", "client-cores", "client-cpus")
TOP_KEYS = (
    "name",
    "description",
    "servers",
    "servers-dir",
    *GRID_KEYS,
    "rates",
    "order",
    "bench",
)
DURATION_OPTIONS = ("max-time", "warmup", "run-time", "round-time", "op-timeout", "startup-timeout")
BENCH_KEYS = ("precision", "confidence", *DURATION_OPTIONS, "args")
SERVER_KEYS = ("name", "path", "args")
_RANGE = re.compile(r"\s*(\d+)\s*\.\.\s*(\d+)\s*(?:step\s+(\d+)\s*)?")
_RATE_RANGE = re.compile(r"\s*(\S+?)\s*\.\.\s*(\S+?)\s+step\s+(\S+)\s*")
# How volley-bench's --cores and --server-cores name CPUs (taskset syntax: "0-3", "0,2,4-7"),
# which a count must not be mistaken for.
_CPU_LIST = re.compile(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*")
# The most values one range may give: a sweep of more points could not finish anyway, and a
# range like "1..1000000000" must not fill the memory before it is refused.
MAX_RANGE_VALUES = 10_000
PointKey = tuple[Any, ...]
# One side's CPUs in the grid: a count (int), placed when the point runs, or a CPU list
# (str, in format_cpu_list's spelling), used as given.
CpuChoice = int | str


class ExperimentError(BadInput):
    """An experiment file that cannot be run; the message names the file and line."""


@dataclass(frozen=True)
class ServerSpec:
    name: str  # the label in results and plots
    path: str  # as resolved against the experiment file
    # {server_cpus} and {client_cpus} (or {server_cores}, {client_cores}, the older names)
    # become the NUMBER of CPUs of each side, however they were chosen (volley-bench fills
    # them in from its placement).
    args: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class Point:
    """One run of the grid.

    How a point is stored (its ``point`` in results.jsonl): ``server_cores`` and
    ``client_cores`` are the NUMBER of each side's CPUs, as every result has stored them
    (plots, exports and older results read them so); a side the experiment gave as a CPU
    list also stores that list, as a string ("0-3"), under ``server_cpu_list`` or
    ``client_cpu_list``. A side placed by count has no list key, so an older result reads as
    a point placed by count. The CPUs a point ran on are in its volley-bench keys.
    """

    server: str
    clients: int
    server_cores: int  # how many CPUs, whichever way they were chosen
    client_cores: int
    rate_ops_s: float | None = None  # open loop at this offered rate; None: closed loop
    server_cpu_list: str | None = None  # the CPUs the experiment named; None: placed by count
    client_cpu_list: str | None = None

    def key(self) -> PointKey:
        # A closed-loop point placed by count keeps the key it had before rates and CPU
        # lists existed (for --resume).
        rate = () if self.rate_ops_s is None else (self.rate_ops_s,)
        lists = (
            ()
            if self.server_cpu_list is None and self.client_cpu_list is None
            else (
                self.server_cpu_list,
                self.client_cpu_list,
            )
        )
        return (self.server, self.clients, self.server_cores, self.client_cores, *rate, *lists)

    def side(self, side: str) -> CpuChoice:
        """The experiment's choice for ``side`` ("server" or "client"): its list, or its count."""
        listed = self.server_cpu_list if side == "server" else self.client_cpu_list
        count = self.server_cores if side == "server" else self.client_cores
        return count if listed is None else listed

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "server": self.server,
            "clients": self.clients,
            "server_cores": self.server_cores,
            "client_cores": self.client_cores,
        }
        if self.rate_ops_s is not None:
            data["rate_ops_s"] = self.rate_ops_s
        for name, listed in (
            ("server_cpu_list", self.server_cpu_list),
            ("client_cpu_list", self.client_cpu_list),
        ):
            if listed is not None:
                data[name] = listed
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Point:
        rate = data.get("rate_ops_s")
        server_list, client_list = data.get("server_cpu_list"), data.get("client_cpu_list")
        return cls(
            str(data["server"]),
            int(data["clients"]),
            int(data["server_cores"]),
            int(data["client_cores"]),
            None if rate is None else float(rate),
            None if server_list is None else str(server_list),
            None if client_list is None else str(client_list),
        )

    def __str__(self) -> str:
        def cpus(n: int, listed: str | None) -> str:
            return f"CPU {listed}" if listed is not None else f"{n} core{'s' if n != 1 else ''}"

        rate = "" if self.rate_ops_s is None else f" at {self.rate_ops_s:,.0f} ops/s"
        return (
            f"{self.server}, {self.clients} client{'s' if self.clients != 1 else ''} on "
            f"{cpus(self.client_cores, self.client_cpu_list)}, server on "
            f"{cpus(self.server_cores, self.server_cpu_list)}{rate}"
        )


@dataclass(frozen=True)
class Experiment:
    path: Path
    name: str
    servers: tuple[ServerSpec, ...]
    clients: tuple[int, ...]
    server_cpus: tuple[CpuChoice, ...]  # counts (server-cpus) or CPU lists (server-cores)
    client_cpus: tuple[CpuChoice, ...]
    options: dict[str, str] = field(default_factory=dict)  # volley-bench option -> value
    rates: tuple[float | None, ...] = (None,)  # offered rates (ops/s); None: closed loop
    order: SweepOrder = SweepOrder.IN_PASSES
    servers_dir: Path = Path(DEFAULT_SERVERS_DIR)  # where a server given by name is

    def points(self) -> list[Point]:
        """The grid in run order. Servers vary fastest, so that whatever drifts during a long
        sweep (temperature, background load) touches every server alike."""
        return [
            Point(spec.name, clients, _count(s), _count(c), rate, _listed(s), _listed(c))
            for s in self.server_cpus
            for c in self.client_cpus
            for clients in self.clients
            for rate in self.rates
            for spec in self.servers
        ]

    def server(self, name: str) -> ServerSpec:
        return next(spec for spec in self.servers if spec.name == name)

    def seconds(self, option: str) -> float:
        """A duration option of [bench], or volley-bench's default for it."""
        for name in (option, "round-time") if option == "run-time" else (option,):
            if name in self.options:
                return _duration_s(self.options[name])
        return _duration_s(str(BENCH_DEFAULTS[option]))

    def point_limit_s(self) -> float:
        """The longest one point can take if every server behaves."""
        return self.seconds("warmup") + self.seconds("max-time") + POINT_OVERHEAD_S

    def timeouts_s(self) -> float:
        """How long a point may wait on its server beyond its own limits."""
        return self.seconds("startup-timeout") + self.seconds("op-timeout")


def _count(choice: CpuChoice) -> int:
    return choice if isinstance(choice, int) else len(parse_cpu_list(choice))


def _listed(choice: CpuChoice) -> str | None:
    return choice if isinstance(choice, str) else None


# --- experiment files ----------------------------------------------------------------------


def load(path: Path) -> Experiment:
    """Read, parse and check an experiment file, and that its servers' directory exists."""
    try:
        text = path.read_bytes().decode()
    except OSError as e:
        raise ExperimentError(f"cannot read experiment file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ExperimentError(
            f"{path}: not UTF-8 text (byte {e.start}); an experiment file is TOML, "
            "like bench/local.toml"
        ) from None
    experiment = parse(text, path)
    _check_servers_dir(experiment, text)
    return experiment


def _check_servers_dir(experiment: Experiment, text: str) -> None:
    """A servers directory that does not exist fails the sweep now, not point by point."""
    directory = experiment.servers_dir
    if directory.is_dir() or not any(
        Path(spec.path).parent == directory for spec in experiment.servers
    ):
        return
    where = _Locator(text, experiment.path)
    if where.line_of("", "servers-dir") is not None:
        raise where.error(
            "",
            "servers-dir",
            f"is {directory}, which is not a directory; build the servers (make) or "
            "correct the path (relative to this file)",
        )
    raise where.error(
        "",
        "servers",
        f"are looked for in {directory} (the default, from the current directory), which "
        "does not exist; build the servers (make), run from the project's root, or give "
        "servers-dir (relative to this file)",
    )


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
    for key in ("servers", "clients"):
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
        server_cpus=_side(data, where, "server"),
        client_cpus=_side(data, where, "client"),
        options=options,
        rates=_rates(data["rates"], where) if "rates" in data else (None,),
        order=_order(data.get("order", SweepOrder.IN_PASSES), where),
        servers_dir=directory,
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
            header = re.fullmatch(r"\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?", stripped)
            if header:
                current = header.group(1).strip('"')
                if not table and current in spellings:  # a table: [bench], [[servers]]
                    return number
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
            raise ExperimentError(
                f"{where.error(table, key, 'is not a key this file may have')}"
                f"{_unknown_key_hint(name, table, known)}"
            )
        if name in result:
            raise where.error(table, key, "is given twice (with - and with _)")
        result[name] = value
    return result


def _unknown_key_hint(name: str, table: str, known: tuple[str, ...]) -> str:
    """ "did you mean ...?" when a known key is spelled close to it, and the keys it may be."""
    if not table and name in BENCH_KEYS:
        return f"; volley-bench options go under [bench]: [bench] {name} = ..."
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close and not table:  # a volley-bench option misspelled at the top
        close = difflib.get_close_matches(name, BENCH_KEYS, n=1, cutoff=0.6)
        if close:
            return f"; did you mean [bench] {close[0]}?"
    mean = f"; did you mean {close[0]}?" if close else ""
    return f"{mean} (known: {', '.join(known)})"


def _side(data: dict[str, Any], where: _Locator, side: str) -> tuple[CpuChoice, ...]:
    """One side's CPUs: ``{side}-cores``, CPU lists used as given, or ``{side}-cpus``,
    counts Volley places; one of them, not both."""
    list_key, count_key = f"{side}-cores", f"{side}-cpus"
    if list_key in data and count_key in data:
        raise where.error(
            "",
            count_key,
            f'and {list_key} are both given; give {list_key}, a CPU list like "0-3" '
            f"used as given, or {count_key}, a count of CPUs Volley places, not both",
        )
    if count_key in data:
        return tuple(_counts(data[count_key], where, count_key))
    if list_key in data:
        return tuple(_cpu_lists(data[list_key], where, side))
    raise ExperimentError(
        f"{where.path}: missing {count_key} = 1 (a count of {side} CPUs, placed by Volley) "
        f'or {list_key} = "0-3" (a CPU list, as volley-bench {LIST_FLAGS[side]} takes)'
    )


def _cpu_lists(value: Any, where: _Locator, side: str) -> tuple[str, ...]:
    """``"0-3"`` or ``["0", "0-1", "0-3"]`` -> the CPU lists, spelled alike, once each. A
    count or a range of counts (an older file's ``server-cores = 2``) says what to write."""
    key, items = f"{side}-cores", value if isinstance(value, list) else [value]
    if not items:
        raise where.error("", key, 'is an empty list; give at least one CPU list, like "0-3"')
    if any(_is_count(item) for item in items):
        counts = (
            value
            if all(_is_count(item) for item in items)
            else next(item for item in items if _is_count(item))
        )
        raise where.error(
            "",
            key,
            f'is a CPU list like "0-3" (as {LIST_FLAGS[side]} takes), not {_toml(counts)}; '
            f"for a count of CPUs write {side}-cpus = {_toml(counts)}",
        )
    lists: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise where.error("", key, f'has {item!r}; write CPU lists like "0-3" or "0,2,4-7"')
        try:
            lists.append(format_cpu_list(parse_cpu_list(item)))
        except CpuError as e:
            raise where.error("", key, f"has {item!r}: {e}") from None
    return tuple(dict.fromkeys(lists))


def _is_count(item: Any) -> bool:
    """A count or a range of counts, which a CPU-list key must not take for CPUs."""
    if isinstance(item, int) and not isinstance(item, bool):
        return True
    return isinstance(item, str) and _RANGE.fullmatch(item) is not None


def _toml(value: Any) -> str:
    """A value as it would be written in the file (lists of counts and ranges)."""
    return json.dumps(value, separators=(", ", " = "))


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
        elif isinstance(item, str) and re.fullmatch(r"\s*[0-9]+\s*", item) and int(item) >= 1:
            counts.append(int(item))  # "4": a count written as a string
        elif isinstance(item, str):
            match = _RANGE.fullmatch(item)
            if not match and key != "clients" and _CPU_LIST.fullmatch(item):
                listed = key.replace("-cpus", "-cores")
                raise where.error(
                    "",
                    key,
                    f"has {item!r}, a CPU list; {key} is a count of CPUs that Volley places: "
                    'write a count (4), counts [1, 2, 4] or a range of counts ("1..4"), or '
                    f"give the CPUs themselves as {listed} = {_toml(item)}",
                )
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
            if len(range(first, last + 1, step)) > MAX_RANGE_VALUES:
                raise where.error(
                    "", key, f"has the range {item!r}, more than {MAX_RANGE_VALUES} counts"
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
                if count > MAX_RANGE_VALUES:
                    raise BadInput(f"rates has {item!r}, more than {MAX_RANGE_VALUES} rates")
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
        raise where.error(table, key, 'must be a list of strings, like ["-t", "{server_cpus}"]')
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


def _order(value: Any, where: _Locator) -> SweepOrder:
    if value not in list(SweepOrder):
        spelled = ", ".join(SweepOrder)
        raise where.error("", "order", f"is {value!r}; write one of {spelled}")
    return SweepOrder(value)


def _duration_s(text: str) -> float:
    return parse_duration_s(text, "duration", allow_zero=True)

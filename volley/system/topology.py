"""CPU lists (taskset/numactl syntax), and which CPUs share a physical core, a socket, a NUMA
node: read from this machine's sysfs or
from a saved ``lscpu -p=CPU,CORE,SOCKET,NODE``, so that placement can keep the server and the
clients off each other's cores, and plan for a machine it does not run on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SYSFS = Path("/sys/devices/system")
LSCPU_COLUMNS = ("CPU", "CORE", "SOCKET", "NODE")
_REQUIRED = ("CPU", "CORE", "SOCKET")
_CPU_DIR = re.compile(r"cpu(\d+)")
_NODE_DIR = re.compile(r"node(\d+)")
_COLUMN = re.compile(r"[A-Z0-9:_-]*")  # lscpu's column names; its prose has spaces


# Above any CPU number Linux gives (its NR_CPUS is at most 8192).
MAX_CPU = 65_535


class CpuError(ValueError):
    """A CPU list that is malformed or names CPUs this process may not use."""


def parse_cpu_list(text: str) -> list[int]:
    """Parse ``"0-3,8,10-11"`` into a sorted list of distinct CPU numbers."""
    cpus: set[int] = set()
    if not text.strip():
        raise CpuError("empty CPU list; write it like 0-3,8")
    for part in text.split(","):
        part = part.strip()
        low, sep, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if sep else first
        except ValueError:
            raise CpuError(f"bad CPU list {text!r}: {part!r} is not N or N-M") from None
        if first < 0 or last < first:
            raise CpuError(f"bad CPU list {text!r}: range {part!r} is empty or negative")
        if last > MAX_CPU:  # before a range like 0-99999999999 fills the memory
            raise CpuError(f"bad CPU list {text!r}: no machine has CPU {last}")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpu_list(cpus: list[int] | set[int]) -> str:
    """The shortest taskset-style spelling: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    ordered = sorted(set(cpus))  # a rehearsal folds several planned CPUs onto one
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


class TopologyError(CpuError):
    """A topology file that cannot be read or is not ``lscpu -p`` output (a CpuError, so
    that whoever reports bad CPU lists reports it too)."""


@dataclass(frozen=True)
class CpuSite:
    """Where one CPU (hardware thread) sits. ``core`` numbers physical cores across the
    machine, as lscpu's logical core IDs do; ``node`` is None when no NUMA node is known."""

    cpu: int
    core: int
    socket: int
    node: int | None = None


@dataclass(frozen=True)
class Topology:
    """The CPUs of one machine and where each sits; ``source`` says where it was read."""

    sites: tuple[CpuSite, ...]
    source: str
    _by_cpu: dict[int, CpuSite] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_cpu", {s.cpu: s for s in self.sites})

    @classmethod
    def flat(cls, cpus: Iterable[int], source: str = "no topology") -> Topology:
        """Every CPU its own core on one socket: what placement assumes when nothing is known."""
        return cls(tuple(CpuSite(c, c, 0) for c in sorted(cpus)), source)

    @property
    def cpus(self) -> list[int]:
        return sorted(self._by_cpu)

    def site(self, cpu: int) -> CpuSite:
        """The CPU's site; a CPU the topology does not know is a core and socket of its own."""
        return self._by_cpu.get(cpu) or CpuSite(cpu, -1 - cpu, -1 - cpu)

    def core_of(self, cpu: int) -> tuple[int, int]:
        site = self.site(cpu)
        return site.socket, site.core

    def siblings(self, cpu: int) -> list[int]:
        """The other CPUs on the same physical core (its SMT siblings)."""
        key = self.core_of(cpu)
        return [s.cpu for s in self.sites if s.cpu != cpu and self.core_of(s.cpu) == key]

    def domain(self, cpu: int) -> int | None:
        """The CPU's NUMA node, or its socket when no node is known: what a reply crosses."""
        site = self.site(cpu)
        return site.node if self.has_nodes else site.socket

    @property
    def has_nodes(self) -> bool:
        return any(s.node is not None for s in self.sites)

    def cores(self, cpus: Iterable[int]) -> list[list[int]]:
        """``cpus`` grouped by physical core, each group sorted, groups by their first CPU."""
        groups: dict[tuple[int, int], list[int]] = {}
        for cpu in sorted(set(cpus)):
            groups.setdefault(self.core_of(cpu), []).append(cpu)
        return sorted(groups.values())

    def shape(self) -> tuple[frozenset[frozenset[int]], ...]:
        """Which CPUs go together per core, socket and node, whatever the IDs are called."""

        def partition(key: str) -> frozenset[frozenset[int]]:
            groups: dict[object, set[int]] = {}
            for s in self.sites:
                groups.setdefault(getattr(s, key), set()).add(s.cpu)
            return frozenset(frozenset(g) for g in groups.values())

        cores = frozenset(frozenset(c) for c in self.cores(self.cpus))
        return cores, partition("socket"), partition("node")

    def describe(self) -> str:
        """``2 sockets, 40 cores, 80 CPUs (2 threads per core), 2 NUMA nodes``."""
        cores = self.cores(self.cpus)
        sockets = {s.socket for s in self.sites}
        nodes = {s.node for s in self.sites if s.node is not None}
        threads = sorted({len(c) for c in cores})
        per_core = "-".join(map(str, threads)) if threads else "0"
        text = (
            f"{_count(len(sockets), 'socket')}, {_count(len(cores), 'core')}, "
            f"{_count(len(self.sites), 'CPU')} ({per_core} thread"
            f"{'' if per_core == '1' else 's'} per core)"
        )
        return text + (f", {_count(len(nodes), 'NUMA node')}" if nodes else "")

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "sockets": len({s.socket for s in self.sites}),
            "cores": len(self.cores(self.cpus)),
            "cpus": len(self.sites),
            "numa_nodes": len({s.node for s in self.sites if s.node is not None}),
        }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def parse_lscpu(text: str, name: str) -> Topology:
    """The topology in ``lscpu -p=CPU,CORE,SOCKET,NODE`` output (``lscpu -p``'s own column
    list, caches included, is read from its header). ``name`` is quoted in errors."""
    columns: tuple[str, ...] | None = None  # until a header names them
    sites: dict[int, CpuSite] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            named = tuple(c.strip().upper() for c in line[1:].split(","))
            if "CPU" in named and all(_COLUMN.fullmatch(c) for c in named):  # the header
                columns = named
                _check_columns(columns, name, number)
            continue
        site = _parse_row(line, columns, f"{name} line {number}")
        if site.cpu in sites:
            raise TopologyError(f"{name} line {number}: CPU {site.cpu} is listed twice")
        sites[site.cpu] = site
    if not sites:
        raise TopologyError(
            f"{name} lists no CPUs: save it with lscpu -p=CPU,CORE,SOCKET,NODE > {name}"
        )
    return Topology(tuple(sites[c] for c in sorted(sites)), name)


def _check_columns(columns: tuple[str, ...], name: str, number: int) -> None:
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise TopologyError(
            f"{name} line {number}: the header has no {', '.join(missing)} column; "
            "save it with lscpu -p=CPU,CORE,SOCKET,NODE"
        )


def _parse_row(line: str, header: tuple[str, ...] | None, where: str) -> CpuSite:
    fields = [f.strip() for f in line.split(",")]
    # Without a header, CPU,CORE,SOCKET[,NODE]: a row without NODE is still whole.
    columns = header or LSCPU_COLUMNS[: max(3, min(len(fields), 4))]
    if len(fields) != len(columns):
        raise TopologyError(
            f"{where}: {line!r} has {len(fields)} fields, not {len(columns)} ({','.join(columns)})"
        )
    values = dict(zip(columns, fields, strict=False))
    numbers: dict[str, int | None] = {}
    for column in LSCPU_COLUMNS:
        value = values.get(column, "")
        if not value and column == "NODE":
            numbers[column] = None  # lscpu leaves it empty on machines without NUMA
            continue
        if not value.isdigit():
            raise TopologyError(
                f"{where}: {column} is {value!r}, not a number (in {line!r})"
                if value
                else f"{where}: {column} is empty (in {line!r})"
            )
        numbers[column] = int(value)
    cpu, core, socket = (numbers[c] for c in _REQUIRED)
    assert cpu is not None and core is not None and socket is not None
    return CpuSite(cpu, core, socket, numbers["NODE"])


def load(path: str | Path) -> Topology:
    """The topology saved in ``path`` (``lscpu -p=CPU,CORE,SOCKET,NODE > path``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise TopologyError(f"cannot read topology file {path}: {reason}") from None
    return parse_lscpu(text, str(path))


def from_sysfs(root: Path = SYSFS) -> Topology | None:
    """This machine's topology from sysfs, or None when sysfs says nothing about it.

    A CPU without ``core_id`` counts as a core of its own, without ``physical_package_id``
    as on socket 0; offline CPUs (no ``topology`` directory) are left out.
    """
    found: dict[int, tuple[int, int, int]] = {}  # cpu -> package, die, core_id
    try:
        entries = [e for e in os.scandir(root / "cpu") if _CPU_DIR.fullmatch(e.name)]
    except OSError:
        return None
    for entry in entries:
        cpu = int(entry.name[3:])
        where = Path(entry.path) / "topology"
        if not where.is_dir():
            continue
        core_id = _read_int(where / "core_id")
        package = _read_int(where / "physical_package_id")
        die = _read_int(where / "die_id")
        found[cpu] = (package or 0, die or 0, core_id if core_id is not None else -1 - cpu)
    if not found:
        return None
    nodes = _nodes(root / "node")
    # core_id repeats across packages (and dies): number the cores as lscpu does.
    logical: dict[tuple[int, int, int], int] = {}
    for cpu in sorted(found):
        logical.setdefault(found[cpu], len(logical))
    sites = tuple(
        CpuSite(cpu, logical[found[cpu]], found[cpu][0], nodes.get(cpu)) for cpu in sorted(found)
    )
    return Topology(sites, "this machine")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _nodes(base: Path) -> dict[int, int]:
    """CPU -> NUMA node from ``node*/cpulist``; empty when the kernel has no NUMA."""
    owner: dict[int, int] = {}
    try:
        entries = [e for e in os.scandir(base) if _NODE_DIR.fullmatch(e.name)]
    except OSError:
        return owner
    for entry in entries:
        try:
            text = (Path(entry.path) / "cpulist").read_text().strip()
            cpus = parse_cpu_list(text) if text else []
        except (OSError, CpuError):
            continue
        for cpu in cpus:
            owner[cpu] = int(entry.name[4:])
    return owner


def for_placement(path: str | None, root: Path = SYSFS) -> tuple[Topology | None, tuple[str, ...]]:
    """The topology volley-bench places by: ``path``'s if given (with a warning when this
    machine's differs), else this machine's (None if unknown)."""
    machine = from_sysfs(root)
    if path is None:
        return machine, ()
    chosen = load(path)
    if machine is None or machine.shape() == chosen.shape():
        return chosen, ()
    return chosen, (
        f"--topology {path} ({chosen.describe()}) is not this machine's "
        f"({machine.describe()}); CPUs are placed as if it were",
    )


def nodes_of(topology: Topology, cpus: Iterable[int]) -> str:
    """``node 0`` or ``nodes 0-1``: the NUMA nodes (sockets when none are known) of ``cpus``."""
    domains = {topology.domain(c) for c in cpus}
    kind = "node" if topology.has_nodes else "socket"
    known = sorted(d for d in domains if d is not None and d >= 0)
    if not known:
        return f"{kind} unknown"
    return f"{kind}{'s' if len(known) > 1 else ''} {format_cpu_list(known)}"

"""Choosing who runs where: the server's CPUs and the clients', on the machine's topology
(CPU lists themselves are parsed and spelled in ``topology``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from volley.system.topology import CpuError, Topology, format_cpu_list, parse_cpu_list


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Placement:
    """Where the server and the clients run, the SMT siblings left idle, and what is
    wrong with it (each warning a sentence)."""

    server_cpus: list[int]
    client_cpus: list[int]
    warnings: tuple[str, ...] = ()
    idle_siblings: list[int] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        return "; ".join(self.warnings) or None


def place(
    client_spec: str | None,
    server_spec: str | None,
    usable: list[int] | None = None,
    topology: Topology | None = None,
    remote_server: bool = False,
) -> Placement:
    """Choose server and client CPUs from the user's lists and the machine's topology.

    By default the server and the clients get disjoint halves of the physical cores of one
    socket and NUMA node (the lower half the server's), one CPU per core, so that no reply
    crosses sockets and no thread shares a core with the other side; the SMT siblings of
    the CPUs used are left idle. A list the user gives wins, the other side defaulting to
    the cores it leaves free, and the warnings name what it costs. Without a topology every
    CPU counts as a core of its own. ``remote_server``: the server runs elsewhere (--connect).
    """
    usable = usable_cpus() if usable is None else sorted(usable)
    topology = topology if topology is not None else Topology.flat(usable)
    clients = _checked(client_spec, usable, "--cores") if client_spec else None
    server = _checked(server_spec, usable, "--server-cores") if server_spec else None
    if clients is None and server is None:
        server, clients = _split(usable, topology)
    elif clients is None:
        assert server is not None
        clients = _beside(server, usable, topology, "--server-cores", False)
    elif server is None:
        server = _beside(clients, usable, topology, "--cores", remote_server)
    used = set(server) | set(clients)
    idle = sorted({s for c in used for s in topology.siblings(c)} - used)
    warnings = () if remote_server else _costs(server, clients, topology)
    return Placement(server, clients, warnings, idle)


def place_point(
    server: list[int] | int,
    clients: list[int] | int,
    usable: list[int],
    topology: Topology | None = None,
) -> Placement | None:
    """Where one sweep point runs: each side a CPU list, used as given, or a count of CPUs.

    Counts are placed as volley-bench places its default: one CPU per physical core, the
    server's cores and the clients' apart, on one socket and NUMA node (that of a side given
    as a list, else the largest that holds both counts), their SMT siblings left idle; only
    counts that fit no one socket-and-node cross to another. None when the point does not
    fit: fewer free physical cores than the counts, or a list naming a CPU not usable here.
    """
    topology = topology if topology is not None else Topology.flat(usable)
    given = [side for side in (server, clients) if isinstance(side, list)]
    if any(cpu not in usable for side in given for cpu in side):
        return None
    taken = {topology.core_of(cpu) for side in given for cpu in side}
    free = [core for core in topology.cores(usable) if topology.core_of(core[0]) not in taken]
    wanted = sum(side for side in (server, clients) if isinstance(side, int))
    if wanted > len(free):
        return None
    pool = [core[0] for core in _nearest_first(free, wanted, given, topology)]
    server_cpus = server if isinstance(server, list) else pool[:server]
    taken_first = 0 if isinstance(server, list) else server
    client_cpus = clients if isinstance(clients, list) else pool[taken_first:][:clients]
    used = set(server_cpus) | set(client_cpus)
    idle = sorted({s for c in used for s in topology.siblings(c)} - used)
    return Placement(server_cpus, client_cpus, _costs(server_cpus, client_cpus, topology), idle)


def _nearest_first(
    free: list[list[int]], wanted: int, given: list[list[int]], topology: Topology
) -> list[list[int]]:
    """The free cores in the order counts take them: those of the given lists' domains
    first, else those of the largest domain holding ``wanted`` cores (the first of equals)."""
    domains: dict[tuple[int, int | None], list[list[int]]] = {}
    for core in free:
        site = topology.site(core[0])
        domains.setdefault((site.socket, site.node), []).append(core)
    near = {(topology.site(c).socket, topology.site(c).node) for side in given for c in side}
    ranked = sorted(
        domains, key=lambda d: (d not in near, len(domains[d]) < wanted, -len(domains[d]))
    )
    return [core for domain in ranked for core in domains[domain]]


def _split(usable: list[int], topology: Topology) -> tuple[list[int], list[int]]:
    """Server and clients on disjoint halves of the cores of the largest socket-and-node."""
    cores = topology.cores(usable)
    if len(cores) == 1:
        only = cores[0]  # one core: its threads are all there is to share
        return (only[:1], only[1:]) if len(only) > 1 else (only, only)
    domains: dict[tuple[int, int | None], list[list[int]]] = {}
    for core in cores:
        site = topology.site(core[0])
        domains.setdefault((site.socket, site.node), []).append(core)
    largest = max(domains.values(), key=len)  # the first of equals: max keeps the first
    pool = largest if len(largest) > 1 else cores
    half = len(pool) // 2
    return [c[0] for c in pool[:half]], [c[0] for c in pool[half:]]


def _beside(
    given: list[int], usable: list[int], topology: Topology, option: str, remote: bool
) -> list[int]:
    """The other side's CPUs: one per core the given list leaves free, on the given list's
    sockets and nodes if it can. Only a one-core machine (or a server elsewhere) shares."""
    side = "server" if option == "--cores" else "clients"
    taken = {topology.core_of(c) for c in given}
    free = [core for core in topology.cores(usable) if topology.core_of(core[0]) not in taken]
    if free and not remote:
        near = {topology.domain(c) for c in given}
        chosen = [core for core in free if topology.domain(core[0]) in near] or free
        return [core[0] for core in chosen]
    rest = [c for c in usable if c not in given]
    if remote or len(topology.cores(usable)) == 1:
        return rest or list(given)
    other = "--server-cores" if option == "--cores" else "--cores"
    siblings = f" (CPU {format_cpu_list(rest)} are their SMT siblings)" if rest else ""
    raise CpuError(
        f"{option} {format_cpu_list(given)} takes every usable physical core{siblings}, "
        f"leaving none for the {side}: give fewer CPUs to {option}, or {other} to share "
        "cores knowingly"
    )


def _costs(server: list[int], clients: list[int], topology: Topology) -> tuple[str, ...]:
    """What the placement costs the measurement: shared CPUs, shared cores, crossed nodes."""
    found = []
    shared = sorted(set(server) & set(clients))
    if shared:
        found.append(
            f"server and clients share CPU {format_cpu_list(shared)}: the measurement "
            "includes their competition for it"
        )
    pairs = [
        (s, c)
        for s in server
        for c in clients
        if s != c and topology.core_of(s) == topology.core_of(c)
    ]
    if pairs:
        named = ", ".join(f"{s} with {c}" for s, c in pairs[1:])
        found.append(
            f"server and clients share physical cores (SMT siblings): server CPU "
            f"{pairs[0][0]} with client CPU {pairs[0][1]}{', ' if named else ''}{named}; "
            "the measurement includes their competition for each core"
        )
    domains = {topology.domain(c) for c in [*server, *clients]}
    if len({d for d in domains if d is not None and d >= 0}) > 1:
        found.append(
            f"server on {_by_domain(server, topology)} and clients on "
            f"{_by_domain(clients, topology)}: every request and reply crosses between them"
        )
    return tuple(found)


def _by_domain(cpus: list[int], topology: Topology) -> str:
    """``CPU 0-9 (node 0), 20-29 (node 1)``."""
    kind = "node" if topology.has_nodes else "socket"
    groups: dict[int | None, list[int]] = {}
    for cpu in cpus:
        groups.setdefault(topology.domain(cpu), []).append(cpu)
    parts = [
        f"{format_cpu_list(g)} ({kind} {d if d is not None and d >= 0 else '?'})"
        for d, g in sorted(groups.items(), key=lambda item: item[1][0])
    ]
    return "CPU " + ", ".join(parts)


def _checked(spec: str, usable: list[int], option: str) -> list[int]:
    try:
        cpus = parse_cpu_list(spec)
    except CpuError as e:
        raise CpuError(f"{option}: {e}") from None
    missing = [c for c in cpus if c not in usable]
    if missing:
        raise CpuError(
            f"{option} names CPU {format_cpu_list(missing)}, which this process may not use; "
            f"usable CPUs are {format_cpu_list(usable)}"
        )
    return cpus


def spread(clients: int, cpus: list[int]) -> list[list[int]]:
    """Deal client ids round-robin over the CPUs; one list of client ids per used CPU."""
    workers = min(clients, len(cpus))
    return [list(range(w, clients, workers)) for w in range(workers)]


def fold(planned: Placement, usable: list[int]) -> Placement:
    """``planned`` (a placement on another machine's topology) folded onto the ``usable``
    CPUs of this one, for a rehearsal: every planned CPU keeps its place in its list, so
    there is still one worker per planned client CPU, several of them on one real CPU.

    With two CPUs or more, the server's CPUs and the clients' fold onto real CPUs of their
    own (the server's share of the real CPUs in proportion to its planned share, at least
    one each); planned CPU ``i`` of a side goes to that side's real CPU ``i mod count``. A
    plan whose sides share CPUs, or a machine with one CPU, folds every planned CPU ``c``
    to ``usable[c mod n]``: what is shared in the plan stays shared."""
    usable = sorted(usable)
    if not usable:
        raise CpuError("no usable CPU to rehearse on")
    server, clients = planned.server_cpus, planned.client_cpus
    if len(usable) < 2 or set(server) & set(clients) or not server:
        return replace(
            planned,
            server_cpus=[usable[c % len(usable)] for c in server],
            client_cpus=[usable[c % len(usable)] for c in clients],
            idle_siblings=[],
        )
    share = round(len(usable) * len(server) / (len(server) + len(clients)))
    split = min(max(share, 1), len(usable) - 1)
    server_real, client_real = usable[:split], usable[split:]
    return replace(
        planned,
        server_cpus=[server_real[i % len(server_real)] for i in range(len(server))],
        client_cpus=[client_real[i % len(client_real)] for i in range(len(clients))],
        idle_siblings=[],
    )

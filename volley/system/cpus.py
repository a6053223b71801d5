"""CPU lists: parsing and formatting taskset/numactl syntax, and choosing who runs where."""

from __future__ import annotations

import os
from dataclasses import dataclass


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
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpu_list(cpus: list[int] | set[int]) -> str:
    """The shortest taskset-style spelling: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    ordered = sorted(cpus)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Placement:
    """Where the server and the clients run, and whether they had to share."""

    server_cpus: list[int]
    client_cpus: list[int]
    warning: str | None = None


def place(
    client_spec: str | None, server_spec: str | None, usable: list[int] | None = None
) -> Placement:
    """Choose server and client CPUs from the user's lists, defaulting to disjoint halves.

    The server gets the lower half of the usable CPUs and the clients the upper half, so
    the two never compete for a core unless only one CPU is usable.
    """
    usable = usable_cpus() if usable is None else sorted(usable)
    clients = _checked(client_spec, usable, "--cores") if client_spec else None
    server = _checked(server_spec, usable, "--server-cores") if server_spec else None
    if clients is None and server is None:
        half = len(usable) // 2
        server, clients = (usable[:half], usable[half:]) if half else (usable, usable)
    elif clients is None:
        assert server is not None
        clients = [c for c in usable if c not in server] or list(server)
    elif server is None:
        server = [c for c in usable if c not in clients] or list(clients)
    shared = sorted(set(server) & set(clients))
    warning = None
    if shared:
        warning = (
            f"server and clients share CPU {format_cpu_list(shared)}: the measurement "
            "includes their competition for it"
        )
    return Placement(server_cpus=server, client_cpus=clients, warning=warning)


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

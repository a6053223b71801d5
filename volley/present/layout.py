"""What ``volley plan`` shows: where volley-bench would run the server, each worker and its
clients, which CPUs it leaves idle, and what the placement costs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from volley.system.cpus import Placement, format_cpu_list, spread
from volley.system.topology import Topology, nodes_of

SHOWN_CLIENTS = 8  # a worker's client ids beyond these are counted, not listed


@dataclass(frozen=True)
class Layout:
    """A placement on a topology, with the clients dealt over the client CPUs."""

    topology: Topology
    placement: Placement
    clients: int
    usable: list[int]

    def workers(self) -> list[tuple[int, list[int]]]:
        """Each worker's CPU and client ids, as the coordinator deals them."""
        groups = spread(self.clients, self.placement.client_cpus)
        return list(zip(self.placement.client_cpus, groups, strict=False))

    def unused(self) -> list[int]:
        """Usable CPUs neither side runs on and that are no sibling of one that does."""
        taken = {*self.placement.server_cpus, *self.placement.client_cpus}
        return [c for c in self.usable if c not in taken and c not in self.placement.idle_siblings]

    def lines(self) -> list[str]:
        p, top = self.placement, self.topology
        workers = self.workers()
        out = [
            f"topology: {top.source}: {top.describe()}",
            f"server: CPU {format_cpu_list(p.server_cpus)} ({nodes_of(top, p.server_cpus)})",
            f"clients: {self.clients} on {len(workers)} worker{'s' if len(workers) != 1 else ''}"
            f", CPU {format_cpu_list(p.client_cpus[: len(workers)])} "
            f"({nodes_of(top, p.client_cpus)})",
        ]
        for index, (cpu, ids) in enumerate(workers):
            shown = ", ".join(map(str, ids[:SHOWN_CLIENTS]))
            more = f", ... ({len(ids)} in all)" if len(ids) > SHOWN_CLIENTS else ""
            plural = "s" if len(ids) > 1 else ""
            out.append(f"  worker {index} on CPU {cpu}: client{plural} {shown}{more}")
        unused = self.unused()
        idle = f"CPU {format_cpu_list(p.idle_siblings)}" if p.idle_siblings else "none"
        out.append(f"idle SMT siblings: {idle}")
        out.append(f"unused: CPU {format_cpu_list(unused)}" if unused else "unused: none")
        out += [f"warning: {w}" for w in p.warnings]
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def to_json(self) -> dict[str, Any]:
        p = self.placement
        return {
            "topology": self.topology.to_json(),
            "server_cpus": p.server_cpus,
            "client_cpus": p.client_cpus,
            "clients": self.clients,
            "workers": [
                {"worker": i, "cpu": cpu, "clients": ids}
                for i, (cpu, ids) in enumerate(self.workers())
            ],
            "idle_siblings": p.idle_siblings,
            "unused_cpus": self.unused(),
            "server_nodes": _nodes(self.topology, p.server_cpus),
            "client_nodes": _nodes(self.topology, p.client_cpus),
            "warnings": list(p.warnings),
        }


def _nodes(topology: Topology, cpus: list[int]) -> list[int]:
    """The NUMA nodes of ``cpus`` (empty when the topology knows none)."""
    return sorted({n for c in cpus if (n := topology.site(c).node) is not None})

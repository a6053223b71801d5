"""What ``volley system`` and ``volley history show`` list: the machine's readiness item by
item, and the configurations with kept sittings, each as a table (``tables``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from volley.measure.history import Kept
from volley.numbers.units import format_ns
from volley.present.tables import Column, columns, table
from volley.system.cpus import format_cpu_list
from volley.system.machine import Item

READINESS_COLUMNS = ["", "item", "state", "why", "fix"]
MARKS = {True: "ok", False: "!!", None: "??"}


def readiness(items: list[Item], console: Console | None = None) -> list[str]:
    """A line per item (a mark, the item, its state, why it matters and, unless it is
    ready, the fix), then how many are not ready."""
    rows = [
        [MARKS[item.ok], item.name, item.state, item.why, "" if item.ok is True else item.fix]
        for item in items
    ]
    bad = sum(1 for i in items if i.ok is False)
    return table(columns(*READINESS_COLUMNS), rows, console) + [
        f"{bad} of {len(items)} items not ready (ok ready, !! not ready, ?? cannot tell)"
        if bad
        else f"ready: nothing off of {len(items)} items (?? cannot tell)"
    ]


SHOWN_MEANS = 5  # a configuration's latest means; the file holds the rest
HISTORY_COLUMNS = [
    Column("server"),
    Column("clients", "right"),
    Column("client CPUs"),
    Column("server CPUs"),
    Column("sittings", "right"),
    Column("last"),
    Column(f"means (last {SHOWN_MEANS})"),
    Column("file"),
]


def _cpus(listed: Any) -> str:
    """A key's CPU list as volley-bench takes it (1-3,8); anything else as it was kept."""
    if isinstance(listed, list) and all(type(c) is int for c in listed):
        return format_cpu_list(listed) or "-"  # none: a server volley did not start
    return "-" if listed is None else str(listed)


def history(where: str, entries: list[Kept], console: Console | None = None) -> list[str]:
    """A line per configuration: server and arguments, clients and CPUs, how many sittings,
    the latest, and their latest means."""
    rows = []
    for entry in entries:
        key, sittings = entry.key, entry.sittings
        means = [format_ns(s.values["mean"]) for s in sittings if s.values.get("mean") is not None]
        # The executable's digest, cut to what tells configurations apart at a glance.
        server = f"{str(key.get('server', '?'))[:16]} {' '.join(key.get('server_args') or [])}"
        rows.append(
            [
                server.rstrip(),
                str(key.get("clients", "?")),
                _cpus(key.get("client_cpus")),
                _cpus(key.get("server_cpus")),
                str(len(sittings)),
                sittings[-1].started_at if sittings else "-",
                ", ".join(means[-SHOWN_MEANS:]) or "-",
                entry.path.name,
            ]
        )
    count = f"{len(entries)} configuration{'s' if len(entries) != 1 else ''} in {where}:"
    return [count, *table(HISTORY_COLUMNS, rows, console)]

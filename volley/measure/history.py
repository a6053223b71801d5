"""Earlier sittings of a configuration on this machine: how much they differ.

A sitting is one invocation of volley-bench. Its runs show how much runs differ within it,
but a machine also changes more slowly than any sitting lasts (on a virtual machine the
host moves the virtual CPUs and shares its cores with other guests; measured in
bench/README.md, "Calibration"): the next sitting's value can lie well outside this one's
interval. No interval from one sitting can see that, so Volley keeps what each sitting of a
configuration measured and widens the next one's intervals by the spread between sittings
that their runs do not explain (``stats.Between``), as a metrologist adds reproducibility
to repeatability. The first sittings have no such history: their intervals cover that
sitting only, and the summary says so.

Sittings are treated as a random-effects meta-analysis (Kalibera & Jones, "Rigorous
benchmarking in reasonable time", ISMM 2013): ``stats.Between`` weighs each earlier sitting
by its runs' variance plus tau2 (Paule-Mandel), leaves out one that is an outlier against
the others, and floors tau2 while the sittings are few (``stats.FLOORED_BELOW``;
bench/calibration/history_sim.py measures the coverage). Before a finished sitting is kept
it is tested against the history's prediction interval (``check``): a sitting outside it
(a CPU hog, another host, a changed machine) is reported as differing and not kept, so it
cannot widen the next sittings' intervals.

A configuration is everything that changes what is measured: the server's executable
(its bytes, not its name), its arguments, clients and CPUs, restart, idle states, warm-up
and run time, open-loop load, the host, its kernel release and CPU model, and the Volley
version. Precision, confidence and time bounds are not in it: they change how long a
sitting lasts, not what it measures. Sittings older than ``MAX_AGE_DAYS`` are ignored:
a machine changes in ways no key sees (firmware, microcode, the host's other guests, a
cloud instance moved to other hardware under one name), and two weeks is long enough
for a history of daily use to reach ``FLOORED_BELOW`` sittings, short enough that the
spread it reports describes the machine as it is now.

The history is one small JSON-lines file per configuration under ``$VOLLEY_HISTORY``
(default ``$XDG_STATE_HOME/volley/sittings``, i.e. ``~/.local/state/volley/sittings``);
``--history off`` (or ``VOLLEY_HISTORY=off``) neither reads nor writes it. Each file keeps
the last ``KEPT`` sittings, rewritten whole through a temporary file; two sittings of one
configuration ending at the same instant may lose one of them, never corrupt the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volley import __version__
from volley.numbers import stats
from volley.numbers.units import STATISTICS, json_keys, statistic_keys
from volley.records.results import FAILED, INTERRUPTED, BenchResult, strict_dumps, write_atomically
from volley.system import machine

if TYPE_CHECKING:  # the coordinator's processes and sockets are not needed for a key
    from volley.engine.coordinator import BenchConfig

OFF = "off"
# Enough sittings to know the spread (19 degrees of freedom), few enough that a machine
# that changed (a kernel update, another host) stops counting after a day of use.
KEPT = 20
MAX_AGE_DAYS = 14
# A sitting more of whose runs than this were disturbed by other work on the pinned CPUs
# (volley.system.noise) is not kept. With fewer than four earlier sittings no outlier can be
# told from the rest (stats._not_outliers), so one sitting taken while other work ran (one
# here: p50 46 us where calm sittings gave 14-19 us) set tau2 for every later sitting:
# "mean 16.8 us ± 366 us". A tenth: one run in a short sitting is bad luck, more is a
# machine in another state.
DISTURBED_SHARE_LIMIT = 0.10
# Each statistic is tested at 1 - 0.05 / 5, so that a consistent sitting is called
# differing in at most about 5% of sittings, whichever of the five statistics it is.
CONSISTENCY_CONFIDENCE = 1 - 0.05 / len(STATISTICS)


def default_place() -> str:
    """Where the history lives unless --history says otherwise."""
    if os.environ.get("VOLLEY_HISTORY"):
        return os.environ["VOLLEY_HISTORY"]
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "volley" / "sittings")


def executable_digest(path: str) -> str:
    """The server's identity: a rebuilt server is another configuration."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def configuration(config: BenchConfig) -> dict[str, Any]:
    """What a sitting of ``config`` measures, as a key: sittings with equal keys measure
    the same thing."""
    return {
        # A server we did not start is known only by its address, and runs on no CPU of ours.
        "server": config.server if config.connect else executable_digest(config.server),
        "server_args": config.server_args,
        "clients": config.clients,
        "client_cpus": config.placement.client_cpus,
        "server_cpus": [] if config.connect else config.placement.server_cpus,
        "restart": config.restart,
        "idle_states": config.idle_states,
        "warmup_s": config.warmup_s,
        "run_time_s": config.run_time_s,
        "rate_ops_s": config.rate_ops_s,
        "arrivals": config.arrivals if config.rate_ops_s is not None else None,
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu_model": machine._cpuinfo()[0],
        "volley": __version__,
    }


@dataclass(frozen=True)
class Sitting:
    """What one sitting measured: each statistic's value and the variance of that value
    its own runs show."""

    started_at: str
    values: dict[str, float]
    within_variances: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "values": json_keys(self.values),
            "within_variances": json_keys(self.within_variances),
        }

    @classmethod
    def of(cls, result: BenchResult) -> Sitting | None:
        """The sitting a result describes; None if it cannot say how much sittings differ
        (failed or interrupted, or fewer than two runs), or must not (a rehearsal, whose
        latencies are not the configuration's)."""
        if result.rehearsal:
            return None
        if result.status in (FAILED, INTERRUPTED) or result.latency_ns is None:
            return None
        if len(result.runs) < 2:
            return None
        values, within = {}, {}
        for name in STATISTICS:
            variance, _ = stats.run_variance([r.value(name) for r in result.runs])
            values[name] = result.latency_ns.value(name)
            within[name] = variance
        return cls(result.started_at, values, within)


def too_disturbed(result: BenchResult) -> str | None:
    """Why a sitting must not be kept because other work disturbed it, or None."""
    measured = [r for r in result.runs if r.noise is not None]
    disturbed = sum(1 for r in measured if r.noise is not None and r.noise.disturbed)
    disturbed += len(result.dropped_runs)
    total = len(measured) + len(result.dropped_runs)
    if total == 0 or disturbed <= DISTURBED_SHARE_LIMIT * total:
        return None
    return f"{disturbed} of its {total} runs were disturbed by other work on the pinned CPUs"


def is_recent(started_at: str, now: datetime | None = None) -> bool:
    """Whether a sitting that started at ``started_at`` (ISO 8601) still counts."""
    try:
        started = datetime.fromisoformat(started_at)
    except (TypeError, ValueError):
        return False
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) - started <= timedelta(days=MAX_AGE_DAYS)


@dataclass(frozen=True)
class Check:
    """A sitting against the history's prediction interval of each statistic."""

    earlier_sittings: int
    between_sittings_ns: dict[str, float]
    prediction_interval_ns: dict[str, tuple[float, float]]
    differs: list[str]  # the statistics outside their prediction interval

    @property
    def consistent(self) -> bool:
        return not self.differs

    def to_json(self) -> dict[str, Any]:
        return {
            "earlier_sittings": self.earlier_sittings,
            "between_sittings_ns": self.between_sittings_ns,
            "consistent": self.consistent,
            "prediction_interval_ns": {k: list(v) for k, v in self.prediction_interval_ns.items()},
            "differs": self.differs,
        }


class History:
    """The earlier sittings of one configuration."""

    def __init__(self, place: str | Path, key: dict[str, Any]) -> None:
        self.key = key
        name = hashlib.sha256(strict_dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        self.path = Path(place) / f"{name}.jsonl"
        self.sittings = self._read()

    def _read(self) -> list[Sitting]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        found = [sitting for sitting in map(_sitting, lines) if sitting is not None]
        return [s for s in found if is_recent(s.started_at)][-KEPT:]

    def between(self) -> dict[str, stats.Between]:
        """For each statistic, how much the earlier sittings differ beyond their runs."""
        found = {}
        for name in STATISTICS:
            # A value its sitting did not know was written null.
            usable = [
                s
                for s in self.sittings
                if s.values.get(name) is not None and s.within_variances.get(name) is not None
            ]
            between = stats.Between.of(
                [s.values[name] for s in usable], [s.within_variances[name] for s in usable]
            )
            if between is not None:
                found[name] = between
        return found

    def check(self, sitting: Sitting) -> Check:
        """``sitting`` against what the earlier ones predict for a further sitting."""
        found = self.between()
        intervals, differs = {}, []
        for name, between in found.items():
            value, within = sitting.values.get(name), sitting.within_variances.get(name)
            if value is None or within is None or not math.isfinite(value + within):
                continue
            low, high = between.predicts(value, within, CONSISTENCY_CONFIDENCE)
            intervals[name] = (low, high)
            if not low <= value <= high:
                differs.append(name)
        return Check(
            len(self.sittings),
            {name: math.sqrt(b.tau2) for name, b in found.items() if b.tau2 > 0},
            intervals,
            differs,
        )

    def add(self, sitting: Sitting) -> None:
        """Keep ``sitting`` (and the last KEPT - 1 before it)."""
        self.sittings = [*self.sittings, sitting][-KEPT:]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(
            strict_dumps({"key": self.key, **s.to_json()}, sort_keys=True) + "\n"
            for s in self.sittings
        )
        write_atomically(self.path, text)


def _sitting(line: str) -> Sitting | None:
    """The sitting on one line of a history file; None for a line from another version of
    the file, or a damaged one: it is no evidence (and the next sitting rewrites the file)."""
    try:
        data = json.loads(line)
        started_at, values, within = data["started_at"], data["values"], data["within_variances"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if not isinstance(started_at, str) or not all(
        isinstance(table, dict) and all(map(_number_or_null, table.values()))
        for table in (values, within)
    ):
        return None
    return Sitting(started_at, statistic_keys(values), statistic_keys(within))


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


@dataclass(frozen=True)
class Kept:
    """One configuration's file in a history place, for ``volley history show``."""

    path: Path
    key: dict[str, Any]
    sittings: list[Sitting]


def kept(place: str | Path) -> list[Kept]:
    """Every configuration with sittings under ``place``, most recent sitting first; a file
    that is not a history of sittings is left out."""
    found = []
    for path in sorted(Path(place).glob("*.jsonl")):
        try:
            first = json.loads(path.read_text().splitlines()[0])
            key = first["key"]
        except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
            continue
        # What ``volley history show`` prints of it must be there to print.
        arguments = key.get("server_args") if isinstance(key, dict) else "no key"
        if not isinstance(arguments, list | None) or not all(
            isinstance(a, str) for a in arguments or []
        ):
            continue
        # The file is named by its key: History(place, key) reads this very file.
        found.append(Kept(path, key, History(place, key).sittings))
    return sorted(found, key=lambda k: max((s.started_at for s in k.sittings), default=""))[::-1]


def clear(place: str | Path) -> int:
    """Forget every sitting under ``place``; how many configurations were forgotten."""
    forgotten = 0
    for entry in kept(place):
        entry.path.unlink(missing_ok=True)
        forgotten += 1
    return forgotten

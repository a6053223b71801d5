"""A sweep's results file (``results.jsonl``): one typed record per point, one loader and one
writer for it.

A line is the point's volley-bench JSON (``volley.records.results.BenchResult``) plus
  ``point``        {server, clients, server_cores, client_cores[, rate_ops_s]
                   [, server_cpu_list, client_cpu_list]}: the name, the numbers of CPUs,
                   the offered rate of an open-loop point, and the CPU lists the
                   experiment named (``Point``; the volley-bench keys
                   ``server_cores``/``client_cores`` are the CPU lists that ran);
  ``exit_status``  volley-bench's exit status (0 significant, 3 not significant, 1 failed);
  ``sweep``        {experiment, file, options[, order, seed, pass]}: where the point came
                   from; an interleaved sweep adds its order and the seed of its shuffles,
                   and each run it keeps in ``runs.jsonl`` the pass it was played in.
A point whose volley-bench failed before it could write JSON has no result: its line is
``status`` "failed", its ``error`` and ``started_at`` besides the three keys above. The
volley-bench keys carry their own ``version`` (``volley.records.results``); a line whose
result is of a version this volley cannot read is an error that names that version.

Every reader (resume, exports, ``volley plot``, ``volley compare``) goes through ``load``;
the sweep writes through ``append``. A line that is not a sweep record (not UTF-8, not
JSON, a key missing, a value of the wrong type, NaN or Infinity) is a StoreError that names
the file, the line and the value; only a last line cut short (no newline after it: a sweep
writing or killed while writing) is passed over with a note.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volley.numbers.units import SweepOrder
from volley.records.experiment import Experiment, Point
from volley.records.results import (
    FAILED,
    BenchResult,
    ResultError,
    loads_strict,
    misfit,
    parse_result,
    strict_dumps,
)

RESULTS_NAME = "results.jsonl"
# Interleaved sweeps: every run played so far, one record each, so --resume can go on with
# the points that were not done.
RUNS_NAME = "runs.jsonl"


class StoreError(ResultError):
    """A results file this volley cannot read; the message names the file, line and why."""


REMEDY = "give a sweep's results.jsonl (volley sweep -o DIR), or remove the line"


@dataclass(frozen=True)
class SweepInfo:
    """Where a point came from: the experiment, its volley-bench options, and its order."""

    experiment: str
    file: str
    options: dict[str, str] = field(default_factory=dict)
    order: str = SweepOrder.SEQUENTIAL
    seed: int | None = None  # interleaved: the seed of the sweep's shuffles
    pass_number: int | None = None  # a run of an interleaved point: the pass it was played in

    @classmethod
    def of(cls, experiment: Experiment, seed: int | None = None) -> SweepInfo:
        return cls(
            experiment.name, str(experiment.path), experiment.options, experiment.order, seed
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "experiment": self.experiment,
            "file": self.file,
            # snake_case like every key Volley writes: max_time for --max-time
            "options": {k.replace("-", "_"): v for k, v in self.options.items()},
        }
        if self.order == SweepOrder.IN_PASSES:  # a sequential sweep's lines stay as they were
            data |= {"order": self.order, "seed": self.seed}
            if self.pass_number is not None:
                data["pass"] = self.pass_number
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepInfo:
        return cls(
            str(data.get("experiment", "")),
            str(data.get("file", "")),
            {str(k).replace("_", "-"): str(v) for k, v in (data.get("options") or {}).items()},
            str(data.get("order", SweepOrder.SEQUENTIAL)),
            data.get("seed"),
            data.get("pass"),
        )


@dataclass(frozen=True)
class SweepRecord:
    """One finished point (or, in ``runs.jsonl``, one run of an interleaved point)."""

    point: Point
    exit_status: int
    sweep: SweepInfo
    result: BenchResult | None  # None: volley-bench failed before it could write one
    error: str | None = None  # why, when there is no result
    started_at: str = ""

    @property
    def status(self) -> str:
        return self.result.status if self.result else FAILED

    @property
    def failure(self) -> str | None:
        """What went wrong, if anything did."""
        return self.result.error if self.result else self.error

    def to_json(self) -> dict[str, Any]:
        if self.result is not None:
            data = self.result.to_json()
        else:
            data = {"status": FAILED, "error": self.error, "started_at": self.started_at}
        data["point"] = self.point.to_json()
        data["exit_status"] = self.exit_status
        data["sweep"] = self.sweep.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "a sweep record") -> SweepRecord:
        """The record in a line's JSON; ResultError (naming ``where``) for a result this
        volley cannot read, KeyError, TypeError or ValueError for a line that is not a sweep
        record."""
        point = Point.from_json(data["point"])
        sweep = SweepInfo.from_json(data.get("sweep") or {})
        exit_status = data["exit_status"]
        # Without workers volley-bench never ran far enough to write a result (earlier
        # sweeps wrote such lines with a few result keys filled in; they read the same).
        if "workers" not in data and data.get("status") == FAILED:
            return cls(
                point, exit_status, sweep, None, data.get("error"), data.get("started_at", "")
            )
        return cls(point, exit_status, sweep, parse_result(data, where))


def load(path: Path) -> tuple[list[SweepRecord], list[str]]:
    """Every record of a results file in order, and a note if its last line was cut short
    (a sweep writing it, or killed while it did: ``--resume`` drops it). StoreError, naming
    the file and line, for anything else it cannot read."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror}") from None
    lines = raw.split(b"\n")
    records: list[SweepRecord] = []
    notes: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(parse_line(line, f"{path}:{number}"))
        except StoreError:
            if number < len(lines) or _is_json(line):
                raise
            notes.append(f"{path}:{number}: an incomplete last line (not yet written?); ignored")
    return records, notes


def parse_line(line: bytes, where: str) -> SweepRecord:
    """One line of a results file; StoreError naming ``where`` if it is not a sweep record."""
    try:
        data = loads_strict(line, where, REMEDY)
        if not isinstance(data, dict) or "point" not in data:
            raise ResultError(f"{where}: not a sweep record (it has no point); {REMEDY}")
        try:
            record = SweepRecord.from_json(data, where)
        except ResultError:
            raise
        except KeyError as e:
            raise ResultError(f"{where}: no {e.args[0]!r}: not a sweep record; {REMEDY}") from None
        except (TypeError, AttributeError, ValueError, ArithmeticError) as e:
            detail = " ".join(str(e).split())[:120]
            raise ResultError(f"{where}: a value of the wrong kind ({detail}); {REMEDY}") from None
        problem = misfit(record)
        if problem:
            raise ResultError(f"{where}: {problem}; {REMEDY}")
        return record
    except ResultError as e:
        raise StoreError(str(e)) from None


def _is_json(line: bytes) -> bool:
    try:
        loads_strict(line, "", "")
    except ResultError:
        return False
    return True


def append(path: Path, record: SweepRecord) -> None:
    """Append one line and make it durable before the next point starts."""
    line = strict_dumps(record.to_json(), separators=(",", ":")) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


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


def latest(records: list[SweepRecord]) -> dict[Point, SweepRecord]:
    """One record per point: a point recorded twice counts with its later line."""
    return {record.point: record for record in records}


def totals(records: list[SweepRecord]) -> str:
    """``"40 significant, 2 not significant"``: the statuses in a results file."""
    counts: dict[str, int] = {}
    for record in records:
        status = record.status.replace("-", " ")
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"

"""``volley check``: does a server keep the contract of the README's "Contributing servers"?

The checks are in ``volley.studies.contract``. The runner starts the server the way volley-bench
does (pinned, on a free port, with a bounded wait for it to listen), gives a check a fresh
server when the one before ended it or failed, and kills whatever is left at the end. Every
wait is bounded, so a broken server fails a check instead of hanging it.

JSON format history (``version``):
  1  first format: server, command, passed, total, checks (one CheckResult each), notes.
  2  each check has ``advisory``; ``passed``, ``total`` and ``all_passed`` count only the
     checks that are not advisory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from volley import __version__
from volley.engine import server
from volley.records.results import strict_dumps
from volley.studies.contract import CHECKS, Check
from volley.studies.probe import Failed, Target, exit_status

FORMAT_VERSION = 2


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    verdict: str
    sent: str = ""
    expected: str = ""
    received: str = ""
    elapsed_s: float = 0.0
    advisory: bool = False  # shown, not counted


@dataclass(frozen=True)
class CheckRun:
    server: str
    command: list[str]
    results: list[CheckResult]
    notes: list[str] = field(default_factory=list)

    @property
    def counted(self) -> list[CheckResult]:
        return [r for r in self.results if not r.advisory]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.counted)

    @property
    def total(self) -> int:
        return len(self.counted)

    @property
    def all_passed(self) -> bool:
        return self.passed == self.total

    @property
    def advice(self) -> list[CheckResult]:
        return [r for r in self.results if r.advisory and not r.passed]


# --- running ---------------------------------------------------------------------------------


def select(only: list[str] | None, connect: bool) -> list[Check]:
    """The checks to run, in table order; ValueError for an unknown name."""
    names = [n.strip() for item in only or [] for n in item.split(",") if n.strip()]
    if only is not None and not names:
        raise ValueError(f"--only names no check; the checks are: {', '.join(CHECKS)}")
    for name in names:
        if name not in CHECKS:
            raise ValueError(f"--only: unknown check {name!r}; the checks are: {', '.join(CHECKS)}")
    chosen = [c for c in CHECKS.values() if not names or c.name in names]
    if connect:
        needing = [c.name for c in chosen if c.needs_binary]
        if names and needing:
            runnable = ", ".join(c.name for c in CHECKS.values() if not c.needs_binary)
            raise ValueError(
                f"check {needing[0]} needs SERVER, not --connect (it starts or "
                f"ends the server); with --connect these run: {runnable}"
            )
        chosen = [c for c in chosen if not c.needs_binary]
    return chosen


def attempt(check: Check, target: Target) -> tuple[str, Failed | None]:
    """Run one check: its verdict if it passed, else how it failed."""
    try:
        return check.run(target), None
    except Failed as f:
        return "", f
    except (server.ServerError, OSError) as e:
        return "", Failed(str(e))


def run_one(check: Check, target: Target) -> CheckResult:
    began = time.monotonic()
    target.current_check = check.name
    for again in (False, True):
        inherited = target.process
        verdict, failure = attempt(check, target)
        if failure is None:
            break
        status = exit_status(target.process)
        if status is None:
            break
        if not failure.exit_told:
            failure.verdict += f" (the server exited with {server.describe_status(status)})"
            failure.exit_told = True
        if again or inherited is None or target.process is not inherited:
            break
        # It may have been dying of what the check before did (say, it exits when a connection
        # closes): that is the reconnect check's to find, so this one gets a server of its own.
        target.exits.append(f"{check.name} ({server.describe_status(status)})")
        target.retire()
    elapsed_s = round(time.monotonic() - began, 4)
    if failure is None:
        return CheckResult(check.name, True, verdict, "", "", "", elapsed_s, check.advisory)
    target.retire()  # the next check gets a fresh server, not this one's state
    f = failure
    return CheckResult(
        check.name, False, f.verdict, f.sent, f.expected, f.received, elapsed_s, check.advisory
    )


def run(
    checks: list[Check],
    target: Target,
    on_result: Callable[[CheckResult], None] | None = None,
) -> CheckRun:
    """Run ``checks`` against ``target``, a server at a path (or running at an address).
    Kills everything it started before returning, also when interrupted (SIGINT or
    SIGTERM)."""
    path, args, address = target.path, target.args, target.fixed
    results: list[CheckResult] = []
    with server.stop_signals():
        try:
            for c in checks:
                results.append(run_one(c, target))
                if on_result:
                    on_result(results[-1])
        finally:
            target.retire()
    notes = []
    if target.exits:
        notes.append(
            f"the server had exited on its own when these checks began or soon after, so "
            f"they ran (again) on a fresh server: {', '.join(target.exits)}"
        )
    if address:
        skipped = [c.name for c in CHECKS.values() if c.needs_binary]
        notes.append(f"not run with --connect (they start or end the server): {', '.join(skipped)}")
    server_name = path if path else "{}:{}".format(*address) if address else ""
    command = [path, "-p", "PORT", *args] if path else []
    return CheckRun(server_name, command, results, notes)


def listing() -> str:
    width = max(len(name) for name in CHECKS)
    return "\n".join(
        f"{c.name:<{width}}  {c.description}{'' if c.needs_binary else '  (also --connect)'}"
        for c in CHECKS.values()
    )


class Formatter:
    """Lines for each result as it comes: an aligned table, or a plain list for pipes."""

    def __init__(self, checks: list[Check], table: bool):
        self.table = table
        self.width = max([len(c.name) for c in checks] + [len("check")])

    def header(self) -> list[str]:
        if not self.table:
            return []
        w = self.width
        return [
            f"{'check':<{w}}  result  {'time':>8}  verdict",
            f"{'-' * w}  ------  {'-' * 8}  {'-' * 7}",
        ]

    def result(self, r: CheckResult) -> list[str]:
        mark = "pass" if r.passed else "note" if r.advisory else "FAIL"
        details = [
            (k, v)
            for k, v in (("sent", r.sent), ("expected", r.expected), ("received", r.received))
            if v
        ]
        if self.table:
            indent = " " * (self.width + 20)
            lines = [f"{r.name:<{self.width}}  {mark:<6}  {r.elapsed_s:>6.2f} s  {r.verdict}"]
            return lines + [f"{indent}{k + ':':<10}{v}" for k, v in details]
        lines = [f"{mark.upper()} {r.name}: {r.verdict} ({r.elapsed_s:.2f} s)"]
        return lines + [f"    {k + ':':<10}{v}" for k, v in details]

    def summary(self, run: CheckRun) -> list[str]:
        notes = [f"note: {n}" for n in run.notes]
        advice = run.advice
        if advice:
            names = ", ".join(r.name for r in advice)
            notes.append(f"note: advice only, not counted: {names}")
        return notes + [f"{run.passed}/{run.total} checks passed"]


def dumps(run: CheckRun) -> str:
    data = {
        "version": FORMAT_VERSION,
        "volley_version": __version__,
        "server": run.server,
        "command": run.command,
        "passed": run.passed,
        "total": run.total,
        "all_passed": run.all_passed,
        "checks": [asdict(r) for r in run.results],
        "notes": run.notes,
    }
    return strict_dumps(data, indent=2) + "\n"

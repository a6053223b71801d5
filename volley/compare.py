"""volley compare: is B faster than A, and is the difference real?

The evidence is the runs. A result of format 2 holds one value of each statistic (the mean,
p50, p90, p99, p99.9) per run, each run a fresh server with fresh connections; the spread
between runs is what a second measurement of the same server would show. Ops within one
run are not independent evidence (they share that server instance): they give a result its
value, the runs give that value its uncertainty, as in the result's own intervals.

For each statistic, B - A is the difference of the two results' values (each over all its
ops, as the table shows them) and its interval is Welch's t interval: each side's variance
is its run values' (long-run) variance over its run count, the one that sizes the result's
own interval (so a drifting machine widens both), and the degrees of freedom are
Welch-Satterthwaite's (fractional), because two servers need not vary alike from run to
run. The ratio B/A gets Fieller's interval with the same degrees of freedom, not the delta
method: Fieller's set {rho : |B - rho A| <= t se(rho)} contains 1 exactly when the
difference's interval contains 0, so the ratio and the difference never disagree about the
verdict, and it stays right when there are few runs and the baseline's own uncertainty is
not small (the delta method linearises it away). A verdict needs MIN_RUNS runs on each
side; results of format 1 have none.

Results of one ``volley compare --run`` are paired: run i of each side was played in round i,
seconds apart, on the same machine. There B - A is the mean of the per-round differences
and its variance theirs (long-run) over their count, df = rounds - 1, so that whatever a
round's two runs shared (the machine slowing down, another user's burst) cancels instead of
widening both sides; Welch's interval would only have kept it out of the difference's
centre. The ratio is Fieller's set for paired data (every rho for which the rounds'
b_i - rho a_i do not tell B - rho A apart from zero), and so still agrees with the
difference about the verdict. Sides with unequal run counts (a comparison that failed
mid-round) are compared as unpaired.

Two results are compared only when what was asked of the servers is the same (clients,
client and server CPU counts, what each run restarted, the load model) and neither failed;
``force`` compares anyway and lists what differs. Sweeps (``DIR/results.jsonl``) are
compared point by point.

JSON output (``--json``), format history (``version``):
  1  first format.
  2  each row says whether it is ``paired`` (by round: ``--run``), which its df follows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from volley import store
from volley.experiment import Point
from volley.machine import Environment
from volley.results import FAILED, BenchResult, finite
from volley.stats import Between, Estimate, RunMean, difference, paired, ratio, welch_df
from volley.store import RESULTS_NAME
from volley.units import STATISTICS, BadInput, Target, format_ns, parse_target

FORMAT_VERSION = 2
MIN_RUNS = 3  # with fewer, the spread between runs is a guess, not an estimate

FASTER = "faster"
SLOWER = "slower"
NO_DIFFERENCE = "no significant difference"
TOO_FEW_RUNS = "not enough runs to tell"
CLOSED_LOOP = "closed loop"


# --- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One statistic of B against A. Lower latency is faster."""

    statistic: str
    baseline: Estimate  # the result's own value and interval
    subject: Estimate
    baseline_runs: int
    subject_runs: int
    verdict: str
    difference_ns: Estimate | None = None  # None: not enough runs
    ratio: Estimate | None = None
    df: float | None = None
    paired: bool = False  # run i of each side from round i of one interleaved comparison


def compare_statistic(
    statistic: str,
    baseline: BenchResult,
    subject: BenchResult,
    confidence: float,
    rounds: bool = False,
) -> Row:
    """``rounds``: the two results come from one interleaved comparison, run i of each
    from round i; compared paired when their runs match up."""
    shown_a, shown_b = reported(baseline, statistic), reported(subject, statistic)
    matched = matched_runs(baseline, subject, statistic) if rounds else None
    a_values, b_values = matched or (
        run_values(baseline, statistic),
        run_values(subject, statistic),
    )
    # Paired, B - A is the mean of the rounds' differences, not the difference of the values
    # shown: under a step in the machine's speed a percentile over all ops sits between the
    # two regimes, where a slightly different share of ops on each side moves it far (a 17 us
    # "difference" between identical servers, measured with a 60 us step).
    a = RunMean.of(a_values, math.nan if matched else shown_a.value)
    b = RunMean.of(b_values, math.nan if matched else shown_b.value)
    if not matched:  # two sittings: each differs from its next sitting as its history says
        a = replace(a, between=between_sittings(baseline, statistic))
        b = replace(b, between=between_sittings(subject, statistic))
    row = Row(
        statistic,
        shown_a,
        shown_b,
        a.runs,
        b.runs,
        TOO_FEW_RUNS,
    )
    if min(a.runs, b.runs) < MIN_RUNS:
        return row
    if matched:
        d, r, df = paired(a, b, a_values, b_values, confidence)
    else:
        d, r, df = difference(a, b, confidence), ratio(a, b, confidence), welch_df(a, b)
    verdict = SLOWER if d.low > 0 else FASTER if d.high < 0 else NO_DIFFERENCE
    return Row(
        statistic,
        row.baseline,
        row.subject,
        a.runs,
        b.runs,
        verdict,
        d,
        r,
        df,
        bool(matched),
    )


def between_sittings(result: BenchResult, statistic: str) -> Between | None:
    """How much sittings of the result's configuration differ, as its history said."""
    tau = result.between_sittings_ns.get(statistic)
    sittings = result.earlier_sittings or 0
    return Between(tau * tau, sittings) if tau and sittings >= 2 else None


def run_values(result: BenchResult, statistic: str) -> list[float]:
    """The statistic of each run; a run that measured nothing has none to give."""
    values = (run.value(statistic) for run in result.runs)
    return [value for value in values if math.isfinite(value)]


def matched_runs(
    baseline: BenchResult, subject: BenchResult, statistic: str
) -> tuple[list[float], list[float]] | None:
    """The statistic of each round's two runs, for results of one interleaved comparison
    (without a value, a round gives neither side one); None when the run counts differ."""
    if len(baseline.runs) != len(subject.runs):
        return None
    pairs = [
        (a, b)
        for a, b in zip(
            (run.value(statistic) for run in baseline.runs),
            (run.value(statistic) for run in subject.runs),
            strict=True,
        )
        if math.isfinite(a) and math.isfinite(b)
    ]
    return [a for a, _ in pairs], [b for _, b in pairs]


def reported(result: BenchResult, statistic: str) -> Estimate:
    if result.latency_ns is None:
        return Estimate(math.nan, math.nan, math.nan)
    return Estimate(result.latency_ns.value(statistic), *result.latency_ns.interval(statistic))


# --- what must match -----------------------------------------------------------------------


def load_model(result: BenchResult) -> str:
    """How the clients loaded the server. Only a closed loop exists (each client waits for
    its reply); an open loop at a request rate will read that result's ``rate`` here."""
    rate = getattr(result, "rate", None)
    return CLOSED_LOOP if rate is None else f"open loop at {rate:g} ops/s"


def configuration(result: BenchResult) -> dict[str, int | str | None]:
    """What must be equal for two results to be compared (the servers themselves may differ).
    Keys are what a person reads in the error; None is "not recorded"."""
    return {
        "clients": result.clients,
        "client CPUs": len(result.client_cores),
        # --connect records no server CPUs: unknown, which matches only another unknown.
        "server CPUs": len(result.server_cores) or None,
        "restart": result.restart,
        "load": load_model(result),
        # Deep idle states add their exit time to replies: tens of microseconds on a VM.
        "idle states": result.host.idle_states,
    }


@dataclass(frozen=True)
class Mismatch:
    field: str
    baseline: int | str | None
    subject: int | str | None

    def __str__(self) -> str:
        def spell(value: int | str | None) -> str:
            return "not recorded" if value is None else str(value)

        return f"{self.field} {spell(self.baseline)} vs {spell(self.subject)}"


def mismatches(baseline: BenchResult, subject: BenchResult) -> list[Mismatch]:
    """What differs between two results. A failed result may not have recorded its
    configuration (a sweep point that never started): its failure is the one thing said."""
    if FAILED in (baseline.status, subject.status):
        return []
    a, b = configuration(baseline), configuration(subject)
    return [Mismatch(key, a[key], b[key]) for key in a if a[key] != b[key]]


# --- results and sweeps --------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    path: Path
    results: dict[Point, BenchResult]
    notes: list[str] = field(default_factory=list)


def load(path: Path) -> BenchResult | Sweep:
    """A volley-bench result (A.json), or a sweep: DIR or DIR/results.jsonl."""
    if path.is_dir():
        path = path / RESULTS_NAME
    if path.suffix == ".jsonl":
        return load_sweep(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput(f"{path} is not JSON (a volley-bench --json result)") from None
    try:
        return BenchResult.from_json(data)
    except ValueError as e:
        raise BadInput(f"{path}: {e}") from None
    except (KeyError, TypeError, AttributeError):
        raise BadInput(f"{path} is not a volley-bench result") from None


def load_sweep(path: Path) -> Sweep:
    try:
        records, notes = store.load(path)
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from None
    except store.StoreError as e:
        raise BadInput(str(e)) from None
    results = {
        point: record.result or failed_before_measuring(record)
        for point, record in store.latest(records).items()
    }
    return Sweep(path, results, notes)


def failed_before_measuring(record: store.SweepRecord) -> BenchResult:
    """A sweep point whose volley-bench failed before it wrote a result, as a result that
    says so (compared with nothing: its failure is the one thing said)."""
    return BenchResult(
        status=FAILED,
        server=record.point.server,
        server_args=[],
        clients=record.point.clients,
        client_cores=[],
        server_cores=[],
        n=0,
        rounds=0,
        elapsed_s=0.0,
        measured_s=0.0,
        throughput_ops_s=0.0,
        confidence=math.nan,
        precision="",
        ci_batches=0,
        latency_ns=None,
        workers=[],
        host=Environment(kernel="", cpu_model="", cpus=0),
        started_at=record.started_at,
        warmup_s=0.0,
        error=record.error,
    )


@dataclass(frozen=True)
class Comparison:
    """One result against its baseline: a pair of result files, or one point of two sweeps."""

    baseline: BenchResult
    subject: BenchResult
    point: Point | None
    mismatches: list[Mismatch]
    rows: list[Row]

    def row(self, statistic: str) -> Row:
        return next(row for row in self.rows if row.statistic == statistic)


@dataclass(frozen=True)
class Pairing:
    """One file (B) against the baseline file (A)."""

    baseline_path: Path
    subject_path: Path
    sweep: bool
    comparisons: list[Comparison]
    only_baseline: list[Point] = field(default_factory=list)
    only_subject: list[Point] = field(default_factory=list)


def parse_gate(text: str) -> Target:
    """--fail-if-slower, spelled like a precision target: ``2%`` (of the mean), ``p99:5%``,
    ``p99.9:20us``. B trips it when significantly slower than A, by more than that."""
    return parse_target(text, "--fail-if-slower")


def trips(gate: Target, row: Row) -> bool:
    if row.verdict != SLOWER or row.ratio is None or row.difference_ns is None:
        return False
    if gate.relative is not None:
        return row.ratio.value - 1 > gate.relative
    return row.difference_ns.value > gate.half_width_ns(row.baseline.value)


@dataclass(frozen=True)
class Report:
    confidence: float
    pairings: list[Pairing]
    forced: bool
    gates: list[Target]
    notes: list[str] = field(default_factory=list)

    def comparisons(self) -> list[tuple[Pairing, Comparison]]:
        return [(p, c) for p in self.pairings for c in p.comparisons]

    def tripped(self) -> list[str]:
        """One line per gate that a comparison trips: significantly slower, by more."""
        lines = []
        for gate in self.gates:
            for pairing, comparison in self.comparisons():
                row = comparison.row(gate.statistic)
                if not trips(gate, row):
                    continue
                assert row.ratio is not None and row.difference_ns is not None
                by, interval = (
                    (f"{(row.ratio.value - 1) * 100:.1f}%", format_percent(row.ratio))
                    if gate.relative is not None
                    else (
                        format_ns(row.difference_ns.value),
                        format_estimate(row.difference_ns, True),
                    )
                )
                lines.append(
                    f"{subject_name(pairing, comparison)}: {gate.statistic} is {by} slower than "
                    f"the baseline ({interval} at {self.confidence:.0%}), more than "
                    f"--fail-if-slower {gate}"
                )
        return lines


def compare_files(
    paths: Sequence[Path],
    confidence: float,
    force: bool = False,
    gates: Sequence[Target] = (),
    rounds: bool = False,
) -> Report:
    """Compare every file after the first with the first; ``rounds``: the results of one
    interleaved comparison, compared paired. BadInput (exit 2) for files that cannot be
    compared, unless ``force``."""
    if len(paths) < 2:
        raise BadInput("give at least two results: the baseline A, then B (and more)")
    loaded = [load(path) for path in paths]
    kinds = {isinstance(item, Sweep) for item in loaded}
    if len(kinds) > 1:
        raise BadInput("give either results (A.json) or sweeps (DIR/results.jsonl), not both")
    pairings = [
        pair(paths[0], loaded[0], path, item, confidence, rounds)
        for path, item in zip(paths[1:], loaded[1:], strict=True)
    ]
    report = Report(
        confidence,
        pairings,
        force,
        list(gates),
        [note for item in loaded if isinstance(item, Sweep) for note in item.notes],
    )
    for pairing, comparison in report.comparisons():
        found = problems(pairing, comparison)
        if found and not force:
            where = f" at {comparison.point}" if comparison.point else ""
            raise BadInput(
                f"cannot compare {pairing.subject_path} with {pairing.baseline_path}{where}: "
                + "; ".join(found)
                + "; --force compares anyway"
            )
    for gate in gates:
        for pairing, comparison in report.comparisons():
            row = comparison.row(gate.statistic)
            if row.verdict == TOO_FEW_RUNS:
                raise BadInput(
                    f"--fail-if-slower {gate} cannot decide {subject_name(pairing, comparison)}: "
                    f"it needs {MIN_RUNS} runs on each side and has {row.baseline_runs} "
                    f"(baseline) and {row.subject_runs}"
                )
    return report


def problems(pairing: Pairing, comparison: Comparison, short: bool = False) -> list[str]:
    """Why the two should not be compared: what differs, and a side that failed. ``short``
    names the sides A and B and leaves out the error (for a table cell)."""
    found = [str(m) for m in comparison.mismatches]
    for name, path, result in (
        ("A", pairing.baseline_path, comparison.baseline),
        ("B", pairing.subject_path, comparison.subject),
    ):
        if result.status == FAILED:
            error = f" ({result.error})" if result.error and not short else ""
            found.append(f"{name if short else path} failed{error}")
    return found


def pair(
    baseline_path: Path,
    baseline: BenchResult | Sweep,
    subject_path: Path,
    subject: BenchResult | Sweep,
    confidence: float,
    rounds: bool = False,
) -> Pairing:
    if isinstance(baseline, BenchResult) and isinstance(subject, BenchResult):
        comparison = compare_results(baseline, subject, confidence, rounds=rounds)
        return Pairing(baseline_path, subject_path, False, [comparison])
    assert isinstance(baseline, Sweep) and isinstance(subject, Sweep)
    common = sorted(set(baseline.results) & set(subject.results))
    return Pairing(
        baseline.path,
        subject.path,
        True,
        [compare_results(baseline.results[p], subject.results[p], confidence, p) for p in common],
        sorted(set(baseline.results) - set(subject.results)),
        sorted(set(subject.results) - set(baseline.results)),
    )


def compare_results(
    baseline: BenchResult,
    subject: BenchResult,
    confidence: float,
    point: Point | None = None,
    rounds: bool = False,
) -> Comparison:
    return Comparison(
        baseline,
        subject,
        point,
        mismatches(baseline, subject),
        [compare_statistic(s, baseline, subject, confidence, rounds) for s in STATISTICS],
    )


# --- output --------------------------------------------------------------------------------


def server_name(result: BenchResult) -> str:
    return " ".join([Path(result.server).name or result.server, *result.server_args])


def subject_name(pairing: Pairing, comparison: Comparison) -> str:
    if comparison.point is not None:
        return f"{pairing.subject_path} ({comparison.point})"
    return str(pairing.subject_path)


def _unit(ns: float) -> tuple[str, float]:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return unit, scale
    return "ns", 1.0


def format_estimate(estimate: Estimate, signed: bool = False) -> str:
    """``63.09 us [62.00, 64.19]``: the interval in the value's unit."""
    if not math.isfinite(estimate.value):
        return "?"
    unit, scale = _unit(estimate.value)
    decimals = 1 if abs(estimate.value) >= 100 * scale else 2
    sign = "+" if signed else ""

    def number(x: float) -> str:
        return f"{x / scale:{sign}.{decimals}f}" if math.isfinite(x) else "?"

    text = f"{number(estimate.value)} {unit}"
    if math.isnan(estimate.low) and math.isnan(estimate.high):
        return text
    return f"{text} [{number(estimate.low)}, {number(estimate.high)}]"


def format_ratio(estimate: Estimate | None) -> str:
    if estimate is None:
        return "-"

    def number(x: float) -> str:
        return f"{x:.3f}" if math.isfinite(x) else "unbounded"

    return f"{number(estimate.value)} [{number(estimate.low)}, {number(estimate.high)}]"


def format_percent(estimate: Estimate) -> str:
    """A ratio as a change: ``+3.1% [+2.0%, +4.2%]``."""

    def number(x: float) -> str:
        return f"{(x - 1) * 100:+.1f}%" if math.isfinite(x) else "unbounded"

    return f"{number(estimate.value)} [{number(estimate.low)}, {number(estimate.high)}]"


def _estimate_json(estimate: Estimate | None, unit: str) -> dict[str, float] | None:
    if estimate is None:
        return None
    return {
        f"value{unit}": estimate.value,
        f"low{unit}": estimate.low,
        f"high{unit}": estimate.high,
    }


def _side_json(path: Path, result: BenchResult) -> dict[str, Any]:
    return {
        "file": str(path),
        "server": result.server,
        "server_args": result.server_args,
        "status": result.status,
        "error": result.error,
        "runs": len(result.runs),
        "configuration": configuration(result),
    }


def to_json(report: Report) -> str:
    """Strict JSON, versioned (FORMAT_VERSION above); latencies in nanoseconds."""
    data = {
        "version": FORMAT_VERSION,
        "confidence": report.confidence,
        "min_runs": MIN_RUNS,
        "forced": report.forced,
        "pairings": [
            {
                "baseline": str(pairing.baseline_path),
                "subject": str(pairing.subject_path),
                "sweep": pairing.sweep,
                "comparisons": [
                    {
                        "point": c.point.to_json() if c.point else None,
                        "baseline": _side_json(pairing.baseline_path, c.baseline),
                        "subject": _side_json(pairing.subject_path, c.subject),
                        "mismatches": [
                            {"field": m.field, "baseline": m.baseline, "subject": m.subject}
                            for m in c.mismatches
                        ],
                        "rows": [
                            {
                                "statistic": row.statistic,
                                "baseline": {
                                    **(_estimate_json(row.baseline, "_ns") or {}),
                                    "runs": row.baseline_runs,
                                },
                                "subject": {
                                    **(_estimate_json(row.subject, "_ns") or {}),
                                    "runs": row.subject_runs,
                                },
                                "difference_ns": _estimate_json(row.difference_ns, ""),
                                "ratio": _estimate_json(row.ratio, ""),
                                "df": row.df,
                                "paired": row.paired,
                                "verdict": row.verdict,
                            }
                            for row in c.rows
                        ],
                    }
                    for c in pairing.comparisons
                ],
                "only_baseline": [p.to_json() for p in pairing.only_baseline],
                "only_subject": [p.to_json() for p in pairing.only_subject],
            }
            for pairing in report.pairings
        ],
        "gates": [str(gate) for gate in report.gates],
        "tripped": report.tripped(),
    }
    # Strict JSON: an unknown or open bound is null, never NaN or Infinity.
    return json.dumps(finite(data), indent=2, allow_nan=False) + "\n"


def resolved(
    baseline: BenchResult, subject: BenchResult, confidence: float, equivalence: float
) -> bool:
    """Whether the runs so far answer "is B's mean different from A's?": the difference's
    interval (paired by round) excludes zero, or lies within ± ``equivalence`` of A's mean
    (no difference larger than that). For interleaved A/B runs, which stop when every pair
    is resolved."""
    d = compare_statistic("mean", baseline, subject, confidence, rounds=True).difference_ns
    if d is None or not (math.isfinite(d.low) and math.isfinite(d.high)):
        return False
    if d.low > 0 or d.high < 0:
        return True
    margin = equivalence * baseline.latency_ns.mean if baseline.latency_ns else 0.0
    return -margin <= d.low and d.high <= margin

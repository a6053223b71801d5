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
not small (the delta method linearises it away). A verdict needs MIN_RUNS_PER_SIDE runs on each
side; results of format 1 have none.

Results of one ``volley compare --run`` are paired: run i of each side was played in round i,
seconds apart, on the same machine. There B - A is the mean of the per-round differences
and its variance theirs (long-run) over their count, df = rounds - 1, so that whatever a
round's two runs shared (the machine slowing down, another user's burst) cancels instead of
widening both sides; Welch's interval would only have kept it out of the difference's
centre. The ratio is Fieller's set for paired data (every rho for which the rounds'
b_i - rho a_i do not tell B - rho A apart from zero), and so still agrees with the
difference about the verdict. Sides with unequal run counts (results not from one
``--run``, whose rounds count only when complete) are compared as unpaired.

Verdicts control their error as a family. A comparison says up to five things (mean, p50,
p90, p99, p99.9), and five tests at 5% each call identical servers different somewhere in
about one comparison in eight. The error ``alpha`` = 1 - ``confidence`` is shared out in a
weighted Bonferroni family: the mean, the primary statistic, has alpha/2, each percentile
alpha/8, so that the chance of any false "faster" or "slower" in a comparison is at most
alpha whatever the statistics' correlation. Each row's interval is shown at its own level
(``Row.level``: 97.5% for the mean and 99.375% for a percentile at the default 95%) and its
verdict is that interval's, so the two never disagree.

Results of one ``volley compare --run`` also record the group-sequential plan their rounds
were judged by (``volley.numbers.sequential``: a few looks, alpha spent over them) and the look at
which they stopped. Compared again, such results are compared paired, each row at what
that look may spend of the row's share: the verdict is the one the plan reached, not a
fresh test of the final data as if it had been planned. At that look the mean can also be
"equivalent": the interval at 1 - 2 x its error (two one-sided tests) lies within
± the comparison's ``--equivalence`` share of A's mean. Results without that record (files
from volley-bench, or older ``--run`` results) are compared as one look.

``--fail-if-slower`` (``trips``) fails a comparison when the statistic's verdict is "slower"
under that family rule AND its point estimate is slower by more than the gate. It can only
trip when the row's own, family-controlled verdict is "slower", so between identical servers
it trips in at most the row's share of alpha (half of it: "slower", not "faster"), and gates
on every statistic together in at most alpha/2.

Two results are compared only when what was asked of the servers is the same (clients,
client and server CPU counts, what each run restarted, the load model) and neither failed;
``force`` compares anyway and lists what differs. Sweeps (``DIR/results.jsonl``) are
compared point by point: each point is its own family.

JSON output (``--json``), format history (``version``):
  1  first format.
  2  each row says whether it is ``paired`` (by round: ``--run``), which its df follows.
  3  ``family``: the error rule (alpha, each statistic's share, and the rule in words);
     each row's ``level``, the confidence of its intervals (its verdict's); each
     comparison's ``sequential`` (the plan and looks of a ``--run``, or null); a verdict
     may be ``equivalent``.
  4  snake_case keys: ``family.shares`` has ``p99_9`` (was ``p99.9``), each side's
     ``configuration`` ``client_cpus``, ``server_cpus`` and ``idle_states`` (were
     ``client CPUs`` ...); a row's ``statistic`` and a mismatch's ``field`` are values and
     stay as a person reads them (``p99.9``, ``client CPUs``).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from volley.numbers import sequential
from volley.numbers.sequential import Looks
from volley.numbers.stats import Between, Estimate, RunMean, difference, paired, ratio, welch_df
from volley.numbers.units import STATISTICS, BadInput, Target, format_ns, json_keys, parse_target
from volley.records import store
from volley.records.experiment import Point
from volley.records.results import (
    FAILED,
    NOT_SIGNIFICANT,
    OPEN,
    SIGNIFICANT,
    BenchResult,
    RunSummary,
    finite,
    read_result,
    refuse_rehearsal,
)
from volley.records.store import RESULTS_NAME
from volley.system.machine import Environment

FORMAT_VERSION = 4
MIN_RUNS_PER_SIDE = 3  # with fewer, the spread between runs is a guess, not an estimate

FASTER = "faster"
SLOWER = "slower"
EQUIVALENT = "equivalent"
NO_DIFFERENCE = "no significant difference"
TOO_FEW_RUNS = "not enough runs to tell"
CLOSED_LOOP = "closed loop"

PRIMARY = "mean"
# Each statistic's share of a comparison's error: the primary half, the percentiles the rest.
SHARES = {PRIMARY: 0.5, **{name: 0.5 / (len(STATISTICS) - 1) for name in STATISTICS[1:]}}


# --- the error of a comparison's verdicts --------------------------------------------------


def percent(share: float) -> str:
    """0.00625 -> "0.625%"."""
    return f"{share * 100:.4g}%"


def format_level(level: float) -> str:
    """A confidence with three significant digits of its error: 0.99375 -> "99.375%",
    0.99998 -> "99.998%", never a rounded "100%"."""
    error = 100 * (1 - level)
    if not error > 0:
        return f"{level * 100:g}%"
    digits = max(0, 2 - math.floor(math.log10(error)))
    text = f"{level * 100:.{digits}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "%"


def family_alpha(confidence: float) -> float:
    """The family's error: 1 - confidence, without the float's tail (0.95 -> 0.05)."""
    return round(1 - confidence, 12)


@dataclass(frozen=True)
class Family:
    """How the error ``alpha`` of one comparison's verdicts is shared among its rows
    (weighted Bonferroni), and spent at the look where a sequential comparison stopped."""

    alpha: float
    looks: Looks | None = None

    def budget(self, statistic: str) -> float:
        return SHARES[statistic] * self.alpha

    def alpha_of(self, statistic: str) -> float:
        """The error the statistic's verdict may have here: its budget, or what the
        sequential plan's last look may spend of it."""
        budget = self.budget(statistic)
        return self.looks.alpha_now(budget) if self.looks else budget

    def describe(self) -> str:
        return (
            f"verdicts: family error <= {percent(self.alpha)} ({PRIMARY} "
            f"{percent(self.budget(PRIMARY))}, each percentile "
            f"{percent(self.budget(STATISTICS[1]))}; Bonferroni)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": "weighted Bonferroni",
            "alpha": self.alpha,
            "shares": json_keys(SHARES),
            "text": self.describe(),
        }


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
    level: float = math.nan  # the confidence of difference_ns and ratio: the verdict's


def compare_statistic(
    statistic: str,
    baseline: BenchResult,
    subject: BenchResult,
    alpha: float,
    rounds: bool = False,
    equivalence: float | None = None,
) -> Row:
    """The row of one statistic, its verdict at error ``alpha`` (its intervals at 1 - alpha).
    ``rounds``: the two results come from one interleaved comparison, run i of each from
    round i; compared paired when their runs match up. ``equivalence``: a share of A's
    value within which B is called equivalent (two one-sided tests at ``alpha``)."""
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
    row = Row(statistic, shown_a, shown_b, a.runs, b.runs, TOO_FEW_RUNS)
    if min(a.runs, b.runs) < MIN_RUNS_PER_SIDE:
        return row

    @functools.cache
    def at(level: float) -> tuple[Estimate, Estimate, float]:
        if matched:
            return paired(a, b, a_values, b_values, level)
        return difference(a, b, level), ratio(a, b, level), welch_df(a, b)

    margin = None if equivalence is None else equivalence * abs(a.mean)
    verdict, level = decide(lambda level: at(level)[0], alpha, margin)
    d, r, df = at(min(level, 1 - sequential.MIN_ALPHA))
    if alpha < sequential.MIN_ALPHA:  # a look that may spend nothing bounds nothing
        d, r = Estimate(d.value, -math.inf, math.inf), Estimate(r.value, -math.inf, math.inf)
    return replace(
        row, verdict=verdict, difference_ns=d, ratio=r, df=df, paired=bool(matched), level=level
    )


def decide(
    interval: Callable[[float], Estimate], alpha: float, margin_ns: float | None
) -> tuple[str, float]:
    """The verdict on B - A at error ``alpha`` from its interval at a given confidence, and
    the confidence of the interval that decided it: "slower" or "faster" when the interval
    at 1 - alpha excludes 0; else "equivalent" when, with a margin, the interval at
    1 - 2 alpha lies within ± margin (two one-sided tests at alpha); else no difference."""
    if alpha < sequential.MIN_ALPHA:
        return NO_DIFFERENCE, 1.0
    d = interval(1 - alpha)
    if d.low > 0 or d.high < 0:
        return (SLOWER if d.low > 0 else FASTER), 1 - alpha
    if margin_ns is not None and 2 * alpha < 1:
        tost = interval(1 - 2 * alpha)
        if -margin_ns <= tost.low and tost.high <= margin_ns:
            return EQUIVALENT, 1 - 2 * alpha
    return NO_DIFFERENCE, 1 - alpha


def between_sittings(result: BenchResult, statistic: str) -> Between | None:
    """How much sittings of the result's configuration differ, as its history said."""
    tau = result.between_sittings_ns.get(statistic)
    sittings = result.earlier_sittings or 0
    return Between(tau * tau, sittings) if tau and sittings >= 2 else None


class HasRuns(Protocol):
    """A result, or a measurement still running: what a round-by-round verdict reads."""

    @property
    def runs(self) -> list[RunSummary]: ...


def run_values(result: BenchResult, statistic: str) -> list[float]:
    """The statistic of each run; a run that measured nothing has none to give."""
    values = (run.value(statistic) for run in result.runs)
    return [value for value in values if math.isfinite(value)]


def matched_runs(
    baseline: HasRuns, subject: HasRuns, statistic: str
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
    """How the clients loaded the server: a closed loop (each client waits for its reply)
    or an open loop at its offered rate and arrivals."""
    load = result.load
    if load.model != OPEN or load.rate_ops_s is None:
        return CLOSED_LOOP
    return f"open loop at {load.rate_ops_s:g} ops/s, {load.arrivals or 'poisson'} arrivals"


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
    result = read_result(path)
    refuse_rehearsal(result, str(path), "compare")
    return result


def load_sweep(path: Path) -> Sweep:
    try:
        records, notes = store.load(path)
    except store.StoreError as e:
        raise BadInput(str(e)) from None
    results = {
        point: record.result or failed_before_measuring(record)
        for point, record in store.latest(records).items()
    }
    for point, result in results.items():
        refuse_rehearsal(result, f"{path} ({point.server}, {point.clients} clients)", "compare")
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

    # The plan and looks of the interleaved comparison the two came from (``--run``),
    # its last look the one the verdicts are at; None: one look.
    looks: Looks | None = None

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
    ``p99.9:20us``. B trips it when its verdict on that statistic is "slower" (under the
    family rule: the row's own level) and its point estimate is slower by more than that."""
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
                    f"the baseline ({interval} at {format_level(row.level)}), more than "
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
                    f"it needs {MIN_RUNS_PER_SIDE} runs on each side and has {row.baseline_runs} "
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
    """The rows of B against A, their errors shared as a family (``Family``); at the look
    where their interleaved comparison stopped if both record it (then paired by round)."""
    looks = stopping_look(baseline, subject)
    family = Family(family_alpha(confidence), looks)
    equivalence = looks.equivalence if looks else None
    rows = [
        compare_statistic(
            s,
            baseline,
            subject,
            family.alpha_of(s),
            rounds or looks is not None,
            equivalence if s == PRIMARY else None,
        )
        for s in STATISTICS
    ]
    return Comparison(baseline, subject, point, mismatches(baseline, subject), rows, looks)


def stopping_look(baseline: BenchResult, subject: BenchResult) -> Looks | None:
    """The looks of the one sequential comparison both results come from, or None. Rounds
    played after its last look (an interrupted comparison) make a final look at them, which
    spends what the plan has left."""
    looks = baseline.sequential
    if looks is None or subject.sequential != looks or not looks.rounds:
        return None
    played = min(len(baseline.runs), len(subject.runs))
    return looks.look(played, final=True) if played > looks.rounds[-1] else looks


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
    """``63.09 us [62.00, 64.19] us``: the value and its interval in one unit, chosen from
    the widest of the three, so that a difference near zero with a wide interval reads
    ``-0.04 us [-352.4, +352.4] us``, not a few ns with six-digit bounds."""
    if not math.isfinite(estimate.value):
        return "?"
    bounds = [x for x in (estimate.low, estimate.high) if math.isfinite(x)]
    widest = max(abs(x) for x in (estimate.value, *bounds))
    unit, scale = _unit(widest)
    decimals = 1 if widest >= 100 * scale else 2
    sign = "+" if signed else ""

    def number(x: float, places: int = decimals) -> str:
        return f"{x / scale:{sign}.{places}f}" if math.isfinite(x) else "?"

    # A value much smaller than its bounds keeps two decimals: -0.04, not -0.0.
    places = 2 if abs(estimate.value) < 10 * scale else decimals
    text = f"{number(estimate.value, places)} {unit}"
    if math.isnan(estimate.low) and math.isnan(estimate.high):
        return text
    return f"{text} [{number(estimate.low)}, {number(estimate.high)}] {unit}"


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
        # snake_case keys, as everywhere in Volley's JSON ("client CPUs" -> client_cpus)
        "configuration": {
            key.lower().replace(" ", "_"): value for key, value in configuration(result).items()
        },
    }


def to_json(report: Report) -> str:
    """Strict JSON, versioned (FORMAT_VERSION above); latencies in nanoseconds."""
    data = {
        "version": FORMAT_VERSION,
        "confidence": report.confidence,
        "family": Family(family_alpha(report.confidence)).to_json(),
        "min_runs": MIN_RUNS_PER_SIDE,
        "forced": report.forced,
        "pairings": [
            {
                "baseline": str(pairing.baseline_path),
                "subject": str(pairing.subject_path),
                "sweep": pairing.sweep,
                "comparisons": [_comparison_json(pairing, c) for c in pairing.comparisons],
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


def _comparison_json(pairing: Pairing, c: Comparison) -> dict[str, Any]:
    return {
        "point": c.point.to_json() if c.point else None,
        "baseline": _side_json(pairing.baseline_path, c.baseline),
        "subject": _side_json(pairing.subject_path, c.subject),
        "sequential": c.looks.to_json() if c.looks else None,
        "mismatches": [
            {"field": m.field, "baseline": m.baseline, "subject": m.subject} for m in c.mismatches
        ],
        "rows": [_row_json(row) for row in c.rows],
    }


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "statistic": row.statistic,
        "baseline": {**(_estimate_json(row.baseline, "_ns") or {}), "runs": row.baseline_runs},
        "subject": {**(_estimate_json(row.subject, "_ns") or {}), "runs": row.subject_runs},
        "difference_ns": _estimate_json(row.difference_ns, ""),
        "ratio": _estimate_json(row.ratio, ""),
        "df": row.df,
        "paired": row.paired,
        "level": row.level,
        "verdict": row.verdict,
    }


@dataclass
class Monitor:
    """The judge of ``volley compare --run``'s rounds (``runs.alternate``): plans its looks
    (``volley.numbers.sequential``) when first asked, from how many rounds fit in the time left, and
    at each look judges B - A's mean for every B at what that look may spend of the mean's
    share of ``alpha``. Stops ("significant") at the first look where every difference is
    resolved (faster, slower or equivalent within ± ``equivalence`` of A's mean), or
    unresolved ("not significant") after the last look; the rows compared from the results
    (``compare_results`` with ``looks``) are at the same look."""

    alpha: float  # 1 - confidence: the family's error
    equivalence: float
    first_look: int = sequential.FIRST_LOOK
    looks: Looks | None = None
    verdicts: list[str] = field(default_factory=list)  # on each B's mean, at the last look

    def __call__(self, found: Sequence[HasRuns], rounds: int, left: int) -> str | None:
        if self.looks is None:
            self.looks = Looks.plan(self.alpha, self.equivalence, self.first_look, rounds + left)
        if not self.looks.due(rounds, left):
            return None
        final = self.looks.final(rounds, left)
        self.looks = self.looks.look(rounds, final)
        self.verdicts = [self.verdict(found[0], other) for other in found[1:]]
        if all(v in (FASTER, SLOWER, EQUIVALENT) for v in self.verdicts):
            return SIGNIFICANT
        return NOT_SIGNIFICANT if final else None

    def verdict(self, baseline: HasRuns, subject: HasRuns) -> str:
        """B's mean against A's, paired by round, at what the last look may spend."""
        matched = matched_runs(baseline, subject, PRIMARY)
        if matched is None or len(matched[0]) < MIN_RUNS_PER_SIDE:
            return TOO_FEW_RUNS
        a_values, b_values = matched
        a, b = RunMean.of(a_values), RunMean.of(b_values)
        verdict, _ = decide(
            lambda level: paired(a, b, a_values, b_values, level)[0],
            Family(self.alpha, self.looks).alpha_of(PRIMARY),
            self.equivalence * abs(a.mean),
        )
        return verdict

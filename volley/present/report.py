"""What a person reads after a run: its summary, and the table (or Markdown) of a
`volley compare` (the progress while it runs is ``progress``)."""

from __future__ import annotations

import math

from rich.console import Console

from volley.measure.runs import Forecast, by_placement
from volley.numbers.units import (
    STATISTICS,
    BadInput,
    Restart,
    Target,
    format_duration,
    format_ns,
    parse_target,
)
from volley.present.tables import columns, table
from volley.records.results import (
    FAILED,
    INTERRUPTED,
    NOT_SIGNIFICANT,
    OPEN,
    PRECISION_MODE,
    RUNS_MODE,
    SIGNIFICANT,
    BenchResult,
    LatencySummary,
)
from volley.studies.compare import (
    EQUIVALENT,
    FASTER,
    MIN_RUNS_PER_SIDE,
    SLOWER,
    TOO_FEW_RUNS,
    Comparison,
    Family,
    Pairing,
    Report,
    Row,
    configuration,
    family_alpha,
    format_estimate,
    format_level,
    format_ratio,
    percent,
    problems,
    server_name,
)
from volley.system.cpus import format_cpu_list
from volley.system.noise import disturbed_summary


def seconds_text(seconds: float) -> str:
    """A wait or a bound in a few characters: 0.8 s, 35 s, 5m50s."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 60 else format_duration(seconds)


def bound_text(seconds: float) -> str:
    """A bound as its option would be written: 45s, 0.5s, 3m00s."""
    return f"{seconds:g}s" if seconds < 60 else format_duration(seconds)


def target_text(target: Target) -> str:
    """``±1% on the mean``, ``± 5.00 us on p99``."""
    amount = (
        f"±{100 * target.relative:g}%"
        if target.relative is not None
        else f"± {format_ns(target.absolute_ns or 0.0)}"
    )
    return f"{amount} on {'the mean' if target.statistic == 'mean' else target.statistic}"


def width_text(target: Target, half_ns: float, centre_ns: float) -> str:
    """A half-width in the target's own terms: a share of the value, or a time."""
    if not math.isfinite(half_ns) or not centre_ns:
        return "±?"
    if target.relative is not None:
        return f"±{100 * half_ns / centre_ns:.2g}%"
    return f"± {format_ns(half_ns)}"


def forecast_line(f: Forecast) -> str:
    """The plan after the pilot runs, in one line: what each target costs at their spread
    and what the time (or count) given buys; out of reach is said here, at once."""
    single = len(f.targets) == 1
    needs = ", ".join(
        f"{target_text(t)} needs ~{f.needs.get(t.statistic, 0):,} runs"
        for t in f.targets
        if t.statistic not in f.beyond_ns
    )
    costs = f"{needs} (~{seconds_text(f.needed * f.run_s)})" if needs else ""
    reach = ", ".join(
        width_text(t, f.reachable_ns[t.statistic], f.centres[t.statistic])
        + ("" if single else f" on {t.statistic}")
        for t in f.targets
    )
    said = [costs] if costs else []
    if f.beyond_ns:
        beyond = ", ".join(
            f"{target_text(t)}: earlier sittings alone differ by ± "
            f"{format_ns(f.beyond_ns[t.statistic])}"
            for t in f.targets
            if t.statistic in f.beyond_ns
        )
        said.insert(0, f"target out of reach on this machine ({beyond})")
    verb = "is" if single else "are"
    if f.mode == RUNS_MODE:
        said.append(f"at this spread --runs {f.allowed} give {reach}")
        return "plan: " + "; ".join(said)
    limit = f"--{'max-time' if f.mode == PRECISION_MODE else 'duration'} {bound_text(f.bound_s)}"
    if f.mode == PRECISION_MODE and not f.beyond_ns and not f.in_reach:
        return (
            f"plan: target out of reach within {limit}: {costs}; at this spread {reach} "
            f"{verb} reachable (~{f.allowed:,} runs), measuring for that"
        )
    said.append(f"at this spread {reach} {verb} reachable within {limit} (~{f.allowed:,} runs)")
    return "plan: " + "; ".join(said)


def half_width(interval: tuple[float, float]) -> float:
    low, high = interval
    return (high - low) / 2 if low is not None and high is not None else math.inf


VERDICTS = {
    SIGNIFICANT: "significant: yes",
    NOT_SIGNIFICANT: "significant: NO (max time reached before the target precision)",
    INTERRUPTED: "significant: NO (interrupted; partial result)",
}


def placement_summary(result: BenchResult) -> list[str]:
    """Lines for the summary, before the pooled figures, when the host moved the server's
    and the clients' CPUs between runs: the mean at each placement leads, because those
    reproduce across sittings and the pooled mean (a mix in this sitting's shares) does not
    (bench/calibration/placement.py measured 2.6% and 6.2% against 18% between sittings)."""
    placed = result.placements or by_placement(result.runs, result.confidence)
    if not placed:
        return []
    runs = sum(p.runs for p in placed)
    shares = ", ".join(f"{p.runs / runs:.0%} {p.placement}" for p in placed)
    lines = [
        "CPUs moved: the host placed the server's and the clients' CPUs "
        + " or ".join(
            f"{p.placement} ({p.hop_low_ns:.0f}-{p.hop_high_ns:.0f} ns cache-line round trip)"
            for p in placed
        )
        + f"; the pooled figures below mix {shares}, a share that changes between sittings"
    ]
    for p in placed:
        half = (p.ci_high_ns - p.ci_low_ns) / 2
        interval = f" ± {format_ns(half)}" if math.isfinite(half) else ""
        lines.append(
            f"{p.placement + ' runs':<10} {format_ns(p.mean_ns)}{interval} "
            f"(mean of {p.runs} run{'' if p.runs == 1 else 's'})"
        )
    return lines


def sittings_summary(result: BenchResult) -> str | None:
    """What earlier sittings of the configuration added to the intervals; None when they
    were not looked for."""
    earlier = result.earlier_sittings
    if earlier is None:
        return None
    if earlier < 2:
        return (
            f"{'first sitting' if earlier == 0 else 'second sitting'} of this configuration "
            "here: the intervals cover this sitting only (from the third on they include "
            "how much sittings differ)"
        )
    spread = result.between_sittings_ns
    if not spread:
        line = f"{earlier} earlier sittings of this configuration agree within their intervals"
    else:
        shown = ", ".join(
            f"{name} {format_ns(spread[name])}" for name in STATISTICS if name in spread
        )
        line = (
            f"{earlier} earlier sittings of this configuration differ beyond their runs by "
            f"(sd) {shown}: included in the intervals"
        )
    check = result.history or {}
    if check.get("consistent", True):
        return line
    predicted = check.get("prediction_interval_ns", {})
    outside = ", ".join(
        f"{name} {format_ns(result.latency_ns.value(name) if result.latency_ns else math.nan)} "
        f"outside {format_ns(predicted[name][0])} .. {format_ns(predicted[name][1])}"
        for name in check.get("differs", [])
        if name in predicted
    )
    return (
        f"{line}\n  this sitting differs from the {check.get('earlier_sittings', earlier)} "
        f"earlier ones of this configuration: {outside} (predicted from them); the machine "
        "may not be in the state they describe, and this sitting was not kept"
    )


# The generator's own lateness is worth a warning once its typical send lag is this share
# of the typical latency it is part of (the latencies count from the schedule): the server
# is then credited with a tenth or more of what the generator did.
LAG_SHARE_WARNING = 0.1


def send_lag_lines(result: BenchResult) -> list[str]:
    """The open loop's send lag, and a warning when it is a material share of the
    latencies; nothing where it was not measured."""
    lag, latency = result.load.send_lag_ns, result.latency_ns
    if not lag:
        return []
    spin = result.load.spin_ns
    lines = [
        f"  send lag   p50 {format_ns(lag['p50'])}  p90 {format_ns(lag['p90'])}  "
        f"p99 {format_ns(lag['p99'])}  max {format_ns(lag['max'])} behind schedule"
        + (f" (spinning {format_ns(spin)} before each send)" if spin else " (no spin)")
    ]
    if latency is not None and lag["p50"] >= LAG_SHARE_WARNING * latency.p50:
        lines.append(
            f"  WARNING: the generator sent late by {format_ns(lag['p50'])} (p50), "
            f"{lag['p50'] / latency.p50:.0%} of the latency p50: part of the latencies is "
            "the generator's, not the server's (spin longer with --spin, or give the "
            "clients more or quieter client CPUs)"
        )
    return lines


# A phase's name as a person reads it; the additive ones first, in the order they happen.
PHASE_NAMES = {
    "server_start": "server start",
    "connect": "connect",
    "rendezvous": "rendezvous (other hosts)",
    "meter": "noise meter",
    "start_slack": "start slack",
    "warmup_measure": "warm-up+measure",
    "collect": "collect",
    "disconnect": "disconnect",
    "server_stop": "server stop",
    "merge": "merge",
    "gather": "gather (other hosts)",
}


def rehearsal_line(result: BenchResult) -> str:
    """What a rehearsal played, and that its latencies mean nothing."""
    workers = len(result.workers)
    plan = (
        f"the plan for {result.topology}: server CPU "
        f"{format_cpu_list(result.planned_server_cores) or 'elsewhere'}, {workers} worker"
        f"{'' if workers == 1 else 's'} on CPU "
        f"{format_cpu_list(result.planned_client_cores[:workers])}"
    )
    server = (
        f"server CPU {format_cpu_list(result.server_cores)}, "
        if result.server_cores
        else "the server already running, "
    )
    return (
        f"  rehearsal: latencies are not meaningful ({plan}; folded onto {server}client CPU "
        f"{format_cpu_list(result.client_cores)})"
    )


def phase_lines(result: BenchResult) -> list[str]:
    """Where a run's wall time went: the median per run of each phase, and of the
    overhead beyond warm-up+measure, so that time on the planned machine can be planned."""
    medians = result.phase_medians()
    if not medians:
        return []
    runs = sum(1 for r in result.runs if r.phases_s is not None)
    played = medians.get("warmup_measure", 0.0)
    share = f" ({100 * medians['overhead'] / played:.0f}% of it)" if played > 0 else ""
    parts = [
        f"{label} {format_ns(medians[name] * 1e9)}"
        for name, label in PHASE_NAMES.items()
        if medians.get(name)
    ]
    per_run = result.elapsed_s / len(result.runs) if result.runs else math.nan
    return [
        f"where a run's time goes (median of {runs} run{'' if runs == 1 else 's'}):",
        "  " + ", ".join(parts),
        f"  overhead beyond warm-up+measure: {format_ns(medians['overhead'] * 1e9)} per run"
        + share,
        f"  start skew between workers {format_ns(medians.get('start_skew', 0.0) * 1e9)}, "
        f"last worker started {format_ns(medians.get('start_late', 0.0) * 1e9)} after the "
        f"start instant (ready {format_ns(medians.get('start_margin', 0.0) * 1e9)} before it)",
        f"  whole sitting: {format_ns(per_run * 1e9)} per run ({result.elapsed_s:.1f} s for "
        f"{len(result.runs)} runs, workers' start and the stopping rule included)",
    ]


def summary(result: BenchResult) -> str:
    """The human summary printed on stdout: the answer, then where it ran, how the runs
    went, the latency, the open loop's load, and how much was measured."""
    lines = _where_lines(result) + _runs_lines(result)
    lines += [f"  {line}" for line in placement_summary(result)]
    lines += _latency_lines(result) + _open_loop_lines(result)
    pattern = result.run_pattern
    if pattern:
        lines.append(f"  runs: {pattern}")
    runs = len(result.runs)
    lines.append(
        f"  n {result.n:,} ops in {runs} run{'' if runs == 1 else 's'} "
        f"({result.measured_s:.1f} s measured, "
        f"{result.elapsed_s:.1f} s elapsed), {result.throughput_ops_s:,.0f} ops/s",
    )
    return "\n".join(answer_lines(result) + lines)


def _where_lines(result: BenchResult) -> list[str]:
    """The server, the CPUs of either side, each host of a run on many, and what is off
    about the machine."""
    lines = [
        f"{result.server} {' '.join(result.server_args)}".rstrip(),
        f"  {result.clients} client{'' if result.clients == 1 else 's'} on CPU "
        f"{format_cpu_list(result.client_cores)}, "
        + (
            f"server on CPU {format_cpu_list(result.server_cores)}"
            if result.server_cores
            else "server already running (not started or pinned by volley)"
        )
        + (
            f", listening on {result.server_address}"
            if result.server_address not in (None, "127.0.0.1") and result.server_cores
            else ""
        ),
    ]
    if result.rehearsal:
        lines.append(rehearsal_line(result))
    if len(result.hosts) > 1:  # a slow host or a bad link shows here
        for h in result.hosts:
            lines.append(
                f"  host {h.host} (rank {h.rank}): {h.clients} client"
                f"{'' if h.clients == 1 else 's'} on CPU {format_cpu_list(h.cpus)}, "
                f"{h.ops:,} ops, mean {format_ns(h.mean_ns)}, p99 {format_ns(h.p99_ns)}"
            )
    problems = result.host.problems()
    if problems:
        lines.append(f"  host: {'; '.join(problems)}")
    return lines


def _runs_lines(result: BenchResult) -> list[str]:
    """The disturbed and dropped runs, what each run started afresh, and earlier sittings."""
    lines = []
    noise = disturbed_summary([r.noise for r in result.runs + result.dropped_runs if r.noise])
    if noise:
        lines.append(f"  {noise}")
    if result.dropped_runs:
        dropped = len(result.dropped_runs)
        lines.append(
            f"  {dropped} disturbed run{'' if dropped == 1 else 's'} dropped (--noisy drop)"
        )
    runs = f"{len(result.runs)} run{'' if len(result.runs) == 1 else 's'}"
    if result.restart == Restart.SERVER:
        lines.append(f"  {runs}, each with a fresh server")
    else:
        server = "one server instance" if result.server_cores else "a running server"
        lines.append(f"  {runs} reconnecting to {server}: the intervals cover that instance only")
    sittings = sittings_summary(result)
    if sittings:
        lines.append(f"  {sittings}")
    return lines


def _latency_lines(result: BenchResult) -> list[str]:
    """The mean and the percentiles, each with its interval's half-width."""
    lat = result.latency_ns
    if lat is None:
        return ["  no op completed"]
    half = (lat.ci_high - lat.ci_low) / 2
    share = f", {100 * half / lat.mean:.2g}% of mean" if math.isfinite(half) else ""
    percentiles = "  ".join(
        f"{name} {format_ns(lat.value(name))} ± {format_ns(half_width(lat.interval(name)))}"
        for name in ("p50", "p90", "p99", "p99.9")
    )
    return [
        f"  latency    {format_ns(lat.mean)} ± {format_ns(half)} "
        f"({result.confidence:.0%} CI{share})   stddev {format_ns(lat.stddev)}",
        f"  percentile {percentiles}  max {format_ns(lat.max)}",
    ]


def _open_loop_lines(result: BenchResult) -> list[str]:
    """The offered and achieved load, how late the sends left; nothing in closed loop."""
    load = result.load
    if load.model != OPEN or load.rate_ops_s is None:
        return []
    tolerance = format_ns(float(load.late_tolerance_ns or 0))
    lines = [
        f"  open loop  offered {load.rate_ops_s:,.0f} ops/s ({load.arrivals}), achieved "
        f"{load.achieved_ops_s or 0:,.0f} ops/s, sends late > {tolerance}: "
        f"{100 * (load.late_sends_share or 0):.1f}%, max outstanding {load.max_outstanding}"
    ]
    lines += send_lag_lines(result)
    if load.saturated:
        lines.append(
            "  SATURATED: the replies fell behind the offered load (short by more than 1%, "
            "or a growing backlog); the latency is not a steady-state figure"
        )
    return lines


def significance_text(result: BenchResult) -> str:
    """``significant: yes`` or ``significant: NO (why)``."""
    if result.status == NOT_SIGNIFICANT and result.error:
        return "significant: NO (stopped early: the target is out of reach)"
    if result.status == NOT_SIGNIFICANT and result.mode != PRECISION_MODE:
        return f"significant: NO (the fixed {result.mode} did not reach the target precision)"
    return VERDICTS.get(result.status, "significant: NO (failed; incomplete result)")


def answer_lines(result: BenchResult) -> list[str]:
    """What the summary leads with: the answer with its precision, then the verdict and
    why (or what went wrong)."""
    lines = [headline(result), f"  {significance_text(result)}"]
    if result.error:
        lines.append(f"  {'why' if result.status == NOT_SIGNIFICANT else 'error'}: {result.error}")
    return lines


def headline(result: BenchResult) -> str:
    """The answer in one line: each targeted statistic (the mean always) ± its interval's
    half-width and that as a share of it, then whether the targets were met, and if not,
    what they would take."""
    lat = result.latency_ns
    if lat is None:
        return f"no answer: no op completed ({result.status.replace('-', ' ')})"
    targets = result_targets(result)
    shown = dict.fromkeys(["mean", *(t.statistic for t in targets)])
    answer = ", ".join(answer_text(lat, name, result.confidence) for name in shown)
    return f"{answer}: {outcome_text(result, targets)}"


def result_targets(result: BenchResult) -> list[Target]:
    """The result's targets, as far as they read (a hand-edited file may hold others)."""
    found = []
    for text in result.targets:
        try:
            found.append(parse_target(text))
        except BadInput:
            continue
    return found


def answer_text(lat: LatencySummary, statistic: str, confidence: float) -> str:
    half, value = half_width(lat.interval(statistic)), lat.value(statistic)
    share = f", {100 * half / value:.2g}%" if math.isfinite(half) and value else ""
    return f"{statistic} {format_ns(value)} ± {format_ns(half)} ({confidence:.0%} CI{share})"


def outcome_text(result: BenchResult, targets: list[Target]) -> str:
    wanted = "target " + (" and ".join(target_text(t) for t in targets) or "precision")
    if result.status == SIGNIFICANT:
        return f"{wanted} met"
    if result.status == INTERRUPTED:
        return "interrupted, a partial result"
    if result.status == FAILED:
        return "failed, an incomplete result"
    if result.error:  # stopped early: earlier sittings alone differ by more
        return f"{wanted} out of reach on this machine: see `volley system`"
    runs, needed = len(result.runs), result.planned_runs
    cost = f" (~{needed:,} runs needed at this spread" if needed and needed > runs else ""
    if result.mode != PRECISION_MODE:
        return f"{wanted} not met by these {runs} runs{cost and cost + ')'}"
    return (
        f"{wanted} out of reach in {seconds_text(result.elapsed_s)}"
        f"{cost and f'{cost}, {runs} played)'}: give it longer (--max-time), or see "
        "`volley system`"
    )


# --- volley compare ---------------------------------------------------------------------


def runs_text(result: BenchResult) -> str:
    if not result.runs:
        return f"no runs (format {result.version})" if result.version < 2 else "no runs"
    restart = f", each a fresh {result.restart}" if result.restart else ""
    return f"{len(result.runs)} run{'s' if len(result.runs) != 1 else ''}{restart}"


def setting(result: BenchResult) -> str:
    config = configuration(result)

    def count(n: int | str | None, what: str) -> str:
        if n is None:
            return f"unknown {what}s"
        return f"{n} {what}{'s' if n != 1 else ''}"

    return (
        f"{count(config['clients'], 'client')} on {count(config['client CPUs'], 'CPU')}, "
        f"server on {count(config['server CPUs'], 'CPU')}, {config['load']}"
    )


def _header(pairing: Pairing, comparison: Comparison) -> list[str]:
    a, b = comparison.baseline, comparison.subject
    lines = [
        f"A: {pairing.baseline_path}: {server_name(a)}, {runs_text(a)}",
        f"B: {pairing.subject_path}: {server_name(b)}, {runs_text(b)}",
        setting(a),
    ]
    found = problems(pairing, comparison)
    if found:
        lines.append("compared anyway (--force): " + "; ".join(found))
    if comparison.looks:
        lines.append("sequential: " + comparison.looks.describe())
    return lines


def verdict_text(comparison: Comparison, row: Row) -> str:
    if row.verdict == EQUIVALENT and comparison.looks:
        return f"{EQUIVALENT} (within ±{percent(comparison.looks.equivalence)})"
    return row.verdict


def _result_cells(comparison: Comparison) -> list[list[str]]:
    return [
        [
            row.statistic,
            format_estimate(row.baseline),
            format_estimate(row.subject),
            format_estimate(row.difference_ns, signed=True) if row.difference_ns else "-",
            format_ratio(row.ratio),
            format_level(row.level) if math.isfinite(row.level) else "-",
            verdict_text(comparison, row),
        ]
        for row in comparison.rows
    ]


# "level": the confidence of the row's B - A and B / A, and so of its verdict.
RESULT_COLUMNS = ["", "A", "B", "B - A", "B / A", "level", "verdict"]
SWEEP_COLUMNS = ["point", "A mean", "B mean", "B / A (mean)", "mean", "percentiles"]


def percentile_verdicts(comparison: Comparison) -> str:
    """The percentiles that differ, in a few words."""
    rows = comparison.rows[1:]
    if all(row.verdict == TOO_FEW_RUNS for row in rows):
        return TOO_FEW_RUNS
    differ = [f"{row.statistic} {row.verdict}" for row in rows if row.verdict in (FASTER, SLOWER)]
    return ", ".join(differ) or "none differ"


def _sweep_cells(pairing: Pairing) -> list[list[str]]:
    cells = []
    for comparison in pairing.comparisons:
        mean = comparison.row("mean")
        assert comparison.point is not None
        point = str(comparison.point)
        found = problems(pairing, comparison, short=True)
        if found:
            point += " (compared anyway: " + "; ".join(found) + ")"
        cells.append(
            [
                point,
                format_estimate(mean.baseline),
                format_estimate(mean.subject),
                format_ratio(mean.ratio),
                verdict_text(comparison, mean),
                percentile_verdicts(comparison),
            ]
        )
    return cells


def _sweep_header(pairing: Pairing) -> list[str]:
    return [
        f"A: {pairing.baseline_path}",
        f"B: {pairing.subject_path}",
        f"{len(pairing.comparisons)} point{'s' if len(pairing.comparisons) != 1 else ''} in both",
    ]


def _only_lines(pairing: Pairing) -> list[str]:
    return [f"only in A: {p}" for p in pairing.only_baseline] + [
        f"only in B: {p}" for p in pairing.only_subject
    ]


def _method_line(report: Report) -> str:
    """Two lines: how the intervals were made, and the error rule of the verdicts."""
    rows = [row for _, c in report.comparisons() for row in c.rows if row.difference_ns]
    method = "paired by round" if rows and all(row.paired for row in rows) else "Welch"
    return (
        f"intervals from the spread between runs, A and B each at its own confidence, "
        f"B - A ({method}) and B / A (Fieller) at the row's level; a verdict needs "
        f"{MIN_RUNS_PER_SIDE} runs a side\n" + Family(family_alpha(report.confidence)).describe()
    )


def comparison_table(report: Report, console: Console | None = None) -> str:
    """For people: one block per file compared with the baseline, its table drawn for
    ``console`` (a terminal), plain without one."""
    blocks = []
    for pairing in report.pairings:
        if pairing.sweep:
            lines = _sweep_header(pairing) + [""]
            lines += table(columns(*SWEEP_COLUMNS), _sweep_cells(pairing), console)
            lines += _only_lines(pairing)
        else:
            comparison = pairing.comparisons[0]
            lines = _header(pairing, comparison) + [""]
            lines += table(columns(*RESULT_COLUMNS), _result_cells(comparison), console)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n\n" + _method_line(report) + "\n"


def _markdown_table(header: list[str], cells: list[list[str]]) -> list[str]:
    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, cells)]


def comparison_markdown(report: Report) -> str:
    """For a pull request: the same tables in GitHub's pipe syntax."""
    blocks = []
    for pairing in report.pairings:
        if pairing.sweep:
            lines = [f"`{line}`  " for line in _sweep_header(pairing)] + [""]
            lines += _markdown_table(SWEEP_COLUMNS, _sweep_cells(pairing))
            only = _only_lines(pairing)
            if only:
                lines += [""] + [f"- {line}" for line in only]
        else:
            comparison = pairing.comparisons[0]
            lines = [f"{line}  " for line in _header(pairing, comparison)] + [""]
            cells = _result_cells(comparison)
            lines += _markdown_table(["statistic", *RESULT_COLUMNS[1:]], cells)
        blocks.append("\n".join(lines))
    # Markdown joins lines into one paragraph unless they end in two spaces.
    return "\n\n".join(blocks) + "\n\n" + _method_line(report).replace("\n", "  \n") + "\n"

"""The ground-truth suite: how far to trust Volley's verdicts and intervals.

Runs every row and prints one Markdown table: per row, how many comparisons or sittings it
counted, the rate (false verdicts, the effect seen, the truth covered), its 95%
Clopper-Pearson interval, the target, and the median time. The real rows run the real CLI
(``python3 -m volley ...``) against the truth servers of bench/validation/servers, whose
latency is known by construction (README.md beside this file); the synthetic rows (named
``syn-...``) drive volley's own loop with a model engine, thousands of times, no sockets
(synthetic.py).

    python3 bench/validation/run.py                       # every row: hours
    python3 bench/validation/run.py --quick               # a smoke run: about two minutes
    python3 bench/validation/run.py --synthetic-only --count 1000
    python3 bench/validation/run.py --rows aa-run,power-5 --count 20
    python3 bench/validation/run.py --table out/validation/outcomes.jsonl   # print again

Every invocation's outcome is one line of ``-o DIR/outcomes.jsonl`` (appended), from which
the table is computed, so that it can be recomputed or merged. Real rows need the servers:
``make validation-servers`` (target/validation), or ``--servers DIR``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's volley, not an installed one

from bench.validation import synthetic  # noqa: E402
from bench.validation.synthetic import Rate, false_verdicts, share_of  # noqa: E402
from volley.numbers.units import STATISTICS  # noqa: E402
from volley.studies.compare import SLOWER  # noqa: E402

Outcome = dict[str, Any]

# The truths (README.md): the freeze's period and length, the bimodal share and delay.
FREEZE_MS, PERIOD_MS = 200.0, 1000.0
SHARE, DELAY_NS = 0.1, 50_000.0
RATE, OPEN_CLIENTS = "2000", 4  # the freeze row's open loop
DELTAS = {"power-5": 0.05, "power-20": 0.20}
FALSE_TARGET, COVERAGE_TARGET, POWER_TARGET = 0.05, 0.93, 0.80


@dataclass(frozen=True)
class Context:
    out: Path
    servers: Path
    count: int
    max_time: str  # of each compare --run and each sitting
    clients: int  # closed-loop rows
    quick: bool
    synthetic_count: int  # trials of each synthetic row

    def run_options(self) -> list[str]:
        """Options every real invocation shares; --quick shortens runs and the pilot."""
        quick = ["--warmup", "0.1s", "--run-time", "0.2s", "--min-runs", "5"]
        return ["--max-time", self.max_time, *(quick if self.quick else [])]


# --- the real CLI path ---------------------------------------------------------------------


def volley(context: Context, *args: str | Path, env: dict[str, str] | None = None) -> Outcome:
    """``python3 -m volley ARGS`` with stdout parsed as JSON; wall time and exit status."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "volley", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "VOLLEY_HISTORY": "off", **(env or {})},
        timeout=3600,
    )
    found: Outcome = {"status": done.returncode, "took_s": round(time.monotonic() - began, 2)}
    try:
        found["json"] = json.loads(done.stdout)
    except json.JSONDecodeError:
        lines = done.stderr.strip().splitlines()
        found["error"] = lines[-1] if lines else f"exit status {done.returncode}, no output"
    return found


def compare_rows(outcome: Outcome) -> dict[str, dict[str, Any]]:
    """The rows of a one-pair ``volley compare --json``, by statistic."""
    comparison = outcome["json"]["pairings"][0]["comparisons"][0]
    return {row["statistic"]: row for row in comparison["rows"]}


def compare_run(context: Context, a: Path, b: Path, name: str, env: dict[str, str]) -> Outcome:
    """One ``volley compare --run A B``: its verdicts and the mean's difference."""
    out = context.out / "compare" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    found = volley(
        context, "compare", "--run", "--json", "-", "-q", "--clients", str(context.clients),
        *context.run_options(), "-o", out, a, b, env=env,
    )  # fmt: skip
    return verdicts_of(found)


def verdicts_of(found: Outcome) -> Outcome:
    if "json" not in found:
        return found
    rows = compare_rows(found)
    mean = rows["mean"]["difference_ns"] or {}
    return {
        "status": found["status"],
        "took_s": found["took_s"],
        "verdicts": {s: r["verdict"] for s, r in rows.items()},
        "rounds": rows["mean"]["baseline"]["runs"],
        "difference_ns": [mean.get("low"), mean.get("value"), mean.get("high")],
    }


def bench(context: Context, server: Path, *options: str, env: dict | None = None) -> Outcome:
    """One volley-bench sitting, its result JSON (stdout) kept whole."""
    return volley(
        context, "bench", "-q", *context.run_options(), *options, "--json", "-", server, env=env
    )


def mean_of(found: Outcome) -> tuple[float, float, float]:
    """(low, value, high) of a bench result's mean; NaN when it has none."""
    latency = (found.get("json") or {}).get("latency_ns") or {}
    nan = math.nan
    return (latency.get("ci_low") or nan, latency.get("mean") or nan, latency.get("ci_high") or nan)


def twin(context: Context) -> Path:
    """truth-plain under a second name: A/A, one binary."""
    path = context.out / "truth-plain-twin"
    if not path.exists():
        path.write_bytes((context.servers / "truth-plain").read_bytes())
        path.chmod(0o755)
    return path


# --- real rows: one function each, one outcome per invocation ------------------------------


def row_aa_run(context: Context) -> Iterator[Outcome]:
    for i in range(context.count):
        yield compare_run(context, context.servers / "truth-plain", twin(context), f"aa-{i}", {})


def row_aa_files(context: Context) -> Iterator[Outcome]:
    """Two separate sittings of truth-plain, compared as files."""
    for i in range(context.count):
        paths, took_s = [], 0.0
        for side in ("a", "b"):
            found = bench(
                context, context.servers / "truth-plain", "--clients", str(context.clients)
            )
            took_s += found["took_s"]
            if "json" not in found:
                yield found
                break
            path = context.out / "files" / f"{i}-{side}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(found["json"]))
            paths.append(path)
        else:  # the time to a verdict: both sittings and the compare
            found = verdicts_of(volley(context, "compare", "--json", "-", *paths))
            yield {**found, "took_s": round(took_s + found["took_s"], 2)}


@functools.cache  # once per invocation: both power rows take their Δ from one measurement
def calibrated_mean_ns(context: Context) -> float:
    """truth-plain's mean, measured now with the rows' own settings (Δ is a share of it)."""
    found = bench(context, context.servers / "truth-plain", "--clients", str(context.clients))
    _, mean, _ = mean_of(found)
    if not math.isfinite(mean):
        raise SystemExit(f"cannot calibrate Δ: truth-plain measured nothing ({found.get('error')})")
    return mean


def row_power(name: str) -> Callable[[Context], Iterator[Outcome]]:
    def row(context: Context) -> Iterator[Outcome]:
        delta_ns = round(DELTAS[name] * calibrated_mean_ns(context))
        env = {"VOLLEY_TRUTH_DELTA_NS": str(delta_ns)}
        for i in range(context.count):
            found = compare_run(
                context, context.servers / "truth-plain", context.servers / "truth-delta",
                f"{name}-{i}", env,
            )  # fmt: skip
            if "verdicts" in found:
                found["seen"] = found["verdicts"]["mean"] == SLOWER
            yield {**found, "delta_ns": delta_ns}

    return row


def freeze_truth_ns(base_mean_ns: float) -> dict[str, float]:
    """The open loop's analytic mean and p99 (README.md): base + f^2 / 2P, base + f - P/100."""
    f, p = FREEZE_MS * 1e6, PERIOD_MS * 1e6
    return {"mean": base_mean_ns + f * f / (2 * p), "p99": base_mean_ns + f - p / 100}


def row_freeze(context: Context) -> Iterator[Outcome]:
    """Open loop (--rate 2000 over 4 clients): the freeze server's mean and p99 intervals
    against the analytic truth, the plain server's mean at the same load its base."""
    load = ["--rate", RATE, "--clients", str(OPEN_CLIENTS), "--precision", "5%"]
    _, base, _ = mean_of(bench(context, context.servers / "truth-plain", *load))
    truth = freeze_truth_ns(base if math.isfinite(base) else 0.0)
    env = {
        "VOLLEY_TRUTH_FREEZE_MS": f"{FREEZE_MS:g}",
        "VOLLEY_TRUTH_FREEZE_PERIOD_MS": f"{PERIOD_MS:g}",
    }
    for _ in range(context.count):
        found = bench(context, context.servers / "truth-freeze", *load, env=env)
        if "json" not in found:
            yield found
            continue
        latency = found["json"]["latency_ns"]
        p99_low, p99_high = latency["intervals"]["p99"]
        yield {
            "status": found["status"],
            "took_s": found["took_s"],
            "truth_ns": truth,
            "mean_ns": [latency["ci_low"], latency["mean"], latency["ci_high"]],
            "p99_ns": [p99_low, latency["p99"], p99_high],
            "covered": latency["ci_low"] <= truth["mean"] <= latency["ci_high"],
            "p99_covered": p99_low <= truth["p99"] <= p99_high,
        }


def row_bimodal(context: Context) -> Iterator[Outcome]:
    """Plain against bimodal (q = 0.1 of replies 50 us later): the interval of the mean's
    difference against q * d."""
    env = {
        "VOLLEY_TRUTH_BIMODAL_SHARE": f"{SHARE:g}",
        "VOLLEY_TRUTH_BIMODAL_DELAY_NS": f"{DELAY_NS:g}",
    }
    truth = SHARE * DELAY_NS
    for i in range(context.count):
        found = compare_run(
            context, context.servers / "truth-plain", context.servers / "truth-bimodal",
            f"bimodal-{i}", env,
        )  # fmt: skip
        if "difference_ns" in found:
            low, _, high = found["difference_ns"]
            found["covered"] = low is not None and high is not None and low <= truth <= high
            found["truth_ns"] = truth
        yield found


def hog(cpu: int) -> subprocess.Popen[bytes]:
    """A process that keeps CPU ``cpu`` busy until it is ended."""
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)


def row_history(context: Context) -> Iterator[Outcome]:
    """Sittings of truth-plain with --history in a directory of their own, the second with
    a CPU hog on the server's CPU: one outcome per sitting, judged at table time against
    the other calm sittings (leave-one-out, as bench/calibration does)."""
    sittings = max(context.count, 4)
    with tempfile.TemporaryDirectory(prefix="volley-validation-") as place:
        options = [
            "--clients",
            str(context.clients),
            "--server-cores",
            "0",
            "--cores",
            "1",
            "--history",
            place,
        ]
        for i in range(sittings):
            disturbed = i == 1
            hogging = hog(0) if disturbed else None
            try:
                found = bench(context, context.servers / "truth-plain", *options)
            finally:
                if hogging:
                    hogging.kill()
                    hogging.wait()
            low, mean, high = mean_of(found)
            earlier = (found.get("json") or {}).get("earlier_sittings")
            yield {
                "sitting": i,
                "disturbed": disturbed,
                "mean_ns": [low, mean, high],
                "earlier": earlier,
                "took_s": found["took_s"],
                "status": found["status"],
            }


# --- synthetic rows ------------------------------------------------------------------------


def synthetic_row(make: Callable[..., list[Outcome]], **options: Any) -> Callable:
    def row(context: Context) -> Iterator[Outcome]:
        yield from make(context.synthetic_count, **options)

    return row


# --- the table -----------------------------------------------------------------------------


def binomial_cdf(k: int, count: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(count, p)."""
    if k < 0:
        return 0.0
    if k >= count or p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    top, log_p, log_q = math.lgamma(count + 1), math.log(p), math.log1p(-p)
    return min(
        1.0,
        sum(
            math.exp(
                top
                - math.lgamma(i + 1)
                - math.lgamma(count - i + 1)
                + i * log_p
                + (count - i) * log_q
            )
            for i in range(k + 1)
        ),
    )


def clopper_pearson(hits: int, count: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial share: the lower bound is the p
    at which P(X >= hits) is (1 - confidence) / 2, the upper the p at which P(X <= hits) is."""
    tail = (1 - confidence) / 2

    def solve(falls: Callable[[float], float]) -> float:
        """The p in [0, 1] at which ``falls`` (decreasing in p) crosses ``tail``."""
        low, high = 0.0, 1.0
        for _ in range(50):
            middle = (low + high) / 2
            low, high = (middle, high) if falls(middle) > tail else (low, middle)
        return (low + high) / 2

    lower = 0.0 if hits == 0 else solve(lambda p: binomial_cdf(hits - 1, count, p) - 1 + 2 * tail)
    upper = 1.0 if hits == count else solve(lambda p: binomial_cdf(hits, count, p))
    return lower, upper


@dataclass(frozen=True)
class Line:
    """One line of the table: a rate over one row's outcomes, and its target."""

    row: str
    what: str
    rate: Callable[[list[Outcome]], Rate]
    target: str = ""  # "<= 5%", ">= 93%"; empty: a control, shown without a target
    needs: str = "verdicts"  # outcomes without this key failed and are not counted

    def meets(self, share: float) -> str:
        if not self.target:
            return "—"
        bound = float(self.target.split()[1].rstrip("%")) / 100
        return "yes" if (share <= bound if self.target[0] == "<" else share >= bound) else "no"


def history_rate(outcomes: list[Outcome]) -> Rate:
    """Calm sittings after the disturbed one: does each interval hold the mean of the
    other calm sittings (leave-one-out: a little below 95% for few sittings even when
    honest)?"""
    calm = [
        o for o in outcomes if not o["disturbed"] and math.isfinite(o["mean_ns"][1] or math.nan)
    ]
    hits = count = 0
    for o in calm:
        others = [c["mean_ns"][1] for c in calm if c is not o]
        if o["sitting"] < 2 or not others:
            continue
        truth = statistics.fmean(others)
        low, _, high = o["mean_ns"]
        count += 1
        hits += bool(low is not None and high is not None and low <= truth <= high)
    return Rate(hits, count, [o["took_s"] for o in outcomes])


def aa_lines(row: str, what: str) -> list[Line]:
    """Any row, then each statistic: one's false verdicts, with its own rate."""
    below = f"<= {FALSE_TARGET:.0%}"
    return [
        Line(row, f"{what}: false verdict, {name or 'any row'}", rate, below)
        for name, rate in [(None, false_verdicts), *((s, on(s)) for s in STATISTICS)]
    ]


def on(statistic: str) -> Callable[[list[Outcome]], Rate]:
    return lambda outcomes: false_verdicts(outcomes, statistic)


def lines() -> list[Line]:
    cover, see = f">= {COVERAGE_TARGET:.0%}", f">= {POWER_TARGET:.0%}"
    covered = lambda o: share_of(o, "covered")  # noqa: E731
    seen = lambda o: share_of(o, "seen")  # noqa: E731
    found = [*aa_lines("aa-run", "A/A compare --run"), *aa_lines("aa-files", "A/A file compare")]
    for name, delta in DELTAS.items():
        found.append(Line(name, f"power, Δ = {delta:.0%} of the mean", seen, see, "seen"))
    found += [
        Line("freeze", "freeze, open loop: mean covered", covered, cover, "covered"),
        Line(
            "freeze",
            "freeze, open loop: p99 covered",
            lambda o: share_of(o, "p99_covered"),
            cover,
            "covered",
        ),
        Line("bimodal", "bimodal − plain covers q·d", covered, cover, "covered"),
        Line("history", "history with a disturbed sitting", history_rate, cover, "mean_ns"),
        *aa_lines("syn-aa-run", "synthetic A/A compare --run"),
        *aa_lines("syn-aa-files", "synthetic A/A file compare"),
    ]
    for name, delta in DELTAS.items():
        found.append(Line(f"syn-{name}", f"synthetic power, Δ = {delta:.0%}", seen, see, "seen"))
    return found + [
        Line("syn-freeze", "synthetic freeze: mean covered", covered, cover, "covered"),
        Line("syn-bimodal", "synthetic bimodal covers q·d", covered, cover, "covered"),
        Line("syn-history-calm", "synthetic history, 3 calm sittings", covered, cover, "covered"),
        Line(
            "syn-history-disturbed",
            "synthetic history, 5 sittings, 1 disturbed",
            covered,
            cover,
            "covered",
        ),
        Line("syn-history-none", "synthetic, no history (control)", covered, "", "covered"),
    ]


def table(outcomes: list[Outcome]) -> str:
    """The Markdown table of every line whose row has outcomes."""
    head = (
        "| row | what | n | failed | rate | 95% interval | target | met | median time |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    found = [head]
    for line in lines():
        mine = [o for o in outcomes if o.get("row") == line.row]
        if not mine:
            continue
        usable = [o for o in mine if line.needs in o]
        rate = line.rate(usable)
        if not rate.count:
            continue
        low, high = clopper_pearson(rate.hits, rate.count)
        took = f"{statistics.median(rate.took_s):.1f} s" if rate.took_s else "—"
        if rate.took_s and line.row.startswith("syn-"):
            took += " (model)"  # the fake clock's seconds
        found.append(
            f"| {line.row} | {line.what} | {rate.count} | {len(mine) - len(usable)} "
            f"| {rate.share:.1%} | [{low:.1%}, {high:.1%}] | {line.target or '—'} "
            f"| {line.meets(rate.share)} | {took} |"
        )
    return "\n".join(found) + "\n"


# --- running -------------------------------------------------------------------------------

ROWS: dict[str, Callable[[Context], Iterator[Outcome]]] = {
    "aa-run": row_aa_run,
    "aa-files": row_aa_files,
    **{name: row_power(name) for name in DELTAS},
    "freeze": row_freeze,
    "bimodal": row_bimodal,
    "history": row_history,
    "syn-aa-run": synthetic_row(synthetic.aa_compare_run),
    "syn-aa-files": synthetic_row(synthetic.aa_file_compare),
    **{f"syn-{name}": synthetic_row(synthetic.power, delta=d) for name, d in DELTAS.items()},
    "syn-freeze": synthetic_row(synthetic.freeze_coverage),
    "syn-bimodal": synthetic_row(synthetic.bimodal_coverage),
    "syn-history-calm": synthetic_row(synthetic.history_coverage, earlier=3, disturbed=None),
    "syn-history-disturbed": synthetic_row(synthetic.history_coverage, earlier=5, disturbed=1),
    "syn-history-none": synthetic_row(synthetic.history_coverage, earlier=0, disturbed=None),
}
TRUTHS = ("truth-plain", "truth-delta", "truth-freeze", "truth-bimodal")


def chosen_rows(args: argparse.Namespace) -> list[str]:
    names = [n.strip() for n in args.rows.split(",") if n.strip()] if args.rows else list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        fail(f"--rows: unknown {', '.join(unknown)}; the rows are {', '.join(ROWS)}")
    if args.synthetic_only:
        names = [n for n in names if n.startswith("syn-")]
    return names


def fail(message: str) -> None:
    print(f"run.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def play(names: list[str], context: Context, path: Path) -> list[Outcome]:
    """Every chosen row, each outcome written to ``path`` as it comes."""
    found = []
    with path.open("w") as f:
        for name in names:
            began = time.monotonic()
            for outcome in ROWS[name](context):
                found.append({"row": name, **outcome})
                f.write(json.dumps(found[-1], allow_nan=False, default=str) + "\n")
                f.flush()
            took = time.monotonic() - began
            print(
                f"{name}: {sum(o['row'] == name for o in found)} outcomes in {took:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return found


def read_outcomes(paths: list[Path]) -> list[Outcome]:
    try:
        return [json.loads(line) for p in paths for line in p.read_text().splitlines() if line]
    except (OSError, json.JSONDecodeError) as e:
        fail(f"--table: {e}")
    return []


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "out" / "validation")
    parser.add_argument("--rows", help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--count", type=int, default=20, help="invocations per real row (20)")
    parser.add_argument("--synthetic-count", type=int, default=1000, help="trials (1000)")
    parser.add_argument("--quick", action="store_true", help="tiny counts, short runs: a smoke")
    parser.add_argument("--synthetic-only", action="store_true")
    parser.add_argument("--max-time", default="60s", help="of each compare --run and sitting")
    parser.add_argument("--clients", type=int, default=1, help="closed-loop rows (1)")
    parser.add_argument("--servers", type=Path, default=ROOT / "target" / "validation")
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        metavar="JSONL",
        help="print the table of earlier outcomes; run nothing",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.table:
        sys.stdout.write(table(read_outcomes(args.table)))
        return 0
    names = chosen_rows(args)
    if any(not n.startswith("syn-") for n in names):
        missing = [t for t in TRUTHS if not (args.servers / t).is_file()]
        if missing:
            fail(f"{args.servers} lacks {', '.join(missing)}: make validation-servers first")
    context = Context(
        out=args.output.resolve(),
        servers=args.servers.resolve(),
        count=2 if args.quick else args.count,
        max_time="6s" if args.quick else args.max_time,
        clients=args.clients,
        quick=args.quick,
        synthetic_count=20 if args.quick else args.synthetic_count,
    )
    context.out.mkdir(parents=True, exist_ok=True)
    found = play(names, context, context.out / "outcomes.jsonl")
    sys.stdout.write(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())

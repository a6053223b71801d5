"""Placement: do estimates per CPU placement reproduce across sittings better than the
pooled mean?

On a virtual machine the host moves the virtual CPUs: in some runs the server's and the
clients' CPUs are near (SMT siblings or one core's caches), in others far. Each run records
how far (``runs[].noise.cpu_hop_ns``, a cache-line round trip just before the run). The
pooled mean of a sitting mixes both placements in whatever share that sitting happened to
get; this script measures whether the mean of each placement's runs is the steadier figure.

It runs K sittings of volley-bench, one after another, each for a fixed time (a precision
no run reaches, ``--max-time T``), keeps each result under ``-o DIR``, then prints for the
pooled mean and for the near and far runs of each sitting (split at the geometric middle of
all probes):

- spread: the sd of the sittings' values as a share of their mean (how far apart two
  sittings' answers land);
- coverage: the share of sittings whose interval holds the mean of the other sittings'
  values (for honest 95% intervals about 95%), with sd(z) as in run.py;
- sittings: how many sittings had at least three runs at that placement.

This is a measurement, not a test: nothing here judges or asserts a timing.

    python bench/calibration/placement.py -k 12 --fixed 15s -o out/placement \
        target/servers/c-threaded
    python bench/calibration/placement.py --analyse out/placement     # again, from the files
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from volley.numbers import stats  # noqa: E402

UNREACHABLE_PRECISION = "0.00001%"
FIXED_PILOT = 100_000
MIN_PLACED_RUNS = 3  # a placement with fewer runs in a sitting gives that sitting no value


@dataclass(frozen=True)
class Sitting:
    mean_ns: float
    half_ns: float
    runs: list[tuple[float, float]]  # (cpu_hop_ns, run mean ns), runs with a probe


def load(path: Path) -> Sitting:
    data = json.loads(path.read_text())
    lat = data["latency_ns"]
    runs = [
        (r["noise"]["cpu_hop_ns"], r["mean_ns"])
        for r in data["runs"]
        if (r.get("noise") or {}).get("cpu_hop_ns")
    ]
    return Sitting(lat["mean"], (lat["ci_high"] - lat["ci_low"]) / 2, runs)


def honesty(values: list[float], halves: list[float]) -> tuple[float, float]:
    """Coverage of the leave-one-out mean, and sd of the z-scores."""
    held, z = 0, []
    for i, (value, half) in enumerate(zip(values, halves, strict=True)):
        others = statistics.fmean(values[:i] + values[i + 1 :])
        held += abs(value - others) <= half
        if half > 0 and math.isfinite(half):
            z.append((value - others) / (half / 1.96))
    return held / len(values), statistics.stdev(z) if len(z) > 1 else math.nan


def placed(sitting: Sitting, near: bool, middle: float) -> tuple[float, float] | None:
    """The mean of the sitting's runs at one placement, and its interval's half-width."""
    values = [v for h, v in sitting.runs if (h < middle) == near]
    if len(values) < MIN_PLACED_RUNS:
        return None
    found = stats.run_interval(statistics.fmean(values), values, 0.95)
    return found.centre, found.half_width


def row(name: str, pairs: list[tuple[float, float]]) -> str:
    if len(pairs) < 3:
        return f"| {name} | {len(pairs)} | - | - | - |"
    values, halves = [p[0] for p in pairs], [p[1] for p in pairs]
    spread = statistics.stdev(values) / statistics.fmean(values)
    coverage, sd_z = honesty(values, halves)
    return (
        f"| {name} | {len(pairs)} | {statistics.fmean(values) / 1e3:.2f} us | "
        f"{spread:.1%} | {coverage:.0%} / {sd_z:.2f} |"
    )


def analyse(directory: Path) -> str:
    sittings = [load(p) for p in sorted(directory.glob("sitting-*.json"))]
    hops = [h for s in sittings for h, _ in s.runs]
    if not hops:
        return "no run has a CPU probe (one CPU, or --connect): nothing to split"
    middle = math.sqrt(min(hops) * max(hops))
    lines = [
        f"{len(sittings)} sittings from {directory}; probes {min(hops):.0f}-{max(hops):.0f} ns, "
        f"split at {middle:.0f} ns; near share per sitting: "
        + ", ".join(
            f"{sum(h < middle for h, _ in s.runs) / len(s.runs):.0%}" for s in sittings if s.runs
        ),
        "",
        "| estimate | sittings | mean of sittings | spread (sd) between sittings | "
        "coverage / sd(z) |",
        "| --- | --- | --- | --- | --- |",
        row("pooled mean (all runs)", [(s.mean_ns, s.half_ns) for s in sittings]),
    ]
    for near in (True, False):
        found = [p for s in sittings if (p := placed(s, near, middle)) is not None]
        lines.append(row(f"{'near' if near else 'far'} runs only", found))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", nargs="?")
    parser.add_argument("-k", type=int, default=12, help="sittings (default 12)")
    parser.add_argument("--fixed", default="20s", help="each sitting's time (default 20s)")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, default=Path("out/placement"))
    parser.add_argument("--analyse", type=Path, help="only analyse the sittings in DIR")
    parser.add_argument(
        "--volley", default=f"{shlex.quote(sys.executable)} -m volley bench", help="command"
    )
    args = parser.parse_args()
    if args.analyse:
        print(analyse(args.analyse))
        return 0
    if not args.server:
        parser.error("give SERVER, or --analyse DIR")
    args.output.mkdir(parents=True, exist_ok=True)
    base = [*shlex.split(args.volley), "--quiet", "--history", "off"]
    base += ["--clients", str(args.clients), "--cores", "1", "--server-cores", "0"]
    base += ["--precision", UNREACHABLE_PRECISION, "--min-runs", str(FIXED_PILOT)]
    base += ["--max-time", args.fixed]
    for i in range(args.k):
        path = args.output / f"sitting-{i:03d}.json"
        done = subprocess.run(
            [*base, "--json", str(path), args.server],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if not path.exists():
            print(f"sitting {i + 1} wrote no result: {done.stderr.strip()}", file=sys.stderr)
            return 1
        print(f"sitting {i + 1}/{args.k}: mean {load(path).mean_ns / 1e3:.2f} us", flush=True)
    print(analyse(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Calibration: are volley-bench's intervals honest across independent invocations?

Runs K independent invocations of volley-bench on one configuration, one after another,
each writing its JSON result. For the mean and for p99 it prints:

- coverage: the share of invocations whose interval holds the mean of the other K - 1
  invocations' values (for honest 95% intervals about 95%, a little less for small K);
- sd(z): the standard deviation of z = (value - mean of the others) / (half-width / 1.96)
  (about 1 for honest intervals; 3 means the intervals are three times too narrow);
- time: median and max wall time of an invocation, the median number of runs, and the
  per-run overhead (wall time of a run beyond its warm-up and measured stretch: server
  start and stop, connecting, the coordinator's work);
- placement: how far apart the server's and the clients' CPUs were (each run's
  ``noise.cpu_hop_ns``), the share of each invocation's runs on the far placement, and how
  much of the spread between invocations that share explains (a virtual machine whose
  host moves its virtual CPUs between cores).

This is a measurement, not a test: nothing here judges or asserts a timing.

    python bench/calibration/run.py --clients 4 target/servers/c-epoll            # defaults
    python bench/calibration/run.py --clients 4 --fixed 15s target/servers/c-epoll
    python bench/calibration/run.py -k 16 --volley "python -m volley bench" ... SERVER

``--fixed T`` plays for a fixed time T (a precision no run reaches, a pilot no run ends,
``--max-time T``);
without it, the default stopping rule decides. Any other volley-bench option goes after
``--``. Results of format 1 (older volley) carry no p99 interval: their p99 row is empty.

Earlier sittings (``volley.measure.history``): the invocations keep their history in a temporary
directory of their own, removed at the end, so that a row neither reads nor adds to the
user's. ``--warm W`` (default 4) invocations run first and are not counted: they give the
counted ones a history, as a user's earlier invocations would; the counted invocations
then also add to it, each one seeing every sitting before it (up to volley.measure.history.KEPT).
``--warm 0`` passes no ``--history`` at all (for an older volley that has none; a newer
one then uses the default history).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

UNREACHABLE_PRECISION = "0.00001%"
FIXED_PILOT = 100_000


@dataclass(frozen=True)
class Invocation:
    mean_ns: float
    mean_half_ns: float
    p99_ns: float
    p99_half_ns: float | None
    elapsed_s: float
    runs: int
    overhead_s: float | None  # per run, beyond warm-up and measuring
    status: str
    hops_ns: list[float]  # each run's CPU-to-CPU probe, where it has one
    earlier: int | None  # earlier sittings its intervals drew on
    error: str | None  # why it stopped early, when it did


def half_width(low: float | None, high: float | None) -> float:
    if low is None or high is None:
        return math.inf
    return (high - low) / 2


def load(text: str) -> Invocation:
    """One invocation's result, from the JSON volley-bench wrote on stdout."""
    data = json.loads(text)
    lat = data["latency_ns"]
    p99 = lat.get("intervals", {}).get("p99")
    runs = data.get("runs") or []
    overhead = None
    if runs:
        played = sum(r["duration_s"] for r in runs) + len(runs) * data["warmup_s"]
        overhead = (data["elapsed_s"] - played) / len(runs)
    return Invocation(
        mean_ns=lat["mean"],
        mean_half_ns=half_width(lat["ci_low"], lat["ci_high"]),
        p99_ns=lat["p99"],
        p99_half_ns=half_width(*p99) if p99 else None,
        elapsed_s=data["elapsed_s"],
        runs=len(runs) or data.get("rounds", 0),
        overhead_s=overhead,
        status=data["status"],
        hops_ns=[h for r in runs if (h := (r.get("noise") or {}).get("cpu_hop_ns"))],
        earlier=data.get("earlier_sittings"),
        error=data.get("error"),
    )


def honesty(values: list[float], halves: list[float]) -> tuple[float, float]:
    """Coverage of the leave-one-out mean, and sd of the z-scores."""
    held, z = 0, []
    for i, (value, half) in enumerate(zip(values, halves, strict=True)):
        others = statistics.fmean(values[:i] + values[i + 1 :])
        held += abs(value - others) <= half
        z.append((value - others) / (half / 1.96) if half > 0 else math.inf)
    finite = [x for x in z if math.isfinite(x)]
    return held / len(values), statistics.stdev(finite) if len(finite) > 1 else math.nan


def placement(found: list[Invocation]) -> str | None:
    """The probes' range, and the correlation between an invocation's share of runs on the
    far placement (beyond the geometric middle of all probes) and its mean."""
    hops = [h for f in found for h in f.hops_ns]
    if not hops:
        return None
    low, high = min(hops), max(hops)
    middle = math.sqrt(low * high)
    far = [
        sum(h >= middle for h in f.hops_ns) / len(f.hops_ns) if f.hops_ns else 0.0 for f in found
    ]
    text = f"CPU-to-CPU round trip {low:.0f}-{high:.0f} ns over all runs"
    if len(set(far)) > 1:
        r = statistics.correlation(far, [f.mean_ns for f in found])
        text += (
            f"; share of far runs per invocation {min(far):.0%}-{max(far):.0%}, "
            f"its correlation with the mean r = {r:.2f}"
        )
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server")
    parser.add_argument("extra", nargs="*", help="volley-bench options, after --")
    parser.add_argument("-k", type=int, default=16, help="invocations (default 16)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--cores", default="1", help="client CPUs (default 1)")
    parser.add_argument("--server-cores", default="0", help="server CPUs (default 0)")
    parser.add_argument("--fixed", metavar="T", help="play for a fixed time T (like 15s)")
    parser.add_argument(
        "--volley",
        default=f"{shlex.quote(sys.executable)} -m volley bench",
        help="the volley-bench command (another checkout's, to compare versions)",
    )
    parser.add_argument("--label", default="", help="a name for this row")
    parser.add_argument(
        "--warm", type=int, default=4, help="uncounted invocations first, for a history"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="volley-calibration-") as place:
        return calibrate(args, place)


def calibrate(args: argparse.Namespace, place: str) -> int:
    base = [
        *shlex.split(args.volley),
        "--quiet",
        "--clients",
        str(args.clients),
        "--cores",
        args.cores,
        "--server-cores",
        args.server_cores,
    ]
    if args.fixed:
        # A pilot longer than T: the rule never plans nor stops (not even for a target
        # that earlier sittings put out of reach), --max-time ends every invocation.
        base += ["--precision", UNREACHABLE_PRECISION, "--max-time", args.fixed]
        base += ["--min-runs", str(FIXED_PILOT)]
    if args.warm:
        base += ["--history", place]
    found: list[Invocation] = []
    # Each result comes on stdout (--json -): nothing is written to disk but the history,
    # in a temporary directory; nothing left behind.
    for i in range(-args.warm, args.k):
        command = [*base, *args.extra, "--json", "-", args.server]
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if not done.stdout.strip():
            print(f"invocation {i + 1} wrote no result: {done.stderr.strip()}", file=sys.stderr)
            return 1
        last = load(done.stdout)
        if i < 0:
            print(
                f"warm {i + args.warm + 1}/{args.warm}: mean {last.mean_ns / 1e3:.2f} us, "
                f"{last.elapsed_s:.1f} s (not counted)",
                file=sys.stderr,
                flush=True,
            )
            continue
        found.append(last)
        print(
            f"{i + 1:3d}/{args.k}: mean {last.mean_ns / 1e3:8.2f} us "
            f"± {last.mean_half_ns / 1e3:.2f}  p99 {last.p99_ns / 1e3:8.1f} us"
            + (f" ± {last.p99_half_ns / 1e3:.1f}" if last.p99_half_ns is not None else "")
            + f"  {last.runs} runs  {last.elapsed_s:.1f} s  {last.status}"
            + (" (out of reach)" if last.error and "out of reach" in last.error else "")
            + (f"  {last.earlier} earlier sittings" if last.earlier is not None else "")
            + (
                f"  CPUs {statistics.median(last.hops_ns):.0f} ns apart (median)"
                if last.hops_ns
                else ""
            ),
            file=sys.stderr,
            flush=True,
        )
    mean_cover, mean_sd = honesty([f.mean_ns for f in found], [f.mean_half_ns for f in found])
    if all(f.p99_half_ns is not None for f in found):
        p99_cover, p99_sd = honesty(
            [f.p99_ns for f in found], [f.p99_half_ns or 0.0 for f in found]
        )
        p99 = f"{p99_cover:.0%} | {p99_sd:.2f}"
    else:
        p99 = "— | —"
    elapsed = [f.elapsed_s for f in found]
    overheads = [f.overhead_s for f in found if f.overhead_s is not None]
    spread = statistics.stdev([f.mean_ns for f in found]) / statistics.fmean(
        [f.mean_ns for f in found]
    )
    mode = f"fixed {args.fixed}" if args.fixed else "stopping rule"
    overhead = f"{statistics.median(overheads) * 1e3:.0f} ms" if overheads else "—"
    print(
        "| configuration | mode | K | mean: coverage | sd(z) | p99: coverage | sd(z) "
        "| sd of means | time median | time max | runs median | overhead per run |"
    )
    print("|" + "---|" * 12)
    print(
        f"| {args.label or Path(args.server).name + f' {args.clients}c'} | {mode} | {args.k} "
        f"| {mean_cover:.0%} | {mean_sd:.2f} | {p99} | {spread:.1%} "
        f"| {statistics.median(elapsed):.1f} s | {max(elapsed):.1f} s "
        f"| {statistics.median(f.runs for f in found):g} | {overhead} |"
    )
    reached = [f.elapsed_s for f in found if f.status == "significant"]
    hopeless = sum(bool(f.error and "out of reach" in f.error) for f in found)
    print(
        f"\ntarget reached by {len(reached)} of {len(found)}"
        + (f" (median {statistics.median(reached):.1f} s)" if reached else "")
        + f"; out of reach (stopped early) in {hopeless}; median half-width "
        f"{statistics.median(f.mean_half_ns / f.mean_ns for f in found):.1%} (mean), "
        + (
            f"{statistics.median((f.p99_half_ns or 0) / f.p99_ns for f in found):.1%} (p99)"
            if all(f.p99_half_ns is not None for f in found)
            else "— (p99)"
        )
    )
    where = placement(found)
    if where:
        print(f"\n{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

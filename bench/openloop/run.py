"""Generator accuracy of the open loop: how late ``_core.play_open`` sends behind schedule.

One c-epoll server is started on the first usable CPU and kept for the whole benchmark; one
client connection, played by ``_core.play_open`` in this process pinned to the next CPU,
offers each rate in turn. The rates are interleaved (r1 r2 ... r1 r2 ...) for ``--reps``
rounds so drifting background load touches every rate alike; each row is the median over
rounds. Lag is (actual send time - scheduled send time) of every send in the measured
window; "late" is the share over ``_core.LATE_TOLERANCE_NS``. Then the rates are doubled
from ``--search-from`` until p99 lag passes 10 us (median over the rounds): the last rate
below is the highest one client CPU sustains with p99 lag under 10 us on this machine.

This is a measurement, not a test: nothing here judges or asserts a timing.

    python bench/openloop/run.py [--rates 1k,10k,50k,100k] [--reps 3] [--seconds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from pathlib import Path

import numpy as np

from volley import _core
from volley.engine import server, worker
from volley.numbers.units import parse_rate
from volley.system import cpus

ROOT = Path(__file__).resolve().parent.parent.parent
SERVER = ROOT / "target" / "servers" / "c-epoll"
WARMUP_NS = 200_000_000
TARGET_P99_LAG_NS = 10_000
SEARCH_LIMIT_OPS_S = 2_000_000


def one_run(
    host: str, port: int, rate: float, seconds: float, spin_ns: int = 0
) -> dict[str, float]:
    """One connection at ``rate`` (Poisson): its send lags and achieved rate."""
    sock = worker.connect(host, port, 5.0)
    try:
        capacity = int(rate * seconds * 1.5) + 1000
        latency = np.zeros(capacity, np.int64)
        lags = np.zeros(capacity, np.int64)
        stop = np.zeros(1, np.uint8)
        start = _core.monotonic_ns() + 10_000_000
        measure_from = start + WARMUP_NS
        deadline = measure_from + int(seconds * 1e9)
        result = _core.play_open(
            sock.fileno(),
            latency,
            12345,
            start,
            deadline,
            stop,
            measure_from,
            rate,
            _core.ARRIVALS["poisson"],
            5_000_000_000,
            send_lag_ns=lags,
            spin_ns=spin_ns,
        )
    finally:
        sock.close()
    _, outcome, _, _, _, due, late, replied, _, _, _, window = result
    if outcome != _core.OK:
        raise SystemExit(f"run at {rate:,.0f} ops/s failed (outcome {outcome})")
    sent = lags[: min(due, capacity)]
    p50, p99, p999 = np.percentile(sent, [50, 99, 99.9]) if len(sent) else (np.nan,) * 3
    return {
        "p50": float(p50),
        "p99": float(p99),
        "p99.9": float(p999),
        "late": late / due if due else 0.0,
        "achieved": replied / (window / 1e9) if window else 0.0,
    }


def rounds(
    host: str, port: int, rates: list[float], reps: int, seconds: float, spin_ns: int
) -> dict:
    runs: dict[float, list[dict[str, float]]] = {rate: [] for rate in rates}
    for _ in range(reps):
        for rate in rates:
            runs[rate].append(one_run(host, port, rate, seconds, spin_ns))
    return {
        rate: {key: statistics.median(r[key] for r in found) for key in found[0]}
        for rate, found in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1k,10k,50k,100k")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--search-from", default="1k")
    parser.add_argument(
        "--spin", default="0,50us", help="spin_ns values to compare (comma-separated, in us)"
    )
    args = parser.parse_args()
    rates = [parse_rate(r) for r in args.rates.split(",")]
    usable = cpus.usable_cpus()
    server_cpu, client_cpu = usable[0], usable[1 % len(usable)]
    if not SERVER.exists():
        subprocess.run(["make", "server-c-epoll"], cwd=ROOT, check=True, capture_output=True)
    port = server.choose_port()
    process = server.start(str(SERVER), [], port, [server_cpu])
    try:
        process.wait_listening(10.0)
        os.sched_setaffinity(0, {client_cpu})
        print(f"uptime: {Path('/proc/loadavg').read_text().split()[:3]} (load 1/5/15 min)")
        print(f"c-epoll on CPU {server_cpu}, one client connection on CPU {client_cpu},")
        print(f"{args.reps} rounds of {args.seconds:g} s per rate, medians over rounds")
        for spin_us in args.spin.split(","):
            spin_ns = int(float(spin_us.removesuffix("us")) * 1e3)
            print(f"spin_ns {spin_ns}:")
            print(f"{'offered ops/s':>14} {'achieved':>10} {'lag p50':>9} {'p99':>9} "
                  f"{'p99.9':>9} {'late>10us':>9}")  # fmt: skip
            found = rounds(process.host, port, rates, args.reps, args.seconds, spin_ns)
            for rate, row in found.items():
                print(
                    f"{rate:>14,.0f} {row['achieved']:>10,.0f} {row['p50'] / 1e3:>7.1f}us "
                    f"{row['p99'] / 1e3:>7.1f}us {row['p99.9'] / 1e3:>7.1f}us "
                    f"{row['late']:>9.1%}"
                )
            best, rate = None, parse_rate(args.search_from)
            while rate <= SEARCH_LIMIT_OPS_S:
                row = rounds(process.host, port, [rate], args.reps, args.seconds, spin_ns)[rate]
                if row["p99"] >= TARGET_P99_LAG_NS:
                    break
                best, rate = rate, rate * 2
            print(
                f"  highest rate (doubling from {parse_rate(args.search_from):,.0f}) with p99 "
                "lag under 10 us: "
                + (f"{best:,.0f} ops/s" if best else "none (the first rate tried failed)")
            )
    finally:
        process.stop()


if __name__ == "__main__":
    main()

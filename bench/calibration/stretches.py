"""Can one sitting see how much the next one differs? Cut one long invocation into stretches.

Reads the JSON of one long volley-bench invocation (hundreds of runs) and prints:

- the standard deviation of the mean of b consecutive runs, for b = 1, 2, 4, ..., 32
  (independent runs halve it with every factor of 4; a machine with long memory does not);
- for stretches of ``--stretch`` runs (24: about 20 s), how often an interval computed
  inside one stretch holds the mean of all the other stretches, and sd(z), for the run-level
  interval volley-bench uses within a sitting (``stats.run_interval``) and for batch means
  over 4, 6 and 8 batches of the stretch's runs.

    volley-bench --clients 4 --cores 1 --server-cores 0 --precision 0.00001% \\
        --min-runs 100000 --max-time 240s --history off --json long.json target/servers/c-epoll
    python bench/calibration/stretches.py long.json

A measurement, not a test: nothing here judges or asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable

import numpy as np

from volley.numbers import stats


def batch_means_half(values: np.ndarray, batches: int) -> float:
    """The t interval's half-width over ``batches`` consecutive batches of the values."""
    edges = np.linspace(0, len(values), batches + 1).round().astype(int)
    means = np.array([values[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    return stats.t_quantile(0.95, batches - 1) * means.std(ddof=1) / math.sqrt(batches)


def honesty(values: list[float], halves: list[float]) -> str:
    """Coverage of the mean of the other stretches, and sd(z), as bench/calibration/run.py."""
    held, z = 0, []
    for i, (value, half) in enumerate(zip(values, halves, strict=True)):
        others = float(np.mean(values[:i] + values[i + 1 :]))
        held += abs(value - others) <= half
        z.append((value - others) / (half / 1.96))
    return f"{held}/{len(values)} held, sd(z) {np.std(z, ddof=1):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", help="volley-bench JSON of one long invocation")
    parser.add_argument("--stretch", type=int, default=24, help="runs per stretch (24)")
    args = parser.parse_args()
    with open(args.result) as f:
        runs = json.load(f)["runs"]
    for name in ("mean_ns", "p99_ns"):
        x = np.array([r[name] for r in runs], dtype=np.float64) / 1e3
        print(f"{name[:-3]}: {len(x)} runs, {x.mean():.2f} us")
        for b in (1, 2, 4, 8, 16, 32):
            blocks = x[: len(x) // b * b].reshape(-1, b).mean(axis=1)
            print(f"  sd of the mean of {b:2d} consecutive runs: {blocks.std(ddof=1):.2f} us")
        stretches = [
            x[i : i + args.stretch] for i in range(0, len(x) - args.stretch + 1, args.stretch)
        ]
        values = [float(s.mean()) for s in stretches]
        methods: dict[str, Callable[[np.ndarray], float]] = {
            "run-level (volley-bench)": lambda s: stats.run_interval(0.0, s, 0.95).half_width,
            "batch means, 4 batches": lambda s: batch_means_half(s, 4),
            "batch means, 6 batches": lambda s: batch_means_half(s, 6),
            "batch means, 8 batches": lambda s: batch_means_half(s, 8),
        }
        print(f"  {len(stretches)} stretches of {args.stretch} runs:")
        for label, half in methods.items():
            print(f"    {label}: {honesty(values, [half(s) for s in stretches])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Coverage of a sitting's interval when its runs hang together, simulated (seeded).

Run values are a stationary AR(1) series (correlation ``phi`` from one run to the next,
unit innovations, true mean 0), as a machine that drifts slowly gives; each trial is one
sitting of ``n`` runs, and the interval is volley's own (``stats.run_interval``) beside the
plain t interval (df n - 1, no correlation allowed for). A 95% interval should hold 0 in
95% of trials. Run from the checkout:
``PYTHONPATH=. python3 bench/calibration/correlated_runs.py [trials]`` (2,000 by default;
docs/methodology.md quotes it).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from volley.numbers import stats

CONFIDENCE = 0.95


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    x = np.empty(n)
    x[0] = rng.normal() / math.sqrt(1 - phi**2)
    noise = rng.normal(size=n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    return x * 1e3  # in ns: far above the histogram's 1 ns resolution


def coverage(phi: float, n: int, trials: int, seed: int = 20261204) -> tuple[float, float]:
    """(volley's, plain t's) share of trials whose interval holds the true mean."""
    rng = np.random.default_rng(seed)
    ours = plain = 0
    for _ in range(trials):
        x = ar1(rng, n, phi)
        iv = stats.run_interval(float(x.mean()), x, CONFIDENCE)
        ours += iv.low <= 0 <= iv.high
        half = stats.t_quantile(CONFIDENCE, n - 1) * x.std(ddof=1) / math.sqrt(n)
        plain += abs(x.mean()) <= half
    return ours / trials, plain / trials


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"coverage of a {CONFIDENCE:.0%} interval, {trials} trials a cell")
    print("phi   runs  volley  plain t")
    for phi in (0.0, 0.3, 0.5, 0.7, 0.9):
        for n in (10, 40, 100):
            ours, plain = coverage(phi, n, trials)
            print(f"{phi:<5} {n:>4}  {ours:6.1%}  {plain:6.1%}")


if __name__ == "__main__":
    main()

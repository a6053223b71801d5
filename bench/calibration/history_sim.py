"""Coverage of a sitting's interval with a history of earlier sittings, simulated (seeded).

Each sitting of a configuration has a true value mu + u (u ~ N(0, tau^2), the machine's
state for that sitting); its RUNS runs scatter around that with sd 1 (so ``ratio`` is
tau / within sd of one run). The current sitting's interval (volley.numbers.stats.run_interval with
the history's Between) should hold mu, the configuration's value that any further sitting
scatters around. ``disturbed``: one earlier sitting is off by 4 times its spread (a CPU hog,
a migration). Run from the checkout:
``PYTHONPATH=. python3 bench/calibration/history_sim.py [trials]``.
"""

from __future__ import annotations

import sys

import numpy as np

from volley.numbers import stats

RUNS = 10


def sitting(rng: np.random.Generator, tau: float, offset: float = 0.0) -> tuple[float, float]:
    runs = rng.normal(rng.normal(0.0, tau) + offset, 1.0, RUNS)
    return float(runs.mean()), float(runs.var(ddof=1) / RUNS)


def coverage(earlier: int, ratio: float, disturbed: bool, trials: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    held = 0
    for _ in range(trials):
        found = [sitting(rng, ratio) for _ in range(earlier)]
        if disturbed and earlier:
            sign = 1.0 if rng.random() < 0.5 else -1.0
            found[0] = sitting(rng, 0.0, sign * 4.0 * np.sqrt(ratio**2 + 1.0 / RUNS))
        between = stats.Between.of([y for y, _ in found], [v for _, v in found])
        runs = rng.normal(rng.normal(0.0, ratio), 1.0, RUNS)
        interval = stats.run_interval(float(runs.mean()), runs, 0.95, between)
        held += interval.low <= 0.0 <= interval.high
    return held / trials


def main(trials: int = 2000) -> None:
    print(f"coverage of mu by the 95% interval, {RUNS} runs a sitting, {trials} trials a cell")
    ratios = (0.0, 0.5, 1.0, 3.0)
    print("earlier  disturbed " + " ".join(f"tau/sd={r:<4}" for r in ratios))
    for earlier in range(1, 11):
        for disturbed in (False, True):
            cells = [
                coverage(earlier, r, disturbed, trials, seed=earlier * 100 + i)
                for i, r in enumerate(ratios)
            ]
            print(f"{earlier:7d}  {str(disturbed):9s} " + " ".join(f"{c:10.3f}" for c in cells))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)

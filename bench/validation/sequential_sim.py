"""How often ``volley compare --run`` is wrong, and how often it finds a real difference:
the simulation of tests/test_sequential.py (runs.alternate with a fake engine and clock,
judged by compare.Monitor, the old every-round 95% rule judged on the same rounds) at
larger counts. No sockets; about 20 s per 1,000 comparisons of 40 rounds.

    python3 bench/validation/sequential_sim.py [--trials 1000] [--max-rounds 40]

Prints a Markdown table: per setting (the sd of a round's A/B difference, a drift of the
machine shared by a round, B's true shift) the share of comparisons the plan calls
faster/slower, equivalent (within ±1%) or leaves unresolved, with a 95% Wilson interval
for the first, the old rule's faster/slower share, and the median rounds played.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
from test_sequential import simulate  # noqa: E402

from volley.measure import runs  # noqa: E402
from volley.studies.compare import EQUIVALENT, FASTER, NO_DIFFERENCE, SLOWER  # noqa: E402

SETTINGS = [
    {"sd": 0.01},
    {"sd": 0.03},
    {"sd": 0.13},
    {"sd": 0.03, "drift": 0.05},
    {"sd": 0.03, "shift": 0.05},
    {"sd": 0.13, "shift": 0.05},
    {"sd": 0.03, "shift": 0.20},
    {"sd": 0.13, "shift": 0.20},
]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--max-rounds", type=int, default=40)
    options = parser.parse_args()
    # What the verdict reads is the runs' values; each measurement's own intervals (what a
    # progress line shows) are skipped, as in the tests.
    runs.Measurement.settle = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    print(
        f"{options.trials} comparisons per row, at most {options.max_rounds} rounds, "
        "family 5% (mean 2.5%), equivalence ±1%\n"
    )
    print(
        "| round sd | drift | B's shift | faster/slower [95% CI] | equivalent | unresolved "
        "| old rule faster/slower | median rounds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed, setting in enumerate(SETTINGS):
        began = time.monotonic()
        found = simulate(options.trials, seed=100 + seed, max_rounds=options.max_rounds, **setting)
        n = sum(found.plan.values())
        differ = found.plan[SLOWER] + found.plan[FASTER]
        low, high = wilson(differ, n)
        old = (found.old[SLOWER] + found.old[FASTER]) / n
        print(
            f"| {setting['sd']:.0%} | {setting.get('drift', 0):.0%} "
            f"| {setting.get('shift', 0):.0%} | {differ / n:.1%} [{low:.1%}, {high:.1%}] "
            f"| {found.plan[EQUIVALENT] / n:.1%} | {found.plan[NO_DIFFERENCE] / n:.1%} "
            f"| {old:.1%} | {np.median(found.rounds):.0f} |",
            flush=True,
        )
        print(f"  ({time.monotonic() - began:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()

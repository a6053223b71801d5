"""Sequential against interleaved sweeps: how well does each server's ratio to a baseline
server repeat?

Plays one small experiment REPS times in each order, alternating (sequential, interleaved,
sequential, interleaved, ...), so that a drift of the machine lands on both orders alike,
and prints for every server its mean and p99 latency over the baseline's at the same
point in each repetition, and the spread of that ratio between repetitions (max - min, in
percent of the ratio). A comparison that survives a drifting machine repeats.

    python bench/interleave/run.py                      # 2 reps, 3 servers, 4 clients
    python bench/interleave/run.py --reps 3 --servers c-threaded,c-epoll,go,python-asyncio
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from volley.present import relative

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ("sequential", "interleaved")


def experiment(order: str, args: argparse.Namespace) -> str:
    servers = ", ".join(f'"{name}"' for name in args.servers)
    return f"""name = "{order}"
servers-dir = "{ROOT / "target" / "servers"}"
servers = [{servers}]
clients = {args.clients}
server-cpus = 1
client-cpus = 1
order = "{order}"

[bench]
precision = "{args.precision}"
max-time = "{args.max_time}"
warmup = "{args.warmup}"
run-time = "{args.run_time}"
"""


def play(order: str, rep: int, args: argparse.Namespace, workdir: Path) -> tuple[Path, float]:
    file = workdir / f"{order}-{rep}.toml"
    file.write_text(experiment(order, args))
    out = workdir / f"{order}-{rep}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "volley", "sweep", str(file), "-o", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    # 3: some point did not meet its targets within max-time; its ratio still counts.
    if done.returncode not in (0, 3):
        sys.exit(f"{order} sweep {rep} failed with status {done.returncode}: {done.stderr}")
    return out / "results.jsonl", wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--servers", default="c-threaded,c-epoll,python-asyncio")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--precision", default="2%")
    parser.add_argument("--max-time", default="20s")
    parser.add_argument("--warmup", default="0.25s")
    parser.add_argument("--run-time", default="0.5s")
    parser.add_argument("--keep", type=Path, help="keep the sweeps in this directory")
    args = parser.parse_args()
    args.servers = args.servers.split(",")
    baseline = args.servers[0]
    if args.reps < 2 or len(args.servers) < 2:
        parser.error("need --reps 2 or more and a baseline plus at least one other server")

    with tempfile.TemporaryDirectory(prefix="volley-interleave-") as scratch:
        workdir = args.keep or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        ratios: dict[tuple[str, str, str], list[float]] = {}
        walls: dict[str, list[float]] = {order: [] for order in ORDERS}
        for rep in range(args.reps):
            for order in ORDERS:
                results, wall = play(order, rep, args, workdir)
                walls[order].append(wall)
                print(f"rep {rep + 1} {order}: {wall:.0f} s", file=sys.stderr)
                for ratio in relative.ratios(results, baseline):
                    key = (ratio.point.server, ratio.statistic, order)
                    ratios.setdefault(key, []).append(ratio.estimate.value)

    print(
        f"{args.clients} clients, precision {args.precision}, max-time {args.max_time} per "
        f"point, baseline {baseline}, {args.reps} repetitions of each order, alternating"
    )
    print()
    reps = " | ".join(f"rep {i + 1}" for i in range(args.reps))
    print(f"| server | statistic | order | {reps} | spread |")
    print("|---|---|---|" + "---|" * args.reps + "---|")
    spreads: dict[str, list[float]] = {order: [] for order in ORDERS}
    for server in args.servers[1:]:
        for statistic in relative.STATISTICS:
            for order in ORDERS:
                values = ratios.get((server, statistic, order), [])
                if len(values) < args.reps:
                    print(f"| {server} | {statistic} | {order} | missing ({len(values)}) |")
                    continue
                spread = (max(values) - min(values)) / statistics.fmean(values)
                spreads[order].append(spread)
                cells = " | ".join(f"{v:.3f}" for v in values)
                print(f"| {server} | {statistic} | {order} | {cells} | {spread:.1%} |")
    print()
    for order in ORDERS:
        if spreads[order]:
            print(
                f"{order}: median spread {statistics.median(spreads[order]):.1%}, "
                f"max {max(spreads[order]):.1%}; wall time per sweep median "
                f"{statistics.median(walls[order]):.0f} s"
            )


if __name__ == "__main__":
    main()

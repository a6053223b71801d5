"""A scale model of a run's overhead: rehearse (volley-bench --rehearse) plans of growing
size on this machine and fit how each phase of a run grows with the workers, the
connections and the MPI ranks, then project to the lab's shapes.

    PYTHONPATH=$PWD python3 bench/scale/run.py [--out DIR] [--figure PNG] [--quick]

Three series, each configuration a short rehearsal (--runs 3 of the default 0.25 s
warm-up + 0.5 s measured run, --history off) against target/servers/c-epoll:

- workers W = 1, 2, 4, 8, 16, 40 (a generated one-socket topology of 2W cores: the server
  on W, one worker on each of the other W), 2 clients per worker as in the lab's 80/40;
- connections C = 80, 320, 1280, 5120 over 40 workers;
- ranks R = 1, 2, 4, 8 (mpiexec --oversubscribe on this machine), 4 workers and 8 clients
  each, against one c-epoll started here (--connect).

For each configuration it prints the median per run of each phase (``runs[].phases_s``)
and of the overhead (a run's wall time beyond warm-up+measure); then, per series, a
least-squares line through the overhead and through each phase, the exponent of a
power law through its ends (1: linear; above 1: faster than linear) and the projection
to the lab (40 workers / 80 clients on one host; 16 hosts). Every worker of a rehearsal
shares this machine's one client CPU, so every per-worker cost here is paid in turn, not
in parallel as on the lab machine: the projections are upper bounds.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from volley.records import results

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "target" / "servers" / "c-epoll"
DEFAULT_RUN_S = 0.25 + 0.5  # the default warm-up and measured run
TARGET_SHARE = 0.10  # the overhead the lab can afford per default run
WORKERS = (1, 2, 4, 8, 16, 40)
CONNECTIONS = (80, 320, 1280, 5120)
RANKS = (1, 2, 4, 8)
LAB = {"workers": 40, "connections": 80, "ranks": 16}
# The phases shown and fitted, as results.RunSummary.phases_s names them.
SHOWN = ("connect", "collect", "disconnect", "server_start", "server_stop", "start_margin")
COMMON = ["--runs", "3", "--history", "off", "--quiet", "--noisy", "keep"]


@dataclass(frozen=True)
class Point:
    series: str  # "workers", "connections" or "ranks"
    x: int
    workers: int
    clients: int
    ranks: int
    medians: dict[str, float]  # results.BenchResult.phase_medians
    wall_s: float  # the whole invocation


def topology_file(directory: Path, cores: int) -> Path:
    """An lscpu -p file of one socket with ``cores`` cores of one thread each."""
    path = directory / f"1s-{cores}c-1t.lscpu"
    rows = [f"{cpu},{cpu},0,0" for cpu in range(cores)]
    path.write_text("# CPU,CORE,SOCKET,NODE\n" + "\n".join(rows) + "\n")
    return path


def rehearse(command: list[str], json_path: Path) -> tuple[results.BenchResult, float] | None:
    """The rehearsal's result and how long the command took; None (and why, on stderr)
    if it failed: the other points are still worth measuring."""
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wall_s = time.monotonic() - began
    if done.returncode != 0:
        print(f"  failed ({done.returncode}): {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return results.read_result(json_path), wall_s


def bench(args: list[str], json_path: Path) -> list[str]:
    return ["volley-bench", "--rehearse", *COMMON, "--json", str(json_path), *args]


def workers_point(directory: Path, workers: int, clients: int, series: str, x: int) -> Point | None:
    json_path = directory / f"{series}-{x}.json"
    topology = topology_file(directory, 2 * workers)
    command = bench(["--topology", str(topology), "--clients", str(clients)], json_path)
    found = rehearse([*command, str(SERVER)], json_path)
    if found is None:
        return None
    result, wall_s = found
    return Point(series, x, workers, clients, 1, result.phase_medians(), wall_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ranks_point(directory: Path, ranks: int, port: int) -> Point | None:
    json_path = directory / f"ranks-{ranks}.json"
    topology = topology_file(directory, 8)  # 4 workers per rank
    command = [
        *("mpiexec", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"),
        *("-n", str(ranks)),
        *bench(["--topology", str(topology), "--connect", f"127.0.0.1:{port}"], json_path),
    ]
    if ranks == 1:  # mpiexec -n 1 is a plain run; keep the launcher out of the timing
        command = command[command.index("volley-bench") :]
    found = rehearse(command, json_path)
    if found is None:
        return None
    result, wall_s = found
    return Point("ranks", ranks, 4 * ranks, result.clients, ranks, result.phase_medians(), wall_s)


def measure(directory: Path, quick: bool) -> list[Point]:
    found: list[Point | None] = []
    for w in WORKERS[:3] if quick else WORKERS:
        found.append(say(workers_point(directory, w, 2 * w, "workers", w)))
    for c in CONNECTIONS[:2] if quick else CONNECTIONS:
        same = [p for p in found if p and (p.workers, p.clients) == (40, c)]
        if same:  # the workers' series measured this very configuration
            found.append(say(replace(same[0], series="connections", x=c)))
            continue
        found.append(say(workers_point(directory, 40, c, "connections", c)))
    port = free_port()
    # The server of the ranks' series, on the CPU a rehearsal folds the server onto.
    usable = sorted(os.sched_getaffinity(0))
    served = subprocess.Popen(
        ["taskset", "-c", str(usable[0]), str(SERVER), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        for r in RANKS[:2] if quick else RANKS:
            found.append(say(ranks_point(directory, r, port)))
    finally:
        served.terminate()
        served.wait(timeout=10)
    return [p for p in found if p is not None]


def saved(directory: Path) -> list[Point]:
    """The points whose results --out kept (their invocation times were not kept)."""
    points = []
    for series, xs in (("workers", WORKERS), ("connections", CONNECTIONS), ("ranks", RANKS)):
        for x in xs:
            path = directory / f"{series}-{x}.json"
            if series == "connections" and x == 80:
                path = directory / "workers-40.json"  # measured once, for both series
            if not path.exists():
                continue
            result = results.read_result(path)
            ranks = max(len(result.hosts), 1)
            workers = len(result.workers) * ranks
            point = Point(series, x, workers, result.clients, ranks, result.phase_medians(), 0.0)
            points.append(point)
    return points


def say(point: Point | None) -> Point | None:
    if point is None:
        return None
    m = point.medians
    print(
        f"  {point.series} {point.x}: overhead {1e3 * m['overhead']:.0f} ms, "
        f"invocation {point.wall_s:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return point


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares intercept and slope, and the exponent k of y ~ x^k through the ends
    (each end the measured value; NaN when either is zero)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    low, high = ys[0], ys[-1]
    exponent = math.log(high / low) / math.log(xs[-1] / xs[0]) if low > 0 and high > 0 else math.nan
    return my - slope * mx, slope, exponent


def table(points: list[Point]) -> list[str]:
    header = ["series", "x", "W", "C", "R", "overhead ms", "% of run", "skew ms"]
    header += [f"{name} ms" for name in SHOWN]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for p in points:
        m = p.medians
        cells = [p.series, p.x, p.workers, p.clients, p.ranks]
        cells += [f"{1e3 * m['overhead']:.0f}", f"{100 * m['overhead'] / DEFAULT_RUN_S:.0f}%"]
        cells += [f"{1e3 * m.get('start_skew', 0.0):.1f}"]
        cells += [f"{1e3 * m.get(name, 0.0):.1f}" for name in SHOWN]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def fits(points: list[Point]) -> list[str]:
    lines = [
        "| series | part | ms at the first x | slope ms per unit | exponent | ms at the lab |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for series in ("workers", "connections", "ranks"):
        found = [p for p in points if p.series == series]
        if len(found) < 2:
            continue
        xs = [float(p.x) for p in found]
        for part in ("overhead", "start_skew", *SHOWN):
            ys = [1e3 * p.medians.get(part, 0.0) for p in found]
            intercept, slope, exponent = fit(xs, ys)
            lab = intercept + slope * LAB[series]
            lines.append(
                f"| {series} | {part} | {ys[0]:.1f} | {slope:.3f} | {exponent:.2f} | {lab:.0f} |"
            )
    return lines


def draw(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    labels = {"workers": "workers W (2 clients each)", "connections": "connections C (40 workers)"}
    labels["ranks"] = "MPI ranks R (4 workers, 8 clients each)"
    for axis, series in zip(axes, ("workers", "connections", "ranks"), strict=True):
        found = [p for p in points if p.series == series]
        xs = [p.x for p in found]
        for part, style in (("overhead", "o-"), ("connect", "s--"), ("disconnect", "^--")):
            axis.plot(xs, [1e3 * p.medians.get(part, 0.0) for p in found], style, label=part)
        axis.plot(
            xs, [1e3 * p.medians.get("start_skew", 0.0) for p in found], "x:", label="start skew"
        )
        axis.axhline(1e3 * TARGET_SHARE * DEFAULT_RUN_S, color="grey", lw=0.8, label="10% of a run")
        axis.set_xscale("log")
        axis.set_yscale("symlog", linthresh=1.0)
        axis.set_ylim(bottom=0)
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.minorticks_off()
        axis.set_xlabel(labels[series])
        axis.set_ylabel("median per run, ms")
        axis.legend(fontsize=7)
    figure.suptitle("Per-run overhead of a rehearsal (all workers on one CPU of a shared 2-CPU VM)")
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="keep each rehearsal's JSON here")
    parser.add_argument("--figure", type=Path, default=Path(__file__).with_name("scale.png"))
    parser.add_argument("--quick", action="store_true", help="the smallest points only")
    parser.add_argument(
        "--from", dest="saved", type=Path, help="draw what --out kept; measure nothing"
    )
    options = parser.parse_args()
    began = time.monotonic()
    if options.saved:
        points = saved(options.saved)
    else:
        with tempfile.TemporaryDirectory() as temporary:
            directory = options.out or Path(temporary)
            directory.mkdir(parents=True, exist_ok=True)
            points = measure(directory, options.quick)
    print("\n".join(table(points)))
    print()
    print("\n".join(fits(points)))
    print()
    lab = next((p for p in points if p.series == "workers" and p.x == LAB["workers"]), None)
    if lab is not None:
        share = lab.medians["overhead"] / DEFAULT_RUN_S
        verdict = "within" if share <= TARGET_SHARE else "above"
        print(
            f"40 workers / 80 clients, folded onto one CPU: overhead "
            f"{1e3 * lab.medians['overhead']:.0f} ms per run, {100 * share:.0f}% of a default run "
            f"({verdict} the {100 * TARGET_SHARE:.0f}% target)"
        )
    print(f"measured in {time.monotonic() - began:.0f} s")
    draw(points, options.figure)
    print(f"wrote {options.figure}", file=sys.stderr)


if __name__ == "__main__":
    main()

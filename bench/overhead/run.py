"""Overhead benchmark: volley-bench against a minimal C client on one running server.

One server is started (pinned to the lower half of the CPUs, as volley-bench would) and kept
running for the whole comparison. For each idle-state setting and client count, the C client
(A, pingpong.c) and volley-bench --connect (B) run alternately, A B A B ..., on the same
single client CPU, each with the same warm-up and measuring time. With idle states held
shallow, this script holds the same /dev/cpu_dma_latency request volley-bench makes (0 us,
volley.system.machine.shallow_idle) for the C client's runs and passes --idle-states shallow
to volley-bench; with "any" neither holds anything. Printed per setting and client count:
the median mean latency and median aggregate ops/s of each, and volley/C ratios; then every
run's raw numbers.

This is a measurement, not a test: nothing here judges or asserts a timing.

    python bench/overhead/run.py [--server target/servers/c-threaded] [--reps 5] [--seconds 5]
                                 [--idle-states shallow,any] [--clients 1,8] [--with-core]
                                 [--out RUNS.jsonl]
    python bench/overhead/run.py --from RUNS.jsonl [RUNS.jsonl ...]

--out appends every run as a JSON line; --from measures nothing and pools the runs of
every sitting in the files: each run's mean over the C runs around it, their median per
server, idle-state setting, client count and client, with a bootstrap 95% interval.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType

from volley.engine import server
from volley.numbers.units import IdleStates
from volley.system import cpus, machine, noise, topology

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PINGPONG = HERE / "pingpong"
CLIENT_COUNTS = "1,8"
IDLE_SETTINGS = "shallow,any"
# A precision no run reaches, so volley-bench plays until --max-time.
UNREACHABLE_PRECISION = "0.0001%"
TARGET = 0.03
BOOTSTRAP = 4000  # resamples for the pooled median's interval
CHILD_GRACE_S = 5.0


@dataclass(frozen=True)
class Run:
    """One run of one client: what both clients report, in the same units."""

    client: str  # "C" or "volley"
    idle_states: str
    clients: int
    n: int
    mean_ns: float
    throughput_ops_s: float
    measured_s: float
    # The CPU-to-CPU probe between the client and the server CPU just before and just after
    # the run (volley.system.noise.cpu_hop_ns): where the host had put the two vCPUs.
    hops_ns: tuple[float | None, float | None] = (None, None)


class Interrupted(Exception):
    """SIGTERM, turned into an exception so the server still gets stopped."""


def volley_bench_command() -> list[str]:
    beside = Path(sys.executable).parent / "volley-bench"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("volley-bench")
    return [found] if found else [sys.executable, "-m", "volley", "bench"]


def run_child(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a client to completion; if we are interrupted, end it before going on."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = child.communicate()
    except BaseException:
        # On Ctrl-C the child got SIGINT too; give it time to clean up, then insist.
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                child.send_signal(sig)
            try:
                child.wait(CHILD_GRACE_S)
                break
            except subprocess.TimeoutExpired:
                continue
        raise
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


@dataclass(frozen=True)
class Setting:
    """What both clients of a pair share: the server's port, the client CPU, the idle-state
    setting and the time of each run."""

    port: int
    cpu: int
    server_cpu: int
    idle_states: str
    warmup_s: float
    seconds: float


def run_c(setting: Setting, clients: int) -> Run:
    return _run_plain("C", [str(PINGPONG), "-h", server.LOOPBACK], setting, clients)


def run_core(setting: Setting, clients: int) -> Run:
    return _run_plain("core", [sys.executable, str(HERE / "core_client.py")], setting, clients)


def _run_plain(name: str, program: list[str], setting: Setting, clients: int) -> Run:
    """A client that prints pingpong.c's JSON line: the C client, or volley's loop alone."""
    options = (
        f"-p {setting.port} -c {clients} -C {setting.cpu} -t {setting.seconds} "
        f"-w {setting.warmup_s}"
    )
    command = [*program, *options.split()]
    # The same request volley-bench holds while it measures, held only as long as this
    # client runs (volley-bench makes its own), so each side's runs are alike.
    with machine.shallow_idle(setting.idle_states) as (in_force, why_not):
        if setting.idle_states == IdleStates.SHALLOW and in_force != IdleStates.SHALLOW:
            sys.exit(
                f"cannot hold idle states shallow ({why_not}): "
                "run as root, or use --idle-states any"
            )
        done = run_child(command)
    if done.returncode != 0:
        sys.exit(f"{name} client failed (status {done.returncode}): {done.stderr.strip()}")
    data = json.loads(done.stdout)
    return Run(
        name,
        setting.idle_states,
        clients,
        data["n"],
        data["mean_ns"],
        data["throughput_ops_s"],
        data["measured_s"],
    )


def run_volley(setting: Setting, clients: int) -> Run:
    # --max-time counts from the start of the warm-up, so it is warm-up plus measuring time.
    with tempfile.TemporaryDirectory(prefix="volley-overhead-") as directory:
        path = Path(directory) / "result.json"
        options = (
            f"--connect {server.LOOPBACK}:{setting.port} --clients {clients} "
            f"--cores {setting.cpu} --idle-states {setting.idle_states} --history off "
            f"--warmup {setting.warmup_s}s --max-time {setting.warmup_s + setting.seconds}s "
            f"--precision {UNREACHABLE_PRECISION} --quiet"
        )
        command = [*volley_bench_command(), *options.split(), "--json", str(path)]
        done = run_child(command)
        if not path.exists():
            sys.exit(f"volley-bench failed (status {done.returncode}): {done.stderr.strip()}")
        data = json.loads(path.read_text())
    if data["status"] == "failed" or not data["latency_ns"]:
        sys.exit(f"volley-bench failed: {data.get('error') or done.stderr.strip()}")
    held = data["host"].get("idle_states")
    if held != setting.idle_states:
        sys.exit(f"volley-bench measured with idle states {held}, not {setting.idle_states}")
    latency = data["latency_ns"]["mean"]
    return Run(
        "volley",
        setting.idle_states,
        clients,
        data["n"],
        latency,
        data["throughput_ops_s"],
        data["measured_s"],
    )


def ratio(volley: float, c: float) -> str:
    value = volley / c
    verdict = "within" if abs(value - 1) <= TARGET else "outside"
    return f"{value:.3f} ({verdict} {TARGET:.0%})"


def bracketed(c: list[Run], mine: list[Run]) -> list[float]:
    """Each run's mean over the C runs just before and after it (the geometric mean of the
    two; the one before for the last round): the host's latency drifts by 10-30% within a
    minute here, and a run bracketed by two C runs cancels a drift that is slow against a
    round, where a ratio to the C run before it would not."""
    ratios = []
    for i, run in enumerate(mine):
        before = c[i].mean_ns
        after = c[i + 1].mean_ns if i + 1 < len(c) else before
        ratios.append(run.mean_ns / math.sqrt(before * after))
    return ratios


def placement_of(run: Run, threshold: float) -> str:
    """near or far when the probes before and after the run agree, else moved."""
    if None in run.hops_ns:
        return "moved"
    sides = {"far" if h >= threshold else "near" for h in run.hops_ns if h is not None}
    return sides.pop() if len(sides) == 1 else "moved"


def by_placement(by_client: dict[str, list[Run]]) -> None:
    """Medians within each placement of the vCPUs: when the host moves them between SMT
    siblings and separate cores, one loopback round trip changes by 30-50%, far more than
    the difference looked for, and which client's runs fall on which placement is luck."""
    everything = [r for runs in by_client.values() for r in runs]
    threshold = noise.placement_threshold(h for r in everything for h in r.hops_ns)
    if threshold is None:
        print("  one placement throughout (the CPU probes stayed within 2x)")
        return
    print(f"  by placement (probe threshold {threshold:.0f} ns): median mean ns (runs), /C")
    for placement in ("near", "far", "moved"):
        cells = []
        c_runs = [r for r in by_client["C"] if placement_of(r, threshold) == placement]
        c_mean = statistics.median(r.mean_ns for r in c_runs) if c_runs else None
        for name, runs in by_client.items():
            mine = [r.mean_ns for r in runs if placement_of(r, threshold) == placement]
            if not mine:
                continue
            mean = statistics.median(mine)
            versus = f" {mean / c_mean:.3f}" if c_mean and name != "C" else ""
            cells.append(f"{name} {mean:.0f} ({len(mine)}){versus}")
        if cells:
            print(f"    {placement:<6} " + ", ".join(cells))


def report(idle_states: str, clients: int, runs: list[Run]) -> None:
    by_client = {name: [r for r in runs if r.client == name] for name in ("C", "core", "volley")}
    c = by_client["C"]
    print(
        f"\nidle states {idle_states}, {clients} client{'s' if clients > 1 else ''}, "
        f"medians of {len(c)} runs each"
    )
    print(f"  {'':<22}{'mean latency ns':>16}{'ops/s':>10}  {'mean/C':<20}{'bracketed mean/C':>17}")
    c_mean = statistics.median(r.mean_ns for r in c)
    for name, mine in by_client.items():
        if not mine:
            continue
        mean = statistics.median(r.mean_ns for r in mine)
        ops = statistics.median(r.throughput_ops_s for r in mine)
        paired = "-" if mine is c else f"{statistics.median(bracketed(c, mine)):.3f}"
        print(f"  {name:<22}{mean:>16.0f}{ops:>10.0f}  {ratio(mean, c_mean):<20}{paired:>17}")
    by_placement(by_client)
    print(
        f"  raw: {'run':<8}{'n':>10}{'mean_ns':>12}{'ops/s':>12}{'measured_s':>12}"
        f"{'hop before/after ns':>22}"
    )
    for r in runs:
        hops = "/".join("-" if h is None else f"{h:.0f}" for h in r.hops_ns)
        print(
            f"       {r.client:<8}{r.n:>10}{r.mean_ns:>12.0f}{r.throughput_ops_s:>12.0f}"
            f"{r.measured_s:>12.3f}{hops:>22}"
        )
    sys.stdout.flush()


def compare(port: int, cpu: int, server_cpu: int, args: argparse.Namespace) -> None:
    sitting = {"sitting": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "server": args.server}
    for idle_states in args.idle_states:
        setting = Setting(port, cpu, server_cpu, idle_states, args.warmup, args.seconds)
        for clients in args.clients:
            runs: list[Run] = []
            for rep in range(args.reps):
                for play in args.clients_played:
                    before = noise.cpu_hop_ns(cpu, server_cpu)
                    run = play(setting, clients)
                    run = replace(run, hops_ns=(before, noise.cpu_hop_ns(cpu, server_cpu)))
                    runs.append(run)
                    if args.out:
                        keep(args.out, {**sitting, "round": rep, **asdict(run)})
                    print(
                        f"[{idle_states}, {clients} clients, rep {rep + 1}/{args.reps}] "
                        f"{run.client:<6} mean {run.mean_ns:.0f} ns, "
                        f"{run.throughput_ops_s:.0f} ops/s",
                        file=sys.stderr,
                        flush=True,
                    )
            report(idle_states, clients, runs)


def keep(path: str, record: dict) -> None:
    """One run, appended as soon as it is measured: an interrupted sitting keeps its runs."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def pooled(paths: list[str]) -> None:
    """The bracketed ratios of every sitting in ``paths``, pooled per configuration."""
    sittings: dict[tuple, list[dict]] = {}
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            key = (Path(r["server"]).name, r["idle_states"], r["clients"], r["sitting"])
            sittings.setdefault(key, []).append(r)
    ratios: dict[tuple, list[float]] = {}
    for (name, idle_states, clients, _), records in sittings.items():
        runs = {
            who: [Run(**_fields(r)) for r in records if r["client"] == who]
            for who in ("C", "core", "volley")
        }
        for who in ("core", "volley"):
            if runs[who]:
                key = (name, idle_states, clients, who)
                ratios.setdefault(key, []).extend(bracketed(runs["C"], runs[who]))
    print(
        f"{'server':<12}{'idle':<9}{'clients':>8}  {'client':<8}{'rounds':>7}  "
        "mean/C (bracketed), 95%"
    )
    rng = random.Random(1)  # the same file gives the same interval
    for (name, idle_states, clients, who), values in sorted(ratios.items()):
        medians = sorted(
            statistics.median(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP)
        )
        low, high = medians[int(0.025 * BOOTSTRAP)], medians[int(0.975 * BOOTSTRAP) - 1]
        print(
            f"{name:<12}{idle_states:<9}{clients:>8}  {who:<8}{len(values):>7}  "
            f"{statistics.median(values):.3f} [{low:.3f}, {high:.3f}]"
        )


def _fields(record: dict) -> dict:
    names = Run.__dataclass_fields__
    found = {k: v for k, v in record.items() if k in names}
    found["hops_ns"] = tuple(found.get("hops_ns", (None, None)))
    return found


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server",
        default=str(ROOT / "target" / "servers" / "c-threaded"),
        help="server binary (default: target/servers/c-threaded)",
    )
    parser.add_argument("--reps", type=int, default=5, help="runs of each client (default 5)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="measuring time of each run after the warm-up (default 5)",
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="warm-up of each run in seconds (default 1)"
    )
    parser.add_argument(
        "--idle-states",
        default=IDLE_SETTINGS,
        help=f"idle-state settings to compare in, in order (default {IDLE_SETTINGS})",
    )
    parser.add_argument(
        "--clients", default=CLIENT_COUNTS, help=f"client counts (default {CLIENT_COUNTS})"
    )
    parser.add_argument("--out", metavar="RUNS.jsonl", help="append every run to this file")
    parser.add_argument(
        "--from",
        dest="pool",
        nargs="+",
        metavar="RUNS.jsonl",
        help="measure nothing: pool the runs kept in these files (--out)",
    )
    parser.add_argument(
        "--with-core",
        action="store_true",
        help="also run volley's hot loop alone (core_client.py) between C and volley-bench",
    )
    args = parser.parse_args()
    args.clients_played = (run_c, run_core, run_volley) if args.with_core else (run_c, run_volley)
    if args.reps < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--reps must be at least 1, --seconds above 0, --warmup at least 0")
    args.idle_states = args.idle_states.split(",")
    if not set(args.idle_states) <= {IdleStates.SHALLOW, IdleStates.ANY}:
        parser.error("--idle-states takes shallow, any or both, comma-separated")
    try:
        args.clients = [int(n) for n in args.clients.split(",")]
    except ValueError:
        parser.error("--clients takes counts, comma-separated, like 1,8")
    if min(args.clients) < 1:
        parser.error("--clients must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    if args.pool:
        pooled(args.pool)
        return
    subprocess.run(["make", "-s", "-C", str(HERE)], check=True)
    placement = cpus.place(None, None, None, topology.for_placement(None)[0])
    client_cpu = placement.client_cpus[0]
    path = server.resolve(args.server)
    port = server.choose_port()

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    signal.signal(signal.SIGTERM, terminate)
    process = server.start(path, [], port, placement.server_cpus)
    try:
        process.wait_listening(10.0)
        print(
            f"server {path} on CPU {cpus.format_cpu_list(placement.server_cpus)}, "
            f"port {port}; clients on CPU {client_cpu}; {args.reps} x "
            f"({args.warmup:g} s warm-up + {args.seconds:g} s) per client per count; "
            f"host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
        )
        compare(port, client_cpu, placement.server_cpus[0], args)
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        process.stop()


if __name__ == "__main__":
    main()

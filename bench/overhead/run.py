"""Overhead benchmark: volley-bench against a minimal C client on one running server.

One server is started (pinned to the lower half of the CPUs, as volley-bench would) and kept
running for the whole comparison. For each client count, the C client (A, pingpong.c) and
volley-bench --connect (B) run alternately, A B A B ..., on the same single client CPU, each
with the same warm-up and measuring time. Printed per client count: the median mean latency
and median aggregate ops/s of each, and volley/C ratios; then every run's raw numbers.

This is a measurement, not a test: nothing here judges or asserts a timing.

    python bench/overhead/run.py [--server target/servers/c-threaded] [--reps 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from volley.engine import server
from volley.system import cpus

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PINGPONG = HERE / "pingpong"
CLIENT_COUNTS = (1, 8)
# A precision no run reaches, so volley-bench plays until --max-time.
UNREACHABLE_PRECISION = "0.0001%"
TARGET = 0.03
CHILD_GRACE_S = 5.0


@dataclass(frozen=True)
class Run:
    """One run of one client: what both clients report, in the same units."""

    client: str  # "C" or "volley"
    clients: int
    n: int
    mean_ns: float
    throughput_ops_s: float
    measured_s: float


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


def run_c(port: int, clients: int, cpu: int, warmup_s: float, seconds: float) -> Run:
    options = f"-h {server.LOOPBACK} -p {port} -c {clients} -C {cpu} -t {seconds} -w {warmup_s}"
    command = [str(PINGPONG), *options.split()]
    done = run_child(command)
    if done.returncode != 0:
        sys.exit(f"pingpong failed (status {done.returncode}): {done.stderr.strip()}")
    data = json.loads(done.stdout)
    return Run(
        "C", clients, data["n"], data["mean_ns"], data["throughput_ops_s"], data["measured_s"]
    )


def run_volley(port: int, clients: int, cpu: int, warmup_s: float, seconds: float) -> Run:
    # --max-time counts from the start of the warm-up, so it is warm-up plus measuring time.
    with tempfile.TemporaryDirectory(prefix="volley-overhead-") as directory:
        path = Path(directory) / "result.json"
        options = (
            f"--connect {server.LOOPBACK}:{port} --clients {clients} --cores {cpu} "
            f"--warmup {warmup_s}s --max-time {warmup_s + seconds}s "
            f"--precision {UNREACHABLE_PRECISION} --quiet"
        )
        command = [*volley_bench_command(), *options.split(), "--json", str(path)]
        done = run_child(command)
        if not path.exists():
            sys.exit(f"volley-bench failed (status {done.returncode}): {done.stderr.strip()}")
        data = json.loads(path.read_text())
    if data["status"] == "failed" or not data["latency_ns"]:
        sys.exit(f"volley-bench failed: {data.get('error') or done.stderr.strip()}")
    latency = data["latency_ns"]["mean"]
    return Run("volley", clients, data["n"], latency, data["throughput_ops_s"], data["measured_s"])


def ratio(volley: float, c: float) -> str:
    value = volley / c
    verdict = "within" if abs(value - 1) <= TARGET else "outside"
    return f"{value:.3f} ({verdict} {TARGET:.0%})"


def report(clients: int, runs: list[Run]) -> None:
    c = [r for r in runs if r.client == "C"]
    v = [r for r in runs if r.client == "volley"]
    c_mean = statistics.median(r.mean_ns for r in c)
    v_mean = statistics.median(r.mean_ns for r in v)
    c_ops = statistics.median(r.throughput_ops_s for r in c)
    v_ops = statistics.median(r.throughput_ops_s for r in v)
    # Each volley run against the C run just before it: slow drifts in load cancel out.
    pairs = list(zip(c, v, strict=True))
    paired_mean = statistics.median(b.mean_ns / a.mean_ns for a, b in pairs)
    paired_ops = statistics.median(b.throughput_ops_s / a.throughput_ops_s for a, b in pairs)
    print(f"\n{clients} client{'s' if clients > 1 else ''}, medians of {len(c)} runs each")
    print(f"  {'':<18}{'C':>12}{'volley':>12}  {'volley/C':<20}{'median of A/B pairs':>20}")
    print(
        f"  {'mean latency ns':<18}{c_mean:>12.0f}{v_mean:>12.0f}  "
        f"{ratio(v_mean, c_mean):<20}{paired_mean:>20.3f}"
    )
    print(
        f"  {'ops/s':<18}{c_ops:>12.0f}{v_ops:>12.0f}  {ratio(v_ops, c_ops):<20}{paired_ops:>20.3f}"
    )
    print(f"  raw: {'run':<8}{'n':>10}{'mean_ns':>12}{'ops/s':>12}{'measured_s':>12}")
    for r in runs:
        print(
            f"       {r.client:<8}{r.n:>10}{r.mean_ns:>12.0f}{r.throughput_ops_s:>12.0f}"
            f"{r.measured_s:>12.3f}"
        )
    sys.stdout.flush()


def compare(port: int, cpu: int, args: argparse.Namespace) -> None:
    for clients in CLIENT_COUNTS:
        runs: list[Run] = []
        for rep in range(args.reps):
            for play in (run_c, run_volley):
                run = play(port, clients, cpu, args.warmup, args.seconds)
                runs.append(run)
                print(
                    f"[{clients} clients, rep {rep + 1}/{args.reps}] {run.client:<6} "
                    f"mean {run.mean_ns:.0f} ns, {run.throughput_ops_s:.0f} ops/s",
                    file=sys.stderr,
                    flush=True,
                )
        report(clients, runs)


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
    args = parser.parse_args()
    if args.reps < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--reps must be at least 1, --seconds above 0, --warmup at least 0")
    return args


def main() -> None:
    args = parse_args()
    subprocess.run(["make", "-s", "-C", str(HERE)], check=True)
    placement = cpus.place(None, None)
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
        compare(port, client_cpu, args)
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        process.stop()


if __name__ == "__main__":
    main()

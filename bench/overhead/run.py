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
                                 [--idle-states shallow,any] [--clients 1,8]
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
from volley.numbers.units import IdleStates
from volley.system import cpus, machine, topology

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PINGPONG = HERE / "pingpong"
CLIENT_COUNTS = "1,8"
IDLE_SETTINGS = "shallow,any"
# A precision no run reaches, so volley-bench plays until --max-time.
UNREACHABLE_PRECISION = "0.0001%"
TARGET = 0.03
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


def report(idle_states: str, clients: int, runs: list[Run]) -> None:
    by_client = {name: [r for r in runs if r.client == name] for name in ("C", "core", "volley")}
    c = by_client["C"]
    print(
        f"\nidle states {idle_states}, {clients} client{'s' if clients > 1 else ''}, "
        f"medians of {len(c)} runs each"
    )
    print(f"  {'':<22}{'mean latency ns':>16}{'ops/s':>10}  {'mean/C':<20}{'paired mean/C':>14}")
    c_mean = statistics.median(r.mean_ns for r in c)
    for name, mine in by_client.items():
        if not mine:
            continue
        mean = statistics.median(r.mean_ns for r in mine)
        ops = statistics.median(r.throughput_ops_s for r in mine)
        # Each run against the C run of its round: slow drifts in load cancel out.
        paired = statistics.median(b.mean_ns / a.mean_ns for a, b in zip(c, mine, strict=True))
        print(f"  {name:<22}{mean:>16.0f}{ops:>10.0f}  {ratio(mean, c_mean):<20}{paired:>14.3f}")
    print(f"  raw: {'run':<8}{'n':>10}{'mean_ns':>12}{'ops/s':>12}{'measured_s':>12}")
    for r in runs:
        print(
            f"       {r.client:<8}{r.n:>10}{r.mean_ns:>12.0f}{r.throughput_ops_s:>12.0f}"
            f"{r.measured_s:>12.3f}"
        )
    sys.stdout.flush()


def compare(port: int, cpu: int, args: argparse.Namespace) -> None:
    for idle_states in args.idle_states:
        setting = Setting(port, cpu, idle_states, args.warmup, args.seconds)
        for clients in args.clients:
            runs: list[Run] = []
            for rep in range(args.reps):
                for play in args.clients_played:
                    run = play(setting, clients)
                    runs.append(run)
                    print(
                        f"[{idle_states}, {clients} clients, rep {rep + 1}/{args.reps}] "
                        f"{run.client:<6} mean {run.mean_ns:.0f} ns, "
                        f"{run.throughput_ops_s:.0f} ops/s",
                        file=sys.stderr,
                        flush=True,
                    )
            report(idle_states, clients, runs)


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
        compare(port, client_cpu, args)
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        process.stop()


if __name__ == "__main__":
    main()

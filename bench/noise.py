"""How much the noise meter sees on this machine, with and without a CPU hog.

    PYTHONPATH=$PWD python3 bench/noise.py [STRETCHES] [--no-hog]

Alternates stretches of 0.5 s without and with `python3 -c "while True: pass"` pinned to
the client CPU (the last usable one), and prints for each the meter's share of other work
on that CPU (median, max) and how many were flagged disturbed. It also prints what the
kernel's own tasks (pid 1, kthreadd and its kernel threads) took, summed over all CPUs:
the floor of noise on this machine, which other sessions' work does not blur. Chooses and
checks volley.system.noise.OTHER_SHARE_LIMIT; the numbers are in the comment beside it.
--no-hog runs only the stretches without the hog (for a short quiet window on a shared
machine).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from volley.system import machine, noise

STRETCH_S = 0.5


def system_tasks_s() -> float:
    """CPU time so far of pid 1, kthreadd and the kernel threads, in seconds."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = machine.read_text(f"/proc/{entry.name}/stat")
        if not stat:
            continue
        pid, parent = int(entry.name), int(stat[stat.rindex(")") + 2 :].split()[1])
        if pid not in (1, 2) and parent != 2:
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            schedstat = machine.read_text(f"/proc/{pid}/task/{tid}/schedstat")
            if schedstat:
                total += int(schedstat.split()[0]) / 1e9
    return total


def stretch(client: int, server: int, hog: bool) -> tuple[noise.Noise, float, float]:
    """One measured stretch: the noise, the kernel tasks' share, start+stop cost in s."""
    process = None
    if hog:
        process = subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            preexec_fn=lambda: os.sched_setaffinity(0, {client}),
        )
        time.sleep(0.1)
    try:
        system_before = system_tasks_s()
        meter = noise.NoiseMeter([client], [server])
        begin = time.perf_counter()
        meter.start(None, [])
        cost = time.perf_counter() - begin
        time.sleep(STRETCH_S)
        begin = time.perf_counter()
        seen = meter.stop()
        cost += time.perf_counter() - begin
        system = (system_tasks_s() - system_before) / seen.duration_s
    finally:
        if process:
            process.kill()
            process.wait()
    return seen, system, cost


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--no-hog"]
    count = int(args[0]) if args else 20
    modes = (False,) if "--no-hog" in sys.argv else (False, True)
    usable = sorted(os.sched_getaffinity(0))
    client, server = usable[-1], usable[0]
    os.sched_setaffinity(0, {server})  # keep this script off the measured client CPU
    runs: dict[bool, list[tuple[noise.Noise, float, float]]] = {False: [], True: []}
    for _ in range(count):
        for hog in modes:
            runs[hog].append(stretch(client, server, hog))
    for hog, label in ((False, "without hog"), (True, "with hog")):
        if not runs[hog]:
            continue
        shares = [next(c for c in n.cpus if c.cpu == client).other_share for n, _, _ in runs[hog]]
        steal = [max(c.steal_s for c in n.cpus) / n.duration_s for n, _, _ in runs[hog]]
        system = [s for _, s, _ in runs[hog]]
        flagged = sum(n.disturbed for n, _, _ in runs[hog])
        print(
            f"{label}: other share of CPU {client} median {statistics.median(shares):.1%} "
            f"max {max(shares):.1%} min {min(shares):.1%}; disturbed {flagged} of {count}; "
            f"kernel tasks max {max(system):.1%} of a CPU; steal max {max(steal):.1%}"
        )
        print(f"  shares, sorted (%): {' '.join(f'{v * 100:.0f}' for v in sorted(shares))}")
    costs = [c for hog in runs for _, _, c in runs[hog]]
    print(
        f"start+stop cost: median {statistics.median(costs) * 1e3:.2f} ms, "
        f"max {max(costs) * 1e3:.2f} ms"
    )
    load = machine.read_text("/proc/loadavg") or "?"
    print(f"load average now: {' '.join(load.split()[:3])}")


if __name__ == "__main__":
    main()

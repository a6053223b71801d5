"""Whether the machine stayed quiet during a run: what else ran on the pinned CPUs, what the
hypervisor stole, how often our own clients were preempted, how far apart the server's
and the clients' CPUs were (NoiseMeter, Noise).

Read from /proc without root; on a system without /proc the meter measures nothing.
"""

from __future__ import annotations

import array
import functools
import gzip
import os
import platform
import resource
import statistics
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from volley import _core
from volley.system.machine import CPU_SYS, _cpus_text, read_int, read_text

# A run is disturbed when, on any pinned CPU, processes other than the server and Volley
# used more than this share of the measured stretch, or the hypervisor stole more.
# Measured with bench/noise.py (stretches of 0.5 s on CPU 1) on the 2-vCPU KVM development
# VM, which other sessions shared. With no other session running (20 stretches, load
# falling to 2.4): median 0%; 17 of 20 under the limit, the 3 above it while another
# session's tests started (98%). The kernel's own threads took at most 1.4-5% of one CPU
# and steal at most 2-4% (once 34%, when the host was busy) in every series. With
# `taskset -c 1 python3 -c "while True: pass"`: 95.9-100% (median 99.9%, 60 stretches).
# 20% sits well above the first and well below the second, and a share is known to a few
# percent (ticks). Cost of NoiseMeter.start() + stop(): median 0.7-1.4 ms, with a worker
# of 64 threads and a forking server among ~90 processes (tests bound it at 5 ms).
OTHER_SHARE_LIMIT = 0.20
STEAL_SHARE_LIMIT = 0.20

TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # the resolution of the kernel's per-CPU times

# The CPU-to-CPU probe: 40 batches of 50 cache-line round trips, at most 20 ms; about 4 ms
# when the two CPUs run nothing else (starting and pinning two threads, then 2,000 round
# trips of 60-350 ns on the development VM).
HOP_BATCHES = 40
HOP_BATCH = 50
HOP_BUDGET_S = 0.02
# Runs whose probes differ by more than this factor were measured on different placements.
HOP_MOVED_FACTOR = 2.0


def placement_threshold(hops: Iterable[float | None]) -> float | None:
    """The probe (ns) that splits near runs from far ones when the host moved the CPUs
    between runs (probes more than HOP_MOVED_FACTOR apart): the geometric middle of the
    extremes. None when they stayed put, or with fewer than two probes."""
    known = [h for h in hops if h is not None]
    if len(known) < 2:
        return None
    low, high = min(known), max(known)
    if high <= HOP_MOVED_FACTOR * low:
        return None
    return (low * high) ** 0.5


def _cpu_times() -> dict[int, tuple[float, float, float]]:
    """Per CPU since boot, in seconds: (task time, irq+softirq time, steal time).

    Task time is user+nice+system: what runs in some process's name, ours or another's.
    Empty if a CPU went on or offline between the two reads below.
    """
    import psutil  # here: the workers import this module, and need none of it

    times = psutil.cpu_times(percpu=True)
    # psutil lists the CPUs as /proc/stat does, which leaves offline CPUs out: its n-th
    # entry is the n-th online CPU, not CPU n.
    online = _cpus_text(CPU_SYS / "online") or list(range(len(times)))
    if len(online) != len(times):
        return {}
    return {
        cpu: (t.user + t.nice + t.system, t.irq + t.softirq, t.steal)
        for cpu, t in zip(online, times, strict=True)
    }


@functools.cache
def irq_time_separate() -> bool | None:
    """Whether the kernel keeps interrupt time out of the tasks' CPU time
    (CONFIG_IRQ_TIME_ACCOUNTING). Without it, an interrupt that lands while our thread runs
    is in that thread's time but in the irq/softirq columns of /proc/stat, so those columns
    belong on the task side of the subtraction. None: the kernel config is not readable."""
    if "noirqtime" in (read_text("/proc/cmdline") or "").split():
        return False
    text = None
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        text = read_text(f"/boot/config-{platform.release()}")
    if text is None:
        return None
    return "CONFIG_IRQ_TIME_ACCOUNTING=y" in text


def _last_pid() -> int | None:
    return read_int("/proc/sys/kernel/ns_last_pid")


def descendants(roots: set[int], since_pid: int | None) -> set[int]:
    """The processes descended from ``roots`` (roots included).

    Children get higher pids than their parents until the pid counter wraps, so only
    pids above the smallest root are read; ``since_pid`` narrows that further to the ones
    started after an earlier call. A full scan reads every process (~6 ms on 100).
    """
    if not roots:
        return set()
    low = min(roots) if since_pid is None else since_pid
    last = _last_pid()
    wrapped = last is None or last < low
    candidates = []
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (wrapped or int(entry.name) > low):
                candidates.append(int(entry.name))
    except OSError:
        return set(roots)
    family = set(roots)
    parents = {}
    for pid in sorted(candidates):
        stat = read_text(f"/proc/{pid}/stat")
        if stat:
            try:
                parents[pid] = int(stat[stat.rindex(")") + 2 :].split()[1])
            except (ValueError, IndexError):
                pass
    changed = True
    while changed:  # one pass suffices without wrapping; repeat for the wrapped case
        changed = False
        for pid, parent in parents.items():
            if parent in family and pid not in family:
                family.add(pid)
                changed = True
    return family


_CPUCLOCK_SCHED = 2  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) in the kernel's posix-timers.h


def _process_cpu_s(pid: int) -> float | None:
    """CPU time of a whole process (all its threads, ended ones too), in ns precision.

    The kernel's CPU-time clock of another process: one system call, where summing
    /proc/PID/task/*/schedstat costs ~50 us per thread and grows with the square of the
    thread count. None once the process is gone.
    """
    try:
        return time.clock_gettime_ns(((~pid) << 3) | _CPUCLOCK_SCHED) / 1e9
    except OSError:
        return None


def _own_times(pids: Iterable[int]) -> dict[int, tuple[float, frozenset[int]]]:
    """pid -> (CPU time so far, the CPUs it may run on), for the processes still there."""
    found = {}
    for pid in pids:
        try:
            cpus = frozenset(os.sched_getaffinity(pid))
        except OSError:
            continue
        used = _process_cpu_s(pid)
        if used is not None:
            found[pid] = (used, cpus)
    return found


def involuntary_switches() -> int:
    """Involuntary context switches of the calling process so far, all its threads.

    For a worker to call before and after its measured stretch: reading other processes'
    threads from /proc would cost milliseconds with many clients."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def cpu_hop_ns(measuring_cpu: int, answering_cpu: int) -> float | None:
    """The median round trip of one cache line between two CPUs now, in ns; None on one
    CPU, or when the probe got too few batches done (a CPU busy with something else)."""
    if measuring_cpu == answering_cpu:
        return None
    # Plain arrays, not numpy: the workers import this module, and numpy would start its
    # math library's threads there before the worker pins itself.
    line = array.array("q", bytes(16 * 8))
    batches = array.array("q", bytes(HOP_BATCHES * 8))
    deadline = _core.monotonic_ns() + int(HOP_BUDGET_S * 1e9)
    done = [0]

    def side(cpu: int, measure: bool) -> None:
        try:
            os.sched_setaffinity(0, {cpu})  # this thread only: each side has its own
        except OSError:
            return  # the partner gives up at the deadline
        timed = _core.bounce(line, batches, HOP_BATCH, measure, deadline)
        if measure:
            done[0] = timed

    sides = [
        threading.Thread(target=side, args=(cpu, measure), daemon=True)
        for cpu, measure in ((answering_cpu, False), (measuring_cpu, True))
    ]
    for thread in sides:
        thread.start()
    for thread in sides:
        thread.join()
    if done[0] < HOP_BATCHES // 2:
        return None
    return round(statistics.median(batches[: done[0]]) / HOP_BATCH, 1)


def _freqs(cpus: Iterable[int]) -> list[int]:
    # From sysfs, not psutil.cpu_freq: psutil gives one frequency per cpufreq policy (which
    # may span several CPUs), in MHz, and reads every CPU's; this reads the measured ones.
    return [
        f
        for f in (read_int(CPU_SYS / f"cpu{c}/cpufreq/scaling_cur_freq") for c in cpus)
        if f is not None
    ]


@dataclass(frozen=True)
class CpuNoise:
    """What happened on one pinned CPU during a measured stretch."""

    cpu: int
    role: str  # "client", "server" or "client+server"
    other_cpu_s: float  # CPU time of processes that are neither the server nor Volley
    other_share: float  # other_cpu_s / the stretch's duration
    steal_s: float  # time the hypervisor ran something else on this virtual CPU
    irq_s: float  # interrupt and softirq time (ours included: loopback traffic is ours)


@dataclass(frozen=True)
class Noise:
    """How quiet the pinned CPUs were during one run's measured stretch."""

    duration_s: float
    cpus: list[CpuNoise]
    involuntary_switches: int | None  # of the client workers' threads; None: not given
    freq_min_khz: int | None  # lowest and highest scaling_cur_freq seen on a used CPU
    freq_max_khz: int | None
    disturbed: bool  # other_share or steal beyond OTHER_SHARE_LIMIT / STEAL_SHARE_LIMIT
    # Cache-line round trip between the first server and the first client CPU just before
    # the run (cpu_hop_ns); None on one CPU, with --connect, or in older results.
    cpu_hop_ns: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Noise:
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["cpus"] = [CpuNoise(**c) for c in data.get("cpus", [])]
        return cls(**data)

    def describe(self) -> str:
        """What disturbed the run ("other processes used 31% of CPU 1"), or the largest
        share of other work when nothing did."""
        parts = []
        for c in self.cpus:
            if c.other_share > OTHER_SHARE_LIMIT:
                parts.append(f"other processes used {c.other_share:.0%} of CPU {c.cpu}")
            if self.duration_s > 0 and c.steal_s / self.duration_s > STEAL_SHARE_LIMIT:
                parts.append(f"steal took {c.steal_s / self.duration_s:.0%} of CPU {c.cpu}")
        if parts:
            return "; ".join(parts)
        if not self.cpus:
            return "nothing measured"
        worst = max(self.cpus, key=lambda c: c.other_share)
        return f"quiet: other processes used at most {worst.other_share:.0%} of CPU {worst.cpu}"


class NoiseMeter:
    """Measures what else ran on the pinned CPUs between start() and stop().

    Other work on a CPU = its task time from /proc/stat (user+nice+system, plus irq and
    softirq when the kernel counts those inside the tasks' time) minus the CPU time of our
    own processes there (the kernel's per-process CPU clock, in ns). Our own processes are
    this one, the workers, and the server with its descendants. A process pinned to one
    CPU is counted there; one allowed on several (the coordinator, a server on several
    CPUs) is spread evenly over them, which is exact in sum but not per CPU. /proc/stat
    samples at each tick (every 4 ms at HZ=250) and counts in 10 ms units, so a share in
    a 0.5 s stretch is known to a few percent. Processes of our own that end before
    stop() are not seen and count as other work.

    Cost of start() + stop(): see the comment at OTHER_SHARE_LIMIT; the part that grows
    is one listing of /proc (~4 us per process on the machine).
    """

    def __init__(self, client_cpus: list[int], server_cpus: list[int]) -> None:
        self.client_cpus = sorted(client_cpus)
        self.server_cpus = sorted(server_cpus)
        self.measured = sorted(set(client_cpus) | set(server_cpus))
        # Unknown: leave interrupts out, so that ours are never taken for other work.
        self.irq_in_tasks = irq_time_separate() is False
        self._started = False

    def start(self, server_pid: int | None, worker_pids: Collection[int]) -> None:
        """Call just before the measured stretch, with the server (None with --connect;
        its child processes count as it) and the client workers running."""
        # Before the clocks below start: the probe is ours, not other work.
        self.hop_ns = (
            cpu_hop_ns(self.server_cpus[0], self.client_cpus[0])
            if self.server_cpus and self.client_cpus
            else None
        )
        self.roots = {os.getpid(), *worker_pids}
        self.server_pid = server_pid
        self.last_pid = _last_pid()
        self.own = self._own(None)
        self.begin_own = _own_times(self.own)
        self.freqs = _freqs(self.measured)
        self.begin_cpu = _cpu_times()
        self.begin_s = time.monotonic()
        self._started = True

    def _own(self, since_pid: int | None) -> set[int]:
        family = descendants({self.server_pid}, since_pid) if self.server_pid else set()
        # Workers start no processes; the coordinator's other children are the server's.
        return family | self.roots

    def stop(self, involuntary_switches: int | None = None) -> Noise:
        """Call right after the measured stretch, before the server is stopped.
        ``involuntary_switches``: the client workers' count during the stretch (each
        worker's difference of machine.involuntary_switches(), summed), kept in Noise."""
        if not self._started:
            raise RuntimeError("NoiseMeter.stop() without start()")
        end_cpu = _cpu_times()
        duration_s = time.monotonic() - self.begin_s
        # Processes started during the stretch: only pids above the last one at start.
        own = self.own
        if self.last_pid is not None and _last_pid() != self.last_pid:
            own = own | descendants(self.own, self.last_pid)
        freqs = self.freqs + _freqs(self.measured)
        own_s = self._own_cpu_s(_own_times(own))
        cpus = [
            self._cpu_noise(cpu, end_cpu, own_s[cpu], duration_s)
            for cpu in self.measured
            if cpu in end_cpu and cpu in self.begin_cpu
        ]
        disturbed = any(
            c.other_share > OTHER_SHARE_LIMIT
            or (duration_s > 0 and c.steal_s / duration_s > STEAL_SHARE_LIMIT)
            for c in cpus
        )
        self._started = False
        return Noise(
            duration_s=round(duration_s, 6),
            cpus=cpus,
            involuntary_switches=involuntary_switches,
            freq_min_khz=min(freqs) if freqs else None,
            freq_max_khz=max(freqs) if freqs else None,
            disturbed=disturbed,
            cpu_hop_ns=self.hop_ns,
        )

    def _own_cpu_s(self, end_own: dict[int, tuple[float, frozenset[int]]]) -> dict[int, float]:
        """The CPU time our own processes used on each measured CPU during the stretch,
        each process's time shared evenly over the CPUs it may run on."""
        own_s = dict.fromkeys(self.measured, 0.0)
        for pid, (used_s, allowed) in end_own.items():
            # A process born during the stretch used all its time in it.
            used_s -= self.begin_own.get(pid, (0.0, allowed))[0]
            for cpu in allowed & set(own_s):
                own_s[cpu] += used_s / len(allowed)
        return own_s

    def _cpu_noise(
        self,
        cpu: int,
        end_cpu: dict[int, tuple[float, float, float]],
        own_s: float,
        duration_s: float,
    ) -> CpuNoise:
        """What other work took of ``cpu`` during the stretch."""
        task = end_cpu[cpu][0] - self.begin_cpu[cpu][0]
        irq = end_cpu[cpu][1] - self.begin_cpu[cpu][1]
        if self.irq_in_tasks:
            task += irq
        other = max(0.0, min(task - own_s, duration_s))
        role = "+".join(
            name
            for name, listed in (("client", self.client_cpus), ("server", self.server_cpus))
            if cpu in listed
        )
        return CpuNoise(
            cpu=cpu,
            role=role,
            other_cpu_s=round(other, 4),
            other_share=round(other / duration_s, 4) if duration_s > 0 else 0.0,
            steal_s=round(end_cpu[cpu][2] - self.begin_cpu[cpu][2], 4),
            irq_s=round(irq, 4),
        )


def disturbed_summary(noises: list[Noise]) -> str | None:
    """One line for the summary, naming the worst run (like "3 of 12 runs disturbed:
    other processes used 31% of CPU 1"); None when no run was disturbed."""
    disturbed = [n for n in noises if n.disturbed]
    if not disturbed:
        return None
    worst = max(disturbed, key=lambda n: max((c.other_share for c in n.cpus), default=0.0))
    noun = "run" if len(noises) == 1 else "runs"
    return f"{len(disturbed)} of {len(noises)} {noun} disturbed: {worst.describe()}"

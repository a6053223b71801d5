"""The machine: what it is (Environment), whether it stayed quiet during a run (NoiseMeter),
and whether it is ready for latency work at all (readiness, for ``volley system``).

Everything is read from /proc, /sys and psutil without root. What cannot be read is None,
never a guess. Linux only: elsewhere most fields are None and the meter measures nothing.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import platform
import resource
import shutil
import subprocess
import time
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from volley import __version__
from volley.cpus import format_cpu_list, parse_cpu_list

CPU_SYS = Path("/sys/devices/system/cpu")
CMDLINE_FLAGS = ("isolcpus", "nohz_full", "rcu_nocbs", "mitigations")

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
LOAD_AVG_LIMIT = 1.0  # at start, before Volley runs anything: anything above is other work


def _read(path: str | Path) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: str | Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cpus_text(path: str | Path) -> list[int] | None:
    """A sysfs CPU list ("0-3,8"); [] when the file is empty, None when unreadable."""
    text = _read(path)
    if text is None:
        return None
    try:
        return parse_cpu_list(text) if text else []
    except ValueError:
        return None


def _cmdline_flags(cmdline: str | None) -> dict[str, str | None]:
    """The value of each flag in CMDLINE_FLAGS on the kernel command line (None: absent)."""
    flags: dict[str, str | None] = dict.fromkeys(CMDLINE_FLAGS)
    for word in (cmdline or "").split():
        if word == "--":  # the rest is for init, not the kernel
            break
        name, _, value = word.partition("=")
        if name in flags:
            flags[name] = value
    return flags


def _cpuinfo() -> tuple[str | None, set[str] | None]:
    """The CPU model and the first CPU's flags, from /proc/cpuinfo."""
    text = _read("/proc/cpuinfo")
    if text is None:
        return None, None
    model: str | None = None
    flags: set[str] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and model is None:
            model = value.strip() or None
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    return model, flags


def _detect_virt() -> str | None:
    """systemd-detect-virt --vm: the hypervisor from CPUID and DMI ("none" on bare metal)."""
    program = shutil.which("systemd-detect-virt")
    if program is None:
        return None
    try:
        done = subprocess.run(
            [program, "--vm"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _process_names() -> set[str] | None:
    """The command names of all processes; None if /proc hides other users' processes."""
    if _read("/proc/1/comm") is None:
        return None
    names = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            name = _read(f"/proc/{entry.name}/comm")
            if name:
                names.add(name)
    return names


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


@dataclass(frozen=True)
class CpuState:
    """One CPU the benchmark uses: its role and how it is set up."""

    cpu: int
    role: str  # "client", "server" or "client+server"
    governor: str | None = None
    cur_freq_khz: int | None = None
    min_freq_khz: int | None = None
    max_freq_khz: int | None = None
    numa_node: int | None = None
    smt_siblings: list[int] | None = None  # the CPUs sharing its core, itself included

    @classmethod
    def read(cls, cpu: int, role: str) -> CpuState:
        base = CPU_SYS / f"cpu{cpu}"
        nodes = []
        try:
            nodes = [int(e.name[4:]) for e in os.scandir(base) if e.name[4:].isdigit()]
        except OSError:
            pass
        return cls(
            cpu=cpu,
            role=role,
            governor=_read(base / "cpufreq/scaling_governor"),
            cur_freq_khz=_read_int(base / "cpufreq/scaling_cur_freq"),
            min_freq_khz=_read_int(base / "cpufreq/scaling_min_freq"),
            max_freq_khz=_read_int(base / "cpufreq/scaling_max_freq"),
            numa_node=nodes[0] if len(nodes) == 1 else None,
            smt_siblings=_cpus_text(base / "topology/thread_siblings_list"),
        )


@dataclass(frozen=True)
class Environment:
    """The machine a result was measured on. ``kernel``, ``cpu_model`` and ``cpus`` keep
    the names of the format-1 ``host`` object, so old results read as an Environment."""

    kernel: str | None
    cpu_model: str | None
    cpus: int | None  # CPUs in the machine (not only the usable ones)
    # Kernel command line flags; None when the flag is not given.
    isolcpus: str | None = None
    nohz_full: str | None = None
    rcu_nocbs: str | None = None
    mitigations: str | None = None
    used_cpus: list[CpuState] = field(default_factory=list)
    boost: bool | None = None  # turbo/boost enabled
    smt_active: bool | None = None
    smt_siblings_shared: bool | None = None  # a client CPU and a server CPU share a core
    numa_nodes: int | None = None
    virtual: bool | None = None
    hypervisor: str | None = None  # e.g. "kvm", "xen"
    dmi_vendor: str | None = None
    dmi_product: str | None = None
    load_avg_1m: float | None = None  # at start
    irqbalance_running: bool | None = None
    python_version: str | None = None
    volley_version: str | None = None
    cython_version: str | None = None  # the installed Cython, which builds _core
    server_path: str | None = None  # None with --connect
    server_size_bytes: int | None = None
    server_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Environment:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["used_cpus"] = [CpuState(**c) for c in known.get("used_cpus") or []]
        known.setdefault("kernel", None)
        known.setdefault("cpu_model", None)
        known.setdefault("cpus", None)
        return cls(**known)

    def caption(self) -> str:
        """The machine's state in a few words, for a plot caption."""
        governors = sorted({c.governor for c in self.used_cpus if c.governor})
        smt = {True: "SMT on", False: "SMT off", None: "SMT ?"}[self.smt_active]
        virtual = {True: f"{self.hypervisor or 'virtual'} VM", False: "bare metal", None: ""}
        parts = [
            f"{self.cpu_model or '?'} ({self.cpus or '?'} CPUs)",
            f"Linux {self.kernel or '?'}",
            f"governor {'/'.join(governors) or '?'}",
            smt,
            virtual[self.virtual],
        ]
        return ", ".join(p for p in parts if p)

    def problems(self) -> list[str]:
        """Short phrases for what is off for latency work; empty when nothing is."""
        found = []
        by_governor: dict[str, list[int]] = {}
        for c in self.used_cpus:
            if c.governor is not None and c.governor != "performance":
                by_governor.setdefault(c.governor, []).append(c.cpu)
        for governor, listed in sorted(by_governor.items()):
            found.append(f"governor {governor} on CPU {format_cpu_list(listed)}")
        if self.boost:
            found.append("turbo boost on")
        if self.smt_siblings_shared:
            found.append("client and server CPUs are SMT siblings")
        nodes = {c.numa_node for c in self.used_cpus if c.numa_node is not None}
        if len(nodes) > 1:
            found.append(f"CPUs on {len(nodes)} NUMA nodes")
        if self.load_avg_1m is not None and self.load_avg_1m > LOAD_AVG_LIMIT:
            found.append(f"load average {self.load_avg_1m:.1f} at start")
        return found


def _siblings_say_smt(used: list[CpuState]) -> bool | None:
    """For kernels without /sys/devices/system/cpu/smt: a used core with two CPUs means
    SMT is on; single ones say nothing about the cores not used."""
    return True if any(c.smt_siblings and len(c.smt_siblings) > 1 for c in used) else None


def environment(
    server_path: str | None, client_cpus: list[int], server_cpus: list[int]
) -> Environment:
    """Read the machine as it is now. Takes ~30 ms (one systemd-detect-virt and a scan of
    /proc for irqbalance): call it once per benchmark, not per run."""
    cmdline = _cmdline_flags(_read("/proc/cmdline"))
    model, flags = _cpuinfo()
    used = []
    for cpu in sorted(set(client_cpus) | set(server_cpus)):
        role = "+".join(
            name for name, cpus in (("client", client_cpus), ("server", server_cpus)) if cpu in cpus
        )
        used.append(CpuState.read(cpu, role))

    shared: bool | None = False
    for c in used:
        if c.smt_siblings is None:
            shared = None
            break
        others = set(c.smt_siblings) - {c.cpu}
        if c.cpu in client_cpus and others & set(server_cpus):
            shared = True
            break

    smt = _read_int(CPU_SYS / "smt/active")
    boost = _read_int(CPU_SYS / "cpufreq/boost")
    no_turbo = _read_int(CPU_SYS / "intel_pstate/no_turbo")
    turbo = bool(boost) if boost is not None else (not no_turbo if no_turbo is not None else None)
    nodes = _cpus_text("/sys/devices/system/node/online")

    xen = _read("/sys/hypervisor/type") or None
    detected = _detect_virt()
    virtual: bool | None = None
    if xen or (flags is not None and "hypervisor" in flags):
        virtual = True
    elif detected is not None:
        virtual = detected != "none"
    elif flags is not None and platform.machine() in ("x86_64", "i686", "i386"):
        virtual = False  # x86 guests see the CPUID hypervisor bit as this flag
    hypervisor = xen or (detected if detected not in (None, "none") else None)

    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    names = _process_names()
    try:
        cython: str | None = metadata.version("Cython")
    except metadata.PackageNotFoundError:
        cython = None
    size = None
    real = None
    if server_path:
        real = os.path.realpath(server_path)
        try:
            size = os.path.getsize(real)
        except OSError:
            size = None
    return Environment(
        kernel=platform.release() or None,
        cpu_model=model,
        cpus=os.cpu_count(),
        isolcpus=cmdline["isolcpus"],
        nohz_full=cmdline["nohz_full"],
        rcu_nocbs=cmdline["rcu_nocbs"],
        mitigations=cmdline["mitigations"],
        used_cpus=used,
        boost=turbo,
        smt_active=bool(smt) if smt is not None else _siblings_say_smt(used),
        smt_siblings_shared=shared,
        numa_nodes=len(nodes) if nodes else None,
        virtual=virtual,
        hypervisor=hypervisor,
        dmi_vendor=_read("/sys/class/dmi/id/sys_vendor") or None,
        dmi_product=_read("/sys/class/dmi/id/product_name") or None,
        load_avg_1m=load,
        irqbalance_running=("irqbalance" in names) if names is not None else None,
        python_version=platform.python_version(),
        volley_version=__version__,
        cython_version=cython,
        server_path=real,
        server_size_bytes=size,
        server_sha256=_sha256(real) if real else None,
    )


# --- Noise during a run ---------------------------------------------------------------

TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # the unit of /proc/stat


def _cpu_times() -> dict[int, tuple[float, float, float]]:
    """Per CPU since boot, in seconds: (task time, irq+softirq time, steal time).

    Task time is user+nice+system: what runs in some process's name, ours or another's.
    """
    times = {}
    for line in (_read("/proc/stat") or "").splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        v = [int(x) for x in values[:8]] + [0] * (8 - len(values[:8]))
        user, nice, system, _idle, _iowait, irq, softirq, steal = v
        times[int(name[3:])] = (
            (user + nice + system) * TICK_S,
            (irq + softirq) * TICK_S,
            steal * TICK_S,
        )
    return times


@functools.cache
def irq_time_separate() -> bool | None:
    """Whether the kernel keeps interrupt time out of the tasks' CPU time
    (CONFIG_IRQ_TIME_ACCOUNTING). Without it, an interrupt that lands while our thread runs
    is in that thread's time but in the irq/softirq columns of /proc/stat, so those columns
    belong on the task side of the subtraction. None: the kernel config is not readable."""
    if "noirqtime" in (_read("/proc/cmdline") or "").split():
        return False
    text = None
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        text = _read(f"/boot/config-{platform.release()}")
    if text is None:
        return None
    return "CONFIG_IRQ_TIME_ACCOUNTING=y" in text


def _last_pid() -> int | None:
    return _read_int("/proc/sys/kernel/ns_last_pid")


def _descendants(roots: set[int], since_pid: int | None) -> set[int]:
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
        stat = _read(f"/proc/{pid}/stat")
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


def _freqs(cpus: Iterable[int]) -> list[int]:
    return [
        f
        for f in (_read_int(CPU_SYS / f"cpu{c}/cpufreq/scaling_cur_freq") for c in cpus)
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
        family = _descendants({self.server_pid}, since_pid) if self.server_pid else set()
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
            own = own | _descendants(self.own, self.last_pid)
        end_own = _own_times(own)
        freqs = self.freqs + _freqs(self.measured)

        own_s = dict.fromkeys(self.measured, 0.0)
        for pid, (used_s, allowed) in end_own.items():
            # A process born during the stretch used all its time in it.
            used_s -= self.begin_own.get(pid, (0.0, allowed))[0]
            for cpu in allowed & set(own_s):
                own_s[cpu] += used_s / len(allowed)

        cpus = []
        for cpu in self.measured:
            if cpu not in end_cpu or cpu not in self.begin_cpu:
                continue
            task = end_cpu[cpu][0] - self.begin_cpu[cpu][0]
            irq = end_cpu[cpu][1] - self.begin_cpu[cpu][1]
            if self.irq_in_tasks:
                task += irq
            other = max(0.0, min(task - own_s[cpu], duration_s))
            role = "+".join(
                name
                for name, listed in (("client", self.client_cpus), ("server", self.server_cpus))
                if cpu in listed
            )
            cpus.append(
                CpuNoise(
                    cpu=cpu,
                    role=role,
                    other_cpu_s=round(other, 4),
                    other_share=round(other / duration_s, 4) if duration_s > 0 else 0.0,
                    steal_s=round(end_cpu[cpu][2] - self.begin_cpu[cpu][2], 4),
                    irq_s=round(irq, 4),
                )
            )
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


# --- Readiness (volley system) ---------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One line of ``volley system``: ok is None when it cannot be told."""

    name: str
    state: str
    why: str
    fix: str
    ok: bool | None


def readiness() -> list[Item]:
    """The machine's readiness for latency benchmarks, item by item. Changes nothing."""
    usable = sorted(os.sched_getaffinity(0))
    env = environment(None, usable, usable)
    items = []

    items.append(
        Item(
            "CPUs",
            f"{env.cpus} CPUs, {len(usable)} usable ({format_cpu_list(usable)})",
            "the server and the clients need CPUs of their own; on one CPU they compete",
            "give volley at least 2 CPUs (check taskset/cgroup limits)",
            len(usable) >= 2,
        )
    )

    isolated = _cpus_text(CPU_SYS / "isolated")
    nohz = _cpus_text(CPU_SYS / "nohz_full")
    parts = [f"isolated CPUs {format_cpu_list(isolated)}" if isolated else "no isolated CPUs"]
    if nohz:
        parts.append(f"nohz_full {format_cpu_list(nohz)}")
    items.append(
        Item(
            "isolation",
            ", ".join(parts),
            "other tasks and the timer tick run on the benchmark's CPUs and delay replies",
            "boot with isolcpus=LIST nohz_full=LIST rcu_nocbs=LIST, then pin with "
            "--cores and --server-cores inside LIST",
            bool(isolated) if isolated is not None else None,
        )
    )

    governors: dict[str, list[int]] = {}
    for c in env.used_cpus:
        governors.setdefault(c.governor or "?", []).append(c.cpu)
    if set(governors) == {"?"}:
        state, ok = "no cpufreq (frequency not controlled by this kernel)", None
    else:
        state = ", ".join(f"{g} on CPU {format_cpu_list(cs)}" for g, cs in governors.items())
        ok = set(governors) == {"performance"}
    items.append(
        Item(
            "governor",
            state,
            "a CPU that slows down between requests answers the next one late",
            "cpupower frequency-set -g performance (as root)",
            ok,
        )
    )
    freqs = [c for c in env.used_cpus if c.cur_freq_khz is not None]
    items.append(
        Item(
            "frequency",
            ", ".join(
                f"CPU {c.cpu} {_mhz(c.cur_freq_khz)} ({_mhz(c.min_freq_khz)}-"
                f"{_mhz(c.max_freq_khz)})"
                for c in freqs
            )
            or "not readable",
            "latency scales with clock speed; a range lets the clock wander",
            "set scaling_min_freq to scaling_max_freq, or use the performance governor",
            all(c.min_freq_khz == c.max_freq_khz or c.governor == "performance" for c in freqs)
            if freqs
            else None,
        )
    )
    items.append(
        Item(
            "turbo",
            _on_off(env.boost),
            "turbo speed depends on temperature and on the other cores, so it varies run to run",
            "echo 0 > /sys/devices/system/cpu/cpufreq/boost "
            "(Intel: echo 1 > .../intel_pstate/no_turbo)",
            (not env.boost) if env.boost is not None else None,
        )
    )
    smt_state = _on_off(env.smt_active)
    control = _read(CPU_SYS / "smt/control")
    if control:
        smt_state += f" (control: {control})"
    items.append(
        Item(
            "SMT",
            smt_state,
            "hyperthread siblings share a core: work on one slows the other",
            "echo off > /sys/devices/system/cpu/smt/control, or never give a sibling of a "
            "pinned CPU to anything else",
            (not env.smt_active) if env.smt_active is not None else None,
        )
    )
    items.append(
        Item(
            "NUMA",
            f"{env.numa_nodes} node{'s' if env.numa_nodes != 1 else ''}"
            if env.numa_nodes
            else "unknown",
            "across nodes every reply crosses the interconnect",
            "keep the server and client CPUs on one node (lscpu shows the nodes)",
            env.numa_nodes == 1 if env.numa_nodes else None,
        )
    )
    if env.virtual is None:
        virtual = "unknown"
    elif env.virtual:
        virtual = f"virtual machine ({env.hypervisor or 'hypervisor unknown'})"
    else:
        virtual = "bare metal"
    items.append(
        Item(
            "virtual",
            virtual,
            "a hypervisor can stop a virtual CPU at any time (steal) and adds timer latency",
            "use bare metal for numbers you publish; compare VM results only with the same VM",
            (not env.virtual) if env.virtual is not None else None,
        )
    )
    items.append(
        Item(
            "irqbalance",
            "unknown"
            if env.irqbalance_running is None
            else ("running" if env.irqbalance_running else "not running"),
            "it moves interrupts onto the pinned CPUs while a benchmark runs",
            "systemctl stop irqbalance, or give it IRQBALANCE_BANNED_CPULIST=the pinned CPUs",
            (not env.irqbalance_running) if env.irqbalance_running is not None else None,
        )
    )
    load = _read("/proc/loadavg")
    items.append(
        Item(
            "load",
            f"load average {' '.join(load.split()[:3])}" if load else "unknown",
            "other work competes for the CPUs and the caches",
            "stop other jobs; volley flags each disturbed run",
            env.load_avg_1m <= LOAD_AVG_LIMIT if env.load_avg_1m is not None else None,
        )
    )
    items.append(
        Item(
            "mitigations",
            f"mitigations={env.mitigations}" if env.mitigations else "kernel default",
            "speculation mitigations make every system call slower",
            "nothing to fix; compare only results taken with the same setting",
            True,
        )
    )
    items.append(
        Item(
            "kernel",
            f"Linux {env.kernel}" if env.kernel else "unknown",
            "the network stack and the scheduler change between kernels",
            "nothing to fix; compare only results from the same kernel",
            True,
        )
    )
    return items


def _mhz(khz: int | None) -> str:
    return f"{khz / 1000:.0f} MHz" if khz is not None else "?"


def _on_off(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")


def format_readiness(items: list[Item]) -> list[str]:
    """The table ``volley system`` prints: a mark, the item, its state; why and how to fix
    under each item that is not ok."""
    marks = {True: "ok", False: "!!", None: "??"}
    width = max(len(i.name) for i in items)
    lines = []
    for item in items:
        lines.append(f"{marks[item.ok]}  {item.name:<{width}}  {item.state}")
        indent = " " * (width + 6)
        lines.append(f"{indent}why: {item.why}")
        if item.ok is not True:
            lines.append(f"{indent}fix: {item.fix}")
    bad = sum(1 for i in items if i.ok is False)
    lines.append(
        f"{bad} of {len(items)} items not ready (ok ready, !! not ready, ?? cannot tell)"
        if bad
        else f"ready: nothing off of {len(items)} items (?? cannot tell)"
    )
    return lines

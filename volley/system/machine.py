"""The machine: what it is (Environment) and whether it is ready for latency work at all
(readiness, for ``volley system``). Whether it stayed quiet during a run is volley.system.noise.

Everything is read from /proc, /sys and psutil without root. What cannot be read is None,
never a guess. Linux only: elsewhere most fields are None. The one thing Volley changes is
the CPUs' idle states while it measures (``shallow_idle``), and only for as long as it does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from volley import __version__
from volley.numbers.units import IdleStates
from volley.system.cpus import format_cpu_list, parse_cpu_list

CPU_SYS = Path("/sys/devices/system/cpu")
CMDLINE_FLAGS = ("isolcpus", "nohz_full", "rcu_nocbs", "mitigations")

LOAD_AVG_LIMIT = 1.0  # at start, before Volley runs anything: anything above is other work

PM_QOS_DEVICE = "/dev/cpu_dma_latency"


@contextlib.contextmanager
def shallow_idle(wanted: str = IdleStates.SHALLOW) -> Iterator[tuple[IdleStates, str | None]]:
    """Keep every CPU out of idle states slower than 0 us to leave, as cyclictest and tuned's
    latency-performance profile do, for as long as the block runs: yields what is in force
    and, when shallow was wanted but cannot be had, why not.

    A CPU waiting for the next request idles between replies; leaving a deep idle state
    costs microseconds on bare metal and, on a virtual machine, a trip through the
    hypervisor: on the 2-vCPU development VM one client's round trip to c-threaded took
    75-157 us with it and 14-22 us without, and the cost wandered with the host's load from
    minute to minute (bench/README.md, "Calibration"). That is the machine, not the server
    under test. The kernel keeps the request (PM QoS) while the file stays open and drops it
    when the file is closed, also when this process is killed: nothing to undo."""
    if wanted != IdleStates.SHALLOW:
        yield IdleStates.ANY, None
        return
    try:
        fd = os.open(PM_QOS_DEVICE, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        yield IdleStates.ANY, f"{PM_QOS_DEVICE}: {e.strerror}"
        return
    try:
        os.write(fd, struct.pack("i", 0))  # a native 32-bit count of microseconds
        yield IdleStates.SHALLOW, None
    except OSError as e:
        yield IdleStates.ANY, f"{PM_QOS_DEVICE}: {e.strerror}"
    finally:
        os.close(fd)


def idle_hold_problem() -> str | None:
    """Why shallow idle states cannot be held here (None: they can), to warn before a
    benchmark rather than after it."""
    with shallow_idle() as (_, problem):
        return problem


def idle_driver() -> tuple[str | None, list[str] | None]:
    """The cpuidle driver and CPU 0's idle states, shallowest first (None: not readable)."""
    driver = read_text(CPU_SYS / "cpuidle/current_driver")
    base = CPU_SYS / "cpu0/cpuidle"
    try:
        names = sorted(e.name for e in os.scandir(base) if e.name.startswith("state"))
    except OSError:
        return driver, None
    states = [read_text(base / n / "name") or n for n in sorted(names, key=lambda n: int(n[5:]))]
    return driver, states


def read_text(path: str | Path) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_int(path: str | Path) -> int | None:
    text = read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cpus_text(path: str | Path) -> list[int] | None:
    """A sysfs CPU list ("0-3,8"); [] when the file is empty, None when unreadable."""
    text = read_text(path)
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
    text = read_text("/proc/cpuinfo")
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
    if read_text("/proc/1/comm") is None:
        return None
    names = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            name = read_text(f"/proc/{entry.name}/comm")
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
        # sysfs, not psutil: psutil has no governor, and its frequencies are per cpufreq
        # policy (which may span several CPUs), not per CPU.
        return cls(
            cpu=cpu,
            role=role,
            governor=read_text(base / "cpufreq/scaling_governor"),
            cur_freq_khz=read_int(base / "cpufreq/scaling_cur_freq"),
            min_freq_khz=read_int(base / "cpufreq/scaling_min_freq"),
            max_freq_khz=read_int(base / "cpufreq/scaling_max_freq"),
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
    cpuidle_driver: str | None = None  # e.g. "intel_idle", "acpi_idle", "haltpoll"
    # "shallow": Volley held the CPUs out of deep idle states while measuring; "any": the
    # machine's own policy. None in results written before it was recorded.
    idle_states: str | None = None

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
        if self.idle_states == IdleStates.ANY:
            found.append("deep CPU idle states allowed")
        return found


def _siblings_say_smt(used: list[CpuState]) -> bool | None:
    """For kernels without /sys/devices/system/cpu/smt: a used core with two CPUs means
    SMT is on; single ones say nothing about the cores not used."""
    return True if any(c.smt_siblings and len(c.smt_siblings) > 1 for c in used) else None


def environment(
    server_path: str | None,
    client_cpus: list[int],
    server_cpus: list[int],
    idle_states: str | None = None,
) -> Environment:
    """Read the machine as it is now. Takes ~30 ms (one systemd-detect-virt and a scan of
    /proc for irqbalance): call it once per benchmark, not per run."""
    cmdline = _cmdline_flags(read_text("/proc/cmdline"))
    model, flags = _cpuinfo()
    used = [
        CpuState.read(cpu, _role(cpu, client_cpus, server_cpus))
        for cpu in sorted(set(client_cpus) | set(server_cpus))
    ]
    smt = read_int(CPU_SYS / "smt/active")
    nodes = _cpus_text("/sys/devices/system/node/online")
    virtual, hypervisor = _virtualization(flags)
    names = _process_names()
    real = os.path.realpath(server_path) if server_path else None
    return Environment(
        kernel=platform.release() or None,
        cpu_model=model,
        cpus=os.cpu_count(),
        isolcpus=cmdline["isolcpus"],
        nohz_full=cmdline["nohz_full"],
        rcu_nocbs=cmdline["rcu_nocbs"],
        mitigations=cmdline["mitigations"],
        used_cpus=used,
        boost=_turbo(),
        smt_active=bool(smt) if smt is not None else _siblings_say_smt(used),
        smt_siblings_shared=_siblings_shared(used, client_cpus, server_cpus),
        numa_nodes=len(nodes) if nodes else None,
        virtual=virtual,
        hypervisor=hypervisor,
        dmi_vendor=read_text("/sys/class/dmi/id/sys_vendor") or None,
        dmi_product=read_text("/sys/class/dmi/id/product_name") or None,
        load_avg_1m=_load_1m(),
        irqbalance_running=("irqbalance" in names) if names is not None else None,
        python_version=platform.python_version(),
        volley_version=__version__,
        cython_version=_cython_version(),
        server_path=real,
        server_size_bytes=_size(real) if real else None,
        server_sha256=_sha256(real) if real else None,
        cpuidle_driver=idle_driver()[0],
        idle_states=idle_states,
    )


def _role(cpu: int, client_cpus: list[int], server_cpus: list[int]) -> str:
    """ "client", "server" or "client+server"."""
    return "+".join(
        name for name, cpus in (("client", client_cpus), ("server", server_cpus)) if cpu in cpus
    )


def _siblings_shared(
    used: list[CpuState], client_cpus: list[int], server_cpus: list[int]
) -> bool | None:
    """Whether a client CPU's SMT sibling is a server CPU; None when a sibling list is
    unreadable."""
    for c in used:
        if c.smt_siblings is None:
            return None
        others = set(c.smt_siblings) - {c.cpu}
        if c.cpu in client_cpus and others & set(server_cpus):
            return True
    return False


def _turbo() -> bool | None:
    boost = read_int(CPU_SYS / "cpufreq/boost")
    no_turbo = read_int(CPU_SYS / "intel_pstate/no_turbo")
    return bool(boost) if boost is not None else (not no_turbo if no_turbo is not None else None)


def _virtualization(flags: set[str] | None) -> tuple[bool | None, str | None]:
    """Whether this is a virtual machine (None: cannot tell), and its hypervisor."""
    xen = read_text("/sys/hypervisor/type") or None
    detected = _detect_virt()
    virtual: bool | None = None
    if xen or (flags is not None and "hypervisor" in flags):
        virtual = True
    elif detected is not None:
        virtual = detected != "none"
    elif flags is not None and platform.machine() in ("x86_64", "i686", "i386"):
        virtual = False  # x86 guests see the CPUID hypervisor bit as this flag
    return virtual, xen or (detected if detected not in (None, "none") else None)


def _load_1m() -> float | None:
    import psutil  # here: the workers import this module, and need none of it

    try:
        return round(psutil.getloadavg()[0], 2)
    except OSError:
        return None


def _cython_version() -> str | None:
    try:
        return metadata.version("Cython")
    except metadata.PackageNotFoundError:
        return None


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


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
    """The machine's readiness for latency benchmarks, item by item, in the order ``volley
    system`` prints them. Changes nothing."""
    usable = sorted(os.sched_getaffinity(0))
    env = environment(None, usable, usable)
    return [
        _cpus_item(env, usable),
        _isolation_item(),
        _governor_item(env),
        _frequency_item(env),
        _turbo_item(env),
        _smt_item(env),
        _numa_item(env),
        _virtual_item(env),
        _irqbalance_item(env),
        _idle_item(),
        _load_item(env),
        Item(
            "mitigations",
            f"mitigations={env.mitigations}" if env.mitigations else "kernel default",
            "speculation mitigations make every system call slower",
            "nothing to fix; compare only results taken with the same setting",
            True,
        ),
        Item(
            "kernel",
            f"Linux {env.kernel}" if env.kernel else "unknown",
            "the network stack and the scheduler change between kernels",
            "nothing to fix; compare only results from the same kernel",
            True,
        ),
    ]


def _cpus_item(env: Environment, usable: list[int]) -> Item:
    return Item(
        "CPUs",
        f"{env.cpus} CPUs, {len(usable)} usable ({format_cpu_list(usable)})",
        "the server and the clients need CPUs of their own; on one CPU they compete",
        "give volley at least 2 CPUs (check taskset/cgroup limits)",
        len(usable) >= 2,
    )


def _isolation_item() -> Item:
    isolated = _cpus_text(CPU_SYS / "isolated")
    nohz = _cpus_text(CPU_SYS / "nohz_full")
    parts = [f"isolated CPUs {format_cpu_list(isolated)}" if isolated else "no isolated CPUs"]
    if nohz:
        parts.append(f"nohz_full {format_cpu_list(nohz)}")
    return Item(
        "isolation",
        ", ".join(parts),
        "other tasks and the timer tick run on the benchmark's CPUs and delay replies",
        "boot with isolcpus=LIST nohz_full=LIST rcu_nocbs=LIST, then pin with "
        "--cores and --server-cores inside LIST",
        bool(isolated) if isolated is not None else None,
    )


def _governor_item(env: Environment) -> Item:
    governors: dict[str, list[int]] = {}
    for c in env.used_cpus:
        governors.setdefault(c.governor or "?", []).append(c.cpu)
    ok: bool | None
    if set(governors) == {"?"}:
        state, ok = "no cpufreq (frequency not controlled by this kernel)", None
    else:
        state = ", ".join(f"{g} on CPU {format_cpu_list(cs)}" for g, cs in governors.items())
        ok = set(governors) == {"performance"}
    return Item(
        "governor",
        state,
        "a CPU that slows down between requests answers the next one late",
        "cpupower frequency-set -g performance (as root)",
        ok,
    )


def _frequency_item(env: Environment) -> Item:
    freqs = [c for c in env.used_cpus if c.cur_freq_khz is not None]
    return Item(
        "frequency",
        ", ".join(
            f"CPU {c.cpu} {_mhz(c.cur_freq_khz)} ({_mhz(c.min_freq_khz)}-{_mhz(c.max_freq_khz)})"
            for c in freqs
        )
        or "not readable",
        "latency scales with clock speed; a range lets the clock wander",
        "set scaling_min_freq to scaling_max_freq, or use the performance governor",
        all(c.min_freq_khz == c.max_freq_khz or c.governor == "performance" for c in freqs)
        if freqs
        else None,
    )


def _turbo_item(env: Environment) -> Item:
    return Item(
        "turbo",
        _on_off(env.boost),
        "turbo speed depends on temperature and on the other cores, so it varies run to run",
        "echo 0 > /sys/devices/system/cpu/cpufreq/boost "
        "(Intel: echo 1 > .../intel_pstate/no_turbo)",
        (not env.boost) if env.boost is not None else None,
    )


def _smt_item(env: Environment) -> Item:
    state = _on_off(env.smt_active)
    control = read_text(CPU_SYS / "smt/control")
    if control:
        state += f" (control: {control})"
    return Item(
        "SMT",
        state,
        "hyperthread siblings share a core: work on one slows the other",
        "echo off > /sys/devices/system/cpu/smt/control, or never give a sibling of a "
        "pinned CPU to anything else",
        (not env.smt_active) if env.smt_active is not None else None,
    )


def _numa_item(env: Environment) -> Item:
    return Item(
        "NUMA",
        f"{env.numa_nodes} node{'s' if env.numa_nodes != 1 else ''}"
        if env.numa_nodes
        else "unknown",
        "across nodes every reply crosses the interconnect",
        "keep the server and client CPUs on one node (lscpu shows the nodes)",
        env.numa_nodes == 1 if env.numa_nodes else None,
    )


def _virtual_item(env: Environment) -> Item:
    if env.virtual is None:
        virtual = "unknown"
    elif env.virtual:
        virtual = f"virtual machine ({env.hypervisor or 'hypervisor unknown'})"
    else:
        virtual = "bare metal"
    return Item(
        "virtual",
        virtual,
        "a hypervisor can stop a virtual CPU at any time (steal) and adds timer latency",
        "use bare metal for numbers you publish; compare VM results only with the same VM",
        (not env.virtual) if env.virtual is not None else None,
    )


def _irqbalance_item(env: Environment) -> Item:
    running = env.irqbalance_running
    return Item(
        "irqbalance",
        "unknown" if running is None else ("running" if running else "not running"),
        "it moves interrupts onto the pinned CPUs while a benchmark runs",
        "systemctl stop irqbalance, or give it IRQBALANCE_BANNED_CPULIST=the pinned CPUs",
        (not running) if running is not None else None,
    )


def _idle_item() -> Item:
    driver, states = idle_driver()
    can_hold = os.access(PM_QOS_DEVICE, os.W_OK)
    ready: bool | None = True  # held while measuring, whatever the states
    if not can_hold:
        ready = None if states is None else all(name.upper() == "POLL" for name in states)
    if states is None:
        idle = "no cpuidle states readable"
    else:
        idle = f"{driver or 'cpuidle'}: {', '.join(states) or 'none'}"
    idle += (
        "; volley-bench holds them shallow while it measures"
        if can_hold
        else f"; {PM_QOS_DEVICE} not writable"
    )
    return Item(
        "idle states",
        idle,
        "waking a CPU from a deep idle state delays the reply (a VM: a trip to the hypervisor)",
        f"run volley-bench as root (it holds {PM_QOS_DEVICE} at 0 while measuring), or "
        "cpupower idle-set -D 0",
        ready,
    )


def _load_item(env: Environment) -> Item:
    import psutil

    try:
        load: str | None = " ".join(f"{n:.2f}" for n in psutil.getloadavg())
    except OSError:
        load = None
    return Item(
        "load",
        f"load average {load}" if load else "unknown",
        "other work competes for the CPUs and the caches",
        "stop other jobs; volley flags each disturbed run",
        env.load_avg_1m <= LOAD_AVG_LIMIT if env.load_avg_1m is not None else None,
    )


def _mhz(khz: int | None) -> str:
    return f"{khz / 1000:.0f} MHz" if khz is not None else "?"


def _on_off(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")

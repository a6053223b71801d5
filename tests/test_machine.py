"""The environment a result records (machine), the noise meter (noise), `volley system`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest
from helpers import volley

from volley.numbers.units import IdleStates
from volley.system import machine, noise
from volley.system.machine import CpuState, Environment
from volley.system.noise import (
    OTHER_SHARE_LIMIT,
    TICK_S,
    CpuNoise,
    Noise,
    NoiseMeter,
    cpu_hop_ns,
    descendants,
    disturbed_summary,
    involuntary_switches,
)

USABLE = sorted(os.sched_getaffinity(0))
CLIENT_CPU = USABLE[-1]
SERVER_CPU = USABLE[0]
STRETCH_S = 0.5  # one run's measured stretch
HOG = "print(flush=True)\nwhile True: pass"


def strict_roundtrip(data: dict[str, object]) -> dict[str, object]:
    """JSON as a result file holds it: NaN or infinity would make dumps fail here."""
    loaded: dict[str, object] = json.loads(json.dumps(data, allow_nan=False))
    return loaded


@contextmanager
def pinned(cpu: int, code: str) -> Iterator[subprocess.Popen[bytes]]:
    """A Python process (group) running ``code`` on one CPU, from the moment it prints
    a line; killed with its children on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready and process.stdout.readline(), "the pinned process did not start"
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def measure(
    client: int, server: int, server_pid: int | None = None, workers: tuple[int, ...] = ()
) -> Noise:
    meter = NoiseMeter([client], [server])
    meter.start(server_pid, workers)
    time.sleep(STRETCH_S)
    return meter.stop()


def on(noise: Noise, cpu: int) -> CpuNoise:
    return next(c for c in noise.cpus if c.cpu == cpu)


# --- volley system ------------------------------------------------------------------


def table(text: str) -> dict[str, str]:
    """Item name -> state, from the lines that start with a mark."""
    rows = {}
    for line in text.splitlines():
        if line[:2] in ("ok", "!!", "??") and line[2:4] == "  ":
            name, state, *_ = re.split(r"\s{2,}", line[4:].strip())
            rows[name] = state
    return rows


@pytest.mark.real
def test_system_prints_every_item_and_reads_the_machine_right() -> None:
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    done = volley("system", timeout=30)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    assert done.status == 0, done.stderr
    rows = table(done.stdout)
    assert set(rows) == {item.name for item in machine.readiness()}
    for name in rows:
        assert name in done.stdout

    assert rows["CPUs"].startswith(f"{os.cpu_count()} CPUs, {len(USABLE)} usable")
    assert rows["load"] in (f"load average {' '.join(v)}" for v in (load_before, load_after))
    assert os.uname().release in rows["kernel"]

    governors = {
        cpu: Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor") for cpu in USABLE
    }
    if not any(path.exists() for path in governors.values()):
        assert rows["governor"].startswith("no cpufreq")
    for path in governors.values():
        if path.exists():
            assert f"{path.read_text().strip()} on CPU" in rows["governor"]

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    flags = next((line.split() for line in cpuinfo if line.startswith("flags")), [])
    if "hypervisor" in flags:
        assert rows["virtual"].startswith("virtual machine")

    smt = Path("/sys/devices/system/cpu/smt/active")
    if smt.exists():
        assert rows["SMT"].startswith("on" if smt.read_text().strip() == "1" else "off")
    isolated = Path("/sys/devices/system/cpu/isolated")
    if isolated.exists() and not isolated.read_text().strip():
        assert rows["isolation"] == "no isolated CPUs"


@pytest.mark.real
def test_system_works_on_one_cpu() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "volley", "system"],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}),
    )
    assert done.returncode == 0, done.stderr
    assert table(done.stdout)["CPUs"].endswith(f"1 usable ({SERVER_CPU})")
    assert done.stdout.splitlines()[1].startswith("!!  CPUs")


# --- Environment --------------------------------------------------------------------


def test_environment_records_the_server_binary_and_reads_back_from_strict_json() -> None:
    env = machine.environment(sys.executable, [CLIENT_CPU], [SERVER_CPU])
    real = os.path.realpath(sys.executable)
    assert env.server_path == real
    assert env.server_size_bytes == os.path.getsize(real)
    assert env.server_sha256 == hashlib.sha256(Path(real).read_bytes()).hexdigest()
    assert env.kernel == os.uname().release
    assert env.cpus == os.cpu_count()
    assert [c.cpu for c in env.used_cpus] == sorted({CLIENT_CPU, SERVER_CPU})
    assert Environment.from_json(strict_roundtrip(env.to_json())) == env

    connect = machine.environment(None, [CLIENT_CPU], [])
    assert connect.server_path is connect.server_sha256 is connect.server_size_bytes is None
    assert [c.role for c in connect.used_cpus] == ["client"]


def test_environment_reads_a_format_1_host() -> None:
    old = {"kernel": "6.1.0", "cpu_model": "AMD EPYC", "cpus": 2}
    env = Environment.from_json(old)
    assert (env.kernel, env.cpu_model, env.cpus, env.virtual) == ("6.1.0", "AMD EPYC", 2, None)


def test_problems_name_what_is_off() -> None:
    quiet = Environment(kernel="6.1", cpu_model="x", cpus=4, load_avg_1m=0.2)
    assert quiet.problems() == []
    off = Environment(
        kernel="6.1",
        cpu_model="x",
        cpus=4,
        used_cpus=[
            CpuState(0, "server", governor="performance", numa_node=0),
            CpuState(1, "client", governor="powersave", numa_node=0),
            CpuState(2, "client", governor="powersave", numa_node=1),
        ],
        smt_siblings_shared=True,
        load_avg_1m=3.14,
        idle_states=IdleStates.ANY,
    )
    assert off.problems() == [
        "governor powersave on CPU 1-2",
        "client and server CPUs are SMT siblings",
        "CPUs on 2 NUMA nodes",
        "load average 3.1 at start",
        "deep CPU idle states allowed",
    ]


def pm_qos_target() -> int:
    """The CPU latency the kernel now keeps to, over every open request (us)."""
    with open(machine.PM_QOS_DEVICE, "rb") as f:
        return int.from_bytes(f.read(4), sys.byteorder, signed=True)


HOLDS_IDLE = os.access(machine.PM_QOS_DEVICE, os.W_OK)


@pytest.mark.skipif(not HOLDS_IDLE, reason=f"{machine.PM_QOS_DEVICE} is not writable (not root)")
def test_shallow_idle_holds_the_request_only_while_it_runs() -> None:
    # Another benchmark on the machine may hold the same request (the target then reads 0
    # before and after): what is ours is the open request, so that is what is looked at.
    assert not holding_pm_qos()
    with machine.shallow_idle() as (held, problem):
        assert (held, problem) == (IdleStates.SHALLOW, None)
        assert pm_qos_target() == 0 and holding_pm_qos()
    assert not holding_pm_qos()


def holding_pm_qos() -> bool:
    """Whether this process has the PM QoS device open (the request lives while it is)."""
    fds = Path("/proc/self/fd")
    links = []
    for fd in fds.iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    return machine.PM_QOS_DEVICE in links


def test_idle_states_left_alone_or_not_held_say_so(monkeypatch, tmp_path) -> None:
    with machine.shallow_idle(IdleStates.ANY) as found:
        assert found == (IdleStates.ANY, None)
    monkeypatch.setattr(machine, "PM_QOS_DEVICE", str(tmp_path / "no-such-device"))
    with machine.shallow_idle() as (held, problem):
        assert held == IdleStates.ANY
        assert problem is not None and "no-such-device: No such file" in problem
    assert machine.idle_hold_problem() == problem


@pytest.mark.real
def test_a_benchmark_records_the_idle_states_it_measured_with() -> None:
    result = short_bench()["result"]
    found = result["host"]
    if len(USABLE) > 1:  # each run's noise says how far apart the CPUs were
        hops = [r["noise"]["cpu_hop_ns"] for r in result["runs"]]
        assert any(hops) and all(h is None or h > 0 for h in hops), hops
    assert found["idle_states"] == (IdleStates.SHALLOW if HOLDS_IDLE else IdleStates.ANY)
    assert found["cpuidle_driver"] == machine.idle_driver()[0]
    allowed = short_bench("--idle-states", "any")
    assert allowed["result"]["host"]["idle_states"] == IdleStates.ANY
    from helpers import SERVERS

    done = volley("bench", "--idle-states", "deep", SERVERS / "c-threaded")
    assert done.status == 2 and "--idle-states 'deep' is not one of shallow, any" in done.stderr


@pytest.mark.skipif(len(USABLE) < 2, reason="a round trip between CPUs needs two")
def test_cpu_hop_is_a_round_trip_between_two_cpus() -> None:
    hops = [cpu_hop_ns(SERVER_CPU, CLIENT_CPU) for _ in range(3)]
    found = [h for h in hops if h is not None]
    assert found, "no probe got its batches done"
    # Any two CPUs of one machine: tens to hundreds of ns; a preempted side costs a tick.
    assert all(5 < h < 50_000 for h in found), hops
    assert cpu_hop_ns(CLIENT_CPU, CLIENT_CPU) is None
    assert os.sched_getaffinity(0) == set(USABLE)  # the probe pinned only its own threads


def test_bounce_without_a_partner_gives_up_at_its_deadline() -> None:
    from volley import _core

    line, batches = np.zeros(16, dtype=np.int64), np.zeros(8, dtype=np.int64)
    for measure in (True, False):
        began = time.monotonic()
        deadline = _core.monotonic_ns() + 20_000_000
        assert _core.bounce(line, batches, 50, measure, deadline) == 0
        assert time.monotonic() - began < 5  # 20 ms, unless this VM stalls us
        line[:] = 0
    with pytest.raises(ValueError, match="16 words"):
        _core.bounce(np.zeros(8, dtype=np.int64), batches, 50, True, 0)


def _run_at(hop_ns: float | None, mean_ns: float):
    from volley.records.results import RunSummary
    from volley.system.noise import Noise

    noise = Noise(0.5, [], None, None, None, False, cpu_hop_ns=hop_ns)
    return RunSummary(1000, 0.5, mean_ns, mean_ns, mean_ns, mean_ns, mean_ns, noise=noise)


def test_runs_on_cpus_that_moved_are_estimated_by_placement() -> None:
    from volley.measure.runs import by_placement
    from volley.numbers.stats import run_interval

    hops = [55.0, 60.0, None, 310.0, 300.0, 320.0]
    means = [14e3, 14.2e3, 99e3, 20e3, 21e3, 20.5e3]
    near, far = by_placement([_run_at(h, v) for h, v in zip(hops, means, strict=True)], 0.9)
    expected_far = run_interval(20.5e3, [20e3, 21e3, 20.5e3], 0.9)
    assert (near.placement, near.runs, near.hop_low_ns, near.hop_high_ns) == ("near", 2, 55, 60)
    assert near.mean_ns == pytest.approx(14.1e3)
    assert (far.placement, far.runs, far.hop_low_ns, far.hop_high_ns) == ("far", 3, 300, 320)
    assert (far.ci_low_ns, far.ci_high_ns) == pytest.approx((expected_far.low, expected_far.high))
    one_far = by_placement([_run_at(h, v) for h, v in [(55, 14e3), (60, 14.2e3), (310, 2e4)]], 0.95)
    assert one_far[1].runs == 1 and math.isinf(one_far[1].ci_high_ns)
    assert by_placement([_run_at(55.0, 1e4), _run_at(100.0, 1e4)], 0.95) == []  # factor < 2
    assert by_placement([_run_at(55.0, 1e4), _run_at(None, 1e4)], 0.95) == []
    assert by_placement([], 0.95) == []


def test_the_summary_leads_with_each_placement_and_the_json_keeps_them() -> None:
    from test_results import result

    from volley.measure.runs import by_placement
    from volley.present.report import summary
    from volley.records.results import BenchResult, dumps

    runs = [_run_at(h, v) for h, v in [(55, 14e3), (60, 14.2e3), (58, 14.1e3), (310, 2e4)] * 3]
    moved = result(runs=runs, placements=by_placement(runs, 0.95))
    text = summary(moved)
    assert "CPUs moved" in text and "75% near, 25% far" in text
    assert text.index("near runs  14.10 us ±") < text.index("far runs") < text.index("latency ")
    loaded = BenchResult.from_json(json.loads(dumps(moved)))
    assert loaded.placements == moved.placements
    assert "CPUs moved" not in summary(result(runs=runs[:3]))  # one placement only


def test_cmdline_flags_stop_at_the_init_arguments() -> None:
    flags = machine._cmdline_flags("ro isolcpus=2-3 nohz_full=2-3 quiet -- mitigations=off")
    assert flags == {"isolcpus": "2-3", "nohz_full": "2-3", "rcu_nocbs": None, "mitigations": None}


# --- Noise ----------------------------------------------------------------------------


def test_cpu_times_are_keyed_by_cpu_number_with_cpus_offline(monkeypatch) -> None:
    # /proc/stat, and psutil after it, leave an offline CPU out: with CPU 1 offline the
    # second entry is CPU 2's, and taken for CPU 1 it would put CPU 2's work on CPU 1.
    fake = [psutil.cpu_times(percpu=True)[0]._replace(steal=float(n)) for n in (0, 2, 3)]
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu=False: fake)
    monkeypatch.setattr(noise, "_cpus_text", lambda path: [0, 2, 3])
    assert {cpu: t[2] for cpu, t in noise._cpu_times().items()} == {0: 0.0, 2: 2.0, 3: 3.0}
    # A CPU that went on or offline between the two reads: nothing, not the wrong CPUs.
    monkeypatch.setattr(noise, "_cpus_text", lambda path: [0, 1, 2, 3])
    assert noise._cpu_times() == {}


def test_cpu_times_agree_with_proc_stat() -> None:
    found = noise._cpu_times()
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        user, nice, system, _, _, irq, softirq, steal = (int(v) * TICK_S for v in values[:8])
        task, interrupts, stolen = found[int(name[3:])]
        # Read a moment apart: at most a few ticks more since.
        assert 0 <= user + nice + system - task <= 5 * TICK_S
        assert 0 <= irq + softirq - interrupts <= 5 * TICK_S
        assert 0 <= steal - stolen <= 5 * TICK_S


@pytest.mark.real
def test_a_hog_on_the_client_cpu_is_flagged_with_its_share() -> None:
    with pinned(CLIENT_CPU, HOG) as hog:
        hog_before = sum(psutil.Process(hog.pid).cpu_times()[:2])
        noise = measure(CLIENT_CPU, SERVER_CPU)
        hog_s = sum(psutil.Process(hog.pid).cpu_times()[:2]) - hog_before
    client = on(noise, CLIENT_CPU)
    # What the hog used (psutil, counted independently) is in the other processes' time,
    # give or take the ticks /proc/stat counts in.
    assert client.other_cpu_s >= hog_s - 3 * TICK_S
    assert client.other_share >= 0.5
    assert noise.disturbed
    assert f"of CPU {CLIENT_CPU}" in noise.describe()
    assert Noise.from_json(strict_roundtrip(noise.to_json())) == noise


def others_busy_s() -> dict[int, float]:
    """CPU seconds so far of every process but this one (the evidence, independent of the
    meter's per-CPU counters, that something else ran)."""
    found = {}
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid():
                times = proc.cpu_times()
                found[proc.pid] = times.user + times.system
        except psutil.Error:
            pass
    return found


def test_without_a_hog_nothing_is_flagged() -> None:
    # Other sessions on a shared machine are real noise; try a few stretches, and only
    # insist on a quiet one when nothing else ran meanwhile: other processes' own CPU
    # times and the host's steal say so as it happens (a load average lags by a minute).
    before, steal_before, started = others_busy_s(), psutil.cpu_times().steal, time.monotonic()
    tries = [measure(CLIENT_CPU, SERVER_CPU) for _ in range(3)]
    if all(t.disturbed for t in tries):
        elapsed = time.monotonic() - started
        after = others_busy_s()
        others = sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())
        steal = psutil.cpu_times().steal - steal_before
        if max(others, steal) > 0.1 * elapsed:
            pytest.skip(
                f"machine busy ({others:.2f} s other CPU, {steal:.2f} s steal in {elapsed:.1f} s)"
            )
        pytest.fail(f"flagged on an idle machine: {[t.describe() for t in tries]}")
    quiet = next(t for t in tries if not t.disturbed)
    assert quiet.describe().startswith("quiet")


@pytest.mark.real
def test_own_workers_are_not_counted_as_other() -> None:
    with pinned(CLIENT_CPU, HOG) as worker:
        before = psutil.Process(worker.pid).cpu_times()
        noise = measure(CLIENT_CPU, SERVER_CPU, workers=(worker.pid,))
        worker_s = sum(psutil.Process(worker.pid).cpu_times()[:2]) - sum(before[:2])
    client = on(noise, CLIENT_CPU)
    # The worker's time is ours: what is left for others is the rest of the stretch.
    assert client.other_cpu_s <= noise.duration_s - worker_s + 3 * TICK_S


@pytest.mark.real
def test_involuntary_switches_are_counted_and_reach_the_noise() -> None:
    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    # A thread of ours spinning on the hog's CPU is preempted at the tick.
    with pinned(CLIENT_CPU, HOG):
        before = involuntary_switches()
        spin = threading.Thread(target=spin_for, args=(0.3,))
        os.sched_setaffinity(0, {CLIENT_CPU})
        try:
            spin.start()  # inherits the mask: the count covers every thread
            spin.join(timeout=30)
        finally:
            os.sched_setaffinity(0, USABLE)
        switches = involuntary_switches() - before
    assert switches > 0
    meter = NoiseMeter([CLIENT_CPU], [SERVER_CPU])
    meter.start(None, [])
    assert meter.stop(involuntary_switches=switches).involuntary_switches == switches
    meter.start(None, [])
    assert meter.stop().involuntary_switches is None


@pytest.mark.real
def test_the_server_and_its_children_are_ours() -> None:
    # A forking server: the parent waits, the child spins on the server CPU.
    code = "import os\nif os.fork() == 0:\n    print(flush=True)\n    while True: pass\nos.wait()"
    with pinned(SERVER_CPU, code) as server:
        (child,) = psutil.Process(server.pid).children()
        assert descendants({server.pid}, None) == {server.pid, child.pid}
        before = sum(child.cpu_times()[:2])
        noise = measure(CLIENT_CPU, SERVER_CPU, server_pid=server.pid)
        child_s = sum(child.cpu_times()[:2]) - before
    server_cpu = on(noise, SERVER_CPU)
    if SERVER_CPU != CLIENT_CPU:
        assert server_cpu.role == "server"
    assert server_cpu.other_cpu_s <= noise.duration_s - child_s + 3 * TICK_S


def test_one_cpu_for_client_and_server() -> None:
    noise = measure(SERVER_CPU, SERVER_CPU)
    assert [(c.cpu, c.role) for c in noise.cpus] == [(SERVER_CPU, "client+server")]
    assert 0 <= noise.cpus[0].other_share <= 1


@pytest.mark.real
def test_meter_starts_and_stops_around_many_threads_and_a_forking_server() -> None:
    # A worker with 64 client threads, and a server that forked a child. What starting and
    # stopping costs is measured by bench/noise.py ("start+stop cost"), not asserted here:
    # a timing on a shared machine says more about the machine than about the meter.
    threads = (
        "import threading, time\n"
        "for _ in range(64): threading.Thread(target=time.sleep, args=(30,)).start()\n"
        "print(flush=True)"
    )
    fork = (
        "import os, time\nif os.fork() == 0:\n    print(flush=True)\n    time.sleep(30)\nos.wait()"
    )
    with pinned(CLIENT_CPU, threads) as worker, pinned(SERVER_CPU, fork) as server:
        assert len(psutil.Process(worker.pid).threads()) == 65
        assert len(descendants({server.pid}, None)) == 2
        meter = NoiseMeter([CLIENT_CPU], [SERVER_CPU])
        for _ in range(20):
            meter.start(server.pid, [worker.pid])
            noise = meter.stop()
            assert {c.cpu for c in noise.cpus} == {CLIENT_CPU, SERVER_CPU}
            assert all(0 <= c.other_share <= 1 for c in noise.cpus)


def test_stop_without_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        NoiseMeter([0], [0]).stop()


def test_disturbed_runs_are_summarized_by_the_worst() -> None:
    def run(share: float) -> Noise:
        cpu = CpuNoise(1, "client", share * 0.5, share, 0.0, 0.0)
        return Noise(0.5, [cpu], 0, None, None, share > OTHER_SHARE_LIMIT)

    assert disturbed_summary([run(0.01), run(0.02)]) is None
    assert (
        disturbed_summary([run(0.01), run(0.31), run(0.25), run(0.0)])
        == "2 of 4 runs disturbed: other processes used 31% of CPU 1"
    )
    assert run(0.02).describe() == "quiet: other processes used at most 2% of CPU 1"


def test_caption_names_governor_smt_and_virtualization() -> None:
    env = Environment(
        kernel="6.1",
        cpu_model="EPYC",
        cpus=2,
        used_cpus=[CpuState(0, "server", governor="performance")],
        smt_active=False,
        virtual=True,
        hypervisor="kvm",
    )
    assert env.caption() == "EPYC (2 CPUs), Linux 6.1, governor performance, SMT off, kvm VM"


# --- disturbed runs, end to end -------------------------------------------------------


def short_bench(*extra: str) -> dict:
    from helpers import SERVERS, strict_loads

    done = volley(
        "bench", "--clients", "2", "--cores", str(CLIENT_CPU), "--server-cores",
        str(SERVER_CPU), "--min-runs", "3", "--max-time", "3s", "--precision", "50%",
        "--warmup", "0.1s", "--run-time", "0.3s", "--quiet", "--json", "-", *extra,
        SERVERS / "c-threaded",
        timeout=60,
    )  # fmt: skip
    assert done.status in (0, 1, 3), done.stderr
    return {"result": strict_loads(done.stdout), "stderr": done.stderr}


@pytest.mark.real
@pytest.mark.skipif(len(USABLE) < 2, reason="a hog beside the clients needs two CPUs")
# The hog's share is the scheduler's to give, on a VM shared with other work.
@pytest.mark.flaky(reruns=2, reruns_delay=5)
def test_a_hog_during_a_benchmark_flags_its_runs_with_its_share() -> None:
    with pinned(CLIENT_CPU, HOG):
        # Played until the time bound (no 0.1% in 3 s): enough runs for a mean share.
        found = short_bench("--precision", "0.1%")
    runs = found["result"]["runs"]
    shares = [
        next(c["other_share"] for c in r["noise"]["cpus"] if c["cpu"] == CLIENT_CPU) for r in runs
    ]
    # The clients wake for every reply and the scheduler favours them over the hog, more so
    # the faster the server answers: the hog's share of a run measured 10-60% on the
    # development VM with idle states held shallow (odd and even runs alternating), so
    # not every run is over the 20% limit; on average it is, and every run over it is
    # flagged (steal may flag others).
    assert runs and statistics.fmean(shares) > OTHER_SHARE_LIMIT, shares
    flagged = [r["noise"]["disturbed"] for r in runs]
    assert all(f for f, share in zip(flagged, shares, strict=True) if share > OTHER_SHARE_LIMIT)
    assert f"{sum(flagged)} of {len(runs)} runs disturbed: " in found["stderr"]
    assert f"% of CPU {CLIENT_CPU}" in found["stderr"]
    with pinned(CLIENT_CPU, HOG):
        failed = short_bench("--noisy", "fail", "--precision", "0.1%")["result"]
    assert failed["status"] == "failed" and "disturbed" in failed["error"]


@pytest.mark.real
@pytest.mark.skipif(len(USABLE) < 2, reason="server and clients apart need two CPUs")
# Quiet is checked before, not held during: other work can start in between on a shared VM.
@pytest.mark.flaky(reruns=2, reruns_delay=10)
def test_a_benchmark_on_a_quiet_machine_flags_nothing() -> None:
    # Quiet now, by the meter itself (the load average trails the suite's own earlier
    # tests by minutes): only then must a benchmark's runs come out unflagged.
    before = [measure(CLIENT_CPU, SERVER_CPU) for _ in range(3)]
    if all(b.disturbed for b in before):
        pytest.skip(f"other work on the CPUs right now: {before[-1].describe()}")
    runs = short_bench()["result"]["runs"]
    flagged = [r["noise"] for r in runs if r["noise"]["disturbed"]]
    # A stray run may meet a burst of the kernel's own work; most must be quiet.
    assert len(flagged) <= len(runs) // 3, flagged

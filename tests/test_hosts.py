"""Clients on many hosts (volley.measure.hosts): the pieces without MPI, then real jobs under
``mpiexec -n 2`` on this one machine (both ranks share its CPUs, oversubscribed).

The jobs measure a c-threaded server started here; every wait is bounded, and every
process a job starts carries this test's mark, so that none may outlive it.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import marked_processes
from helpers import ROOT, RUN_MARK

from volley.engine import server
from volley.engine.fake import FakeEngine
from volley.engine.play import PlayedRun, RunRequest
from volley.measure import hosts, session
from volley.measure.runs import Measurement, measure
from volley.numbers import stats
from volley.numbers.units import parse_target
from volley.records.results import FAILED, FORMAT_VERSION, BenchResult

# --- without MPI ------------------------------------------------------------------------


def test_a_plain_run_is_no_job_and_a_launcher_is_read_from_its_environment():
    assert hosts.launched_size({}) == 1
    assert hosts.join({}) is None  # and mpi4py is not imported for it
    assert hosts.launched_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert hosts.launched_size({"PMI_SIZE": "3", "PMI_RANK": "0"}) == 3
    # Slurm with PMIx: the step's task count; a batch script alone is no job.
    assert hosts.launched_size({"PMIX_RANK": "0", "SLURM_STEP_NUM_TASKS": "2"}) == 2
    assert hosts.launched_size({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}) == 1


def test_mpi4py_is_not_imported_without_a_launcher():
    code = "import sys; import volley.cli.bench; print('mpi4py' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k not in hosts.SIZE_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.stdout.strip() == "False", done.stderr


def test_clients_are_dealt_evenly_the_first_ranks_getting_the_rest():
    assert [hosts.share(7, 3, r) for r in range(3)] == [3, 2, 2]
    assert [hosts.share(160, 4, r) for r in range(4)] == [40] * 4
    assert sum(hosts.share(1001, 7, r) for r in range(7)) == 1001


class NamingTeam:
    names = {0: "alpha", 1: "beta"}

    def name(self, rank: int) -> str:
        return f"{self.names[rank]} (rank {rank})"


def test_mismatched_versions_and_a_host_that_cannot_run_are_named():
    team = NamingTeam()
    same = [hosts.Hello(0, "alpha", "1.0", [1]), hosts.Hello(1, "beta", "1.0", [1, 2])]
    assert hosts.deal(team, same, None) == [1, 2]  # one client per client CPU of each host
    assert hosts.deal(team, same, 5) == [3, 2]
    with pytest.raises(hosts.HostsError) as few:
        hosts.deal(team, same, 1)
    assert few.value.status == 2
    differ = [same[0], hosts.Hello(1, "beta", "0.9", [1])]
    with pytest.raises(hosts.HostsError) as versions:
        hosts.deal(team, differ, 2)
    assert versions.value.status == 2
    assert "alpha (rank 0) 1.0" in str(versions.value)
    assert "beta (rank 1) 0.9" in str(versions.value)
    unreachable = [same[0], hosts.Hello(1, "beta", "1.0", [1], "nothing accepts", 1)]
    with pytest.raises(hosts.HostsError) as problem:
        hosts.deal(team, unreachable, 2)
    assert problem.value.status == 1
    assert str(problem.value).startswith("beta (rank 1): nothing accepts")


def test_a_host_run_crosses_as_a_summary_that_merges_like_the_ops_themselves():
    rng = np.random.default_rng(3)
    a = [rng.integers(20_000, 90_000, 5000), rng.integers(30_000, 2_000_000, 3000)]
    b = [rng.integers(25_000, 70_000, 4000)]
    parts = [hosts.HostRun.of(PlayedRun(ops), False) for ops in (a, b)]
    assert all(len(p.histogram) < 20_000 for p in parts)  # bytes, not a dense histogram
    merged = stats.LatencyRecord()
    for part in parts:
        merged.merge(part.record())
    whole = stats.LatencyRecord()
    whole.add(np.concatenate(a + b))
    assert merged.n == whole.n == 12000
    assert merged.mean_ns == pytest.approx(whole.mean_ns, rel=1e-12)
    assert merged.m2 == pytest.approx(whole.m2, rel=1e-9)
    assert (merged.min_ns, merged.max_ns) == (whole.min_ns, whole.max_ns)
    assert np.array_equal(merged.histogram.counts, whole.histogram.counts)
    # The busiest client of the first host spent longest in ops.
    assert parts[0].busiest_s == pytest.approx(max(float(x.sum()) for x in a) / 1e9)


def test_the_hosts_of_a_result_survive_json_and_show_in_the_summary():
    from test_results import result

    from volley.present.report import summary
    from volley.records.results import HostInfo

    found = [
        HostInfo("alpha", 0, [2, 3], 3, 1200, 51_000.0, 90_000.0),
        HostInfo("beta", 1, [2, 3], 2, 800, 77_000.0, float("nan")),  # no p99 known
    ]
    many = result(hosts=found, clients=5)
    back = BenchResult.from_json(json.loads(json.dumps(many.to_json())))
    assert back.hosts[0] == found[0] and math.isnan(back.hosts[1].p99_ns)
    text = summary(many)
    assert "host alpha (rank 0): 3 clients on CPU 2-3, 1,200 ops, mean 51.00 us" in text
    assert "host beta (rank 1): 2 clients" in text
    assert "host alpha" not in summary(result(hosts=found[:1]))  # one host: no host lines


class FakeComm:
    """MPI's part as rank 0 sees it: each other rank's answers scripted in order."""

    def __init__(self, size: int, answers: dict[int, list[tuple[str, object]]]) -> None:
        self.size, self.answers = size, answers
        self.sent: list[tuple[int, str]] = []

    def Get_rank(self) -> int:  # noqa: N802 (mpi4py's names)
        return 0

    def Get_size(self) -> int:  # noqa: N802
        return self.size

    def isend(self, message: tuple[str, object], dest: int, tag: int) -> FakeComm:
        self.sent.append((dest, message[0]))
        return self

    def Test(self) -> bool:  # noqa: N802 (a request, sent at once)
        return True

    def iprobe(self, source: int, tag: int) -> bool:
        return bool(self.answers[source])

    def recv(self, source: int, tag: int) -> tuple[str, object]:
        return self.answers[source].pop(0)


class FakeLocal(FakeEngine):
    """Rank 0's own engine: meets the others (its rendezvous), then plays 1000 ops of 50 us."""

    def __init__(self, config: object) -> None:
        super().__init__(50_000.0, ops=1000)
        self.config = config
        self.rendezvous: Callable[[RunRequest], None] | None = None

    def play(self, request: RunRequest) -> PlayedRun:
        assert self.rendezvous is not None
        self.rendezvous(request)
        return super().play(request)

    def result(self, measurement: Measurement) -> BenchResult:
        from test_results import result

        return result(n=measurement.record.n, runs=measurement.runs)


def host_run(latency_ns: int, ops: int = 500) -> hosts.HostRun:
    return hosts.HostRun.of(PlayedRun([np.full(ops, latency_ns, np.int64)]), False)


def fake_job(
    answers: dict[int, list[tuple[str, object]]],
) -> tuple[hosts.Hosts, FakeComm, list[BenchResult]]:
    """Rank 0's engine with two other hosts that answer as scripted; and what it saved."""
    from volley.engine.coordinator import BenchConfig
    from volley.system.cpus import Placement

    config = BenchConfig(
        "127.0.0.1:1", [], 3, Placement([0], [1]), [parse_target("50%")], 0.95, 60.0,
        0.1, 0.2, 2, "connections", "keep", 1.0, 1.0, connect=("127.0.0.1", 1),
    )  # fmt: skip
    comm = FakeComm(3, answers)
    team = hosts.Team(comm)
    team.names = {0: "alpha", 1: "beta", 2: "gamma"}
    local = FakeLocal(config)
    saved: list[BenchResult] = []
    engine = hosts.Hosts(team, local, config, [1, 1, 1], Measurement(), saved.append)
    engine.local_result = local.result
    local.rendezvous = engine.rendezvous
    return engine, comm, saved


def test_rank_0_merges_every_hosts_run_and_keeps_each_hosts_share():
    ready = ("ready", None)
    engine, comm, saved = fake_job(
        {
            1: [ready, ("played", host_run(60_000)), ready, ("played", host_run(60_000))],
            2: [ready, ("played", host_run(90_000)), ready, ("played", host_run(90_000))],
        }
    )
    found = measure(engine, session.run_plan(engine.whole), measurement=engine.measurement)
    assert len(found.runs) == 2 and found.record.n == 2 * (1000 + 500 + 500)
    assert found.record.mean_ns == pytest.approx((1000 * 50_000 + 500 * 150_000) / 2000)
    result = engine.result()
    assert [(h.host, h.ops, h.mean_ns) for h in result.hosts] == [
        ("alpha", 2000, 50_000.0),
        ("beta", 1000, 60_000.0),
        ("gamma", 1000, 90_000.0),
    ]
    assert result.n == sum(h.ops for h in result.hosts) and result.clients == 3
    # Each run: sent to both, both told to go; the partial result saved before run 2.
    assert [kind for _, kind in comm.sent] == ["run", "run", "go", "go"] * 2
    assert len(saved) == 1 and saved[0].status == FAILED and saved[0].n == 2000


def test_a_host_that_cannot_connect_calls_the_run_off_naming_it():
    ready = ("ready", None)
    engine, comm, _ = fake_job(
        {
            1: [ready, ("played", host_run(60_000)), ready],
            2: [ready, ("played", host_run(60_000)), ("failed", "run 2: connection refused")],
        }
    )
    found = measure(engine, session.run_plan(engine.whole), measurement=engine.measurement)
    assert found.status == FAILED and len(found.runs) == 1
    assert found.error == "gamma (rank 2): run 2: connection refused"
    assert comm.sent[-2:] == [(1, "abort"), (2, "abort")]


# --- real jobs under mpiexec ------------------------------------------------------------


def mpiexec() -> str | None:
    beside = Path(sysconfig.get_path("scripts")) / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def mpi_ready() -> str | None:
    """Why real MPI jobs cannot run here, or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    if mpiexec() is None:
        return "no mpiexec (pip install -e '.[mpi]' brings Open MPI's)"
    return None


needs_mpi = pytest.mark.skipif(mpi_ready() is not None, reason=str(mpi_ready()))
OPEN_MPI_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
QUICK = ["--cores", "1", "--warmup", "0.1s", "--run-time", "0.2s", "--op-timeout", "1s"]
BRIEF = [*QUICK, "--max-time", "2s", "--min-runs", "2"]


def job_command(ranks: int, *args: str, launcher: tuple[str, ...] = ()) -> list[str]:
    """``mpiexec -n RANKS volley bench ARGS``, each rank's output lines tagged with it."""
    return [
        str(mpiexec()),
        "--oversubscribe",
        "--tag-output",
        *launcher,
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "volley",
        "bench",
        *args,
    ]


def job_env(mark: str) -> dict[str, str]:
    return {**os.environ, **OPEN_MPI_ROOT, RUN_MARK: mark, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def running_server(c_threaded: Path) -> Iterator[str]:
    port = server.choose_port()
    process = subprocess.Popen(
        ["taskset", "-c", "0", str(c_threaded), "-p", str(port)], stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                server.probe("127.0.0.1", port, 0.2)
                break
            except server.ServerError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def rank_lines(output: str, rank: int, stream: str) -> list[str]:
    tag = f"[1,{rank}]<{stream}>:"
    return [line[len(tag) :] for line in output.splitlines() if line.startswith(tag)]


def nothing_left(mark: str, within_s: float = 10.0) -> list[str]:
    """The processes of a job still running after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        alive = [p for p in marked_processes(mark) if p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return [" ".join(p.cmdline()) for p in alive]
        time.sleep(0.1)


def run_job(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a job to its end (bounded); none of its processes may outlive it."""
    mark = uuid.uuid4().hex
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=job_env(mark), cwd=cwd
    )
    assert nothing_left(mark) == [], done.stdout + done.stderr
    return done


@pytest.mark.real
@needs_mpi
def test_two_ranks_measure_one_result_their_clients_dealt_and_rank_0_judging(
    running_server, tmp_path
):
    out = tmp_path / "two.json"
    args = [*QUICK, "--connect", running_server, "--clients", "3", "--min-runs", "3"]
    command = job_command(2, *args, "--max-time", "3s", "--json", str(out))
    done = run_job(command)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["version"] == FORMAT_VERSION
    hosts_found = result["hosts"]
    assert [h["rank"] for h in hosts_found] == [0, 1]
    # --clients 3 over 2 hosts: rank 0 gets the one left over.
    assert [h["clients"] for h in hosts_found] == [2, 1] and result["clients"] == 3
    assert all(h["ops"] > 0 for h in hosts_found)
    assert result["n"] == sum(h["ops"] for h in hosts_found)
    assert result["n"] == sum(r["n"] for r in result["runs"])
    # The stopping rule ran on rank 0 alone: only it shows progress and the summary.
    progress = [line for line in rank_lines(done.stderr, 0, "stderr") if line.startswith(" run ")]
    assert len(progress) == len(result["runs"]) >= 3
    assert not rank_lines(done.stderr, 1, "stderr") and not rank_lines(done.stdout, 1, "stdout")
    summary = "\n".join(rank_lines(done.stdout, 0, "stdout"))
    assert "(rank 0): 2 clients" in summary and "(rank 1): 1 client" in summary


@pytest.mark.real
@needs_mpi
def test_an_open_loop_rate_is_offered_by_all_hosts_together(running_server, tmp_path):
    out = tmp_path / "open.json"
    args = [*BRIEF, "--connect", running_server, "--clients", "3", "--rate", "3k", "-q"]
    command = job_command(2, *args, "--json", str(out))
    done = run_job(command)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["load"]["model"] == "open" and result["load"]["rate_ops_s"] == 3000
    # Each host offered its clients' share: 3k ops/s in all, 0.2 s per run.
    due = sum(r["due"] for r in result["runs"])
    assert 0.7 * 600 * len(result["runs"]) < due < 1.3 * 600 * len(result["runs"])


@pytest.mark.real
@needs_mpi
def test_one_rank_under_mpiexec_is_a_plain_run(running_server, tmp_path):
    out = tmp_path / "one.json"
    args = [*QUICK, "--connect", running_server, "--clients", "2", "--min-runs", "2", "-q"]
    command = job_command(1, *args, "--max-time", "1s", "--json", str(out))
    done = run_job(command)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    result = BenchResult.from_json(json.loads(out.read_text()))
    assert result.hosts == [] and result.clients == 2 and result.n > 0


@pytest.mark.real
@needs_mpi
def test_mismatched_volley_versions_end_the_job_with_status_2_naming_the_hosts(
    running_server, tmp_path
):
    other = tmp_path / "other"
    shutil.copytree(ROOT / "volley", other / "volley", ignore=shutil.ignore_patterns("*.c"))
    init = other / "volley" / "__init__.py"
    init.write_text(init.read_text().replace("__version__ = ", "__version__ = '0.0.0-other' or "))
    args = [*BRIEF, "--connect", running_server, "--clients", "2", "-q"]
    rank = [sys.executable, "-m", "volley", "bench", *args]
    command = [
        str(mpiexec()), "--oversubscribe",
        "-n", "1", "-x", f"PYTHONPATH={ROOT}", *rank, ":",
        "-n", "1", "-x", f"PYTHONPATH={other}", *rank,
    ]  # fmt: skip
    # Not from the checkout: ``python -m`` would put it first on rank 1's path.
    done = run_job(command, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "different volley versions" in done.stderr
    assert "(rank 1) 0.0.0-other" in done.stderr and "(rank 0)" in done.stderr


@pytest.mark.real
@needs_mpi
def test_a_host_that_cannot_reach_the_server_ends_the_job_with_status_1(running_server):
    closed = f"127.0.0.1:{server.choose_port()}"
    rank = [sys.executable, "-m", "volley", "bench", *BRIEF, "--clients", "2", "-q"]
    command = [
        str(mpiexec()), "--oversubscribe",
        "-n", "1", *rank, "--connect", running_server, ":",
        "-n", "1", *rank, "--connect", closed,
    ]  # fmt: skip
    done = run_job(command)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "(rank 1): nothing accepts connections" in done.stderr


@pytest.mark.real
@needs_mpi
def test_several_hosts_need_a_running_server(c_threaded):
    command = job_command(2, *BRIEF, "-q", str(c_threaded))
    done = run_job(command)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "give --connect HOST:PORT" in done.stderr


def kill_rank_mid_run(
    running_server: str, out: Path, launcher: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    """Start a two-rank job, SIGKILL rank 1 once rank 0 has reported three runs, and wait
    (bounded) for the job to end."""
    mark = uuid.uuid4().hex
    args = [*QUICK, "--connect", running_server, "--clients", "2", "--min-runs", "50"]
    command = job_command(2, *args, "--max-time", "60s", "--json", str(out), launcher=launcher)
    job = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=job_env(mark),
        stdin=subprocess.DEVNULL,
    )
    seen = b""
    try:
        assert job.stdout is not None
        fd, deadline = job.stdout.fileno(), time.monotonic() + 60
        while b"[1,0]<stderr>: run 3 " not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 1 << 16)
                assert chunk, f"the job ended early: {seen.decode(errors='replace')}"
                seen += chunk
        rank_1 = [
            p
            for p in marked_processes(mark)
            if p.environ().get("OMPI_COMM_WORLD_RANK") == "1" and "bench" in p.cmdline()
        ]
        assert len(rank_1) == 1
        rank_1[0].send_signal(signal.SIGKILL)
        rest, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:  # mpiexec ends its ranks on SIGTERM
            job.terminate()
            try:
                job.wait(10)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait()
    assert nothing_left(mark) == []
    output = (seen + rest).decode(errors="replace")
    return subprocess.CompletedProcess(command, job.returncode, output, "")


@pytest.mark.real
@needs_mpi
def test_a_killed_rank_ends_the_job_with_status_1_naming_it_and_a_partial_result(
    running_server, tmp_path
):
    # --enable-recovery: Open MPI leaves the other ranks running, as Slurm does, so rank 0
    # finds the silent host itself.
    out = tmp_path / "killed.json"
    done = kill_rank_mid_run(running_server, out, ("--enable-recovery",))
    assert done.returncode == 1, done.stdout
    assert "(rank 1) sent nothing for" in done.stdout
    result = json.loads(out.read_text())
    assert result["status"] == FAILED and "(rank 1) sent nothing" in result["error"]
    assert len(result["runs"]) >= 3 and result["n"] == sum(h["ops"] for h in result["hosts"])


@pytest.mark.real
@needs_mpi
def test_a_rank_killed_under_plain_open_mpi_leaves_the_result_saved_after_each_run(
    running_server, tmp_path
):
    # Open MPI ends every rank as soon as one dies (exit 137 for SIGKILL) and names the
    # node; rank 0 saved the result after every run, so the runs before remain.
    out = tmp_path / "killed.json"
    done = kill_rank_mid_run(running_server, out, ())
    assert done.returncode != 0, done.stdout
    assert "rank 1" in done.stdout
    result = json.loads(out.read_text())
    assert result["status"] == FAILED and result["error"].startswith("partial result")
    assert len(result["runs"]) >= 2


# --- two hosts on one machine: network namespaces joined by veth pairs ---------------

SUBNET = "10.77.0"  # inside the test's namespaces only
AGENT = """#!/bin/sh
# Open MPI's launch agent in place of ssh: "agent HOST COMMAND..." runs COMMAND in HOST's
# network namespace, under HOST's own host name (Open MPI tells hosts apart by name).
host=$1
shift
exec ip netns exec "{prefix}$host" unshare --uts /bin/sh -c "hostname $host && $*"
"""


def netns_ready(server_binary: Path) -> str | None:
    """Why namespaced hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not (shutil.which("ip") and shutil.which("unshare")):
        return "needs ip (iproute2) and unshare"
    if mpi_ready():
        return mpi_ready()
    usage = subprocess.run([server_binary, "-h"], capture_output=True, text=True, timeout=10)
    if "-a" not in usage.stdout + usage.stderr:
        return f"{server_binary.name} takes no -a ADDRESS yet (servers/README.md)"
    probe = f"vprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None if made.returncode == 0 else "ip netns add is not allowed here"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces(c_threaded: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Namespaces PREFIXs (the server, on a bridge) and PREFIXh0, PREFIXh1 (the client
    hosts), each host joined to the bridge by a veth pair; all removed afterwards."""
    reason = netns_ready(c_threaded)
    if reason:
        pytest.skip(reason)
    prefix = f"v{os.getpid() % 100000}"
    made = []
    try:
        for name in ("s", "h0", "h1"):
            ip("netns", "add", prefix + name)
            made.append(prefix + name)
            ip("-n", prefix + name, "link", "set", "lo", "up")
        server_ns = prefix + "s"
        ip("-n", server_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", server_ns, "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
        ip("-n", server_ns, "link", "set", "br0", "up")
        for i in (0, 1):
            ours, theirs = f"{prefix}a{i}", f"{prefix}b{i}"
            ip("link", "add", ours, "type", "veth", "peer", "name", theirs)
            ip("link", "set", ours, "netns", server_ns)
            ip("link", "set", theirs, "netns", f"{prefix}h{i}")
            ip("-n", server_ns, "link", "set", ours, "master", "br0", "up")
            ip("-n", f"{prefix}h{i}", "addr", "add", f"{SUBNET}.{i + 2}/24", "dev", theirs)
            ip("-n", f"{prefix}h{i}", "link", "set", theirs, "up")
        agent = tmp_path / "agent"
        agent.write_text(AGENT.format(prefix=prefix))
        agent.chmod(0o755)
        yield prefix, agent
    finally:
        for name in made:
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def rx_bytes(namespace: str, interface: str) -> int:
    path = f"/sys/class/net/{interface}/statistics/rx_bytes"
    read = ["ip", "netns", "exec", namespace, "cat", path]
    return int(subprocess.run(read, capture_output=True, text=True, timeout=10).stdout)


@pytest.mark.real
@needs_mpi
def test_two_hosts_in_network_namespaces_measure_a_server_in_a_third(
    namespaces, c_threaded, tmp_path
):
    prefix, agent = namespaces
    server_ns = prefix + "s"
    port = server.choose_port()
    address = f"{SUBNET}.1"
    mark = uuid.uuid4().hex
    env = job_env(mark)
    serving = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "taskset", "-c", "0"]
        + [str(c_threaded), "-p", str(port), "-a", address],
        stdin=subprocess.DEVNULL,
    )
    out = tmp_path / "netns.json"
    try:
        reach = f"from volley.engine import server; server.probe('{address}', {port}, 5.0)"
        ready = [sys.executable, "-c", reach]
        deadline = time.monotonic() + 10
        while subprocess.run(
            ["ip", "netns", "exec", prefix + "h0", *ready], env=env, capture_output=True
        ).returncode:
            assert time.monotonic() < deadline, "the server is not reachable from h0"
            time.sleep(0.1)
        before = [rx_bytes(server_ns, f"{prefix}a{i}") for i in (0, 1)]
        args = [*QUICK, "--connect", f"{address}:{port}", "--clients", "2", "--min-runs", "3"]
        # mpiexec runs in the server's namespace and reaches the hosts' through the agent;
        # MPI's own traffic too stays on the namespaces' network.
        command = ["ip", "netns", "exec", server_ns] + job_command(
            2,
            *args,
            "--max-time", "2s", "-q", "--json", str(out),
            launcher=(
                "--host", "h0,h1", "--map-by", "ppr:1:node",
                "--mca", "plm_rsh_agent", str(agent),
                "--mca", "btl", "tcp,self",
                "--mca", "btl_tcp_if_include", f"{SUBNET}.0/24",
                "-x", "PYTHONPATH", "-x", RUN_MARK,
                "-x", "OMPI_ALLOW_RUN_AS_ROOT", "-x", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM",
            ),
        )  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
        )
        assert done.returncode in (0, 3), done.stdout + done.stderr
        result = json.loads(out.read_text())
        assert [(h["host"], h["clients"]) for h in result["hosts"]] == [("h0", 1), ("h1", 1)]
        assert result["n"] == sum(h["ops"] for h in result["hosts"]) > 0
        # Each host's clients reached the server over its own veth pair.
        after = [rx_bytes(server_ns, f"{prefix}a{i}") for i in (0, 1)]
        grown = [a - b for a, b in zip(after, before, strict=True)]
        assert all(g > 16 * h["ops"] for g, h in zip(grown, result["hosts"], strict=True))
        assert nothing_left(mark) == []
    finally:
        serving.terminate()
        serving.wait(10)

"""The engine's own modules: the coordinator (volley.engine.coordinator), its workers
(volley.engine.worker) and the server's life (volley.engine.server).

What needs no process runs in the fast tier; starting c-epoll, the workers and one short
run is marked real."""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import subprocess
import sys
import time
from multiprocessing import resource_tracker

import numpy as np
import psutil
import pytest
from helpers import FAULTY
from helpers import server as built_server

from volley import _core
from volley.engine import coordinator, server, worker
from volley.engine.coordinator import BenchConfig, Coordinator, Worker, first_failure, open_run
from volley.engine.play import RunRequest
from volley.numbers.units import Restart, Target
from volley.system.cpus import Placement, spread, usable_cpus


def config(server_path: str = "c-epoll", clients: int = 3, **changes: object) -> BenchConfig:
    cpus = usable_cpus()
    placement = Placement(server_cpus=cpus[:1], client_cpus=cpus[1:] or cpus[:1])
    fields: dict[str, object] = {
        "server": server_path,
        "server_args": [],
        "clients": clients,
        "placement": placement,
        "targets": [Target("mean", relative=0.5)],
        "confidence": 0.95,
        "max_time_s": 5.0,
        "warmup_s": 0.05,
        "run_time_s": 0.1,
        "min_runs": 2,
        "restart": Restart.SERVER,
        "noisy": "keep",
        "op_timeout_s": 2.0,
        "startup_timeout_s": 10.0,
        "idle_states": "any",
    }
    return BenchConfig(**{**fields, **changes})  # type: ignore[arg-type]


def report(client: int, outcome: int = _core.OK, completed: int = 10, **counts: int):
    open_counts = worker.OpenCounts(**counts) if counts else None  # type: ignore[arg-type]
    return worker.ClientReport(client, completed, outcome, 0, 7, 9, open_counts)


# --- fast: what the coordinator decides without a process ---


def test_clients_are_dealt_round_robin_one_worker_per_cpu():
    assert spread(5, [2, 3]) == [[0, 2, 4], [1, 3]]
    assert spread(1, [2, 3]) == [[0]]  # no idle worker for a lone client
    assert spread(4, [7]) == [[0, 1, 2, 3]]


def test_the_worst_failure_explains_the_others():
    reports = [
        report(0),
        report(1, _core.PEER_CLOSED),
        report(2, _core.OP_TIMEOUT),
        report(3, _core.WRONG_REPLY),
        report(4, _core.WRONG_REPLY),
    ]
    found = first_failure(reports)
    assert found is not None and (found.client, found.outcome) == (3, _core.WRONG_REPLY)
    assert first_failure([report(0), report(1)]) is None
    assert "expected 8, received 9" in found.describe()


def test_an_open_runs_counts_are_summed_over_its_clients():
    counts = {"late": 1, "replied": 90, "max_outstanding": 2, "window_ns": 10**9}
    reports = [
        report(0, due=100, backlog_start=1, backlog_end=4, **counts),
        report(1, due=50, backlog_start=0, backlog_end=0, **{**counts, "max_outstanding": 5}),
    ]
    run = open_run(reports)
    assert run is not None
    assert (run.due, run.late, run.replied) == (150, 2, 180)
    assert (run.max_outstanding, run.backlog_growth, run.window_s) == (5, 3, 1.0)
    assert run.send_lag_ns is None
    assert open_run([report(0), report(1)]) is None  # closed loop


def test_open_loop_spin_is_shared_on_a_cpu_and_none_beside_the_server():
    assert worker.spin_for(50_000, 1, 1000.0) == 50_000
    assert worker.spin_for(50_000, 4, 5000.0) == int(worker.SPIN_SHARE / (4 * 5000.0) * 1e9)
    assert worker.spin_for(50_000, 1, 1000.0, server_on_cpu=True) == 0
    found = Coordinator(config(clients=4, rate_ops_s=4000.0, spin_ns=30_000))
    cpus = found.config.placement.client_cpus
    found.workers = [
        Worker(None, None, worker.WorkerPlan(i, cpu, ids, 2.0, "", 1024))  # type: ignore[arg-type]
        for i, (cpu, ids) in enumerate(zip(cpus, spread(4, cpus), strict=False))
    ]
    loads = [found._open_load(w) for w in found.workers]
    assert all(load is not None and load.client_rate_ops_s == 1000.0 for load in loads)
    assert found.spin_ns() == min(load.spin_ns for load in loads if load is not None)
    assert Coordinator(config())._open_load(found.workers[0]) is None


def test_server_arguments_get_the_core_counts():
    args = server.substitute(["-t", "{server_cores}", "-c{client_cores}"], 2, 6)
    assert args == ["-t", "2", "-c6"]
    # {server_cpus} and {client_cpus}, the clearer names: the numbers, never the lists.
    assert server.substitute(["-procs", "{server_cpus}", "{client_cpus}x"], 3, 4) == [
        "-procs",
        "3",
        "4x",
    ]


def test_a_missing_server_is_refused_before_anything_starts():
    with pytest.raises(server.ServerError, match="does not exist"):
        server.resolve("/no/such/server")


def test_the_common_start_is_never_before_the_slowest_recent_readiness():
    floor = coordinator.START_FLOOR_NS
    # No run yet: the floor, and the wake-up of the client threads sharing a CPU.
    assert coordinator.start_slack_ns(1) == floor + coordinator.THREAD_START_NS
    assert coordinator.start_slack_ns(320) == floor + 320 * coordinator.THREAD_START_NS
    # Recent runs were ready sooner than that: it stays as planned.
    assert coordinator.start_slack_ns(2, [1_000_000, 200_000]) == coordinator.start_slack_ns(2)
    # One was ready only later: the start moves out to twice that, wherever the threads are.
    for threads in (1, 8, 80):
        slack = coordinator.start_slack_ns(threads, [300_000, 9_000_000, 1_000_000])
        assert slack >= 2 * 9_000_000 and slack >= coordinator.start_slack_ns(threads)


def test_the_coordinator_remembers_how_soon_recent_runs_were_ready():
    found = Coordinator(config())
    found.ready_ns.extend(range(1, 2 * coordinator.READY_RUNS + 1))
    assert list(found.ready_ns) == list(
        range(coordinator.READY_RUNS + 1, 2 * coordinator.READY_RUNS + 1)
    )


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_a_process_that_exits_is_seen_exited_with_its_status(monkeypatch, pidfd):
    if not pidfd:  # a kernel without pidfd_open (before 5.3)
        monkeypatch.setattr(server.os, "pidfd_open", fail_with_enosys, raising=False)
    quick = subprocess.Popen(["sh", "-c", "exit 3"])
    assert server.exited_within(quick, 30.0) and quick.returncode == 3
    lasting = subprocess.Popen(["sleep", "30"])
    try:
        assert not server.exited_within(lasting, 0.05) and lasting.returncode is None
        assert not server.exited_within(lasting, 0) and lasting.poll() is None
    finally:
        lasting.kill()
    assert server.exited_within(lasting, 30.0) and lasting.returncode == -signal.SIGKILL


def fail_with_enosys(pid: int) -> int:
    raise OSError(errno.ENOSYS, "Function not implemented")


@pytest.mark.parametrize("child_lists", [True, False], ids=["proc-children", "psutil"])
def test_the_descendants_of_a_process_are_found_at_every_depth(monkeypatch, child_lists):
    monkeypatch.setattr(server, "_CHILD_LISTS", child_lists and server._CHILD_LISTS)
    # A child that starts a grandchild, and a second child; sh waits for them all.
    tree = subprocess.Popen(["sh", "-c", "sh -c 'sleep 30 & wait' & sleep 30 & wait"])
    try:
        expected: set[int] = set()
        for _ in range(500):  # until sh has started all three (bounded)
            expected = {p.pid for p in psutil.Process(tree.pid).children(recursive=True)}
            if len(expected) == 3:
                break
            time.sleep(0.01)
        assert len(expected) == 3
        assert {p.pid for p in server.descendants(tree.pid)} == expected
    finally:
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(tree.pid).children(recursive=True):
                p.kill()
        tree.kill()
        tree.wait()
    assert server.descendants(tree.pid) == []  # gone


# --- real: c-epoll, the workers and one run ---


@pytest.mark.real
def test_a_server_is_started_pinned_listens_and_ends_with_a_zero():
    cpus = usable_cpus()[:1]
    port = server.choose_port()
    process = server.start(str(built_server("c-epoll")), [], port, cpus)
    try:
        process.wait_listening(10.0)
        assert psutil.Process(process.pid).cpu_affinity() == cpus
        with socket.create_connection((server.LOOPBACK, port), timeout=2) as s:
            s.sendall((41).to_bytes(4, "big"))
            assert int.from_bytes(s.recv(4), "big") == 42  # network byte order
    finally:
        ended = process.stop()
    assert ended.how == "zero" and ended.exit_status == 0 and not ended.leftovers
    assert not psutil.pid_exists(process.pid) or psutil.Process(process.pid).status() == "zombie"


@pytest.mark.real
def test_a_server_that_ignores_sigterm_is_killed_and_reaped_and_its_watchdog_leaves(tmp_path):
    script = tmp_path / "stubborn"
    script.write_text(
        f"#!/bin/sh\ntrap '' TERM\nexec {sys.executable} {FAULTY} --fault ignore-zero \"$@\"\n"
    )
    script.chmod(0o755)
    process = server.start(str(script), [], server.choose_port(), usable_cpus()[:1])
    process.wait_listening(10.0)
    assert process.watchdog is not None
    ended = process.stop()
    assert ended.how == "sigkill" and ended.exit_status == -signal.SIGKILL
    assert not psutil.pid_exists(process.pid)  # reaped, not a zombie
    # Dismissed, the watchdog has left by itself (and been reaped) without killing.
    assert process.watchdog.process.returncode == 0


@pytest.mark.real
def test_a_server_that_exits_before_listening_is_a_server_error(tmp_path):
    script = tmp_path / "exits"
    script.write_text("#!/bin/sh\necho 'no port for you' >&2\nexit 3\n")
    script.chmod(0o755)
    process = server.start(str(script), [], server.choose_port(), usable_cpus()[:1])
    with pytest.raises(server.ServerError, match="no port for you"):
        process.wait_listening(5.0)
    process.stop()


@pytest.mark.real
def test_the_coordinator_pins_its_workers_and_plays_one_run_against_c_epoll():
    found = config(str(built_server("c-epoll")), clients=3)
    with coordinator.engine_for(found) as engine:
        cpus = found.placement.client_cpus
        assert [w.plan.cpu for w in engine.workers] == cpus[: len(engine.workers)]
        assert [w.plan.client_ids for w in engine.workers] == spread(3, cpus)
        for w in engine.workers:
            assert psutil.Process(w.process.pid).cpu_affinity() == [w.plan.cpu]
        played = engine.play(RunRequest(1, 0.05, 0.1))
        assert played.failure is None and not played.full and played.open is None
        assert len(played.latencies) == 3 and all(len(lat) > 0 for lat in played.latencies)
        assert all(np.all(lat > 0) for lat in played.latencies)
        assert played.server_pid is not None and engine.server_pids == [played.server_pid]
        assert len(engine.ready_ns) == 1  # the next run's start adapts to this one
        assert not engine.interrupted
    assert all(not w.process.is_alive() for w in engine.workers)


@pytest.fixture(autouse=True)
def no_resource_tracker_left():
    """The spawned workers start multiprocessing's resource tracker in this process, which
    would outlive the test (and fail the suite's check that nothing is left behind)."""
    yield
    tracker = resource_tracker._resource_tracker
    if getattr(tracker, "_pid", None) is not None:
        tracker._stop()

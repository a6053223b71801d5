"""Issue 6: every failure is quick, clear and clean. Bad input, faulty servers (the fixture
tests/fixtures/faulty_server.py), and a user who interrupts. Time bounds here only catch
hangs; they are generous because the machines are shared."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import BRIEF, FAULTY, QUICK, RUN_MARK, bench, bench_command, strict_loads

from volley.engine.server import choose_port, start
from volley.records import results

LONG = ["--max-time", "60s", "--precision", "0.0001%"]  # would run a minute if not stopped


def leftover(pattern: str) -> list[str]:
    """Live processes of this test run whose command line contains ``pattern``."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if (
                pattern in " ".join(p.info["cmdline"] or [])
                and p.environ().get(RUN_MARK) == os.environ[RUN_MARK]
                and p.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(f"{p.pid} {' '.join(p.info['cmdline'])}")
        except psutil.Error:
            continue
    return found


def one_line_error(done, status: int = 2) -> str:
    assert done.status == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("volley: error: ") or "error:" in lines[0]
    return lines[0]


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.real
def test_missing_server(tmp_path):
    assert "does not exist" in one_line_error(bench(tmp_path / "nope"))


@pytest.mark.real
def test_server_is_a_directory(tmp_path):
    assert "is not a file" in one_line_error(bench(tmp_path))


@pytest.mark.real
def test_server_not_executable(tmp_path):
    script = tmp_path / "server"
    script.write_text("#!/bin/sh\n")
    assert "is not executable" in one_line_error(bench(script))


@pytest.mark.real
def test_no_server_at_all():
    assert "missing SERVER" in one_line_error(bench())


@pytest.mark.real
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cores", "1-x"], "--cores: bad CPU list"),
        (["--cores", "4096"], "--cores names CPU 4096, which this process may not use"),
        (["--server-cores", "0-"], "--server-cores: bad CPU list"),
        (["--clients", "0"], "--clients 0 must be at least 1"),
        (["--clients", "-3"], "--clients -3 must be at least 1"),
        (["--precision", "0%"], "--precision '0%': a percentage must be above 0"),
        (["--precision", "lots"], "--precision 'lots' is not a target"),
        (["--precision", "p98:1%"], "is not a target"),
        (["--restart", "never"], "--restart 'never' is not one of server, connections"),
        (["--min-runs", "1"], "--min-runs 1 must be at least 2"),
        (["--confidence", "1.5"], "--confidence '1.5' must be at least 0.5"),
        (["--confidence", "sure"], "is not a number"),
        (["--max-time", "0"], "--max-time '0' must be more than zero"),
        (["--max-time", "-5s"], "is not a duration"),
        (["--op-timeout", "soon"], "is not a duration"),
        (["--port", "70000"], "is not a TCP port"),
        (["--json", "/nonexistent-dir/out.json"], "does not exist"),
        (["--bogus"], "No such option"),
    ],
)
def test_bad_options(c_threaded, args, message):
    started = time.monotonic()
    line = one_line_error(bench(*args, c_threaded))
    assert message in line
    assert time.monotonic() - started < 10  # no server was started, nothing waited for


@pytest.mark.real
def test_connect_where_nothing_listens():
    with socket.socket() as s:  # a port that is certainly closed: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        line = one_line_error(bench("--connect", f"127.0.0.1:{port}"))
    assert f"nothing accepts connections at 127.0.0.1:{port}" in line


@pytest.mark.real
def test_connect_needs_host_and_port():
    assert "is not HOST:PORT" in one_line_error(bench("--connect", "localhost"))


@pytest.mark.real
def test_port_already_in_use(c_threaded):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(bench("--port", str(port), c_threaded))
    assert f"--port {port} is already in use" in line


def test_default_port_is_free_and_outside_the_ephemeral_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    ports = {choose_port() for _ in range(50)}
    assert all(1024 <= p < low for p in ports)


# --- faults of the server ----------------------------------------------------------------


@pytest.mark.real
def test_server_exits_before_listening():
    line = one_line_error(bench(FAULTY, "--", "--fault", "exit-early"), status=1)
    assert "server exited with status 3 before listening" in line
    assert "cannot open config" in line  # the last lines of its stderr


@pytest.mark.real
def test_server_never_listens():
    started = time.monotonic()
    line = one_line_error(
        bench("--startup-timeout", "1s", FAULTY, "--", "--fault", "never-listen"), status=1
    )
    assert "did not accept connections" in line and "within 1 s" in line
    assert time.monotonic() - started < 15
    assert not leftover("never-listen")


@pytest.mark.real
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("crash-after", "the server exited with status 1"),
        ("close-after", "the server closed the connection"),
        ("wrong-after", "wrong reply to challenge"),
    ],
)
def test_server_fails_mid_run(tmp_path, fault, message):
    out = tmp_path / "out.json"
    started = time.monotonic()
    # A first run long enough for the fault to strike in it, past its 0.1 s warm-up.
    done = bench(
        "--clients",
        "2",
        *LONG,
        *QUICK,
        "--run-time",
        "20s",
        "--json",
        out,
        FAULTY,
        "--",
        "--fault",
        fault,
        "--after",
        "20000",
    )
    assert done.status == 1, done.stderr
    assert time.monotonic() - started < 30
    assert message in done.stdout and "client " in done.stdout and ", run " in done.stdout
    assert "incomplete" in done.stdout
    result = strict_loads(out.read_text())
    assert result["status"] == "failed" and message in result["error"]
    assert result["n"] > 0 and result["latency_ns"]["mean"] > 0  # what was completed
    assert not leftover(fault)


@pytest.mark.real
def test_wrong_reply_names_challenge_expected_and_received(tmp_path):
    done = bench(
        "--clients",
        "1",
        *LONG,
        *QUICK,
        "--json",
        "-",
        FAULTY,
        "--",
        "--fault",
        "wrong-after",
        "--after",
        "100",
    )
    error = done.json()["error"]
    challenge = int(error.split("wrong reply to challenge ")[1].split()[0])
    assert f"expected {(challenge + 1) & 0xFFFFFFFF}" in error
    assert f"received {(challenge + 2) & 0xFFFFFFFF}" in error
    assert error.startswith("client 0 (worker 0")


@pytest.mark.real
def test_stalled_server_is_an_op_timeout_not_a_hang():
    started = time.monotonic()
    done = bench(
        "--clients",
        "3",
        *LONG,
        *QUICK,
        "--op-timeout",
        "1s",
        "--json",
        "-",
        FAULTY,
        "--",
        "--fault",
        "stall-after",
        "--after",
        "2000",
    )
    assert done.status == 1, done.stderr
    assert "within the op timeout" in done.json()["error"]
    assert time.monotonic() - started < 30
    assert not leftover("stall-after")


@pytest.fixture
def stubborn(tmp_path) -> Path:
    """A server that ignores both the zero challenge and SIGTERM: only SIGKILL ends it."""
    script = tmp_path / "stubborn"
    script.write_text(
        f"#!/bin/sh\ntrap '' TERM\nexec {sys.executable} {FAULTY} --fault ignore-zero \"$@\"\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.real
def test_server_that_ignores_zero_and_sigterm_is_killed(stubborn):
    done = bench("--clients", "1", *BRIEF, stubborn)
    assert done.status in (0, 3), done.stderr
    assert not leftover("ignore-zero")


@pytest.mark.real
def test_children_of_the_server_are_ended_too():
    done = bench(
        "--clients",
        "1",
        *BRIEF,
        FAULTY,
        "--",
        "--fault",
        "fork-children",
    )
    assert done.status in (0, 3), done.stderr
    assert not leftover("fork-children")


@pytest.mark.real
def test_stop_escalates_from_zero_to_sigterm_to_sigkill(stubborn):
    ways = {}
    for name, path, args in [
        ("polite", str(FAULTY), []),
        ("no-zero", str(FAULTY), ["--fault", "ignore-zero"]),
        ("stubborn", str(stubborn), []),
    ]:
        server = start(path, args, choose_port(), [os.sched_getaffinity(0).pop()])
        server.wait_listening(10)
        ways[name] = server.stop().how
    assert ways == {"polite": "zero", "no-zero": "sigterm", "stubborn": "sigkill"}


# --- faults of the user ------------------------------------------------------------------


def first_run_done(process: subprocess.Popen[str], stderr: list[str]) -> bool:
    """Rounds are under way: the progress line of the first run is out."""
    return any(line.startswith("run 1 ") for line in stderr)


def server_stalled(process: subprocess.Popen[str], stderr: list[str]) -> bool:
    """The server has its 4 clients and has stopped answering them: connected, and no CPU
    time spent over a quarter of a second."""
    for p in psutil.Process(process.pid).children(recursive=True):
        try:
            if f"{FAULTY} -p" not in " ".join(p.cmdline()):
                continue
            if sum(c.status == psutil.CONN_ESTABLISHED for c in p.net_connections()) < 4:
                return False
            before = sum(p.cpu_times()[:2])
            time.sleep(0.25)  # the quiet stretch that tells a stall from serving
            return sum(p.cpu_times()[:2]) == before
        except psutil.Error:
            continue
    return False


def interrupt_mid_run(
    sig: int, tmp_path: Path, *server: str | Path, extra=(), ready=first_run_done, group=False
):
    """Start a minute-long run, signal it once ``ready`` (polled, for 30 s at most) says
    it is under way, and see how it ends. ``group`` signals its whole process group, as a
    terminal's Ctrl-C, `timeout` or `kill -- -PGID` do."""
    out = tmp_path / "out.json"
    command = bench_command(
        "--clients", "4", *LONG, *[a for a in QUICK if a != "--quiet"], *extra, "--json", out,
        *server,
    )  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=group
    )
    stderr: list[str] = []
    assert process.stderr is not None and process.stdout is not None
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not ready(process, stderr):
            assert process.poll() is None, "".join(stderr)
            assert time.monotonic() < deadline, f"never under way: {''.join(stderr)}"
            time.sleep(0.05)
        family = psutil.Process(process.pid).children(recursive=True)
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        signalled = time.monotonic()
        process.wait(timeout=30)
        took = time.monotonic() - signalled
        stdout = process.stdout.read()
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert out.exists(), "".join(stderr)
    return process.returncode, stdout, strict_loads(out.read_text()), took, family


@pytest.mark.real
@pytest.mark.parametrize("group", [False, True], ids=["process", "group"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_cleanly_with_partial_result(c_threaded, tmp_path, sig, group):
    # Signalled as a group, the workers get it too: they leave the stop to the coordinator
    # rather than die and turn an interrupt into "worker died".
    status, stdout, result, took, family = interrupt_mid_run(sig, tmp_path, c_threaded, group=group)
    assert status == 130
    assert took < 5  # the issue asks for 2 s; this bound only proves it does not hang
    assert result["status"] == "interrupted" and result["n"] > 0
    assert "interrupted" in stdout
    # Workers, server and multiprocessing's helper all end (the helper on its own, soon).
    _, alive = psutil.wait_procs(family, timeout=5)
    assert family and not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.real
def test_interrupt_while_the_server_stalls(tmp_path):
    # Clients are blocked in recv; the stop must not wait for the 10 s op timeout.
    status, _, result, took, _ = interrupt_mid_run(
        signal.SIGINT,
        tmp_path,
        FAULTY,
        "--",
        "--fault",
        "stall-after",
        "--after",
        "3000",
        extra=("--op-timeout", "60s"),
        ready=server_stalled,
    )
    assert status == 130 and result["status"] == "interrupted"
    assert took < 5
    assert not leftover("stall-after")


@pytest.mark.real
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_the_server_starts_still_ends_it(sig):
    command = bench_command(*QUICK, FAULTY, "--", "--fault", "slow-start")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = f"{FAULTY} -p"  # the server's command line, not volley-bench's
    try:
        deadline = time.monotonic() + 20
        while not leftover(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftover(server), "the server never started"
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "significant: NO (interrupted" in stdout and "no op completed" in stdout
    assert not leftover(server)


def test_json_is_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text('"old"\n')

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        results.write_atomically(target, "new\n")
    assert target.read_text() == '"old"\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left
    monkeypatch.undo()
    results.write_atomically(target, '"new"\n')
    assert target.read_text() == '"new"\n'


# --- scale -------------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.slow
def test_five_thousand_clients(tmp_path):
    epoll = Path(__file__).resolve().parent.parent / "target" / "servers" / "c-epoll"
    if not epoll.exists():
        subprocess.run(["make", "server-c-epoll"], cwd=epoll.parents[2], check=True)
    done = bench(
        "--clients",
        "5120",
        "--max-time",
        "3s",
        "--precision",
        "50%",
        "--warmup",
        "0.5s",
        "--json",
        "-",
        "--quiet",
        epoll,
        timeout=180,
    )
    assert done.status in (0, 3), done.stderr
    result = done.json()
    assert result["clients"] == 5120 and result["n"] >= 5120


@pytest.mark.real
def test_open_files_hard_limit_too_low_is_a_clear_error(c_threaded):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    done = subprocess.run(
        bench_command("--clients", "5120", c_threaded),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_limit,
    )
    assert done.returncode == 2  # bad input (issue 10, item 8)
    assert "5120 clients need 5376 open files but the hard limit is 1024" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

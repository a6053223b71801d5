"""Issue 10: nothing left behind, nothing lost.

Volley is killed (SIGKILL, SIGHUP) during start-up and mid-run, as `volley-bench` and as
`volley sweep`; within 2 s no server, worker or child of either may be left, nor any file
Volley made in /dev/shm or /tmp. Then the result's side: strict JSON, and a closed pipe
that loses neither the JSON file nor the exit status.

Each run carries a unique mark in its environment, inherited by everything it starts, so
the processes it left are found without guessing; TMPDIR points at a private directory, so
every file it made in /tmp is found too. Tests wait on events (a line on stderr, a process
appearing, a port listening), never on fixed sleeps, and every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from helpers import BRIEF, FAULTY, bench_command, server, strict_loads

# What the command decides from the status it recorded.
from volley.cli.bench import exit_status
from volley.system.cpus import usable_cpus

# Every test here starts real servers or volley processes (the slow tier).
pytestmark = pytest.mark.real

MARK = "VOLLEY_LIFECYCLE_MARK"
GONE_WITHIN_S = 2.0
SHM = Path("/dev/shm")
# Would run for a minute if not killed.
LONG = ["--max-time", "60s", "--precision", "0.0001%", "--warmup", "0.2s", "--run-time", "0.3s"]
two_cpus = pytest.mark.skipif(len(usable_cpus()) < 2, reason="needs two usable CPUs")
T = TypeVar("T")


def wait_for(what: str, condition: Callable[[], T], timeout_s: float = 30) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {timeout_s:g} s for {what}"
        time.sleep(0.02)


def marked(mark: str) -> list[psutil.Process]:
    """Live processes (not zombies) carrying ``mark``: whatever the run started."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def described(processes: list[psutil.Process]) -> list[str]:
    out = []
    for p in processes:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())}")
        except psutil.Error:
            continue
    return out


def unowned_shared_memory() -> set[str]:
    """Volley's files in /dev/shm that no process maps or holds open: left behind. (Other
    runs on this machine have theirs mapped while they exist.)"""
    names = {p.name for p in SHM.glob("volley-*")} if SHM.is_dir() else set()
    if not names:
        return set()
    held: set[str] = set()
    for p in psutil.process_iter():
        try:
            held.update(Path(m.path).name for m in p.memory_maps(grouped=True))
            held.update(Path(f.path).name for f in p.open_files())
        except psutil.Error:
            continue
    return {name for name in names if name not in held and (SHM / name).exists()}


RUNS: list[Run] = []


@pytest.fixture(autouse=True)
def ended() -> Iterator[None]:
    yield
    while RUNS:
        RUNS.pop().end()


class Run:
    """A volley command started as a user would, its stderr read line by line."""

    def __init__(self, command: list[str], tmp_path: Path):
        RUNS.append(self)
        self.mark = uuid.uuid4().hex
        self.tmp = tmp_path / "TMPDIR"
        self.tmp.mkdir()
        self.shm_before = unowned_shared_memory()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, MARK: self.mark, "TMPDIR": str(self.tmp)},
            start_new_session=True,  # signals from the test only, never from a terminal
        )
        self.stdout = ""
        self.readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self.stdout = self.process.stdout.read()

    def family(self) -> list[psutil.Process]:
        return [p for p in marked(self.mark) if p.pid != self.process.pid]

    def server(self, path: Path | str) -> psutil.Process | None:
        """The process running ``path`` (a binary, or a script through its interpreter)."""
        for p in self.family():
            try:
                if str(path) in p.cmdline()[:2]:
                    return p
            except psutil.Error:
                continue
        return None

    def end(self) -> None:
        """Kill whatever is left (after a failed test)."""
        for p in [self.process, *self.family()]:
            try:
                p.kill()
            except (psutil.Error, OSError):
                pass
        self.process.wait()

    def workers(self) -> list[psutil.Process]:
        found = []
        for p in self.family():
            try:
                if "multiprocessing" in " ".join(p.cmdline()):
                    found.append(p)
            except psutil.Error:
                continue
        return found

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def kill(self, sig: signal.Signals) -> tuple[int, float]:
        """Send ``sig``; its exit status, and how long after it ended (at once for SIGKILL;
        after ending the server politely for the others) something of it was still left."""
        self.process.send_signal(sig)
        try:
            # Zero, SIGTERM, then SIGKILL for the server's leftovers: 2 s grace each at most.
            status = self.process.wait(timeout=15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        ended = time.monotonic()
        while self.family() and time.monotonic() - ended < GONE_WITHIN_S + 3:
            time.sleep(0.02)
        took = time.monotonic() - ended
        left = described(self.family())
        for p in self.family():
            try:
                p.kill()
            except psutil.Error:
                pass
        for reader in self.readers:
            reader.join(5)
        assert not left, f"left running after {sig.name}: {left}"
        return status, took

    def assert_nothing_left(
        self, sig: signal.Signals, took: float, out: Path | None = None
    ) -> None:
        assert took < GONE_WITHIN_S, f"something ran {took:.2f} s after volley ended ({sig.name})"
        assert not list(self.tmp.iterdir()), f"left in TMPDIR: {list(self.tmp.iterdir())}"
        if out is not None:
            assert not list(out.glob(".*point-*")), list(out.glob(".*point-*"))
        # The coordinator's latency mapping is an anonymous memfd: nothing in /dev/shm.
        left = unowned_shared_memory() - self.shm_before
        for name in left:  # this run's: new since it started, and nobody's now
            (SHM / name).unlink(missing_ok=True)
        assert not left, f"left in /dev/shm: {left}"


def served(process: psutil.Process) -> int:
    """Reads the server has done: thousands once runs play (--quiet shows no progress)."""
    try:
        return int(process.io_counters().read_count)
    except psutil.Error:
        return 0


def started(*args: str | Path, tmp_path: Path) -> Run:
    return Run(bench_command(*args), tmp_path)


def mid_run(run: Run) -> None:
    wait_for("a progress line", lambda: run.saw("run 1 ("))
    assert run.workers(), "no workers while runs play"


# --- volley-bench killed --------------------------------------------------------------------

SIGNALS = [signal.SIGKILL, signal.SIGHUP]


@two_cpus
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_bench_killed_mid_run_leaves_nothing(c_threaded, tmp_path, sig):
    out = tmp_path / "r.json"
    run = started(*LONG, "--json", out, c_threaded, tmp_path=tmp_path)
    mid_run(run)
    # Every run has a fresh server: between two runs there is none for a moment.
    wait_for("a run's server", lambda: run.server(c_threaded))
    status, took = run.kill(sig)
    run.assert_nothing_left(sig, took)
    if sig == signal.SIGHUP:  # like SIGTERM: the partial result, exit 130
        assert status == 130, "".join(run.lines)
        result = strict_loads(out.read_text())
        assert result["status"] == "interrupted" and result["n"] > 0
    else:
        assert status == -signal.SIGKILL


@two_cpus
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_bench_killed_mid_run_ends_the_servers_children_too(tmp_path, sig):
    # The fault's children ignore SIGTERM and are not the server: a parent-death signal
    # would not reach them, the watchdog does.
    run = started(*LONG, FAULTY, "--", "--fault", "fork-children", tmp_path=tmp_path)
    mid_run(run)
    children = wait_for("the server's children", lambda: len(run.family()) >= 4)
    assert children
    _, took = run.kill(sig)
    run.assert_nothing_left(sig, took)


# The fixture sleeps 2 s before listening: surely killed while it starts. The bundled server
# starts in milliseconds: killed as soon as it runs, whatever Volley is doing then (often
# connecting the clients, when the coordinator's shared memory still has a name).
STARTING = [(FAULTY, ["--", "--fault", "slow-start"]), (None, [])]
STARTING_IDS = ["slow-start", "c-threaded"]


@two_cpus
@pytest.mark.parametrize(("path", "args"), STARTING, ids=STARTING_IDS)
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_bench_killed_while_the_server_starts_leaves_nothing(tmp_path, sig, path, args):
    path = path or server("c-threaded")
    run = started(*LONG, path, *args, tmp_path=tmp_path)
    wait_for("the server to start", lambda: run.server(path))
    status, took = run.kill(sig)
    run.assert_nothing_left(sig, took)
    if sig == signal.SIGHUP:
        assert status == 130, "".join(run.lines)
        assert run.saw("interrupted") or "interrupted" in run.stdout


@two_cpus
def test_bench_killed_while_clients_connect_leaves_nothing(tmp_path):
    # Item 3: a listener that never answers keeps the workers connecting.
    sig = signal.SIGKILL
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        run = started(*LONG, "--clients", "4", "--connect", address, tmp_path=tmp_path)
        wait_for("workers connecting", lambda: len(run.workers()) >= 1)
        _, took = run.kill(sig)
    run.assert_nothing_left(sig, took)


# --- volley sweep killed --------------------------------------------------------------------


def experiment(tmp_path: Path, servers: list[str], args: str = "") -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(
        f"servers = {servers!r}\nclients = 2\nserver-cpus = 1\nclient-cpus = 1\n\n"
        '[bench]\nprecision = "0.0001%"\nmax-time = "60s"\nwarmup = "0.2s"\nround-time = '
        f'"0.3s"\n{args}'.replace("'", '"')
    )
    return path


def sweep(tmp_path: Path, exp: Path) -> tuple[Run, Path]:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "volley", "sweep", str(exp), "-o", str(out)]
    return Run(command, tmp_path), out


@two_cpus
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_sweep_killed_mid_point_leaves_nothing(tmp_path, sig):
    c_threaded = server("c-threaded")
    run, out = sweep(tmp_path, experiment(tmp_path, [str(c_threaded)]))
    the_server = wait_for("the point's server", lambda: run.server(c_threaded))
    wait_for("runs to play", lambda: served(the_server) > 1000)
    assert run.workers()
    status, took = run.kill(sig)
    run.assert_nothing_left(sig, took, out)
    if sig == signal.SIGHUP:  # like SIGTERM: the point is not recorded, exit 130
        assert status == 130, "".join(run.lines)
        assert "--resume" in "".join(run.lines)


@two_cpus
@pytest.mark.parametrize(("path", "args"), STARTING, ids=STARTING_IDS)
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_sweep_killed_while_the_server_starts_leaves_nothing(tmp_path, sig, path, args):
    path = path or server("c-threaded")
    options = f"args = {args[1:]!r}\n" if args else ""
    run, out = sweep(tmp_path, experiment(tmp_path, [str(path)], options))
    wait_for("the point's server", lambda: run.server(path))
    status, took = run.kill(sig)
    run.assert_nothing_left(sig, took, out)
    if sig == signal.SIGHUP:
        assert status == 130, "".join(run.lines)


# --- nothing lost ---------------------------------------------------------------------------


def finished(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end; then nothing it started may outlive it by 2 s."""
    mark = uuid.uuid4().hex
    done = subprocess.run(command, env={**os.environ, MARK: mark}, text=True, timeout=60, **options)
    wait_for("everything it started to end", lambda: not marked(mark), GONE_WITHIN_S)
    return done


def test_too_short_a_run_writes_strict_json(c_threaded, tmp_path):
    # Item 4: fewer than two slices gave "ci_low": -Infinity.
    out = tmp_path / "x.json"
    command = bench_command(
        "--warmup", "0", "--max-time", "1ms", "--clients", "1", "--json", out, c_threaded
    )
    done = finished(command, capture_output=True)
    assert done.returncode == 0, done.stderr  # measured, if not to the target
    result: dict[str, Any] = strict_loads(out.read_text())  # null where not known
    assert result["rounds"] == 1 and result["status"] == "not-significant"


def test_closed_pipe_on_stdout_loses_neither_the_json_nor_the_status(c_threaded, tmp_path):
    # Item 5: `volley-bench ... --json x.json SERVER | true`.
    out = tmp_path / "x.json"
    # --require-precision: the status then says the verdict, which must survive the pipe.
    command = " ".join(
        map(str, bench_command(*BRIEF, "--require-precision", "--json", out, c_threaded))
    )
    done = finished(
        ["bash", "-c", f"{command} | true; echo ${{PIPESTATUS[0]}} >&2"], capture_output=True
    )
    status = int(done.stderr.strip().splitlines()[-1])
    result = strict_loads(out.read_text())
    expected = exit_status(result["status"], require_precision=True)
    assert status == expected, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_closed_stdout_and_stderr_change_nothing(c_threaded, tmp_path):
    out = tmp_path / "x.json"
    command = " ".join(
        map(str, bench_command(*BRIEF, "--require-precision", "--json", out, c_threaded))
    )
    closed = finished(["bash", "-c", f"{command} >&- 2>&-"])
    result = strict_loads(out.read_text())
    assert closed.returncode == exit_status(result["status"], require_precision=True)


def test_progress_reader_gone_mid_run_changes_nothing(c_threaded, tmp_path):
    # `2>&1 | head -1`: every progress line after the first meets a closed pipe.
    out = tmp_path / "x.json"
    options = ["--max-time", "1s", "--precision", "50%", "--warmup", "0.2s", "--run-time", "0.2s"]
    options.append("--require-precision")  # the status says the verdict
    command = " ".join(map(str, bench_command(*options, "--json", out, c_threaded)))
    done = finished(
        ["bash", "-c", f"{command} 2>&1 >/dev/null | head -1; echo ${{PIPESTATUS[0]}}"],
        capture_output=True,
    )
    first, status = done.stdout.strip().splitlines()
    assert first.startswith("run 1 (")
    result = strict_loads(out.read_text())
    assert int(status) == exit_status(result["status"], require_precision=True)

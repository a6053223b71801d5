"""volley sweep: experiment files, the grid, the runner loop (with a fake executor), the
results file, the exports, and a tiny real sweep with an interruption and --resume."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import FAULTY, ROOT, server, strict_loads, volley

from volley.numbers.units import format_duration
from volley.present import progress
from volley.records import experiment, export, store
from volley.records.experiment import POINT_OVERHEAD_S, Experiment, Point
from volley.records.results import BenchResult, LatencySummary, RunSummary, WorkerInfo
from volley.records.store import SweepRecord
from volley.studies import sweep
from volley.studies.sweep import Outcome
from volley.system import cpus, topology
from volley.system.cpus import usable_cpus
from volley.system.machine import Environment
from volley.system.topology import Topology

BENCH_DIR = ROOT / "bench"
# A real point needs one CPU for the server and another for the clients.
two_cpus = pytest.mark.skipif(len(usable_cpus()) < 2, reason="needs two usable CPUs")

MINIMAL = """\
name = "tiny"
servers = ["a", "b"]
clients = [1, 4]
server-cpus = 1
client-cpus = 1
"""


def parse(text: str, name: str = "exp.toml") -> Experiment:
    return experiment.parse(text, Path("/x") / name)


def error_of(text: str) -> str:
    with pytest.raises(experiment.ExperimentError) as caught:
        parse(text)
    return str(caught.value)


# --- experiment files ----------------------------------------------------------------------


def test_minimal_file_parses_with_names_resolved_in_the_servers_dir():
    exp = parse(MINIMAL)
    assert exp.name == "tiny"
    assert exp.order == "interleaved"  # the default: bench/README.md, "Sequential or interleaved"
    assert [s.name for s in exp.servers] == ["a", "b"]
    assert exp.servers[0].path == "target/servers/a"
    assert exp.clients == (1, 4) and exp.server_cpus == (1,) and exp.client_cpus == (1,)
    assert exp.options == {}


def test_relative_paths_are_relative_to_the_file():
    exp = parse(
        'servers-dir = "../target/servers"\n'
        'servers = ["c-epoll", "./mine/srv",\n'
        '  { name = "x", path = "tools/x", args = ["-t", "{server_cores}"] }]\n'
        "clients = 1\nserver-cpus = 1\nclient-cpus = 1\n"
    )
    assert [s.path for s in exp.servers] == [
        "/x/../target/servers/c-epoll",
        "/x/mine/srv",
        "/x/tools/x",
    ]
    assert [s.name for s in exp.servers] == ["c-epoll", "srv", "x"]
    assert exp.servers[2].args == ("-t", "{server_cores}")


def test_counts_sets_and_ranges():
    exp = parse(MINIMAL.replace("clients = [1, 4]", 'clients = [1, "4..12 step 4", 2, 4]'))
    assert exp.clients == (1, 4, 8, 12, 2)  # in order, once each
    exp = parse(MINIMAL.replace("server-cpus = 1", 'server-cpus = "1..40"'))
    assert exp.server_cpus == tuple(range(1, 41))


def test_bench_options_are_checked_and_spelled_for_volley_bench():
    exp = parse(
        MINIMAL + '\n[bench]\nprecision = "2%"\nmax_time = "10s"\nwarmup = 0\n'
        'confidence = 0.99\nround-time = "500ms"\nargs = ["-v"]\n'
    )
    assert exp.options == {
        "precision": "2%",
        "max-time": "10s",
        "warmup": "0",
        "confidence": "0.99",
        "round-time": "500ms",
    }
    assert all(s.args == ("-v",) for s in exp.servers)
    assert exp.point_limit_s() == pytest.approx(10 + experiment.POINT_OVERHEAD_S)


@pytest.mark.parametrize(
    "text, line, words",
    [
        (MINIMAL.replace("clients = [1, 4]", "clients = [1, 0]"), 3, "at least 1"),
        (MINIMAL.replace("clients = [1, 4]", 'clients = "4..1"'), 3, "empty"),
        (MINIMAL.replace("clients = [1, 4]", "clients = []"), 3, "empty list"),
        (MINIMAL.replace("clients = [1, 4]", "clients = [true]"), 3, "counts"),
        (MINIMAL.replace("server-cpus = 1", 'server-cpus = "lots"'), 4, "range"),
        (MINIMAL + "colour = 3\n", 6, "not a key"),
        (MINIMAL + "max-time = 3\n", 6, "go under [bench]"),
        (MINIMAL + 'order = "random"\n', 6, "one of sequential, interleaved"),
        (MINIMAL + '\n[bench]\nmax-time = "ten"\n', 8, "not a duration"),
        (MINIMAL + "\n[bench]\nprecision = 2\n", 8, "needs a unit"),
        (MINIMAL + "\n[bench]\nconfidence = 1.5\n", 8, "below 1"),
        (MINIMAL + "\n[bench]\nport = 2222\n", 8, "not a key"),
        (MINIMAL.replace('["a", "b"]', '["a", "a"]'), 2, "more than once"),
        (MINIMAL.replace('["a", "b"]', "[1]"), 2, "names or tables"),
        (MINIMAL.replace('["a", "b"]', '[{ path = "x" }]'), 2, "need a name"),
        (MINIMAL.replace("client-cpus = 1", "client-cpus = = 1"), 5, "not valid TOML"),
    ],
)
def test_validation_errors_name_the_line_at_fault(text, line, words):
    message = error_of(text)
    assert message.startswith(f"/x/exp.toml:{line}: "), message
    assert words in message


def test_missing_keys_are_named():
    message = error_of("servers = ['a']\nclients = 1\nserver-cpus = 1\n")
    assert message == (
        "/x/exp.toml: missing client-cpus = 1 (a count of client CPUs, placed by Volley) "
        'or client-cores = "0-3" (a CPU list, as volley-bench --cores takes)'
    )


@pytest.mark.real  # the experiments name the built servers' directory
def test_the_bundled_experiment_files_parse():
    local = experiment.load(BENCH_DIR / "local.toml")
    # Every bundled server, once.
    bundled = sorted(d.name for d in (ROOT / "servers").iterdir() if d.is_dir())
    assert sorted(spec.name for spec in local.servers) == bundled
    assert local.clients == (1, 4, 16)
    assert (local.server_cpus, local.client_cpus) == ((1,), (1,))
    assert local.options["precision"] == "3%" and local.options["max-time"] == "10s"
    # 3 points per server of at most 22.5 s each: minutes, not hours, on a 2-core machine.
    assert sweep.estimate_s(local, len(local.points())) < 25 * 60
    cores = experiment.load(BENCH_DIR / "cores.toml")
    assert cores.clients == (40, 80, 200) and cores.client_cpus == (10,)
    assert cores.server_cpus == (1, 2, 4, 6, 8, 10)
    clients = experiment.load(BENCH_DIR / "clients.toml")
    assert clients.clients[0] == 48 and clients.clients[-1] == 5120
    for exp in (local, cores, clients):
        # Both resolved: target/ may be a link to servers built elsewhere.
        assert Path(exp.servers[0].path).parent.resolve() == (ROOT / "target" / "servers").resolve()


# --- the grid and the plan -----------------------------------------------------------------


def test_grid_is_every_combination_once_servers_varying_fastest():
    exp = parse(MINIMAL.replace("server-cpus = 1", "server-cpus = [1, 2]"))
    points = exp.points()
    assert len(points) == 2 * 2 * 2 * 1
    assert len({p.key() for p in points}) == len(points)
    assert [p.server for p in points[:4]] == ["a", "b", "a", "b"]
    assert points[0] == Point("a", 1, 1, 1)


def test_counts_without_a_topology_take_the_server_first_then_the_clients():
    def where(point: Point) -> tuple[list[int], list[int]] | None:
        placed = sweep.placement_of(point, [0, 2, 4, 6], None)
        return None if placed is None else (placed.server_cpus, placed.client_cpus)

    assert where(Point("a", 8, 2, 1)) == ([0, 2], [4])
    assert where(Point("a", 8, 1, 3)) == ([0], [2, 4, 6])
    assert where(Point("a", 8, 2, 3)) is None  # too big
    # A list is used as given, and a count beside it takes the cores it leaves.
    assert where(Point("a", 8, 2, 1, None, "4,6")) == ([4, 6], [0])
    assert where(Point("a", 8, 1, 2, None, "0", "0,2")) == ([0], [0, 2])
    assert where(Point("a", 8, 1, 1, None, "1")) is None  # CPU 1 is not usable


def test_list_keys_make_points_that_run_where_they_say():
    exp = parse(MINIMAL.replace("server-cpus = 1", 'server-cores = ["0", "0-1"]'))
    assert exp.server_cpus == ("0", "0-1")
    points = exp.points()
    assert points[0] == Point("a", 1, 1, 1, None, "0")
    assert points[-1] == Point("b", 4, 2, 1, None, "0-1")
    assert str(points[-1]) == "b, 4 clients on 1 core, server on CPU 0-1"
    listed = parse(MINIMAL.replace("client-cpus = 1", 'client-cores = "2,4-5"'))
    assert listed.points()[0].client_cpu_list == "2,4-5" and listed.points()[0].client_cores == 3


def built(tmp_path: Path, *names: str) -> Path:
    for name in names:
        path = tmp_path / "servers" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return tmp_path / "servers"


def experiment_in(
    tmp_path: Path, text: str = MINIMAL, names: tuple[str, ...] = ("a", "b")
) -> Experiment:
    built(tmp_path, *names)
    path = tmp_path / "exp.toml"
    # The runner tests here are about sequential order; test_interleave.py says its own.
    order = "" if "order = " in text else 'order = "sequential"\n'
    path.write_text('servers-dir = "servers"\n' + order + text)
    return experiment.load(path)


def test_plan_skips_points_too_big_and_servers_not_built(tmp_path):
    exp = experiment_in(
        tmp_path, MINIMAL.replace("server-cpus = 1", "server-cpus = [1, 2]"), names=("a",)
    )
    the_plan = sweep.plan(exp, [0, 1], set())
    assert [p.server_cores for p in the_plan.too_big] == [2, 2, 2, 2]
    assert [s.name for s in the_plan.missing] == ["b"]
    assert the_plan.todo == [Point("a", 1, 1, 1), Point("a", 4, 1, 1)]
    lines = sweep.skip_lines(the_plan, exp)
    assert len(lines) == 2  # grouped: the points that do not fit, the servers not built
    assert lines[0] == (
        "skip 4 points that do not fit the CPUs this process may use (0-1: 2 physical cores, "
        "a count of CPUs takes one CPU a core): 2 server cores + 1 client core (4 points)"
    )
    assert lines[1].startswith("not built: b (") and "its 2 points are skipped" in lines[1]


def test_bench_command_pins_and_passes_the_options(tmp_path):
    exp = experiment_in(
        tmp_path, MINIMAL + '\n[bench]\nmax-time = "2s"\nargs = ["-t", "{server_cores}"]\n'
    )
    the_plan = sweep.plan(exp, [3, 5], set())
    command = sweep.bench_command(exp, the_plan, Point("b", 4, 1, 1))
    assert command[:4] == [sys.executable, "-m", "volley", "bench"]
    text = " ".join(command)
    assert "--server-cores 3 --cores 5 --clients 4 --max-time 2s" in text
    assert text.endswith(f"--json - --quiet {exp.servers[1].path} -- -t {{server_cores}}")
    # volley-bench exits 0 for any completed measurement unless asked to require the
    # precision: a point that missed its targets is still recorded with exit status 3.
    assert "--require-precision" in command


def test_failure_messages_are_one_line():
    assert sweep.failure_message("warning: x\nvolley: error: server 'q' does not exist\n", 2) == (
        "server 'q' does not exist"
    )
    crash = 'Traceback (most recent call last):\n  File "x.py", line 1\nBufferError: oops\n'
    assert sweep.failure_message(crash, 1) == "volley-bench crashed: BufferError: oops"
    assert sweep.failure_message("", 1) == "volley-bench exited with status 1"


# --- running, with a fake executor ---------------------------------------------------------


def bench_result(point: Point, status: str = "significant", mean: float = 50_000.0) -> BenchResult:
    """What volley-bench writes: three runs of 1000 ops at ``mean`` ns."""
    runs = [
        RunSummary(1000, 0.05, mean + d, mean, mean, mean, mean, 4000 + i)
        for i, d in enumerate((-100.0, 0.0, 100.0))
    ]
    return BenchResult(
        status=status,
        server=f"/srv/{point.server}",
        server_args=[],
        clients=point.clients,
        client_cores=[1],
        server_cores=[0],
        n=3000,
        rounds=3,
        elapsed_s=1.0,
        measured_s=0.8,
        throughput_ops_s=point.clients / mean * 1e9,
        confidence=0.95,
        precision="2%",
        ci_batches=3,
        latency_ns=LatencySummary(
            mean=mean,
            stddev=1000.0,
            ci_low=mean - 500,
            ci_high=mean + 500,
            min=1.0,
            max=9.0,
            p50=mean,
            p90=mean,
            p99=mean,
            p99_9=mean,
            distribution=[(0.0, 1.0), (50.0, mean)],
        ),
        workers=[WorkerInfo(pid=123, cpus=[1], clients=point.clients)],
        host=Environment(kernel="6.1", cpu_model="test cpu", cpus=2),
        started_at="2026-11-26T10:00:00+00:00",
        warmup_s=0.2,
        runs=runs,
    )


class FakeRunner:
    """Answers each point from a script instead of starting volley-bench."""

    def __init__(
        self,
        script: dict[tuple[str, int, int, int], Outcome] | None = None,
        signal_at: int | None = None,
    ):
        self.script = script or {}
        self.ran: list[Point] = []
        self.interrupted = False
        self.signal_at = signal_at  # send this process SIGINT while running the Nth point

    def run(self, point: Point, command: list[str], timeout_s: float) -> Outcome:
        self.ran.append(point)
        assert "--json" in command and timeout_s > 0
        if self.signal_at == len(self.ran):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs before kill returns
            assert self.interrupted
            return Outcome(130, bench_result(point, "interrupted"))
        return self.script.get(point.key(), Outcome(0, bench_result(point)))

    def interrupt(self) -> None:
        self.interrupted = True


def run_sweep(
    exp: Experiment,
    out: Path,
    runner: FakeRunner,
    resume: bool = False,
    usable: list[int] | None = None,
) -> tuple[sweep.Summary, Path]:
    path, done, _ = sweep.open_results(out, exp, resume)
    the_plan = sweep.plan(exp, usable or [0, 1], done)
    return sweep.run_sequential(exp, path, the_plan, runner, progress.QuietSweep()), path


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [strict_loads(line) for line in path.read_text().splitlines()]


def test_every_point_is_appended_as_one_line_with_its_parameters(tmp_path):
    exp = experiment_in(tmp_path)
    summary, path = run_sweep(exp, tmp_path / "out", FakeRunner())
    assert not summary.interrupted and len(summary.recorded) == 4
    lines = lines_of(path)
    assert [Point.from_json(r["point"]) for r in lines] == exp.points()
    first = lines[0]
    assert first["point"] == {"server": "a", "clients": 1, "server_cores": 1, "client_cores": 1}
    assert first["exit_status"] == 0 and first["status"] == "significant"
    assert first["latency_ns"]["mean"] == 50_000.0  # the volley-bench JSON, whole
    assert first["sweep"]["experiment"] == exp.name
    assert not list((tmp_path / "out").glob(".point-*"))  # temporary JSON files are gone


WARNED = ("warning: server and clients share CPU 0", "warning: cannot hold the CPUs")


def test_the_points_warnings_are_shown_once_each_even_when_quiet(tmp_path):
    exp = experiment_in(tmp_path)
    runner = FakeRunner()
    runner.script = {
        p.key(): Outcome(0, bench_result(p), warnings=WARNED[: 1 + (p.clients > 1)])
        for p in exp.points()
    }
    path, _, _ = sweep.open_results(tmp_path / "out", exp, False)
    shown = io.StringIO()
    sweep.run_sequential(
        exp, path, sweep.plan(exp, [0, 1], set()), runner, progress.QuietSweep(shown)
    )
    assert shown.getvalue().splitlines() == list(WARNED)


def test_a_child_warning_reaches_the_outcome():
    runner = sweep.ProcessRunner()
    code = "import sys; sys.stderr.write('run 1 of 3\\nwarning: it is late\\n')"
    outcome = runner.run(Point("a", 1, 1, 1), [sys.executable, "-c", code], 30)
    assert outcome.warnings == ("warning: it is late",) and outcome.exit_status == 0


def test_failed_points_are_recorded_with_their_error(tmp_path):
    exp = experiment_in(tmp_path)
    script = {
        ("b", 1, 1, 1): Outcome(1, None, "server 'x' does not exist"),
        ("a", 4, 1, 1): Outcome(
            1, dataclasses.replace(bench_result(Point("a", 4, 1, 1), "failed"), error="wrong reply")
        ),
        ("b", 4, 1, 1): Outcome(3, bench_result(Point("b", 4, 1, 1), "not-significant")),
    }
    _, path = run_sweep(exp, tmp_path / "out", FakeRunner(script))
    records = {(r.point.server, r.point.clients): r for r in store.load(path)[0]}
    assert len(records) == 4
    never = records[("b", 1)]  # volley-bench wrote no result: a full record with its error
    assert never.status == "failed" and never.exit_status == 1 and never.result is None
    assert never.failure == "server 'x' does not exist" and never.sweep.experiment == exp.name
    assert "latency_ns" not in lines_of(path)[1]  # no made-up result keys on disk
    assert records[("a", 4)].failure == "wrong reply"
    assert records[("b", 4)].exit_status == 3
    assert store.totals(store.load(path)[0]) == "2 failed, 1 not significant, 1 significant"


def test_sigint_is_forwarded_and_the_interrupted_point_is_not_recorded(tmp_path):
    exp = experiment_in(tmp_path)
    runner = FakeRunner(signal_at=2)
    summary, path = run_sweep(exp, tmp_path / "out", runner)
    assert summary.interrupted and runner.interrupted
    assert len(runner.ran) == 2  # stopped after the interrupted point
    assert [r["point"]["server"] for r in lines_of(path)] == ["a"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    # --resume runs the rest, the interrupted point included; every point exactly once.
    rest = FakeRunner()
    summary, path = run_sweep(exp, tmp_path / "out", rest, resume=True)
    assert not summary.interrupted
    assert rest.ran == exp.points()[1:]
    assert sorted(Point.from_json(r["point"]) for r in lines_of(path)) == sorted(exp.points())


def test_a_child_exiting_130_stops_the_sweep(tmp_path):
    exp = experiment_in(tmp_path)
    runner = FakeRunner({("b", 1, 1, 1): Outcome(130, None, "interrupted")})
    summary, path = run_sweep(exp, tmp_path / "out", runner)
    assert summary.interrupted and len(runner.ran) == 2 and len(lines_of(path)) == 1


def test_results_are_not_overwritten_without_resume(tmp_path):
    exp = experiment_in(tmp_path)
    run_sweep(exp, tmp_path / "out", FakeRunner())
    with pytest.raises(sweep.SweepError, match="--resume"):
        sweep.open_results(tmp_path / "out", exp, resume=False)
    # Resuming a finished sweep runs nothing.
    runner = FakeRunner()
    run_sweep(exp, tmp_path / "out", runner, resume=True)
    assert runner.ran == []


def test_resume_refuses_other_options(tmp_path):
    exp = experiment_in(tmp_path, MINIMAL + '\n[bench]\nmax-time = "2s"\n')
    run_sweep(exp, tmp_path / "out", FakeRunner(signal_at=3))
    changed = experiment_in(tmp_path, MINIMAL + '\n[bench]\nmax-time = "5s"\n')
    with pytest.raises(sweep.SweepError, match="other volley-bench options"):
        sweep.open_results(tmp_path / "out", changed, resume=True)


def test_resume_drops_a_torn_last_line(tmp_path):
    exp = experiment_in(tmp_path)
    _, path = run_sweep(exp, tmp_path / "out", FakeRunner(signal_at=3))
    with open(path, "a") as f:
        f.write('{"status": "signif')  # the machine stopped mid-write
    _, done, notes = sweep.open_results(tmp_path / "out", exp, resume=True)
    assert len(done) == 2 and "incomplete last line" in notes[0]
    assert path.read_text().endswith("}\n")


def test_resume_removes_temporary_files_a_killed_sweep_left(tmp_path):
    exp = experiment_in(tmp_path)
    out = tmp_path / "out"
    run_sweep(exp, out, FakeRunner(signal_at=3))
    stale = [out / ".point-k2j3.json", out / "..point-k2j3.json.x9y8.tmp"]
    for path in stale:
        path.write_text("{")
    _, done, notes = sweep.open_results(out, exp, resume=True)
    assert not any(path.exists() for path in stale)
    assert "removed 2 temporary files" in notes[0] and len(done) == 2


def test_progress_lines_when_not_a_terminal(tmp_path):
    exp = experiment_in(tmp_path)
    stream = io.StringIO()
    path, done, _ = sweep.open_results(tmp_path / "out", exp, False)
    sweep.run_sequential(
        exp, path, sweep.plan(exp, [0, 1], done), FakeRunner(), progress.SweepLines(stream)
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("[1/4] a, 1 client on 1 core, server on 1 core: 50.00 us")
    assert "1/4 points" in lines[0] and "elapsed" in lines[0] and "ETA" in lines[0]
    assert "\r" not in stream.getvalue()


# --- the results file ----------------------------------------------------------------------


def test_every_line_of_the_committed_sweep_loads_typed():
    path = BENCH_DIR / "results" / "local" / "results.jsonl"
    records, problems = store.load(path)
    assert problems == []
    assert len(records) == len(path.read_text().splitlines())
    assert all(r.result is not None and r.result.latency_ns for r in records)


def test_an_older_sweep_reads_as_points_placed_by_count():
    # bench/results/local was written when server_cores and client_cores were all a point had.
    path = BENCH_DIR / "results" / "local" / "results.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first["point"]) == {"server", "clients", "server_cores", "client_cores"}
    records, _ = store.load(path)
    point = records[0].point
    assert (point.server_cores, point.client_cores) == (1, 1)
    assert (point.server_cpu_list, point.client_cpu_list) == (None, None)
    assert point.side("server") == 1 and point.key() == (point.server, point.clients, 1, 1)
    # A point the file gave CPU lists keeps them, as strings, beside the counts.
    listed = Point("a", 4, 2, 3, None, "0-1", "2,4-5")
    assert listed.to_json() == {
        "server": "a",
        "clients": 4,
        "server_cores": 2,
        "client_cores": 3,
        "server_cpu_list": "0-1",
        "client_cpu_list": "2,4-5",
    }
    assert Point.from_json(json.loads(json.dumps(listed.to_json()))) == listed
    assert listed.key() != Point("a", 4, 2, 3).key() and listed.side("client") == "2,4-5"


# --- placement on a topology ---------------------------------------------------------------

TOPOLOGIES = ROOT / "bench" / "topologies"


def lab_plan(text: str) -> tuple[Experiment, sweep.Plan, Topology]:
    lab = topology.load(TOPOLOGIES / "2s-20c-2t.lscpu")
    # Any executable will do for a server that is not run.
    exp = parse(f'servers = [{{ name = "a", path = "{sys.executable}" }}]\nclients = 8\n' + text)
    return exp, sweep.plan(exp, lab.cpus, set(), lab, "lab.lscpu"), lab


def test_counts_are_placed_on_one_socket_of_the_lab_with_siblings_idle():
    exp, the_plan, lab = lab_plan("server-cpus = 2\nclient-cpus = 4\n")
    placement = the_plan.placements[exp.points()[0]]
    server, clients = placement.server_cpus, placement.client_cpus
    assert (len(server), len(clients)) == (2, 4)
    used = server + clients
    # One CPU per physical core: no client on a server CPU's core, no two on one core.
    assert len({lab.core_of(c) for c in used}) == 6
    assert not any(c in lab.siblings(s) for s in server for c in clients)
    assert len({lab.site(c).socket for c in used}) == 1
    assert placement.idle_siblings == sorted(s for c in used for s in lab.siblings(c))
    assert placement.warnings == () and sweep.placement_warnings(the_plan) == []
    command = sweep.bench_command(exp, the_plan, exp.points()[0])
    assert command[command.index("--server-cores") + 1] == cpus.format_cpu_list(server)
    assert command[command.index("--cores") + 1] == cpus.format_cpu_list(clients)
    assert command[command.index("--topology") + 1] == "lab.lscpu"


def test_counts_cross_sockets_only_past_one_and_fit_physical_cores_not_cpus():
    exp, the_plan, lab = lab_plan("server-cpus = [10, 20]\nclient-cpus = [16, 21]\n")
    wide = the_plan.placements[Point("a", 8, 10, 16)]
    assert len({lab.site(c).socket for c in wide.server_cpus + wide.client_cpus}) == 2
    assert any("every request and reply crosses" in w for w in wide.warnings)
    # 41 physical cores of the lab's 40 do not fit, however many CPUs (80) it has.
    assert the_plan.too_big == [Point("a", 8, 20, 21)]


def test_lists_from_the_file_are_used_as_given_with_volley_benchs_warnings():
    exp, the_plan, lab = lab_plan('server-cores = "0"\nclient-cores = "40"\n')
    placement = the_plan.placements[exp.points()[0]]
    assert (placement.server_cpus, placement.client_cpus) == ([0], [40])  # siblings
    warnings = cpus.place("40", "0", lab.cpus, lab).warnings  # what volley-bench says
    assert placement.warnings == warnings and warnings
    lines = sweep.dry_run_lines(the_plan, exp)
    assert f"warning: {warnings[0]} (1 point)" in lines
    # A count beside a list takes cores of the list's socket that the list leaves free.
    exp, the_plan, lab = lab_plan('server-cores = "20-21"\nclient-cpus = 4\n')
    beside = the_plan.placements[exp.points()[0]]
    assert {lab.site(c).socket for c in beside.client_cpus} == {1}
    assert not set(beside.client_cpus) & {20, 21, 60, 61}


def test_the_lab_experiments_fit_one_socket_of_the_lab_machine():
    lab = topology.load(TOPOLOGIES / "2s-20c-2t.lscpu")
    for name in ("cores.toml", "clients.toml"):
        path = BENCH_DIR / name
        exp = experiment.parse(path.read_text(), path)
        the_plan = sweep.plan(exp, lab.cpus, set(), lab)
        assert the_plan.too_big == [] and sweep.placement_warnings(the_plan) == [], name


def test_dry_run_plans_for_the_topology_file(tmp_path):
    built(tmp_path, "a")
    exp = tmp_path / "exp.toml"
    exp.write_text(
        'servers-dir = "servers"\nservers = ["a"]\nclients = 4\n'
        "server-cpus = 2\nclient-cpus = [4, 40]\n"
    )
    done = volley(
        "sweep", exp, "--dry-run", "--topology", TOPOLOGIES / "2s-20c-2t.lscpu", timeout=120
    )
    assert done.status == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "  server on CPU 0-1, clients on CPU 2-5: 1 point; 1 server (a), clients 4" in lines
    assert any(line.startswith("skip 1 point that do") for line in lines), lines


def test_a_record_reads_back_as_written(tmp_path):
    path = tmp_path / "results.jsonl"
    point = Point("a", 4, 1, 1)
    info = store.SweepInfo("tiny", "/x/tiny.toml", {"max-time": "2s"}, "interleaved", 7, 3)
    written = [
        SweepRecord(point, 0, info, bench_result(point)),
        SweepRecord(Point("b", 1, 1, 1, 5e4), 1, info, None, "no server", "2026-11-26T10:00"),
    ]
    for record in written:
        store.append(path, record)
    assert store.load(path) == (written, [])
    assert lines_of(path)[1]["sweep"] == {
        "experiment": "tiny",
        "file": "/x/tiny.toml",
        "options": {"max_time": "2s"},
        "order": "interleaved",
        "seed": 7,
        "pass": 3,
    }


def test_options_recorded_with_dashes_read_as_with_underscores():
    written = {"experiment": "t", "file": "t.toml", "options": {"max-time": "2s"}}
    assert store.SweepInfo.from_json(written).options == {"max-time": "2s"}
    snake = written | {"options": {"max_time": "2s", "run_time": "0.1s"}}
    assert store.SweepInfo.from_json(snake).options == {"max-time": "2s", "run-time": "0.1s"}


def test_a_result_of_another_version_is_a_clear_error(tmp_path):
    point = Point("a", 4, 1, 1)
    record = SweepRecord(point, 0, store.SweepInfo("t", "t.toml"), bench_result(point))
    for version, words in ((99, "version 99 is not one this volley reads"), (0, "version 0")):
        path = tmp_path / f"v{version}.jsonl"
        line = record.to_json() | {"version": version}
        if version == 0:  # an old line that lacks what this volley needs
            del line["workers"], line["status"]
        path.write_text(json.dumps(line) + "\n")
        with pytest.raises(store.StoreError, match=words) as caught:
            store.load(path)
        assert str(caught.value).startswith(f"{path}:1: ")


# --- exports -------------------------------------------------------------------------------


def test_exports_have_the_right_columns(tmp_path):
    exp = experiment_in(tmp_path)
    script = {("b", 4, 1, 1): Outcome(1, None, "it crashed")}
    _, path = run_sweep(exp, tmp_path / "out", FakeRunner(script))
    written = export.export(path, export.check_exports(["csv", "dat", "csv"]))
    assert [p.name for p in written] == ["results.csv", "plot.dat"]
    rows = list(csv.DictReader(io.StringIO(written[0].read_text())))
    assert tuple(rows[0]) == export.CSV_COLUMNS
    assert len(rows) == 4
    assert (
        rows[0]["server"] == "a"
        and rows[0]["mean_ns"] == "50000.0"
        and rows[0]["server_cpus"] == "0"
    )
    assert (
        rows[3]["status"] == "failed"
        and rows[3]["mean_ns"] == ""
        and rows[3]["error"] == "it crashed"
    )
    dat = written[1].read_text().splitlines()
    # server clients cores mean stddev n, failed points left out
    assert dat == [
        "a 1 1 50.00us 1.00us 3000",
        "a 4 1 50.00us 1.00us 3000",
        "b 1 1 50.00us 1.00us 3000",
    ]
    with pytest.raises(ValueError, match="not a format"):
        export.check_exports(["xlsx"])


# --- the command line, and real sweeps -----------------------------------------------------


@pytest.mark.real
def test_cli_reports_bad_files_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("clients = [1, 4]", "clients = [1, -4]"))
    done = volley("sweep", bad, "-o", tmp_path / "out")
    assert done.status == 2
    assert done.stderr.strip().splitlines() == [
        f"volley: error: {bad}:3: clients has -4; counts must be at least 1"
    ]
    assert volley("sweep", tmp_path / "nope.toml").status == 2
    assert (
        volley("sweep", BENCH_DIR / "local.toml", "--export", "xls", "-o", tmp_path / "o").status
        == 2
    )


@pytest.mark.real
@two_cpus
def test_dry_run_prints_a_summary_not_a_line_per_point(tmp_path):
    exp = tmp_path / "big.toml"
    exp.write_text(
        f'servers-dir = "{ROOT}/target/servers"\n'
        'servers = ["c-threaded", "c-epoll", "not-built-yet", "nor-this"]\n'
        'clients = [1, 4]\nserver-cpus = [1, 2, 4096]\nclient-cpus = 1\nrates = ["5k", "10k"]\n'
        '[bench]\nmax-time = "10s"\nwarmup = "0.5s"\n'
    )
    done = volley("sweep", exp, "--dry-run", "-q")
    assert done.status == 0, done.stderr
    lines = done.stdout.splitlines()
    # 8 of 48 points fit and are built, each at most 0.5 s + 10 s + the server's start.
    assert lines[0].startswith("sweep big (dry run): 8 points to run of 48 in the grid, up to ")
    assert f"(at most {format_duration(10.5 + POINT_OVERHEAD_S)} a point" in lines[0]
    assert lines[1] == (
        "  server on CPU 0, clients on CPU 1: 8 points; 2 servers (c-epoll, c-threaded), "
        "clients 1, 4, rates 5000, 10000 ops/s"
    )
    assert lines[2] == (
        "skip 32 points that do not fit the CPUs this process may use (0-1: 2 physical "
        "cores, a count of CPUs takes one CPU a core): 2 server cores + 1 client core "
        "(16 points), 4096 server cores + 1 client core (16 points)"
    )
    assert lines[3].startswith("not built: not-built-yet (") and ", nor-this (" in lines[3]
    assert lines[3].endswith("their 8 points are skipped (build with make servers)")
    assert len(lines) == 4 and not (tmp_path / "out").exists()


@pytest.mark.real
@two_cpus
def test_cli_says_why_points_are_skipped_even_when_quiet(tmp_path):
    exp = tmp_path / "big.toml"
    exp.write_text(
        f'servers-dir = "{ROOT}/target/servers"\nservers = ["c-threaded", "not-built-yet"]\n'
        "clients = 4\nserver-cpus = [1, 4096]\nclient-cpus = 1\n"
    )
    nothing = tmp_path / "nothing.toml"
    nothing.write_text(exp.read_text().replace("[1, 4096]", "4096"))
    done = volley("sweep", nothing, "-o", tmp_path / "out", "-q")
    assert done.status == 2 and "nothing to run" in done.stderr
    assert "skip 2 points that do not fit the CPUs" in done.stderr
    assert "not built: not-built-yet" in done.stderr


def runs_a_server(pid: int) -> bool:
    """Whether a server (a process started with -p PORT) runs under ``pid``."""
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if p.cmdline()[1:2] == ["-p"]:
                return True
        except psutil.Error:
            continue
    return False


def tiny_experiment(tmp_path: Path) -> Path:
    """2 servers x 2 client counts, two seconds a point at most."""
    for name in ("c-threaded", "c-epoll"):
        server(name)
    path = tmp_path / "tiny.toml"
    path.write_text(
        f'servers-dir = "{ROOT}/target/servers"\nservers = ["c-threaded", "c-epoll"]\n'
        'clients = [1, 4]\nserver-cpus = 1\nclient-cpus = 1\norder = "sequential"\n\n'
        '[bench]\nprecision = "5%"\nmax-time = "2s"\nwarmup = "0.2s"\nround-time = "0.3s"\n'
    )
    return path


@pytest.mark.real
@two_cpus
@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path):
    out = tmp_path / "out"
    began = time.monotonic()
    done = volley(
        "sweep",
        tiny_experiment(tmp_path),
        "-o",
        out,
        "--export",
        "csv",
        "--export",
        "dat",
        timeout=90,
    )
    assert done.status == 0, done.stderr
    assert time.monotonic() - began < 60
    lines = lines_of(out / "results.jsonl")
    keys = {(r["point"]["server"], r["point"]["clients"]) for r in lines}
    assert len(lines) == 4 and keys == {(s, c) for s in ("c-threaded", "c-epoll") for c in (1, 4)}
    for record in lines:
        assert record["status"] in ("significant", "not-significant"), record.get("error")
        assert record["exit_status"] in (0, 3) and record["clients"] == record["point"]["clients"]
        assert record["server_cores"] != record["client_cores"]  # pinned apart
        assert record["latency_ns"]["distribution"]
    assert "results.jsonl: 4 of 4 points" in done.stdout
    assert len((out / "plot.dat").read_text().splitlines()) == 4
    assert len((out / "results.csv").read_text().splitlines()) == 5
    assert "[4/4]" in done.stderr


@pytest.mark.real
@two_cpus
@pytest.mark.slow
def test_sigint_mid_sweep_then_resume_gives_every_point_once(tmp_path):
    out = tmp_path / "out"
    experiment = tiny_experiment(tmp_path)
    results = out / "results.jsonl"
    command = [sys.executable, "-m", "volley", "sweep", str(experiment), "-o", str(out)]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (results.exists() and results.read_text().count("\n") >= 1):
            assert process.poll() is None and time.monotonic() < deadline, "no point finished"
            time.sleep(0.05)
        # Into the next point: its volley-bench has started its server (the first point's
        # volley-bench, and so its servers, ended before its line was written).
        while process.poll() is None and not runs_a_server(process.pid):
            assert time.monotonic() < deadline, "no next point started"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "--resume" in stderr
    first = lines_of(results)
    assert 1 <= len(first) < 4
    assert not list(out.glob(".point-*"))

    done = volley("sweep", experiment, "-o", out, "--resume", timeout=90)
    assert done.status == 0, done.stderr
    assert f"({len(first)} already done)" in done.stderr
    keys = [tuple(r["point"].values()) for r in lines_of(results)]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert lines_of(results)[: len(first)] == first  # the earlier lines are untouched


@pytest.mark.real
@two_cpus
@pytest.mark.slow
def test_bench_sh_keeps_the_seeds_interface(tmp_path):
    out = tmp_path / "result.json"
    env = {
        **os.environ,
        "VOLLEY_BENCH_OPTIONS": f"--max-time 1s --warmup 0.1s --round-time 0.2s -q --json {out}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [BENCH_DIR / "bench.sh", "1", "1", "2", FAULTY, "--fault", "none", "--after", "SCORES"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode in (0, 3), done.stderr
    first = done.stderr.splitlines()[0]
    assert "--server-cores 0 --cores 1 --clients 2" in first
    assert first.rstrip().endswith(r"-- --fault none --after \{server_cores\}")
    result = strict_loads(out.read_text())
    assert (
        result["clients"] == 2 and result["server_cores"] == [0] and result["client_cores"] == [1]
    )
    bad = subprocess.run(
        [BENCH_DIR / "bench.sh", "1", "1"], capture_output=True, text=True, timeout=10
    )
    assert bad.returncode == 2 and "usage" in bad.stderr

"""volley-bench --rehearse: another machine's plan played here with its CPUs folded onto
this machine's, every run timed by phase; and what refuses a rehearsal's result."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import FIXTURES, ROOT, bench, server, strict_loads, volley
from test_hosts import job_command, needs_mpi, run_job, running_server  # noqa: F401

from volley.engine.coordinator import PHASES
from volley.measure import history
from volley.present import plot
from volley.records import results, store
from volley.records.results import FORMAT_VERSION, parse_result
from volley.system import cpus, topology
from volley.system.cpus import Placement

TOPOLOGIES = ROOT / "bench" / "topologies"
SMALL = TOPOLOGIES / "1s-8c-2t.lscpu"  # 4 server and 4 client cores by default


# --- folding (no sockets) --------------------------------------------------------------------


def lab_plan(clients: str | None = None, server: str | None = None) -> Placement:
    lab = topology.load(TOPOLOGIES / "2s-20c-2t.lscpu")
    return cpus.place(clients, server, lab.cpus, lab)


def test_fold_keeps_one_entry_per_planned_cpu_on_sides_of_their_own():
    planned = lab_plan("20-59", "0-19")
    folded = cpus.fold(planned, [0, 1])
    assert len(folded.server_cpus) == 20 and len(folded.client_cpus) == 40
    assert set(folded.server_cpus) == {0} and set(folded.client_cpus) == {1}
    assert folded.idle_siblings == []
    assert folded.warnings == planned.warnings  # the plan's costs are still the plan's


def test_fold_shares_the_real_cpus_in_proportion_and_in_turn():
    planned = Placement(server_cpus=[10, 11], client_cpus=[20, 21, 22, 23, 24, 25])
    folded = cpus.fold(planned, [4, 5, 6, 7])
    assert folded.server_cpus == [4, 4]  # 2 of 8 planned CPUs: one real CPU of 4
    assert folded.client_cpus == [5, 6, 7, 5, 6, 7]


def test_fold_on_one_cpu_puts_everything_there():
    folded = cpus.fold(lab_plan(), [3])
    assert set(folded.server_cpus) == set(folded.client_cpus) == {3}


def test_fold_keeps_what_the_plan_shares_shared():
    planned = Placement(server_cpus=[0, 1], client_cpus=[1, 2, 3])
    folded = cpus.fold(planned, [0, 1])
    assert folded.server_cpus == [0, 1] and folded.client_cpus == [1, 0, 1]  # c mod 2


def test_fold_of_no_cpu_is_an_error():
    with pytest.raises(cpus.CpuError):
        cpus.fold(lab_plan(), [])


def test_format_cpu_list_names_a_folded_cpu_once():
    assert topology.format_cpu_list([1, 1, 0, 1]) == "0-1"


# --- bad input -------------------------------------------------------------------------------


def test_rehearse_without_topology_is_one_line_and_exit_2():
    done = bench("--rehearse", "--runs", "2", "--history", "off", server("c-epoll"))
    assert done.status == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--rehearse" in lines[0] and "--topology FILE" in lines[0]


# --- a real rehearsal ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    """One short rehearsal of the 1-socket plan against c-epoll, kept for the tests below:
    its JSON, its summary, and the history directory it was given."""
    where = tmp_path_factory.mktemp("rehearsal")
    path, sittings = where / "r.json", where / "sittings"
    done = bench(
        "--rehearse",
        "--topology",
        SMALL,
        "--runs",
        "2",
        "--warmup",
        "0.1s",
        "--run-time",
        "0.2s",
        "--quiet",
        "--history",
        sittings,
        "--json",
        path,
        server("c-epoll"),
        timeout=120,
    )
    assert done.status == 0, done.stderr
    return strict_loads(path.read_text()), done.stdout, sittings


def test_rehearsal_is_flagged_in_the_json_with_its_plan(rehearsed):
    data, _, _ = rehearsed
    assert data["rehearsal"] is True and data["version"] == FORMAT_VERSION
    assert data["topology"] == str(SMALL)
    lab = topology.load(SMALL)
    planned = cpus.place(None, None, lab.cpus, lab)
    assert data["planned_server_cores"] == planned.server_cpus
    assert data["planned_client_cores"] == planned.client_cpus
    folded = cpus.fold(planned, cpus.usable_cpus())
    assert data["server_cores"] == folded.server_cpus
    assert data["client_cores"] == folded.client_cpus
    # One worker per planned client CPU, each pinned where the fold put it.
    assert [w["cpus"] for w in data["workers"]] == [[c] for c in folded.client_cpus]


def test_every_run_records_its_phases(rehearsed):
    data, _, _ = rehearsed
    assert len(data["runs"]) == 2
    for run in data["runs"]:
        phases = run["phases_s"]
        assert set(PHASES) | {"start_skew", "start_late", "start_margin", "merge", "total"} <= set(
            phases
        )
        assert all(value >= 0 for value in phases.values())
        added = sum(phases[name] for name in (*PHASES, "merge"))
        assert phases["total"] == pytest.approx(added, abs=1e-3)
        assert phases["warmup_measure"] > 0 and phases["server_start"] > 0


def test_rehearsal_summary_says_its_latencies_mean_nothing(rehearsed):
    _, shown, _ = rehearsed
    assert "rehearsal: latencies are not meaningful" in shown
    assert "where a run's time goes (median of 2 runs)" in shown
    assert "overhead beyond warm-up+measure" in shown


def test_a_rehearsal_is_neither_kept_in_nor_read_from_the_history(rehearsed, tmp_path):
    data, _, sittings = rehearsed
    assert not sittings.exists() or not list(sittings.iterdir())
    result = parse_result(data, "r.json")
    assert history.Sitting.of(result) is None
    assert history.Sitting.of(replace(result, rehearsal=False)) is not None


def test_compare_refuses_a_rehearsal(rehearsed, tmp_path):
    data, _, _ = rehearsed
    measured = tmp_path / "measured.json"
    measured.write_text(json.dumps({**data, "rehearsal": False}))
    rehearsal = tmp_path / "rehearsal.json"
    rehearsal.write_text(json.dumps(data))
    for order in ((measured, rehearsal), (rehearsal, measured)):
        done = volley("compare", *order)
        assert done.status == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "rehearsal.json is a rehearsal" in lines[0]
    assert volley("compare", measured, measured).status == 0


def test_plot_refuses_a_sweep_with_a_rehearsal(rehearsed, tmp_path):
    data, _, _ = rehearsed
    sample = store.load(FIXTURES / "results-sample.jsonl")[0]
    measured = next(r for r in sample if r.result is not None)
    rehearsal = replace(measured, result=parse_result(data, "r.json"))
    path = tmp_path / "results.jsonl"
    for record in (measured, rehearsal):
        store.append(path, record)
    with pytest.raises(plot.PlotError, match="is a rehearsal"):
        plot.load(path)
    done = volley("plot", path, "-o", tmp_path / "perf.png")
    assert done.status == 2 and len(done.stderr.strip().splitlines()) == 1


def test_phases_and_the_flag_read_back_and_older_files_have_neither(rehearsed):
    data, _, _ = rehearsed
    result = parse_result(data, "r.json")
    assert result.rehearsal and result.runs[0].phases_s == data["runs"][0]["phases_s"]
    assert parse_result(json.loads(results.dumps(result)), "again") == result
    overheads = [r.phases_s["total"] - r.phases_s["warmup_measure"] for r in result.runs]
    assert result.phase_medians()["overhead"] == pytest.approx(statistics.median(overheads))
    added = ("rehearsal", "topology", "planned_server_cores", "planned_client_cores")
    older = {k: v for k, v in data.items() if k not in added}
    older["version"] = 5
    older["runs"] = [{k: v for k, v in run.items() if k != "phases_s"} for run in data["runs"]]
    old = parse_result(older, "old.json")
    assert not old.rehearsal and old.runs[0].phases_s is None and old.phase_medians() == {}
    assert "phases_s" not in old.runs[0].to_json()


# --- many hosts, rehearsed on one ----------------------------------------------------------


@needs_mpi
def test_two_ranks_rehearse_each_folding_its_own_cpus(running_server, tmp_path):  # noqa: F811
    out = tmp_path / "hosts.json"
    args = ["--rehearse", "--topology", str(SMALL), "--connect", running_server]
    args += ["--runs", "2", "--warmup", "0.1s", "--run-time", "0.2s", "-q", "--history", "off"]
    done = run_job(job_command(2, *args, "--json", str(out), launcher=("--bind-to", "none")))
    assert done.returncode == 0, done.stdout + done.stderr
    data = strict_loads(out.read_text())
    assert data["rehearsal"] is True
    lab = topology.load(SMALL)
    planned = cpus.place(None, None, lab.cpus, lab, remote_server=True)
    folded = cpus.fold(planned, cpus.usable_cpus())
    # Each rank folded the plan onto its own CPUs: one client per planned client CPU each.
    assert [(h["rank"], h["cpus"], h["clients"]) for h in data["hosts"]] == [
        (rank, folded.client_cpus, len(planned.client_cpus)) for rank in (0, 1)
    ]
    for run in data["runs"]:
        assert {"rendezvous", "gather", "connect", "total"} <= set(run["phases_s"])

"""Topology (sysfs, lscpu -p files), topology-aware placement and ``volley plan``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from volley.cli.app import app
from volley.cli.bench import bench
from volley.system import topology
from volley.system.cpus import CpuError, parse_cpu_list, place
from volley.system.topology import CpuSite, Topology, TopologyError

FILES = Path(__file__).resolve().parent.parent / "bench" / "topologies"
LAB = FILES / "2s-20c-2t.lscpu"
DESKTOP = FILES / "1s-8c-2t.lscpu"
VM = FILES / "vm-2c.lscpu"


@pytest.fixture(scope="module")
def lab() -> Topology:
    return topology.load(LAB)


def shares_a_core(t: Topology, server: list[int], clients: list[int]) -> list[tuple[int, int]]:
    return [(s, c) for s in server for c in clients if t.core_of(s) == t.core_of(c)]


# Reading a topology.


def test_the_lab_file_numbers_siblings_forty_apart(lab):
    assert lab.cpus == list(range(80))
    assert lab.siblings(0) == [40] and lab.siblings(59) == [19] and lab.siblings(39) == [79]
    assert lab.site(20) == CpuSite(20, 20, 1, 1) and lab.site(60) == CpuSite(60, 20, 1, 1)
    assert lab.describe() == "2 sockets, 40 cores, 80 CPUs (2 threads per core), 2 NUMA nodes"


def test_the_desktop_and_vm_files():
    desktop = topology.load(DESKTOP)
    assert [desktop.siblings(n) for n in (0, 7, 8)] == [[8], [15], [0]]
    assert {desktop.site(c).node for c in desktop.cpus} == {0}
    vm = topology.load(VM)
    assert vm.sites == (CpuSite(0, 0, 0, 0), CpuSite(1, 1, 0, 0)) and vm.siblings(0) == []


def test_lscpu_default_columns_and_an_empty_node_are_read():
    # Plain `lscpu -p` adds the caches after an empty column; a machine without NUMA
    # leaves NODE empty.
    text = "# CPU,Core,Socket,Node,,L1d,L1i,L2,L3\n0,0,0,,,0,0,0,0\n1,0,0,,,0,0,0,0\n"
    parsed = topology.parse_lscpu(text, "t")
    assert parsed.sites == (CpuSite(0, 0, 0, None), CpuSite(1, 0, 0, None))
    assert parsed.siblings(1) == [0] and not parsed.has_nodes
    # Columns in another order follow the header; without a header NODE may be left out.
    reordered = topology.parse_lscpu("# Socket,CPU,Core\n1,5,3\n", "t")
    assert reordered.sites == (CpuSite(5, 3, 1, None),)
    assert topology.parse_lscpu("0,0,0\n", "t").sites == (CpuSite(0, 0, 0, None),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# CPU,Core,Socket,Node\n0,0,0,0\n1,1,0\n", "t line 3: '1,1,0' has 3 fields"),
        ("0,0,0,0\n1,x,0,0\n", "t line 2: CORE is 'x', not a number"),
        ("0,,0,0\n", "t line 1: CORE is empty"),
        ("0,0,0,0\n0,1,0,0\n", "t line 2: CPU 0 is listed twice"),
        ("# CPU,Node\n0,0\n", "t line 1: the header has no CORE, SOCKET column"),
        ("# just a comment\n\n", "t lists no CPUs"),
        ("0,-1,0,0\n", "t line 1: CORE is '-1', not a number"),
    ],
)
def test_bad_lines_name_the_file_and_line(text, message):
    with pytest.raises(TopologyError) as caught:
        topology.parse_lscpu(text, "t")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_missing_file_is_a_topology_error(tmp_path):
    with pytest.raises(TopologyError, match=r"cannot read topology file .*none.lscpu"):
        topology.load(tmp_path / "none.lscpu")


def fake_sysfs(root: Path, cpus: dict[int, tuple[int | None, int | None]], nodes: dict) -> Path:
    """cpu -> (core_id, physical_package_id), None leaving the file out; node -> cpulist."""
    for cpu, (core, package) in cpus.items():
        where = root / "cpu" / f"cpu{cpu}" / "topology"
        where.mkdir(parents=True)
        if core is not None:
            (where / "core_id").write_text(f"{core}\n")
        if package is not None:
            (where / "physical_package_id").write_text(f"{package}\n")
    (root / "cpu" / "cpu9").mkdir()  # offline: no topology directory
    (root / "cpu" / "cpufreq").mkdir()
    for node, cpulist in nodes.items():
        (root / "node" / f"node{node}").mkdir(parents=True)
        (root / "node" / f"node{node}" / "cpulist").write_text(cpulist + "\n")
    return root


def test_sysfs_is_read_with_core_ids_repeating_across_packages(tmp_path):
    # Two packages of two cores, two threads each; core_id restarts in each package.
    cpus = {c: (c % 2, (c // 2) % 2) for c in range(8)}
    root = fake_sysfs(tmp_path, cpus, {0: "0-1,4-5", 1: "2-3,6-7"})
    found = topology.from_sysfs(root)
    assert found is not None and found.cpus == list(range(8))  # cpu9 (offline) left out
    assert [found.siblings(c) for c in range(4)] == [[4], [5], [6], [7]]
    assert found.core_of(0) != found.core_of(2)  # same core_id, other package
    assert [found.site(c).node for c in range(8)] == [0, 0, 1, 1, 0, 0, 1, 1]
    # Read as lscpu would print it, it is the same machine.
    lscpu = "".join(f"{c},{c % 4},{c // 2 % 2},{c // 2 % 2}\n" for c in range(8))
    assert found.shape() == topology.parse_lscpu(lscpu, "t").shape()


def test_sysfs_without_ids_or_nodes_falls_back(tmp_path):
    root = fake_sysfs(tmp_path, {0: (None, None), 1: (None, 0), 2: (0, None)}, {})
    found = topology.from_sysfs(root)
    assert found is not None and not found.has_nodes
    assert {found.site(c).socket for c in (0, 1, 2)} == {0}
    assert found.siblings(0) == [] and found.siblings(1) == []  # each its own core
    assert topology.from_sysfs(tmp_path / "nothing") is None


def test_a_file_that_is_not_this_machine_is_used_with_a_warning(tmp_path):
    root = fake_sysfs(tmp_path, {0: (0, 0), 1: (1, 0)}, {0: "0-1"})
    same, said = topology.for_placement(str(VM), root)
    assert same.source == str(VM) and said == ()
    other, said = topology.for_placement(str(LAB), root)
    assert other.cpus == list(range(80)) and len(said) == 1
    assert "is not this machine's (1 socket, 2 cores, 2 CPUs" in said[0]
    machine, said = topology.for_placement(None, root)
    assert machine is not None and machine.source == "this machine" and said == ()


# Placement.


def test_lab_default_keeps_one_socket_and_its_siblings_idle(lab):
    p = place(None, None, lab.cpus, lab)
    assert p.server_cpus == list(range(10)) and p.client_cpus == list(range(10, 20))
    assert p.idle_siblings == list(range(40, 60)) and p.warnings == ()


def test_lab_clients_on_0_39_leave_no_core_for_the_server(lab):
    # Today's trap: the rest of the CPUs (40-79) are the clients' own siblings.
    with pytest.raises(
        CpuError, match=r"--cores 0-39 takes every usable physical core \(CPU 40-79"
    ):
        place("0-39", None, lab.cpus, lab)
    with pytest.raises(CpuError, match="leaving none for the clients"):
        place(None, "0-19,40-59,20-39", lab.cpus, lab)


@pytest.mark.parametrize(
    ("cores", "server"),
    [("0-9", "10-19"), ("10-19", "0-9"), ("0,2,4", "1,3,5-19"), ("40-49", "10-19")],
)
def test_lab_default_server_avoids_the_clients_cores(lab, cores, server):
    p = place(cores, None, lab.cpus, lab)
    assert p.server_cpus == parse_cpu_list(server)
    assert shares_a_core(lab, p.server_cpus, p.client_cpus) == [] and p.warnings == ()


def test_lab_server_crosses_to_the_other_socket_only_when_its_own_is_full(lab):
    p = place("0-19", None, lab.cpus, lab)
    assert p.server_cpus == list(range(20, 40))
    assert p.warnings == (
        "server on CPU 20-39 (node 1) and clients on CPU 0-19 (node 0): every request and "
        "reply crosses between them",
    )


def test_lab_explicit_lists_win_and_name_each_sibling_pair(lab):
    p = place("0-39", "40-79", lab.cpus, lab)
    assert p.server_cpus == list(range(40, 80)) and p.client_cpus == list(range(40))
    siblings, nodes = p.warnings
    assert siblings.startswith(
        "server and clients share physical cores (SMT siblings): server CPU 40 with client CPU 0,"
        " 41 with 1,"
    )
    assert all(f" {s} with {s - 40}" in siblings for s in range(41, 80))
    assert "server on CPU 40-59 (node 0), 60-79 (node 1)" in nodes
    one = place("5", "45", lab.cpus, lab)
    assert one.warnings == (
        "server and clients share physical cores (SMT siblings): server CPU 45 with client "
        "CPU 5; the measurement includes their competition for each core",
    )


def test_desktop_placement():
    desktop = topology.load(DESKTOP)
    p = place(None, None, desktop.cpus, desktop)
    assert (p.server_cpus, p.client_cpus, p.idle_siblings) == (
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [*range(8, 16)],
    )
    assert place("0-3", None, desktop.cpus, desktop).server_cpus == [4, 5, 6, 7]
    forced = place("8-11", "0-3", desktop.cpus, desktop)
    assert "server CPU 0 with client CPU 8, 1 with 9, 2 with 10, 3 with 11;" in forced.warnings[0]
    assert len(forced.warnings) == 1  # one node: nothing crossed


def test_vm_placement_is_unchanged():
    vm = topology.load(VM)
    p = place(None, None, vm.cpus, vm)
    assert (p.server_cpus, p.client_cpus, p.warnings, p.idle_siblings) == ([0], [1], (), [])
    assert place("1", None, vm.cpus, vm).server_cpus == [0]
    assert place(None, "1", vm.cpus, vm).client_cpus == [0]


def test_one_cpu_or_one_core_still_shares_with_a_warning():
    single = Topology.flat([3])
    p = place(None, None, [3], single)
    assert p.server_cpus == p.client_cpus == [3] and "share CPU 3" in p.warnings[0]
    assert place("3", None, [3], single).server_cpus == [3]
    core = topology.parse_lscpu("0,0,0,0\n1,0,0,0\n", "t")
    both = place(None, None, [0, 1], core)
    assert (both.server_cpus, both.client_cpus) == ([0], [1])
    assert "server CPU 0 with client CPU 1" in both.warnings[0]


def test_a_server_elsewhere_needs_no_core_and_costs_nothing(lab):
    p = place("0-39", None, lab.cpus, lab, remote_server=True)
    assert p.client_cpus == list(range(40)) and p.warnings == ()


def test_cpus_the_topology_does_not_know_are_cores_of_their_own():
    vm = topology.load(VM)
    p = place(None, None, [0, 1, 2, 3], vm)
    assert p.warnings == () and shares_a_core(vm, p.server_cpus, p.client_cpus) == []


# volley plan, and volley-bench --topology.


def plan(*args: str):
    return CliRunner().invoke(app, ["plan", *args])


def test_plan_prints_the_placement_without_running_anything():
    done = plan("--topology", str(LAB), "--cores", "10-11", "--clients", "20", "target/none")
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        f"topology: {LAB}: 2 sockets, 40 cores, 80 CPUs (2 threads per core), 2 NUMA nodes",
        "server: CPU 0-9,12-19 (node 0)",
        "clients: 20 on 2 workers, CPU 10-11 (node 0)",
        "  worker 0 on CPU 10: clients 0, 2, 4, 6, 8, 10, 12, 14, ... (10 in all)",
        "  worker 1 on CPU 11: clients 1, 3, 5, 7, 9, 11, 13, 15, ... (10 in all)",
        "idle SMT siblings: CPU 40-59",
        "unused: CPU 20-39,60-79",
    ]


def test_plan_shows_the_warnings_of_forced_lists():
    done = plan("--topology", str(LAB), "--cores", "0-1", "--server-cores", "40,61")
    assert done.exit_code == 0
    warnings = [line for line in done.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and "server CPU 40 with client CPU 0;" in warnings[0]
    assert "server on CPU 40 (node 0), 61 (node 1)" in warnings[1]


def test_plan_json(tmp_path):
    done = plan("--topology", str(DESKTOP), "--clients", "6", "--json", "-")
    assert done.exit_code == 0
    found = json.loads(done.output)
    assert found["server_cpus"] == [0, 1, 2, 3] and found["client_cpus"] == [4, 5, 6, 7]
    assert found["workers"][0] == {"worker": 0, "cpu": 4, "clients": [0, 4]}
    assert found["idle_siblings"] == list(range(8, 16)) and found["unused_cpus"] == []
    assert found["topology"] == {
        "source": str(DESKTOP),
        "sockets": 1,
        "cores": 8,
        "cpus": 16,
        "numa_nodes": 1,
    }
    assert (found["server_nodes"], found["client_nodes"], found["warnings"]) == ([0], [0], [])
    path = tmp_path / "plan.json"
    written = plan("--topology", str(VM), "--json", str(path))
    assert written.exit_code == 0 and written.output.startswith("topology: ")
    assert json.loads(path.read_text())["server_cpus"] == [0]


def test_plan_of_this_machine():
    done = plan()
    assert done.exit_code == 0 and done.output.startswith("topology: this machine: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cores", "0-39"], "--cores 0-39 takes every usable physical core"),
        (["--cores", "80"], "--cores names CPU 80, which this process may not use"),
        (["--clients", "0"], "--clients 0 must be at least 1"),
        (["--json", "/nonexistent/plan.json"], "directory /nonexistent does not exist"),
    ],
)
def test_plan_bad_input_is_one_line_and_exit_2(args, message):
    done = plan("--topology", str(LAB), *args)
    assert done.exit_code == 2 and message in done.output
    assert len(done.output.strip().splitlines()) == 1


def test_a_bad_topology_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.lscpu"
    bad.write_text("# CPU,Core,Socket,Node\n0,0,0,0\n1,one,0,0\n")
    single = typer.Typer(add_completion=False)
    single.command()(bench)
    for done in (
        plan("--topology", str(bad)),
        CliRunner().invoke(single, ["--topology", str(bad), sys.executable]),
    ):
        assert done.exit_code == 2
        assert done.output.strip().endswith(
            f"error: {bad} line 3: CORE is 'one', not a number (in '1,one,0,0')"
        )
        assert len(done.output.strip().splitlines()) == 1

"""The loaders of what a person hands volley: result files (volley-bench --json), results
files (results.jsonl, runs.jsonl) and experiment files. Whatever the bytes, a loader returns
a result or says in one line (a BadInput: exit status 2) what is wrong with which file;
never another exception, and nothing it returns fails later for the type of a value."""

from __future__ import annotations

import copy
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FIXTURES, ROOT, volley
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volley.records import experiment, export, results, store
from volley.records.experiment import ExperimentError, Point
from volley.records.results import FORMAT_VERSION, BadInput, ResultError, misfit, strict_dumps
from volley.records.store import StoreError, SweepInfo, SweepRecord

# Every result a test or a document of the project reads: the current reader must read them.
COMMITTED_RESULTS = sorted(
    path
    for base in (ROOT / "bench" / "results", FIXTURES)
    for pattern in ("**/*.json", "**/*.jsonl")
    for path in base.glob(pattern)
)
EXPERIMENTS = sorted((ROOT / "bench").glob("*.toml"))

SAMPLE_LINES = (FIXTURES / "results-sample.jsonl").read_text().splitlines()
OPEN_LOOP_LINE = (ROOT / "bench/results/openloop/results.jsonl").read_text().splitlines()[0]
FAILED_LINE = strict_dumps(
    SweepRecord(
        Point("c-epoll", 4, 1, 1), 1, SweepInfo("t", "t.toml"), None, "no server", "2026-11-26"
    ).to_json()
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory for files that are not strict JSON on purpose, outside the one the suite
    checks for JSON that strict parsers refuse (conftest.py)."""
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def newest(line: str) -> dict[str, Any]:
    """A results line rewritten by this volley: every key of the newest format."""
    record = store.parse_line(line.encode(), "sample")
    return record.to_json()


# Seeds for the mutations: an old format, an open-loop one, the newest, and a failed point.
SEED_LINES = [SAMPLE_LINES[0], SAMPLE_LINES[-1], OPEN_LOOP_LINE, FAILED_LINE]
SEED_RECORDS = [json.loads(line) for line in SEED_LINES] + [newest(OPEN_LOOP_LINE)]
# What a hand edit, another program or a cut file may leave where a value was.
ODD_VALUES = [None, "x", "", [], {}, True, -1, 0, 10**30, math.nan, math.inf, [1, "a"], {"a": 1}]
BOUNDS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def paths_in(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value, the value itself first."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths_in(value, (*prefix, key))
    elif isinstance(data, list):
        for number, value in enumerate(data):
            yield from paths_in(value, (*prefix, number))


@st.composite
def mutated_records(draw: Callable[..., Any]) -> str:
    """A results line with one value replaced by an odd one, or its key deleted."""
    data = copy.deepcopy(draw(st.sampled_from(SEED_RECORDS)))
    place = draw(st.sampled_from(list(paths_in(data))[1:]))
    parent = data
    for step in place[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[place[-1]]
    else:
        parent[place[-1]] = draw(st.sampled_from(ODD_VALUES))
    return json.dumps(data)  # NaN and Infinity as the non-JSON words some programs write


def one_line_about(error: BadInput, path: Path) -> None:
    text = str(error)
    assert "\n" not in text and str(path) in text, text


def check_records(loaded: list[SweepRecord]) -> None:
    """What a loader returns is usable: every value of its type, and every export runs."""
    for record in loaded:
        assert misfit(record) is None
        strict_dumps(record.to_json())
    for exporter in (export.export_csv, export.export_dat, export.export_hlog):
        exporter(loaded)


def load_results_file(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "results.jsonl"
        path.write_bytes(text)
        try:
            loaded, notes = store.load(path)
        except StoreError as e:
            one_line_about(e, path)
            return
        check_records(loaded)
        assert all("\n" not in note for note in notes)


def load_result_file(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "a.json"
        path.write_bytes(text)
        try:
            result = results.read_result(path)
        except ResultError as e:
            one_line_about(e, path)
            return
        assert misfit(result) is None
        results.dumps(result)
        results.interval_log([("a", result)])


# --- every committed result file -----------------------------------------------------------


def test_every_committed_result_file_loads():
    assert COMMITTED_RESULTS, "no committed result files found"
    for path in COMMITTED_RESULTS:
        if path.suffix == ".jsonl":
            loaded, notes = store.load(path)
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            assert len(loaded) == len(lines) and notes == [], path
            check_records(loaded)
        else:
            assert misfit(results.read_result(path)) is None, path


def test_every_bundled_experiment_file_loads():
    assert EXPERIMENTS
    for path in EXPERIMENTS:
        found = experiment.parse(path.read_text(), path)
        assert found.points(), path


# --- random and damaged input (hypothesis) -------------------------------------------------


@BOUNDS
@given(st.binary(max_size=600))
def test_random_bytes_are_no_result_and_no_crash(raw):
    load_results_file(raw)
    load_result_file(raw)


@BOUNDS
@given(st.sampled_from(SEED_LINES), st.data())
def test_a_cut_file_is_one_line_error_or_note(line, data):
    text = "\n".join([line, line]) + "\n"
    cut = data.draw(st.integers(0, len(text)))
    load_results_file(text[:cut].encode())
    load_result_file(line[: data.draw(st.integers(0, len(line)))].encode())


@BOUNDS
@given(mutated_records())
def test_a_value_mutated_to_nan_null_or_another_type(line):
    load_results_file((line + "\n").encode())
    load_result_file(line.encode())


TOML_VALUES = [
    '"x"', "[]", "{}", "true", "-1", "0", "nan", "inf", '"0-3"', '"0,2"', '"1..99999999"',
    '[1, "a"]', "{ name = 3 }", '"1..4 step 0"', '["2..1"]', '"1e9"', "1979-05-27",
    '[{ name = "a", colour = 1 }]', '"../nowhere"',
]  # fmt: skip


@st.composite
def mutated_experiments(draw: Callable[..., Any]) -> bytes:
    """A bundled experiment file with one value replaced, a line cut, or a key added."""
    lines = draw(st.sampled_from(EXPERIMENTS)).read_text().splitlines()
    number = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["value", "cut", "key", "bytes"]))
    if how == "value" and "=" in lines[number]:
        key = lines[number].split("=", 1)[0]
        lines[number] = f"{key}= {draw(st.sampled_from(TOML_VALUES))}"
    elif how == "cut":
        lines[number] = lines[number][: draw(st.integers(0, len(lines[number])))]
    elif how == "key":
        lines.insert(number, f"{draw(st.sampled_from(['client', 'max_time', 'x']))} = 1")
    else:
        return "\n".join(lines).encode()[: number * 8] + draw(st.binary(max_size=40))
    return "\n".join(lines).encode()


@pytest.mark.real
@BOUNDS
@given(mutated_experiments())
def test_a_damaged_experiment_file_is_one_line_error(raw):
    with tempfile.TemporaryDirectory() as directory:
        # bench/*.toml find their servers in ../target/servers.
        (Path(directory) / "target" / "servers").mkdir(parents=True)
        path = Path(directory) / "bench" / "exp.toml"
        path.parent.mkdir()
        path.write_bytes(raw)
        try:
            found = experiment.load(path)
        except ExperimentError as e:
            one_line_about(e, path)
            return
        assert found.points() and all(p.clients >= 1 for p in found.points())
        assert all(p.server_cores >= 1 and p.client_cores >= 1 for p in found.points())


# --- the messages --------------------------------------------------------------------------


def test_a_line_cut_inside_the_file_is_an_error_naming_its_line(scratch):
    path = scratch / "results.jsonl"
    path.write_text(f"{SAMPLE_LINES[0]}\n{SAMPLE_LINES[1][:80]}\n{SAMPLE_LINES[2]}\n")
    with pytest.raises(StoreError, match=rf"^{path}:2: not JSON \("):
        store.load(path)


def test_only_a_last_line_cut_short_is_passed_over_with_a_note(scratch):
    path = scratch / "results.jsonl"
    path.write_text(f"{SAMPLE_LINES[0]}\n{SAMPLE_LINES[1][:80]}")
    loaded, notes = store.load(path)
    assert len(loaded) == 1 and notes == [
        f"{path}:2: an incomplete last line (not yet written?); ignored"
    ]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["latency_ns"].update(mean="fast"), 'latency_ns.mean is "fast", not a number'),
        (lambda d: d.update(n=None), "n is null, not a whole number"),
        (lambda d: d.update(clients=2.5), "clients is 2.5, not a whole number"),
        (lambda d: d.update(server_args="-t 4"), 'server_args is "-t 4", not a list'),
        (lambda d: d.update(elapsed_s=math.inf), "Infinity is not JSON"),
        (lambda d: d.update(measured_s=math.nan), "NaN is not JSON"),
        (lambda d: d.pop("host"), "no 'host': not a volley-bench result"),
        (
            lambda d: d.update(version=FORMAT_VERSION + 1),
            f"version {FORMAT_VERSION + 1} is not one this volley reads "
            f"(up to {FORMAT_VERSION}); upgrade",
        ),
        (lambda d: d.update(version="4"), "version '4' is not one volley wrote"),
        (lambda d: d.update(status="great"), 'status is "great", not one of significant'),
        (lambda d: d.clear(), "no format version: not a volley-bench result"),
    ],
)
def test_a_value_at_fault_is_named(scratch, change, words):
    data = json.loads(SAMPLE_LINES[0])
    change(data)
    path = scratch / "a.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultError) as caught:
        results.read_result(path)
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value)
    lines = scratch / "results.jsonl"
    lines.write_text(json.dumps(data | {"point": data.get("point", {})}) + "\n")
    with pytest.raises(StoreError, match=rf"^{lines}:1: "):
        store.load(lines)


def test_a_point_of_the_wrong_type_is_named(scratch):
    data = json.loads(SAMPLE_LINES[0])
    data["point"]["rate_ops_s"] = 12345.5
    path = scratch / "results.jsonl"
    path.write_text(json.dumps(data).replace("12345.5", "1e400") + "\n")  # read as infinity
    with pytest.raises(StoreError, match="point.rate_ops_s is Infinity, not a finite number"):
        store.load(path)


EXPERIMENT = 'servers = ["a"]\nclients = 1\nserver-cpus = 1\nclient-cpus = 1\n'


NOT_A_KEY = "is not a key this file may have"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("client = 4\n" + EXPERIMENT, 1, f"client {NOT_A_KEY}; did you mean clients?"),
        (
            EXPERIMENT + "precison = '1%'\n",
            5,
            f"precison {NOT_A_KEY}; did you mean [bench] precision?",
        ),
        (
            EXPERIMENT + "max_time = '3s'\n",
            5,
            f"max_time {NOT_A_KEY}; volley-bench options go under [bench]",
        ),
        (EXPERIMENT + "[bnech]\nx = 1\n", 5, f"bnech {NOT_A_KEY}; did you mean bench?"),
        (
            EXPERIMENT.replace("server-cpus = 1", 'server-cpus = "0-3"'),
            3,
            "server-cpus has '0-3', a CPU list; server-cpus is a count of CPUs that Volley "
            'places: write a count (4), counts [1, 2, 4] or a range of counts ("1..4"), or '
            'give the CPUs themselves as server-cores = "0-3"',
        ),
        (
            EXPERIMENT.replace("client-cpus = 1", 'client-cpus = ["0,2"]'),
            4,
            "client-cpus has '0,2', a CPU list",
        ),
        (  # an older file, where server-cores was a count
            EXPERIMENT.replace("server-cpus = 1", "server-cores = 2"),
            3,
            'server-cores is a CPU list like "0-3" (as --server-cores takes), not 2; '
            "for a count of CPUs write server-cpus = 2",
        ),
        (
            EXPERIMENT.replace("client-cpus = 1", 'client-cores = [1, 2, "4..8"]'),
            4,
            'client-cores is a CPU list like "0-3" (as --cores takes), not [1, 2, "4..8"]; '
            'for a count of CPUs write client-cpus = [1, 2, "4..8"]',
        ),
        (
            EXPERIMENT.replace("server-cpus = 1", 'server-cores = ["0-1", "1..4"]'),
            3,
            'server-cores is a CPU list like "0-3" (as --server-cores takes), not '
            '"1..4"; for a count of CPUs write server-cpus = "1..4"',
        ),
        (
            EXPERIMENT.replace("server-cpus = 1", 'server-cores = "0-x"'),
            3,
            "server-cores has '0-x': bad CPU list '0-x': '0-x' is not N or N-M",
        ),
        (
            EXPERIMENT + 'server-cores = "0-1"\n',
            3,
            'server-cpus and server-cores are both given; give server-cores, a CPU list like "0-3"'
            " used as given, or server-cpus, a count of CPUs Volley places, not both",
        ),
        (
            EXPERIMENT.replace("clients = 1", 'clients = "1..100000"'),
            2,
            "clients has the range '1..100000', more than 10000 counts",
        ),
    ],
)
def test_experiment_errors_name_the_key_and_its_line(scratch, text, line, words):
    path = scratch / "exp.toml"
    (scratch / "target" / "servers").mkdir(parents=True)
    path.write_text('servers-dir = "target/servers"\n' + text)
    with pytest.raises(ExperimentError) as caught:
        experiment.load(path)
    # The servers-dir line comes first: the line named is one further down.
    assert str(caught.value).startswith(f"{path}:{line + 1}: {words}"), str(caught.value)


def test_a_cpu_count_written_as_a_string_is_a_count_and_a_cpu_list_names_cpus():
    found = experiment.parse(EXPERIMENT.replace("server-cpus = 1", 'server-cpus = "4"'), Path("e"))
    assert found.server_cpus == (4,)
    assert found.points()[0].server_cpu_list is None
    text = EXPERIMENT.replace("server-cpus = 1", 'server-cores = "4"')
    listed = experiment.parse(text, Path("e"))
    assert listed.server_cpus == ("4",)  # CPU 4, as --server-cores 4 means
    assert listed.points()[0] == experiment.Point("a", 1, 1, 1, None, "4")


def test_a_servers_dir_that_does_not_exist_is_named(scratch):
    path = scratch / "exp.toml"
    path.write_text('name = "x"\nservers-dir = "nowhere"\n' + EXPERIMENT)
    with pytest.raises(
        ExperimentError, match=rf"^{path}:2: servers-dir is .*nowhere, which is not"
    ):
        experiment.load(path)
    # A server given by its path needs no servers directory.
    path.write_text(EXPERIMENT.replace('"a"', '"./a"'))
    assert experiment.load(path).servers[0].path == str(scratch / "a")


# --- the commands: one line, exit status 2 -------------------------------------------------

BAD_FILES: dict[str, bytes] = {
    "not-utf8.json": b"\xff\xfe{}",
    "not-json.json": b"{not json",
    "empty-object.json": b"{}",
    "nan.json": SAMPLE_LINES[0].replace('"elapsed_s":', '"elapsed_s":NaN,"x":').encode(),
    "newer.json": json.dumps(json.loads(SAMPLE_LINES[0]) | {"version": 99}).encode(),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_compare_of_a_bad_result_file_is_one_line_and_exit_2(scratch, name):
    good, bad = scratch / "good.json", scratch / name
    good.write_text(SAMPLE_LINES[0])
    bad.write_bytes(BAD_FILES[name])
    done = volley("compare", good, bad)
    assert done.status == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith(f"volley: error: {bad}") and done.stderr.count("\n") == 1


def test_plot_and_resume_of_a_bad_results_file_are_one_line_and_exit_2(scratch):
    out = scratch / "out"
    out.mkdir()
    (out / "results.jsonl").write_text(f"{SAMPLE_LINES[0]}\n{{}}\n")
    (scratch / "target" / "servers").mkdir(parents=True)
    exp = scratch / "exp.toml"
    exp.write_text('servers-dir = "target/servers"\n' + EXPERIMENT)
    for args in (["plot", out / "results.jsonl"], ["sweep", exp, "-o", out, "--resume"]):
        done = volley(*args)
        assert done.status == 2, done.stderr
        assert f"{out / 'results.jsonl'}:2: not a sweep record" in done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_history_show_passes_over_damaged_files(scratch):
    place = scratch / "sittings"
    place.mkdir()
    (place / "a.jsonl").write_bytes(b"\xff\n")
    (place / "b.jsonl").write_text('{"key": {"server_args": 3}}\n')
    (place / "c.jsonl").write_text(
        '{"key": {}, "started_at": 1, "values": [], "within_variances": 2}\n'
    )
    done = volley("history", "show", "--history", place)
    assert done.status == 0 and "Traceback" not in done.stderr, done.stderr

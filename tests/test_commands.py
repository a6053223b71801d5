"""What every command of ``volley`` shares: --json PATH or -, values named in the help, and
shell completion for both commands."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import typer
from helpers import FAULTY, ROOT, check, strict_loads, volley
from test_compare import pair, write

from volley.cli import app as commands


def run_as(program: str, entry: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run an entry point as the installed script ``program`` would (its name in argv[0])."""
    code = f"import sys; sys.argv = {[program, *args]!r}; from volley.{entry}()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        check=True,
    )
    return done.stdout


# --- --json PATH and - ---------------------------------------------------------------------


@pytest.mark.real
def test_check_json_dash_is_stdout_and_the_words_go_to_stderr(tmp_path):
    dashed = check("--only", "basic", "--json", "-", FAULTY)
    assert dashed.status == 0, dashed.stderr
    report = strict_loads(dashed.stdout)  # nothing but the JSON on stdout
    assert [k for k in keys(report) if not snake_case(k)] == []
    assert report["passed"] == 1 and dashed.stderr.splitlines()[-1] == "1/1 checks passed"
    out = tmp_path / "check.json"
    to_file = check("--only", "basic", "--json", out, FAULTY)
    assert to_file.status == 0 and to_file.stdout.splitlines()[-1] == "1/1 checks passed"
    names = [c["name"] for c in strict_loads(out.read_text())["checks"]]
    assert names == [c["name"] for c in report["checks"]] == ["basic"]


@pytest.mark.real
def test_a_json_path_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "out.json"
    for command in (["check", "--only", "basic", FAULTY], ["bench", FAULTY]):
        done = volley(*command, "--json", missing)
        assert done.status == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"directory {missing.parent} does not exist" in lines[0]


def keys(value: Any) -> set[str]:
    """Every key of a JSON document, however deep."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def snake_case(key: str) -> bool:
    return key.isidentifier() and key == key.lower()


def test_compare_json_is_stdout_only_with_snake_case_keys(tmp_path):
    a, b = pair(3)
    files = write(tmp_path / "a.json", a), write(tmp_path / "b.json", b)
    done = volley("compare", "--json", "-", *files)
    assert done.status == 0
    data = strict_loads(done.stdout)  # nothing but the JSON on stdout
    assert "a.json" in done.stderr  # the table went to stderr
    assert data["pairings"] and [k for k in keys(data) if not snake_case(k)] == []


# --- help -----------------------------------------------------------------------------------


def leaf_commands(group: Any, prefix: str = "") -> dict[str, Any]:
    """Every command under ``group`` by its words (typer may bundle its own click: by shape)."""
    found = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found |= leaf_commands(command, f"{prefix}{name} ")
        else:
            found[f"{prefix}{name}"] = command
    return found


def test_every_option_of_volleys_commands_names_the_kind_of_value_it_takes():
    group = typer.main.get_command(commands.app)
    unnamed = [
        f"volley {name} {param.opts[0]}"
        for name, command in leaf_commands(group).items()
        if name != "bench"  # volley-bench's own options are cli.py's
        for param in command.params
        if param.param_type_name == "option"
        and not param.is_flag
        and param.name not in commands.RUN_OPTIONS  # volley-bench's, shared by compare --run
        # A kind (DURATION, COUNT, HOST:PORT) or the values themselves (csv|dat|hlog).
        and not ((param.metavar or "").isupper() or "|" in (param.metavar or ""))
    ]
    assert unnamed == []
    compare_command = leaf_commands(group)["compare"]
    compare = compare_command.get_help(compare_command.context_class(compare_command))
    assert "--max-time DURATION" in compare and "--confidence LEVEL" in compare


# --- shell completion ------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize(
    ("program", "entry", "variable", "words", "offered"),
    [
        ("volley", "cli.app import main; main", "_VOLLEY_COMPLETE", "volley comp", "compare"),
        (
            "volley",
            "cli.app import main; main",
            "_VOLLEY_COMPLETE",
            "volley compare --idle",
            "--idle-states",
        ),
        (
            "volley-bench",
            "cli.bench import bench_main; bench_main",
            "_VOLLEY_BENCH_COMPLETE",
            "volley-bench --server-c",
            "--server-cores",
        ),
    ],
)
def test_both_commands_complete_in_bash(program, entry, variable, words, offered):
    # Named, not detected: typer detects the shell from the process tree, which under
    # make (CI) is sh, for which it has no completion.
    named = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = run_as(program, entry, "--show-completion", "bash", env=named)
    assert f"{variable}=complete_bash" in script and f" {program}" in script
    cword = str(len(words.split()) - 1)
    env = {variable: "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
    assert run_as(program, entry, env=env).split() == [offered]


def test_compare_json_to_a_file_keeps_the_table_on_stdout(tmp_path):
    a, b = pair(3)
    files = write(tmp_path / "a.json", a), write(tmp_path / "b.json", b)
    out = tmp_path / "comparison.json"
    done = volley("compare", "--json", out, *files)
    assert done.status == 0, done.stderr
    assert strict_loads(out.read_text())["pairings"] and "a.json" in done.stdout
    unwritable = volley("compare", "--json", tmp_path / "no" / "c.json", *files)
    assert unwritable.status == 2 and len(unwritable.stderr.splitlines()) == 1

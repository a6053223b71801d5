"""The command lines themselves, through typer's CliRunner (no sockets, no processes)."""

from __future__ import annotations

import sys

import typer
from typer.testing import CliRunner

from volley import __version__
from volley.cli.app import app
from volley.cli.bench import bench


def volley_bench() -> typer.Typer:
    single = typer.Typer(add_completion=False)
    single.command()(bench)
    return single


def test_both_commands_print_their_version():
    for command, args in ((app, ["--version"]), (volley_bench(), ["--version"])):
        done = CliRunner().invoke(command, args)
        assert done.exit_code == 0 and done.output.strip() == f"volley {__version__}"


def test_a_duration_without_a_unit_is_one_line_and_exit_2():
    done = CliRunner().invoke(volley_bench(), ["--warmup", "3", sys.executable])
    assert done.exit_code == 2
    assert done.output.strip().endswith("error: --warmup '3' needs a unit: say 3s")
    assert len(done.output.strip().splitlines()) == 1

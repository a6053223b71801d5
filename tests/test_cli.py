"""The command lines themselves, through typer's CliRunner (no sockets, no processes)."""

from __future__ import annotations

import sys

import pytest
import typer
from typer.testing import CliRunner

from volley import __version__
from volley.cli.app import app
from volley.cli.bench import SETTINGS, bench, exit_status
from volley.records import results


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


def plain_volley_bench() -> typer.Typer:
    """volley-bench as installed: plain help, no rich boxes."""
    single = typer.Typer(add_completion=False, rich_markup_mode=None, context_settings=SETTINGS)
    single.command()(bench)
    return single


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--runs", "0"], "--runs 0 must be at least 2 (an interval needs two runs)"),
        (["--duration", "10"], "--duration '10' needs a unit: say 10s"),
        (["--duration", "0s"], "--duration '0s' must be more than zero"),
        (["--runs", "5", "--duration", "3s"], "give either --runs COUNT or --duration"),
        (["--runs", "5", "--max-time", "3s"], "--runs fixes how long the measurement is"),
        (["--duration", "5s", "--max-time", "3s"], "--duration fixes how long"),
    ],
)
def test_bad_fixed_sizes_are_one_line_and_exit_2(args, error):
    done = CliRunner().invoke(volley_bench(), [*args, sys.executable])
    assert done.exit_code == 2, done.output
    assert len(done.output.strip().splitlines()) == 1 and error in done.output


def test_a_measurement_that_completed_exits_0_whatever_its_precision_unless_required():
    assert exit_status(results.NOT_SIGNIFICANT, require_precision=False) == 0
    assert exit_status(results.NOT_SIGNIFICANT, require_precision=True) == 3
    for required in (False, True):
        assert exit_status(results.SIGNIFICANT, required) == 0
        assert exit_status(results.FAILED, required) == 1
        assert exit_status(results.INTERRUPTED, required) == 130


def test_the_help_names_each_options_kind_of_value_and_the_exit_statuses():
    done = CliRunner().invoke(plain_volley_bench(), ["--help"], terminal_width=200)
    assert done.exit_code == 0
    text = " ".join(done.output.split())
    for option in (
        "--cores CPUS",
        "--server-cores CPUS",
        "--clients COUNT",
        "--precision TARGET",
        "--max-time DURATION",
        "--runs COUNT",
        "--duration DURATION",
        "--warmup DURATION",
        "--min-runs COUNT",
        "--rate RATE",
        "--json PATH",
        "--history DIR",
        "--require-precision",
    ):
        assert option in text, option
    assert "3 a target not met, with --require-precision only" in text

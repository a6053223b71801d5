"""The command lines themselves, through typer's CliRunner (no sockets, no processes)."""

from __future__ import annotations

import signal
import sys

import pytest
import typer
from typer.testing import CliRunner

from volley import __version__
from volley.cli.app import app
from volley.cli.app import main as app_main
from volley.cli.bench import SETTINGS, bench, bench_main, exit_status
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


# --- every command: its help, one bad input, no traceback ---------------------------------

COMMANDS = [
    ["bench"],
    ["compare"],
    ["sweep"],
    ["plot"],
    ["check"],
    ["system"],
    ["plan"],
    ["history"],
    ["history", "path"],
    ["history", "show"],
    ["history", "clear"],
]


def long_options(path: list[str]) -> list[str]:
    """The long option names ``volley PATH`` declares, from the command itself."""
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return [o for p in command.params for o in p.opts if o.startswith("--")]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_commands_help_exits_0_and_names_its_options(path):
    done = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"Usage: root {' '.join(path)}")
    for option in long_options(path):
        assert option in done.output, option
    if path == ["history"]:
        assert all(name in done.output for name in ("path", "show", "clear"))


def test_volley_bench_help_names_every_option_volley_bench_declares():
    done = CliRunner().invoke(plain_volley_bench(), ["--help"], terminal_width=200)
    assert done.exit_code == 0
    assert long_options(["bench"]) and all(o in done.output for o in long_options(["bench"]))


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["bench", "--warmup", "3", sys.executable], "--warmup '3' needs a unit: say 3s"),
        (["compare", "--json", "-", "--markdown", "a", "b"], "give --json or --markdown, not both"),
        (
            ["sweep", "/no/such/experiment.toml"],
            "cannot read experiment file /no/such/experiment.toml",
        ),
        (["plot", "/no/such/results"], "directory /no/such does not exist"),
        (["check", "/no/such/server"], "'/no/such/server' does not exist; build it first"),
        (["plan", "--clients", "0", sys.executable], "--clients 0 must be at least 1"),
        (["history", "path", "--history", "off"], "the history is off"),
        (["history", "show", "--history", "off"], "the history is off"),
        (["history", "clear", "--history", "off"], "the history is off"),
    ],
    ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else None,
)
def test_bad_input_to_each_command_is_one_line_on_stderr_and_exit_2(args, error):
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, done.output
    assert done.stdout == "" and "Traceback" not in done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and error in lines[0], lines


@pytest.fixture
def entry_point(monkeypatch: pytest.MonkeyPatch):
    """Run an installed entry point in this process, as ``PROGRAM ARGS`` would, keeping the
    signal handlers it installs to itself."""
    saved = signal.getsignal(signal.SIGHUP)

    def run(main, program: str, *args: str) -> int:
        monkeypatch.setattr(sys, "argv", [program, *args])
        with pytest.raises(SystemExit) as exited:
            main()
        return int(exited.value.code or 0)

    yield run
    signal.signal(signal.SIGHUP, saved)


@pytest.mark.parametrize(
    ("program", "args", "said"),
    [
        ("volley", ["system", "--bogus"], "No such option: --bogus (see volley --help)"),
        ("volley", ["history", "nope"], "No such command 'nope'. (see volley --help)"),
        ("volley", ["nope"], "No such command 'nope'."),
        ("volley-bench", ["--bogus", sys.executable], "No such option: --bogus"),
        ("volley-bench", [], "missing SERVER: give a server binary"),
    ],
)
def test_usage_errors_of_the_entry_points_are_one_line_and_exit_2(
    entry_point, capsys, program, args, said
):
    main = bench_main if program == "volley-bench" else app_main
    assert entry_point(main, program, *args) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, err
    assert lines[0].startswith(f"{program}: error: ") and said in lines[0]

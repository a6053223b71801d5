"""The ``volley`` command: its subcommands (bench, sweep, plot, check, compare, system).
Each parses its options, calls the library and picks the exit status the way volley-bench
does (``volley.cli.bench``), and imports what it needs only when it runs.
"""

from __future__ import annotations

import inspect
import shlex
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from volley.cli.bench import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    SETTINGS,
    BenchOptions,
    bench,
    check_json_path,
    fail,
    make_config,
    program,
    run,
    say,
    target_of,
    version_callback,
    warn_before,
)
from volley.engine import coordinator, play, server
from volley.measure import session
from volley.numbers import sequential
from volley.numbers.units import (
    BadInput,
    SweepOrder,
    format_duration,
    format_ns,
    parse_confidence,
    parse_duration_s,
    parse_target,
)
from volley.present import tables
from volley.present.report import comparison_markdown, comparison_table
from volley.records import results
from volley.system import cpus, topology

if TYPE_CHECKING:  # the commands import what they use when they run
    from volley.records.experiment import Experiment
    from volley.studies.compare import Monitor
    from volley.studies.sweep import Plan

F = TypeVar("F", bound=Callable[..., None])
RUN_MAX_TIME = "300s"


def sweep_command(
    experiment_path: Annotated[
        Path,
        typer.Argument(
            metavar="EXPERIMENT",
            help="Experiment file (TOML): servers, clients, server-cpus and client-cpus "
            "(counts) or server-cores and client-cores (CPU lists), and [bench] options; "
            "see bench/local.toml.",
        ),
    ],
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="DIR",
            help="Where results.jsonl and the exports go. Default: out/<EXPERIMENT's name>.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue DIR/results.jsonl: run only the points it lacks.",
        ),
    ] = False,
    export: Annotated[
        list[str] | None,
        typer.Option(
            "--export",
            metavar="csv|dat|hlog",
            help="Also write DIR/results.csv (csv), the seed's DIR/plot.dat (dat) or "
            "HdrHistogram's interval log DIR/results.hlog (hlog); repeatable.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print what would run (the points by CPUs, the longest it may take) and "
            "what is skipped and why; run nothing.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    topology_file: Annotated[
        str | None,
        typer.Option(
            "--topology",
            metavar="FILE",
            help="Place counts of CPUs as if this machine were the one whose lscpu "
            "-p=CPU,CORE,SOCKET,NODE output this is (passed on to volley-bench); with "
            "--dry-run, plan for that machine (all its CPUs usable). Default: this machine.",
        ),
    ] = None,
) -> None:
    """Run volley-bench for every point of an experiment's grid, one JSON line per point.

    Exit status: 0 every point that fits this machine is recorded (each point's own status
    is in the results), 1 the results could not be written, 2 bad input, 130 interrupted
    (--resume continues).
    """
    from volley.present.progress import QuietSweep, SweepLines
    from volley.records import experiment as experiments
    from volley.records import export as exports
    from volley.records import store
    from volley.studies import passes
    from volley.studies import sweep as sweeps

    try:
        experiment = experiments.load(experiment_path)
        formats = exports.check_exports(export or [])
        usable, placed_by, differs = _sweep_machine(topology_file, dry_run)
        if dry_run:
            the_plan = sweeps.plan(experiment, usable, set(), placed_by, topology_file)
            say("\n".join(sweeps.dry_run_lines(the_plan, experiment)))
            raise typer.Exit(0)
        out = out_dir if out_dir is not None else Path("out") / experiment_path.stem
        results_path, done, notes = sweeps.open_results(out, experiment, resume)
    except (experiments.ExperimentError, sweeps.SweepError, ValueError) as e:
        fail(str(e), EXIT_USAGE)
    the_plan = sweeps.plan(experiment, usable, done, placed_by, topology_file)
    warnings = [f"warning: {warning}" for warning in differs]
    for line in [*warnings, *notes, *sweeps.skip_lines(the_plan, experiment)]:
        say(line, sys.stderr)
    if not the_plan.total:
        fail(
            f"nothing to run in {experiment_path}: no point fits this machine with a built server",
            EXIT_USAGE,
        )
    progress = QuietSweep() if quiet else SweepLines()
    if not quiet:
        _say_sweep_start(experiment, the_plan, results_path)
    try:
        play = (
            passes.run_in_passes
            if experiment.order == SweepOrder.IN_PASSES
            else sweeps.run_sequential
        )
        outcome = play(experiment, results_path, the_plan, sweeps.ProcessRunner(), progress)
        written = exports.export(results_path, formats)
        records, _ = store.load(results_path) if results_path.exists() else ([], [])
        records = sweeps.of_plan(records, the_plan)
    except OSError as e:
        fail(f"cannot write the results: {e}", EXIT_FAILED)
    say(f"{results_path}: {len(records)} of {the_plan.total} points ({store.totals(records)})")
    for path in written:
        say(f"wrote {path}")
    if outcome.interrupted:
        fail("interrupted; add --resume to run the remaining points", EXIT_INTERRUPTED)


def _sweep_machine(
    topology_file: str | None, dry_run: bool
) -> tuple[list[int], topology.Topology | None, tuple[str, ...]]:
    """The CPUs a sweep may use, the topology it places counts on, and why that topology
    is not this machine's. A dry run with --topology plans for that machine, as volley plan
    does; a sweep places on it as volley-bench --topology does (this process's CPUs)."""
    if dry_run and topology_file:
        found = topology.load(topology_file)
        return found.cpus, found, ()
    placed_by, differs = topology.for_placement(topology_file)
    return cpus.usable_cpus(), placed_by, differs


def _say_sweep_start(experiment: Experiment, the_plan: Plan, results_path: Path) -> None:
    """What a sweep is about to run, and the longest it may take."""
    from volley.studies import sweep as sweeps

    bound = format_duration(sweeps.estimate_s(experiment, len(the_plan.todo)))
    say(
        f"sweep {experiment.name}: {len(the_plan.todo)} points to run"
        + (f" ({len(the_plan.done)} already done)" if the_plan.done else "")
        + f", up to about {bound}; results in {results_path}",
        sys.stderr,
    )


def plot_command(
    results_path: Annotated[
        Path,
        typer.Argument(
            metavar="RESULTS",
            help="A sweep's results.jsonl (volley sweep -o DIR).",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="perf.png or perf.svg; perf-latency.* and perf-distribution.* go beside it. "
            "Default: perf.png beside RESULTS.",
        ),
    ] = None,
    servers: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            metavar="NAME",
            help="Plot only this server; repeatable.",
        ),
    ] = None,
    clients: Annotated[
        list[int] | None,
        typer.Option(
            "--clients",
            metavar="COUNT",
            help="Plot only this client count; repeatable.",
        ),
    ] = None,
    cores: Annotated[
        int | None,
        typer.Option(
            "--cores",
            metavar="COUNT",
            help="Server core count of the points in the distribution figure. "
            "Default: the largest measured.",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            metavar="NAME",
            help="Also draw perf-relative.*: each server's latency over this server's at "
            "the same point, with intervals for the ratios.",
        ),
    ] = None,
) -> None:
    """Draw the throughput, latency and latency-distribution figures of a sweep."""
    from volley.present import figures, relative
    from volley.present import plot as plots

    target = output if output is not None else results_path.parent / "perf.png"
    try:
        # The relative figure first: a --baseline not in the sweep fails before any drawing.
        extra = (
            [relative.plot_relative(results_path, target, baseline, servers, clients)]
            if baseline
            else []
        )
        written, notes = figures.plot(results_path, target, servers or None, clients or None, cores)
        written += extra
    except plots.MissingMatplotlib as e:
        fail(str(e), EXIT_FAILED)
    except (plots.PlotError, OSError) as e:
        fail(str(e), EXIT_USAGE)
    for note in notes:
        say(f"note: {note}", sys.stderr)
    for path in written:
        say(f"wrote {path}")


def check_command(
    server_path: Annotated[
        str | None,
        typer.Argument(
            metavar="SERVER",
            help="Server binary to check; started with -p PORT (not with --connect).",
        ),
    ] = None,
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[-- ARGS...]",
            help="Extra server arguments.",
        ),
    ] = None,
    connect: Annotated[
        str | None,
        typer.Option(
            "--connect",
            metavar="HOST:PORT",
            help="Check a server that is already running, with the checks that do not end it.",
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="NAME",
            help="Run only these checks (repeat, or comma-separate).",
        ),
    ] = None,
    list_checks: Annotated[bool, typer.Option("--list", help="List the checks and exit.")] = False,
    startup_timeout: Annotated[
        str,
        typer.Option(
            "--startup-timeout",
            metavar="DURATION",
            help="How long the server may take to start listening.",
        ),
    ] = "10s",
    json_path: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="PATH",
            help="Write the results as JSON (- for stdout).",
        ),
    ] = None,
) -> None:
    """Check that a server keeps the contract for servers (docs/development.md,
    "Contributing a server").

    Exit status: 0 every check passed, 1 a check failed, 2 bad input, 130 interrupted.
    """
    from volley.studies import check as checks
    from volley.studies import probe
    from volley.system import topology

    if list_checks:
        say(checks.listing())
        raise typer.Exit(0)
    try:
        server_path, address = target_of(server_path, connect)
        if address and args:
            raise BadInput("server arguments need SERVER; a server at --connect is already running")
        path = server.resolve(server_path) if server_path else None
        chosen = checks.select(only, connect=address is not None)
        timeout_s = parse_duration_s(startup_timeout, "--startup-timeout")
        # Where volley-bench would put the server: its own physical cores.
        server_cpus = cpus.place(None, None, None, topology.for_placement(None)[0]).server_cpus
        check_json_path(json_path)
    except (BadInput, ValueError, cpus.CpuError, server.ServerError, OSError) as e:
        fail(str(e), EXIT_USAGE)
    human = sys.stderr if json_path == "-" else sys.stdout
    formatter = checks.Formatter(chosen, table=human.isatty())

    def show(lines: list[str]) -> None:
        for line in lines:
            say(line, human)

    show(formatter.header())
    try:
        target = probe.Target(path, args or [], server_cpus, timeout_s, address)
        run = checks.run(chosen, target, on_result=lambda result: show(formatter.result(result)))
    except KeyboardInterrupt:
        fail("interrupted; the server was stopped", EXIT_INTERRUPTED)
    # The report first: printing can fail (a closed pipe) and must not lose it.
    unwritten = write_json(json_path, checks.dumps(run))
    show(formatter.summary(run))
    if unwritten:
        fail(unwritten, EXIT_FAILED)
    raise typer.Exit(0 if run.all_passed else EXIT_FAILED)


def write_json(json_path: str | None, text: str) -> str | None:
    """--json as volley-bench has it: ``-`` is stdout (the words then go to stderr), a PATH
    is written atomically; why it could not be, or None."""
    if json_path == "-":
        say(text, sys.stdout, end="")
    elif json_path:
        try:
            results.write_atomically(Path(json_path), text)
        except OSError as e:
            return f"cannot write {json_path}: {e.strerror or e}"
    return None


def server_command(text: str) -> tuple[str, list[str]]:
    """A --run side: ``"SERVER"`` or ``"SERVER ARGS..."`` in one word, split as a shell
    would; a path that exists is taken whole, spaces and all."""
    if Path(text).exists():
        return text, []
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise BadInput(f"server {text!r}: {e}; quote it as one word, like 'go -t 4'") from None
    if not words:
        raise BadInput("an empty server: give a server binary, like target/servers/c-epoll")
    return words[0], words[1:]


# The options of volley-bench that say what every side of ``compare --run`` measures, with
# volley-bench's own definitions (names, help, defaults): its --confidence and --max-time
# are the comparison's own, its stop is the sequential plan's (no --precision), and each
# side is started here (no --connect, no history: a paired comparison is one sitting).
RUN_OPTIONS = (
    "cores",
    "server_cores",
    "clients",
    "warmup",
    "run_time",
    "min_runs",
    "restart",
    "noisy",
    "op_timeout",
    "startup_timeout",
    "idle_states",
    "port",
    "server_address",
    "rate",
    "arrivals",
    "spin",
)


def run_defaults() -> dict[str, Any]:
    """Each of RUN_OPTIONS' default, as volley-bench defines it."""
    parameters = inspect.signature(bench).parameters
    return {name: parameters[name].default.default for name in RUN_OPTIONS}


def with_bench_options(command: F) -> F:
    """``command`` with volley-bench's RUN_OPTIONS as well (passed in its ``**measured``)."""
    bench_parameters = inspect.signature(bench, eval_str=True).parameters
    own = inspect.signature(command, eval_str=True)
    parameters = [p for p in own.parameters.values() if p.kind != p.VAR_KEYWORD]
    parameters += [bench_parameters[name] for name in RUN_OPTIONS]
    setattr(command, "__signature__", own.replace(parameters=parameters))  # noqa: B010
    return command


@with_bench_options
def compare_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="RESULT",
            help="A B [C ...]: volley-bench --json results, or sweeps (DIR or DIR/results.jsonl); "
            "the first is the baseline.",
        ),
    ],
    confidence: Annotated[
        str,
        typer.Option(
            "--confidence",
            metavar="LEVEL",
            help="Family confidence of a comparison's verdicts: the chance of any false "
            "faster/slower among its rows is at most 1 - this, half of it the mean's, an "
            "eighth each percentile's (Bonferroni); each row's interval is at its own level.",
        ),
    ] = "0.95",
    fail_if_slower: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-if-slower",
            metavar="[STAT:]SHARE",
            help="Exit 1 when B's verdict on the statistic is slower (at its own level under "
            "--confidence's family rule) and its point estimate is slower by more than SHARE "
            "(2% for the mean, p99:5% for a percentile); repeatable. Between identical "
            "servers it trips at most as often as that row's share of the error.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Compare results whose configurations differ; say how."),
    ] = False,
    json_path: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="PATH",
            help="Write the comparison as JSON to PATH (- for stdout; the table then goes to "
            "stderr).",
        ),
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print Markdown tables (for a pull request).")
    ] = False,
    run: Annotated[
        bool,
        typer.Option(
            "--run",
            help="A B [C ...] are servers: measure them now, one run of each per round in a "
            "fresh random order, looking at the rounds a few times (a group-sequential plan "
            "that spends the error over its looks) until each mean's difference from A is "
            "resolved.",
        ),
    ] = False,
    equivalence: Annotated[
        str,
        typer.Option(
            "--equivalence",
            metavar="SHARE",
            help="With --run: also stop, 'equivalent', when the mean's difference is known "
            "to be within this share of A's mean.",
        ),
    ] = "1%",
    output: Annotated[
        Path,
        typer.Option("-o", "--output", metavar="DIR", help="With --run: where the results go."),
    ] = Path("out/compare"),
    max_time: Annotated[
        str,
        typer.Option(
            "--max-time",
            metavar="DURATION",
            help="With --run: end the comparison, unresolved (exit 3), after this long.",
        ),
    ] = RUN_MAX_TIME,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="With --run: no progress.")] = False,
    **measured: Any,
) -> None:
    """Compare results with the first: is each faster, slower, or not significantly different?

    With --run, A B [C ...] are servers measured now in interleaved runs and compared round
    by round (robust to a machine that drifts during the comparison); every result is
    written to DIR. A server with arguments is one quoted word: "target/servers/go -t 4".
    The options from --cores on are volley-bench's, for what every side measures.

    Exit status: 0 compared, 1 a --fail-if-slower gate tripped (or a --run failed), 2 bad
    input, 3 --run ended unresolved (its last look, or --max-time), 130 interrupted.
    """
    from volley.studies import compare

    status = 0
    try:
        if json_path and markdown:
            raise BadInput("give --json or --markdown, not both")
        check_json_path(json_path)
        gates = [compare.parse_gate(text) for text in fail_if_slower or []]
        level = parse_confidence(confidence)
        if not run:
            given = [name for name, value in run_defaults().items() if measured[name] != value]
            if given or max_time != RUN_MAX_TIME:
                option = "--" + (given or ["max_time"])[0].replace("_", "-")
                raise BadInput(f"{option} measures servers: give --run and servers A B")
        if run:
            measured["max_time"] = max_time
            paths, status = _compare_run_by_run(paths, level, equivalence, output, measured, quiet)
        report = compare.compare_files(paths, level, force, gates, rounds=run)
    except (BadInput, cpus.CpuError, server.ServerError, OSError) as e:
        # Runs that failed are refused as inputs; the runs' failure, not the input, is why.
        fail(str(e), EXIT_FAILED if run and status == EXIT_FAILED else EXIT_USAGE)
    for note in report.notes:
        say(f"note: {note}", sys.stderr)
    human = sys.stderr if json_path == "-" else sys.stdout
    human.write(
        comparison_markdown(report)
        if markdown
        else comparison_table(report, tables.console_for(human))
    )
    unwritten = write_json(json_path, compare.to_json(report))
    if unwritten:
        fail(unwritten, EXIT_FAILED)
    tripped = report.tripped()
    for line in tripped:
        say(f"{program()}: {line}", sys.stderr)
    raise typer.Exit(EXIT_FAILED if tripped else status)


def _compare_run_by_run(
    servers: list[Path],
    confidence: float,
    equivalence: str,
    output: Path,
    measured: dict[str, Any],
    quiet: bool,
) -> tuple[list[Path], int]:
    """``volley compare --run``: measure the servers interleaved, write one result each;
    the paths written and the exit status the measurement asks for. ``measured``: the
    volley-bench options of every side, by BenchOptions' names."""
    from volley.studies import compare

    if len(servers) < 2:
        raise BadInput("--run needs at least two servers: A B [C ...]")
    margin = parse_target(equivalence, "--equivalence")
    if margin.statistic != "mean" or margin.relative is None:
        raise BadInput(f"--equivalence {equivalence!r}: give a share of the mean, like 1%")
    config = _run_by_run_config(servers, confidence, measured)
    if not output.parent.is_dir() and output.parent != Path("out"):
        raise BadInput(f"-o {output}: directory {output.parent} does not exist")
    output.mkdir(parents=True, exist_ok=True)
    warn_before(config)
    names = [f"{i}-{Path(path).name}.json" for i, (path, _) in enumerate(config.alternatives)]
    first_look = max(config.min_runs, sequential.FIRST_LOOK)
    monitor = compare.Monitor(compare.family_alpha(confidence), margin.relative or 0.0, first_look)
    try:
        judge = monitor if quiet else _saying_looks(monitor)
        found = session.run_by_run(config, judge, None if quiet else _say_round)
    except KeyboardInterrupt:
        fail("interrupted before any round completed", EXIT_INTERRUPTED)
    except (coordinator.BenchError, play.RunFailed) as e:
        fail(str(e), EXIT_FAILED)
    written = []
    for name, result in zip(names, found, strict=True):
        # The plan and its looks: compared again, the results give the verdict it reached.
        result = replace(result, sequential=monitor.looks)
        results.write_atomically(output / name, results.dumps(result))
        written.append(output / name)
    say(f"wrote {', '.join(map(str, written))}", sys.stderr)
    return written, EXIT_CODES[found[0].status]


def _run_by_run_config(
    servers: list[Path], confidence: float, measured: dict[str, Any]
) -> coordinator.BenchConfig:
    """The configuration every side of ``compare --run`` measures with, the servers its
    alternatives."""
    sides = [server_command(str(text)) for text in servers]
    # --precision is left at its default, unused: the sequential plan decides when to stop.
    raw = BenchOptions(
        server_path=sides[0][0], args=sides[0][1], confidence=str(confidence), **measured
    )
    config = make_config(raw)
    return replace(config, alternatives=[(server.resolve(p), args) for p, args in sides])


def _saying_looks(monitor: Monitor) -> Callable[[list[results.BenchResult], int, int], str | None]:
    """``monitor`` as the judge of the rounds, saying on stderr what each look found."""

    def judge(found: list[results.BenchResult], rounds: int, left: int) -> str | None:
        stop = monitor(found, rounds, left)
        looks = monitor.looks
        if looks and looks.rounds and looks.rounds[-1] == rounds:
            say(
                f"look {len(looks.rounds)} of {len(looks.planned)} (planned at rounds "
                f"{', '.join(map(str, looks.planned))}): mean "
                + ", ".join(monitor.verdicts)
                + ("" if stop else "; go on"),
                sys.stderr,
            )
        return stop

    return judge


def _say_round(rounds: int, found: list[results.BenchResult]) -> None:
    means = ", ".join(
        f"{Path(r.server).name} {format_ns(r.latency_ns.mean)}" if r.latency_ns else "?"
        for r in found
    )
    say(f"round {rounds}: {means}", sys.stderr)


def plan_command(
    server_path: Annotated[
        str | None,
        typer.Argument(
            metavar="SERVER",
            help="Ignored, as are ARGS: a volley-bench command keeps its SERVER.",
        ),
    ] = None,
    args: Annotated[list[str] | None, typer.Argument(metavar="[-- ARGS...]", hidden=True)] = None,
    cores: Annotated[
        str | None,
        typer.Option("--cores", metavar="LIST", help="Client CPUs, as volley-bench takes them."),
    ] = None,
    server_cores: Annotated[
        str | None,
        typer.Option("--server-cores", metavar="LIST", help="Server CPUs, as volley-bench."),
    ] = None,
    clients: Annotated[
        int | None,
        typer.Option("--clients", metavar="N", help="Clients. Default: one per client CPU."),
    ] = None,
    topology_file: Annotated[
        str | None,
        typer.Option(
            "--topology",
            metavar="FILE",
            help="Plan for the machine whose lscpu -p=CPU,CORE,SOCKET,NODE output this is "
            "(all its CPUs usable). Default: this machine, its usable CPUs.",
        ),
    ] = None,
    json_path: Annotated[
        str | None,
        typer.Option("--json", metavar="PATH", help="Write the plan as JSON (- for stdout)."),
    ] = None,
) -> None:
    """Show where volley-bench would run the server and each worker's clients, the SMT
    siblings it leaves idle and what the placement costs; run nothing.

    Exit status: 0 planned (warnings or not), 1 the JSON could not be written, 2 bad input.
    """
    from volley.present import layout

    try:
        if topology_file:
            found = topology.load(topology_file)
            usable = found.cpus
        else:
            usable = cpus.usable_cpus()
            found = topology.from_sysfs() or topology.Topology.flat(usable, "this machine")
        placement = cpus.place(cores, server_cores, usable, found)
        if clients is not None and clients < 1:
            raise BadInput(f"--clients {clients} must be at least 1")
        check_json_path(json_path)
    except (BadInput, cpus.CpuError, OSError) as e:
        fail(str(e), EXIT_USAGE)
    plan = layout.Layout(found, placement, clients or len(placement.client_cpus), usable)
    unwritten = write_json(json_path, plan.dumps())
    if unwritten:
        fail(unwritten, EXIT_FAILED)
    if json_path != "-":
        say("\n".join(plan.lines()))


def system_command() -> None:
    """Show how ready this machine is for latency benchmarks: each item's state, why it
    matters and how to fix it. Changes nothing; exit status 0."""
    from volley.present import listings
    from volley.system import machine

    say("\n".join(listings.readiness(machine.readiness(), tables.console_for(sys.stdout))))


def command_group(
    help_text: str, no_args_is_help: bool = False, completion: bool = False
) -> typer.Typer:
    """A typer app as every volley command line is: plain help, click's errors in one line;
    ``completion``: the top command's --install-completion and --show-completion."""
    return typer.Typer(
        add_completion=completion,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings=SETTINGS,
        help=help_text,
        no_args_is_help=no_args_is_help,
    )


history_app = command_group(
    "What volley-bench keeps of earlier sittings, and where: show, path, clear.",
    no_args_is_help=True,
)
HistoryPlace = Annotated[
    str | None,
    typer.Option(
        "--history",
        metavar="DIR",
        help="The history's directory (default: $VOLLEY_HISTORY, else "
        "~/.local/state/volley/sittings).",
    ),
]


def _history_place(place: str | None) -> str:
    from volley.measure import history

    found = place or history.default_place()
    if found == history.OFF:
        raise BadInput("the history is off (--history off or VOLLEY_HISTORY=off): nothing kept")
    return found


@history_app.command("path")
def history_path(place: HistoryPlace = None) -> None:
    """Print the directory where earlier sittings are kept."""
    try:
        say(_history_place(place))
    except BadInput as e:
        fail(str(e), EXIT_USAGE)


@history_app.command("show")
def history_show(place: HistoryPlace = None) -> None:
    """List each configuration with kept sittings: server, clients, CPUs, how many
    sittings, the latest and their latest means."""
    from volley.measure import history
    from volley.present import listings

    try:
        where = _history_place(place)
    except BadInput as e:
        fail(str(e), EXIT_USAGE)
    entries = history.kept(where)
    if not entries:
        say(f"no sittings kept in {where}")
        return
    say("\n".join(listings.history(where, entries, tables.console_for(sys.stdout))))


@history_app.command("clear")
def history_clear(
    place: HistoryPlace = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Forget every kept sitting (the next sittings start without a history)."""
    from volley.measure import history

    try:
        where = _history_place(place)
    except BadInput as e:
        fail(str(e), EXIT_USAGE)
    entries = history.kept(where)
    if entries and not yes and not sys.stdin.isatty():
        fail("history clear asks before it forgets: give --yes to answer without a terminal", 2)
    if (
        entries
        and not yes
        and not typer.confirm(f"forget the sittings of {len(entries)} configuration(s) in {where}?")
    ):
        raise typer.Exit(EXIT_USAGE)
    say(f"forgot the sittings of {history.clear(where)} configuration(s) in {where}")


app = command_group("Volley: latency of server networking stacks.", completion=True)
app.command("bench", help="Same as volley-bench.")(bench)
app.command("sweep")(sweep_command)
app.command("plot")(plot_command)
app.command("check")(check_command)
app.command("compare")(compare_command)
app.command("system")(system_command)
app.command("plan")(plan_command)
app.add_typer(history_app, name="history")


@app.callback()
def volley(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Volley: latency of server networking stacks."""


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()

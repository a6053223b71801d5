"""Command line: parse options, call the library, export, pick the exit status.

Exit status: 0 significant (or all checks passed), 1 the run failed, 2 bad input,
3 finished without reaching the target precision, 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from volley import __version__, coordinator, cpus, results, runs, server
from volley.report import StreamProgress, summary
from volley.units import (
    BadInput,
    check_arrivals,
    parse_confidence,
    parse_duration_s,
    parse_rate,
    parse_targets,
)

EXIT_FAILED, EXIT_USAGE, EXIT_NOT_SIGNIFICANT, EXIT_INTERRUPTED = 1, 2, 3, 130
EXIT_CODES = {
    results.SIGNIFICANT: 0,
    results.NOT_SIGNIFICANT: EXIT_NOT_SIGNIFICANT,
    results.INTERRUPTED: EXIT_INTERRUPTED,
    results.FAILED: EXIT_FAILED,
}


def program() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "volley" if name in ("", "__main__.py", "-m") else name


def fail(message: str, status: int) -> NoReturn:
    print(f"{program()}: error: {message}", file=sys.stderr)
    raise typer.Exit(status)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--connect {text!r} is not HOST:PORT (like 127.0.0.1:2222)")
    return host.strip("[]"), int(port)


def version_callback(value: bool) -> None:
    if value:
        print(f"volley {__version__}")
        raise typer.Exit()


def bench(
    server_path: str | None = typer.Argument(
        None, metavar="SERVER", help="Server binary to start with -p PORT (not with --connect)."
    ),
    args: list[str] | None = typer.Argument(
        None,
        metavar="[-- ARGS...]",
        help="Extra server arguments; {server_cores} and {client_cores} become the counts.",
    ),
    cores: str | None = typer.Option(
        None, "--cores", help="Client CPUs, taskset syntax (0-39,41). Default: upper half."
    ),
    server_cores: str | None = typer.Option(
        None, "--server-cores", help="Server CPUs. Default: the lower half of usable CPUs."
    ),
    clients: int | None = typer.Option(
        None, "--clients", help="Concurrent clients (connections). Default: one per client CPU."
    ),
    precision: list[str] = typer.Option(
        ["1%"],
        "--precision",
        help="Stop when the mean's CI half-width is this share of it (1%) or this time (5us);"
        " p99:5% targets a percentile. Repeatable: every target must be met.",
    ),
    confidence: str = typer.Option("0.95", "--confidence", help="Confidence level of the CI."),
    max_time: str = typer.Option(
        "180s", "--max-time", help="Give up (exit 3, not significant) after this long."
    ),
    warmup: str = typer.Option(
        "0.25s", "--warmup", help="Ops in this first stretch of every run are discarded."
    ),
    run_time: str = typer.Option(
        "0.5s", "--run-time", "--round-time", help="Measured length of one run (after warm-up)."
    ),
    min_runs: int = typer.Option(
        runs.MIN_RUNS, "--min-runs", help="Pilot runs that plan how many runs the targets need."
    ),
    restart: str = typer.Option(
        coordinator.RESTART_SERVER,
        "--restart",
        help="What each run starts afresh: server (and connections) or connections only.",
    ),
    op_timeout: str = typer.Option(
        "10s", "--op-timeout", help="A reply slower than this is an error, not a hang."
    ),
    startup_timeout: str = typer.Option(
        "10s", "--startup-timeout", help="How long the server may take to start listening."
    ),
    port: int | None = typer.Option(None, "--port", help="Server port. Default: a free one."),
    connect: str | None = typer.Option(
        None,
        "--connect",
        metavar="HOST:PORT",
        help="Measure a server that is already running; it is left running.",
    ),
    rate: str | None = typer.Option(
        None,
        "--rate",
        metavar="OPS/S",
        help="Open loop: offer this many ops/s over all clients (50k, 1.5M), each word sent "
        "on schedule whether or not earlier replies came. Default: closed loop.",
    ),
    arrivals: str = typer.Option(
        "poisson", "--arrivals", help="Open loop: poisson or fixed gaps between sends."
    ),
    json_path: str | None = typer.Option(
        None, "--json", metavar="PATH", help="Write the result as JSON (- for stdout)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Measure a server's latency with pinned ping-pong clients until the mean is known."""
    try:
        config = make_config(
            server_path,
            args or [],
            cores,
            server_cores,
            clients,
            precision,
            confidence,
            max_time,
            warmup,
            run_time,
            min_runs,
            restart,
            op_timeout,
            startup_timeout,
            port,
            connect,
            rate,
            arrivals,
        )
        if json_path and json_path != "-":
            results.check_writable(Path(json_path))
    except (BadInput, cpus.CpuError, server.ServerError, OSError) as e:
        fail(str(e), EXIT_USAGE)
    if config.placement.warning and not quiet:
        print(f"warning: {config.placement.warning}", file=sys.stderr)
    try:
        result = coordinator.benchmark(config, None if quiet else StreamProgress())
    except KeyboardInterrupt:
        fail("interrupted before any run started", EXIT_INTERRUPTED)
    except (server.ServerError, coordinator.BenchError, runs.RunFailed) as e:
        fail(str(e), EXIT_FAILED)
    human = sys.stderr if json_path == "-" else sys.stdout
    print(summary(result), file=human)
    if json_path == "-":
        sys.stdout.write(results.dumps(result))
    elif json_path:
        results.write_atomically(Path(json_path), results.dumps(result))
    raise typer.Exit(EXIT_CODES[result.status])


def make_config(
    server_path: str | None,
    args: list[str],
    cores: str | None,
    server_cores: str | None,
    clients: int | None,
    precision: list[str],
    confidence: str,
    max_time: str,
    warmup: str,
    run_time: str,
    min_runs: int,
    restart: str,
    op_timeout: str,
    startup_timeout: str,
    port: int | None,
    connect: str | None,
    rate: str | None = None,
    arrivals: str = "poisson",
) -> coordinator.BenchConfig:
    """Turn the options into a checked BenchConfig; BadInput says what is wrong."""
    address = parse_address(connect) if connect else None
    if address and server_path:
        raise BadInput("give either SERVER or --connect HOST:PORT, not both")
    if not address and not server_path:
        raise BadInput(
            "missing SERVER: give a server binary (like target/servers/c-threaded) "
            "or --connect HOST:PORT"
        )
    if server_path:
        server_path = server.resolve(server_path)
    if address:
        server.probe(*address)
    if port is not None and not 0 < port < 65536:
        raise BadInput(f"--port {port} is not a TCP port (1-65535)")
    if port is not None and not server.port_is_free(server.LOOPBACK, port):
        raise BadInput(
            f"--port {port} is already in use on {server.LOOPBACK}; pick another "
            "or leave --port out to get a free one"
        )
    placement = cpus.place(cores, server_cores)
    if clients is None:
        clients = len(placement.client_cpus)
    if clients < 1:
        raise BadInput(f"--clients {clients} must be at least 1")
    if min_runs < 2:
        raise BadInput(f"--min-runs {min_runs} must be at least 2 (an interval needs two runs)")
    restarts = (coordinator.RESTART_SERVER, coordinator.RESTART_CONNECTIONS)
    if restart not in restarts:
        raise BadInput(f"--restart {restart!r} is not one of {', '.join(restarts)}")
    run_time_s = parse_duration_s(run_time, "--run-time")
    rate_ops_s = parse_rate(rate) if rate is not None else None
    check_arrivals(arrivals)
    if rate_ops_s is not None and rate_ops_s / clients * run_time_s < 1:
        raise BadInput(
            f"--rate {rate} is less than one op per client per run ({clients} client"
            f"{'' if clients == 1 else 's'}, {run_time_s:g} s runs); raise it or use fewer clients"
        )
    return coordinator.BenchConfig(
        server=server_path or connect or "",
        server_args=args,
        clients=clients,
        placement=placement,
        targets=parse_targets(precision or ["1%"]),
        confidence=parse_confidence(confidence),
        max_time_s=parse_duration_s(max_time, "--max-time"),
        warmup_s=parse_duration_s(warmup, "--warmup", allow_zero=True),
        run_time_s=run_time_s,
        min_runs=min_runs,
        restart=coordinator.RESTART_CONNECTIONS if address else restart,
        op_timeout_s=parse_duration_s(op_timeout, "--op-timeout"),
        startup_timeout_s=parse_duration_s(startup_timeout, "--startup-timeout"),
        port=port,
        connect=address,
        rate_ops_s=rate_ops_s,
        arrivals=arrivals,
    )


def sweep_command(
    experiment_path: Annotated[
        Path,
        typer.Argument(
            metavar="EXPERIMENT",
            help="Experiment file (TOML): servers, clients, server-cores, "
            "client-cores and [bench] options; see bench/local.toml.",
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
            metavar="csv|dat",
            help="Also write DIR/results.csv (csv) or the seed's DIR/plot.dat (dat); repeatable.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the points and their CPUs; run nothing.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Run volley-bench for every point of an experiment's grid, one JSON line per point.

    Exit status: 0 every point that fits this machine is recorded (each point's own status
    is in the results), 1 the results could not be written, 2 bad input, 130 interrupted
    (--resume continues).
    """
    from volley import sweep as sweeps

    try:
        experiment = sweeps.load(experiment_path)
        formats = sweeps.check_exports(export or [])
        usable = cpus.usable_cpus()
        if dry_run:
            the_plan = sweeps.plan(experiment, usable, set())
            for line in sweeps.skip_lines(the_plan, experiment):
                print(line, file=sys.stderr)
            for point in the_plan.todo:
                server_cpus, client_cpus = sweeps.assign_cpus(point, usable)
                print(
                    f"{point}: server on CPU {cpus.format_cpu_list(server_cpus)}, clients "
                    f"on CPU {cpus.format_cpu_list(client_cpus)}"
                )
            raise typer.Exit(0)
        out = out_dir if out_dir is not None else Path("out") / experiment_path.stem
        results_path, done, notes = sweeps.open_results(out, experiment, resume)
    except (sweeps.ExperimentError, sweeps.SweepError, ValueError) as e:
        fail(str(e), EXIT_USAGE)
    the_plan = sweeps.plan(experiment, usable, done)
    for line in [*notes, *sweeps.skip_lines(the_plan, experiment)]:
        print(line, file=sys.stderr)
    if not the_plan.total:
        fail(
            f"nothing to run in {experiment_path}: no point fits this machine with a built server",
            EXIT_USAGE,
        )
    progress = sweeps.QuietProgress() if quiet else sweeps.SweepProgress()
    if not quiet:
        bound = sweeps.format_duration(sweeps.estimate_s(experiment, len(the_plan.todo)))
        print(
            f"sweep {experiment.name}: {len(the_plan.todo)} points to run"
            + (f" ({len(the_plan.done)} already done)" if the_plan.done else "")
            + f", up to about {bound}; results in {results_path}",
            file=sys.stderr,
        )
    try:
        outcome = sweeps.run(experiment, results_path, the_plan, sweeps.ProcessRunner(), progress)
        written = sweeps.export(results_path, formats)
        records, _ = sweeps.read_records(results_path) if results_path.exists() else ([], [])
        records = sweeps.of_plan(records, the_plan)
    except OSError as e:
        fail(f"cannot write the results: {e}", EXIT_FAILED)
    print(f"{results_path}: {len(records)} of {the_plan.total} points ({sweeps.totals(records)})")
    for path in written:
        print(f"wrote {path}")
    if outcome.interrupted:
        fail("interrupted; add --resume to run the remaining points", EXIT_INTERRUPTED)


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
            metavar="N",
            help="Plot only this client count; repeatable.",
        ),
    ] = None,
    cores: Annotated[
        int | None,
        typer.Option(
            "--cores",
            metavar="N",
            help="Server core count of the points in the distribution figure. "
            "Default: the largest measured.",
        ),
    ] = None,
) -> None:
    """Draw the throughput, latency and latency-distribution figures of a sweep."""
    from volley import plot as plots

    target = output if output is not None else results_path.parent / "perf.png"
    try:
        written, notes = plots.plot(results_path, target, servers or None, clients or None, cores)
    except plots.MissingMatplotlib as e:
        fail(str(e), EXIT_FAILED)
    except (plots.PlotError, OSError) as e:
        fail(str(e), EXIT_USAGE)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")


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
    """Check that a server keeps the contract for servers (README, "Contributing servers").

    Exit status: 0 every check passed, 1 a check failed, 2 bad input, 130 interrupted.
    """
    from volley import check as checks

    if list_checks:
        print(checks.listing())
        raise typer.Exit(0)
    try:
        address = parse_address(connect) if connect else None
        if address and server_path:
            raise BadInput("give either SERVER or --connect HOST:PORT, not both")
        if not address and not server_path:
            raise BadInput(
                "missing SERVER: give a server binary (like target/servers/c-threaded)"
                " or --connect HOST:PORT"
            )
        if address and args:
            raise BadInput("server arguments need SERVER; a server at --connect is already running")
        path = server.resolve(server_path) if server_path else None
        chosen = checks.select(only, connect=address is not None)
        timeout_s = parse_duration_s(startup_timeout, "--startup-timeout")
        server_cpus = cpus.place(None, None).server_cpus
        if json_path and json_path != "-":
            results.check_writable(Path(json_path))
    except (BadInput, ValueError, cpus.CpuError, server.ServerError, OSError) as e:
        fail(str(e), EXIT_USAGE)
    human = sys.stderr if json_path == "-" else sys.stdout
    formatter = checks.Formatter(chosen, table=human.isatty())

    def show(lines: list[str]) -> None:
        for line in lines:
            print(line, file=human, flush=True)

    show(formatter.header())
    try:
        run = checks.run(
            chosen,
            path,
            args or [],
            server_cpus,
            timeout_s,
            address,
            on_result=lambda result: show(formatter.result(result)),
        )
    except KeyboardInterrupt:
        fail("interrupted; the server was stopped", EXIT_INTERRUPTED)
    show(formatter.summary(run))
    if json_path == "-":
        sys.stdout.write(checks.dumps(run))
    elif json_path:
        results.write_atomically(Path(json_path), checks.dumps(run))
    raise typer.Exit(0 if run.all_passed else EXIT_FAILED)


SETTINGS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=SETTINGS,
    help="Volley: latency of server networking stacks.",
)
app.command("bench", help="Same as volley-bench.")(bench)
app.command("sweep")(sweep_command)
app.command("plot")(plot_command)
app.command("check")(check_command)


@app.callback()
def volley(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Volley: latency of server networking stacks."""


def run(typer_app: typer.Typer) -> None:
    """Run an app with click's errors shortened to one line."""
    try:
        # Without standalone mode click returns the status of typer.Exit instead of exiting.
        status = typer_app(standalone_mode=False)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        # Click's usage errors (typer may bundle its own click, so match by shape).
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        prog = program()
        print(f"{prog}: error: {e.format_message()} (see {prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(status if isinstance(status, int) else 0)


def main() -> None:
    run(app)


def bench_main() -> None:
    single = typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings=SETTINGS,
    )
    single.command()(bench)
    run(single)


if __name__ == "__main__":
    main()

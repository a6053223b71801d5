"""Command line: parse options, call the library, export, pick the exit status.

Exit status: 0 significant (or all checks passed), 1 the run failed, 2 bad input,
3 finished without reaching the target precision, 130 interrupted (SIGINT, SIGTERM or
SIGHUP).

Files are written before anything is printed, and every line goes out through ``say``: a
reader that went away (``| head``, a closed pipe, a hung-up terminal) loses the words,
never the result files or the exit status.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn, TextIO, TypeVar

import typer

from volley import __version__, coordinator, cpus, hosts, results, runs, server
from volley.report import StreamProgress, summary
from volley.units import (
    BENCH_DEFAULTS,
    BadInput,
    check_arrivals,
    format_duration,
    format_ns,
    parse_confidence,
    parse_duration_s,
    parse_rate,
    parse_target,
    parse_targets,
)

T = TypeVar("T")
EXIT_CODES = results.EXIT_CODES
EXIT_FAILED, EXIT_NOT_SIGNIFICANT, EXIT_INTERRUPTED = (
    EXIT_CODES[status] for status in (results.FAILED, results.NOT_SIGNIFICANT, results.INTERRUPTED)
)
EXIT_USAGE = 2


def program() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "volley" if name in ("", "__main__.py", "-m") else name


def say(text: str, stream: TextIO | None = None, end: str = "\n") -> None:
    """Print ``text`` (to stdout by default). If nobody reads any more (EPIPE, or EIO from a
    hung-up terminal), the stream is pointed at /dev/null, as the Python docs advise for
    SIGPIPE, so that the rest of the run and the exit status are unchanged."""
    stream = stream if stream is not None else sys.stdout
    try:
        stream.write(text + end)
        stream.flush()
    except (OSError, ValueError):
        silence(stream)


def silence(stream: TextIO) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def fail(message: str, status: int) -> NoReturn:
    say(f"{program()}: error: {message}", sys.stderr)
    raise typer.Exit(status)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--connect {text!r} is not HOST:PORT (like 127.0.0.1:2222)")
    return host.strip("[]"), int(port)


def version_callback(value: bool) -> None:
    if value:
        say(f"volley {__version__}")
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
        [BENCH_DEFAULTS["precision"]],
        "--precision",
        help="Stop when the mean's CI half-width is this share of it (1%) or this time (5us);"
        " p99:5% targets a percentile. Repeatable: every target must be met.",
    ),
    confidence: str = typer.Option(
        BENCH_DEFAULTS["confidence"], "--confidence", help="Confidence level of the CI."
    ),
    max_time: str = typer.Option(
        BENCH_DEFAULTS["max-time"],
        "--max-time",
        help="Give up (exit 3, not significant) after this long.",
    ),
    warmup: str = typer.Option(
        BENCH_DEFAULTS["warmup"],
        "--warmup",
        help="Ops in this first stretch of every run are discarded.",
    ),
    run_time: str = typer.Option(
        BENCH_DEFAULTS["run-time"],
        "--run-time",
        "--round-time",
        help="Measured length of one run (after warm-up).",
    ),
    min_runs: int = typer.Option(
        runs.MIN_RUNS,
        "--min-runs",
        help="Pilot runs that plan how many runs the targets need.",
    ),
    restart: str = typer.Option(
        BENCH_DEFAULTS["restart"],
        "--restart",
        help="What each run starts afresh: server (and connections) or connections only.",
    ),
    noisy: str = typer.Option(
        BENCH_DEFAULTS["noisy"],
        "--noisy",
        help="A run disturbed by other work on the pinned CPUs: keep (and warn), drop, fail.",
    ),
    op_timeout: str = typer.Option(
        BENCH_DEFAULTS["op-timeout"],
        "--op-timeout",
        help="A reply slower than this is an error, not a hang.",
    ),
    startup_timeout: str = typer.Option(
        BENCH_DEFAULTS["startup-timeout"],
        "--startup-timeout",
        help="How long the server may take to start listening.",
    ),
    port: int | None = typer.Option(None, "--port", help="Server port. Default: a free one."),
    server_address: str = typer.Option(
        server.LOOPBACK,
        "--server-address",
        metavar="ADDRESS",
        help="IPv4 address of this machine the server listens on (given as -a) and the "
        "clients connect to.",
    ),
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
        BENCH_DEFAULTS["arrivals"],
        "--arrivals",
        help="Open loop: poisson or fixed gaps between sends.",
    ),
    json_path: str | None = typer.Option(
        None, "--json", metavar="PATH", help="Write the result as JSON (- for stdout)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Measure a server's latency with pinned ping-pong clients until the mean is known."""
    try:
        team = hosts.join()  # None unless an MPI launcher started several of us
    except hosts.HostsError as e:
        fail(str(e), e.status)
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
            noisy,
            rate,
            arrivals,
            server_address,
        )
        if json_path and json_path != "-" and not (team and team.rank):
            results.check_writable(Path(json_path))
    except (BadInput, cpus.CpuError, server.ServerError, OSError) as e:
        if team:  # rank 0 names this host and ends the job
            # A host that cannot reach the server is a failed run, not bad input.
            status = EXIT_FAILED if isinstance(e, server.ServerError) else EXIT_USAGE
            problem = str(e)
            _on_hosts(lambda: hosts.start(team, None, problem=problem, status=status))
        fail(str(e), EXIT_USAGE)
    try:
        # Not enough open files is the user's limit, bad input, not a failed run.
        coordinator.raise_open_files_limit(config.clients)
    except coordinator.BenchError as e:
        fail(str(e), EXIT_USAGE)
    if config.placement.warning and not quiet:
        say(f"warning: {config.placement.warning}", sys.stderr)
    try:
        progress = None if quiet else StreamProgress()
        if team:
            result = _bench_on_hosts(team, config, clients is not None, progress, json_path)
        else:
            result = coordinator.benchmark(config, progress)
    except KeyboardInterrupt:
        fail("interrupted before any run started", EXIT_INTERRUPTED)
    except (server.ServerError, coordinator.BenchError, runs.RunFailed) as e:
        fail(str(e), EXIT_FAILED)
    # The result first: printing can fail (a closed pipe) and must not lose it.
    unwritten = None
    if json_path == "-":
        say(results.dumps(result), sys.stdout, end="")
    elif json_path:
        try:
            results.write_atomically(Path(json_path), results.dumps(result))
        except OSError as e:
            unwritten = f"cannot write {json_path}: {e.strerror or e}"
    say(summary(result), sys.stderr if json_path == "-" else sys.stdout)
    if unwritten:
        fail(unwritten, EXIT_FAILED)
    raise typer.Exit(EXIT_CODES[result.status])


def _bench_on_hosts(
    team: hosts.Team,
    config: coordinator.BenchConfig,
    dealt: bool,
    progress: StreamProgress | None,
    json_path: str | None,
) -> results.BenchResult:
    """The result on rank 0, which also saves it to --json after every run (a launcher may
    end the job before the last); the other ranks exit when done, rank 0 reports."""
    path = Path(json_path) if json_path and json_path != "-" else None

    def save(partial: results.BenchResult) -> None:
        if path:
            results.write_atomically(path, results.dumps(partial))

    found = _on_hosts(lambda: hosts.benchmark(team, config, dealt, progress, save))
    if found is None:
        raise typer.Exit(0)
    return found


def _on_hosts(part: Callable[[], T]) -> T:
    """Run this rank's part of a job on many hosts: rank 0 reports why it ended; the
    others exit quietly when it ends the job."""
    try:
        return part()
    except hosts.Stopped:
        raise typer.Exit(0) from None
    except hosts.HostsError as e:
        fail(str(e), e.status)


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
    noisy: str = "keep",
    rate: str | None = None,
    arrivals: str = "poisson",
    server_address: str = server.LOOPBACK,
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
    if server_address != server.LOOPBACK:
        check_server_address(server_address, address is not None)
    if server_path:
        server_path = server.resolve(server_path)
    if address:
        server.probe(*address)
    if port is not None and not 0 < port < 65536:
        raise BadInput(f"--port {port} is not a TCP port (1-65535)")
    if port is not None and not server.port_is_free(server_address, port):
        raise BadInput(
            f"--port {port} is already in use on {server_address}; pick another "
            "or leave --port out to get a free one"
        )
    placement = cpus.place(cores, server_cores)
    if clients is None:
        clients = len(placement.client_cpus)
    if clients < 1:
        raise BadInput(f"--clients {clients} must be at least 1")
    if min_runs < 2:
        raise BadInput(f"--min-runs {min_runs} must be at least 2 (an interval needs two runs)")
    if noisy not in ("keep", "drop", "fail"):
        raise BadInput(f"--noisy {noisy!r} is not one of keep, drop, fail")
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
        noisy=noisy,
        op_timeout_s=parse_duration_s(op_timeout, "--op-timeout"),
        startup_timeout_s=parse_duration_s(startup_timeout, "--startup-timeout"),
        port=port,
        connect=address,
        server_address=server_address,
        rate_ops_s=rate_ops_s,
        arrivals=arrivals,
    )


def check_server_address(text: str, connect: bool) -> None:
    """BadInput unless ``text`` is an IPv4 address of this machine a server could listen on."""
    if connect:
        raise BadInput(
            "--server-address is where a server Volley starts listens; with "
            "--connect give the running server's HOST:PORT only"
        )
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise BadInput(f"--server-address {text!r} is not an IPv4 address") from None
    if not server.port_is_free(text, 0):
        raise BadInput(f"--server-address {text} is not an address of this machine")


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
            metavar="csv|dat|hlog",
            help="Also write DIR/results.csv (csv), the seed's DIR/plot.dat (dat) or "
            "HdrHistogram's interval log DIR/results.hlog (hlog); repeatable.",
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
    from volley import experiment as experiments
    from volley import export as exports
    from volley import store
    from volley import sweep as sweeps

    try:
        experiment = experiments.load(experiment_path)
        formats = exports.check_exports(export or [])
        usable = cpus.usable_cpus()
        if dry_run:
            the_plan = sweeps.plan(experiment, usable, set())
            for line in sweeps.skip_lines(the_plan, experiment):
                say(line, sys.stderr)
            for point in the_plan.todo:
                server_cpus, client_cpus = sweeps.assign_cpus(point, usable)
                say(
                    f"{point}: server on CPU {cpus.format_cpu_list(server_cpus)}, clients "
                    f"on CPU {cpus.format_cpu_list(client_cpus)}"
                )
            raise typer.Exit(0)
        out = out_dir if out_dir is not None else Path("out") / experiment_path.stem
        results_path, done, notes = sweeps.open_results(out, experiment, resume)
    except (experiments.ExperimentError, sweeps.SweepError, ValueError) as e:
        fail(str(e), EXIT_USAGE)
    the_plan = sweeps.plan(experiment, usable, done)
    for line in [*notes, *sweeps.skip_lines(the_plan, experiment)]:
        say(line, sys.stderr)
    if not the_plan.total:
        fail(
            f"nothing to run in {experiment_path}: no point fits this machine with a built server",
            EXIT_USAGE,
        )
    progress = sweeps.QuietProgress() if quiet else sweeps.SweepProgress()
    if not quiet:
        bound = format_duration(sweeps.estimate_s(experiment, len(the_plan.todo)))
        say(
            f"sweep {experiment.name}: {len(the_plan.todo)} points to run"
            + (f" ({len(the_plan.done)} already done)" if the_plan.done else "")
            + f", up to about {bound}; results in {results_path}",
            sys.stderr,
        )
    try:
        outcome = sweeps.run(experiment, results_path, the_plan, sweeps.ProcessRunner(), progress)
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
    from volley import plot as plots
    from volley import relative

    target = output if output is not None else results_path.parent / "perf.png"
    try:
        # The relative figure first: a --baseline not in the sweep fails before any drawing.
        extra = (
            [relative.plot_relative(results_path, target, baseline, servers, clients)]
            if baseline
            else []
        )
        written, notes = plots.plot(results_path, target, servers or None, clients or None, cores)
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
        say(checks.listing())
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
            say(line, human)

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
    # The report first: printing can fail (a closed pipe) and must not lose it.
    if json_path == "-":
        say(checks.dumps(run), sys.stdout, end="")
    elif json_path:
        results.write_atomically(Path(json_path), checks.dumps(run))
    show(formatter.summary(run))
    raise typer.Exit(0 if run.all_passed else EXIT_FAILED)


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
        str, typer.Option("--confidence", help="Confidence level of the intervals and verdicts.")
    ] = "0.95",
    fail_if_slower: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-if-slower",
            metavar="[STAT:]SHARE",
            help="Exit 1 when B is significantly slower than A by more than SHARE "
            "(2% for the mean, p99:5% for a percentile); repeatable.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Compare results whose configurations differ; say how."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print Markdown tables (for a pull request).")
    ] = False,
    run: Annotated[
        bool,
        typer.Option(
            "--run",
            help="A B [C ...] are servers: measure them now, one run of each per round in a "
            "fresh random order, until each difference from A is resolved.",
        ),
    ] = False,
    equivalence: Annotated[
        str,
        typer.Option(
            "--equivalence",
            help="With --run: also stop when a difference is known to be within this share.",
        ),
    ] = "1%",
    output: Annotated[
        Path,
        typer.Option("-o", "--output", metavar="DIR", help="With --run: where the results go."),
    ] = Path("out/compare"),
    clients: Annotated[int | None, typer.Option("--clients", help="With --run.")] = None,
    cores: Annotated[str | None, typer.Option("--cores", help="With --run.")] = None,
    server_cores: Annotated[str | None, typer.Option("--server-cores", help="With --run.")] = None,
    max_time: Annotated[str, typer.Option("--max-time", help="With --run.")] = "300s",
    warmup: Annotated[str, typer.Option("--warmup", help="With --run.")] = str(
        BENCH_DEFAULTS["warmup"]
    ),
    run_time: Annotated[str, typer.Option("--run-time", help="With --run.")] = str(
        BENCH_DEFAULTS["run-time"]
    ),
    min_runs: Annotated[int, typer.Option("--min-runs", help="With --run.")] = runs.MIN_RUNS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="With --run: no progress.")] = False,
) -> None:
    """Compare results with the first: is each faster, slower, or not significantly different?

    With --run, A B [C ...] are servers measured now in interleaved runs and compared round
    by round (robust to a machine that drifts during the comparison); every result is
    written to DIR.

    Exit status: 0 compared, 1 a --fail-if-slower gate tripped (or a --run failed), 2 bad
    input, 3 --run reached --max-time unresolved, 130 interrupted.
    """
    from volley import compare

    try:
        if as_json and markdown:
            raise BadInput("give --json or --markdown, not both")
        gates = [compare.parse_gate(text) for text in fail_if_slower or []]
        level = parse_confidence(confidence)
        if run:
            paths, status = _interleaved_runs(
                paths, level, equivalence, output, clients, cores, server_cores,
                max_time, warmup, run_time, min_runs, quiet,
            )  # fmt: skip
        else:
            status = 0
        report = compare.compare_files(paths, level, force, gates, rounds=run)
    except (BadInput, cpus.CpuError, server.ServerError, OSError) as e:
        fail(str(e), EXIT_USAGE)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if as_json:
        sys.stdout.write(compare.to_json(report))
    else:
        sys.stdout.write(compare.markdown(report) if markdown else compare.table(report))
    tripped = report.tripped()
    for line in tripped:
        print(f"{program()}: {line}", file=sys.stderr)
    raise typer.Exit(EXIT_FAILED if tripped else status)


def _interleaved_runs(
    servers: list[Path],
    confidence: float,
    equivalence: str,
    output: Path,
    clients: int | None,
    cores: str | None,
    server_cores: str | None,
    max_time: str,
    warmup: str,
    run_time: str,
    min_runs: int,
    quiet: bool,
) -> tuple[list[Path], int]:
    """``volley compare --run``: measure the servers interleaved, write one result each;
    the paths written and the exit status the measurement asks for."""
    from volley import compare

    if len(servers) < 2:
        raise BadInput("--run needs at least two servers: A B [C ...]")
    margin = parse_target(equivalence, "--equivalence")
    if margin.statistic != "mean" or margin.relative is None:
        raise BadInput(f"--equivalence {equivalence!r}: give a share of the mean, like 1%")
    config = make_config(
        str(servers[0]), [], cores, server_cores, clients, ["1%"], str(confidence), max_time,
        warmup, run_time, min_runs, coordinator.RESTART_SERVER,
        str(BENCH_DEFAULTS["op-timeout"]), str(BENCH_DEFAULTS["startup-timeout"]), None, None,
    )  # fmt: skip
    config = replace(config, alternatives=[(server.resolve(str(p)), []) for p in servers])
    if not output.parent.is_dir() and output.parent != Path("out"):
        raise BadInput(f"-o {output}: directory {output.parent} does not exist")
    output.mkdir(parents=True, exist_ok=True)
    names = [f"{i}-{p.name}.json" for i, p in enumerate(servers)]

    def resolved(found: list[results.BenchResult]) -> bool:
        return all(
            compare.resolved(found[0], other, confidence, margin.relative or 0.0)
            for other in found[1:]
        )

    def on_round(rounds: int, found: list[results.BenchResult]) -> None:
        if quiet:
            return
        means = ", ".join(
            f"{Path(r.server).name} {format_ns(r.latency_ns.mean)}" if r.latency_ns else "?"
            for r in found
        )
        say(f"round {rounds}: {means}", sys.stderr)

    try:
        found = coordinator.interleaved(config, resolved, on_round)
    except KeyboardInterrupt:
        fail("interrupted before any round completed", EXIT_INTERRUPTED)
    except (coordinator.BenchError, runs.RunFailed) as e:
        fail(str(e), EXIT_FAILED)
    written = []
    for name, result in zip(names, found, strict=True):
        results.write_atomically(output / name, results.dumps(result))
        written.append(output / name)
    say(f"wrote {', '.join(map(str, written))}", sys.stderr)
    return written, EXIT_CODES[found[0].status]


def system_command() -> None:
    """Show how ready this machine is for latency benchmarks: each item's state, why it
    matters and how to fix it. Changes nothing; exit status 0."""
    from volley import machine

    say("\n".join(machine.format_readiness(machine.readiness())))


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
app.command("compare")(compare_command)
app.command("system")(system_command)


@app.callback()
def volley(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Volley: latency of server networking stacks."""


def standard_streams() -> None:
    """Started with stdin, stdout or stderr closed (``>&-``), the first file or socket opened
    would take its number and receive whatever is printed, and servers would inherit it."""
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, mode)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", closefd=False))  # noqa: SIM115


def hang_up_like_terminate() -> None:
    """SIGHUP (the terminal or ssh session went away) does what SIGTERM does at that moment:
    whoever handles SIGTERM then (the coordinator during rounds, the sweep, the checks)
    handles it, so the server is ended and a partial result kept, exit status 130."""

    def hang_up(signum: int, frame: FrameType | None) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, frame)
        elif handler != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGHUP, hang_up)


def run(typer_app: typer.Typer) -> None:
    """Run an app with click's errors shortened to one line."""
    standard_streams()
    hang_up_like_terminate()
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
        say(f"{prog}: error: {e.format_message()} (see {prog} --help)", sys.stderr)
        sys.exit(EXIT_USAGE)
    finally:
        # Whatever is still buffered goes now, while a broken pipe can still be silenced.
        for stream in (sys.stdout, sys.stderr):
            say("", stream, end="")
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

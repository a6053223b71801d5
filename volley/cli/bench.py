"""volley-bench's command line, and what every command shares: parse options, call the
library, export, pick the exit status. The ``volley`` subcommands are in ``volley.cli.app``.

Exit status: 0 measured (whatever the precision reached; or all checks passed), 1 the run
failed, 2 bad input, 3 the target precision was not reached and --require-precision asked
for it, 130 interrupted (SIGINT, SIGTERM or SIGHUP).

Files are written before anything is printed, and every line goes out through ``say``: a
reader that went away (``| head``, a closed pipe, a hung-up terminal) loses the words,
never the result files or the exit status.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO, TypeVar

import typer

from volley import __version__
from volley.engine import coordinator, play, server, worker
from volley.measure import history, hosts, runs, session
from volley.numbers.units import (
    _TIME_NS,
    BENCH_DEFAULTS,
    Arrivals,
    BadInput,
    IdleStates,
    Noisy,
    Restart,
    choose,
    parse_confidence,
    parse_duration_s,
    parse_rate,
    parse_targets,
)
from volley.present.progress import StreamProgress
from volley.present.report import phase_lines, summary
from volley.records import results
from volley.system import cpus, machine, topology

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


Address = tuple[str, int]  # a running server's host and port (--connect)


def parse_address(text: str) -> Address:
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
        help="Extra server arguments; {server_cpus} and {client_cpus} (or {server_cores},"
        " {client_cores}) become the numbers of server and client CPUs.",
    ),
    cores: str | None = typer.Option(
        None,
        "--cores",
        metavar="CPUS",
        help="Client CPUs, taskset syntax (0-39,41). Default: see --server-cores.",
    ),
    server_cores: str | None = typer.Option(
        None,
        "--server-cores",
        metavar="CPUS",
        help="Server CPUs. Default: the lower half of one socket's cores (the clients the "
        "upper half), one CPU per core.",
    ),
    clients: int | None = typer.Option(
        None,
        "--clients",
        metavar="COUNT",
        help="Concurrent clients (connections). Default: one per client CPU.",
    ),
    precision: list[str] = typer.Option(
        [BENCH_DEFAULTS["precision"]],
        "--precision",
        metavar="TARGET",
        help="Stop when the mean's CI half-width is this share of it (1%) or this time (5us);"
        " p99:5% targets a percentile. Repeatable: every target must be met.",
    ),
    confidence: str = typer.Option(
        BENCH_DEFAULTS["confidence"],
        "--confidence",
        metavar="LEVEL",
        help="Confidence level of the CI (0.95 or 95%).",
    ),
    max_time: str | None = typer.Option(
        None,
        "--max-time",
        metavar="DURATION",
        help="Stop after this long even if the precision is not reached: the result says "
        f"so, exit 0 (3 with --require-precision). Default: {BENCH_DEFAULTS['max-time']}.",
    ),
    fixed_runs: int | None = typer.Option(
        None,
        "--runs",
        metavar="COUNT",
        help="Play exactly this many measured runs, with no early stop on precision "
        "(instead of --max-time and --duration).",
    ),
    duration: str | None = typer.Option(
        None,
        "--duration",
        metavar="DURATION",
        help="Play as many runs as fit in this long, with no early stop on precision "
        "(instead of --max-time and --runs).",
    ),
    require_precision: bool = typer.Option(
        False,
        "--require-precision",
        help="Exit 3 when a target is not met (the result is still printed and written).",
    ),
    warmup: str = typer.Option(
        BENCH_DEFAULTS["warmup"],
        "--warmup",
        metavar="DURATION",
        help="Ops in this first stretch of every run are discarded.",
    ),
    run_time: str = typer.Option(
        BENCH_DEFAULTS["run-time"],
        "--run-time",
        "--round-time",
        metavar="DURATION",
        help="Measured length of one run (after warm-up).",
    ),
    min_runs: int = typer.Option(
        runs.MIN_RUNS,
        "--min-runs",
        metavar="COUNT",
        help="Pilot runs that plan how many runs the targets need.",
    ),
    restart: str = typer.Option(
        BENCH_DEFAULTS["restart"],
        "--restart",
        metavar="server|connections",
        help="What each run starts afresh: server (and connections) or connections only.",
    ),
    noisy: str = typer.Option(
        BENCH_DEFAULTS["noisy"],
        "--noisy",
        metavar="keep|drop|fail",
        help="A run disturbed by other work on the pinned CPUs: keep (and warn), drop, fail.",
    ),
    op_timeout: str = typer.Option(
        BENCH_DEFAULTS["op-timeout"],
        "--op-timeout",
        metavar="DURATION",
        help="A reply slower than this is an error, not a hang.",
    ),
    startup_timeout: str = typer.Option(
        BENCH_DEFAULTS["startup-timeout"],
        "--startup-timeout",
        metavar="DURATION",
        help="How long the server may take to start listening.",
    ),
    idle_states: str = typer.Option(
        BENCH_DEFAULTS["idle-states"],
        "--idle-states",
        metavar="shallow|any",
        help="shallow: keep the CPUs out of deep idle states while measuring (as root, "
        "through /dev/cpu_dma_latency); any: the machine's own policy.",
    ),
    port: int | None = typer.Option(
        None, "--port", metavar="PORT", help="Server port. Default: a free one."
    ),
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
        metavar="RATE",
        help="Open loop: offer this many ops/s over all clients (50k, 1.5M), each word sent "
        "on schedule whether or not earlier replies came. Default: closed loop.",
    ),
    arrivals: str = typer.Option(
        BENCH_DEFAULTS["arrivals"],
        "--arrivals",
        metavar="poisson|fixed",
        help="Open loop: poisson or fixed gaps between sends.",
    ),
    spin: str | None = typer.Option(
        None,
        "--spin",
        metavar="DURATION",
        help="Open loop: wake this long before each send and spin until it is due, so sends "
        "leave on time instead of a wake-up late (0: sleep to each send). Default: "
        f"{worker.SPIN_NS // 1000}us, shared out where clients share a CPU, none on the "
        "server's CPUs.",
    ),
    json_path: str | None = typer.Option(
        None, "--json", metavar="PATH", help="Write the result as JSON (- for stdout)."
    ),
    history_place: str | None = typer.Option(
        None,
        "--history",
        metavar="DIR",
        help="Where earlier sittings of each configuration are kept; their spread widens "
        "the intervals (off: neither read nor kept). Default: $VOLLEY_HISTORY, else "
        "~/.local/state/volley/sittings.",
    ),
    topology_file: str | None = typer.Option(
        None,
        "--topology",
        metavar="FILE",
        help="Place CPUs by this lscpu -p=CPU,CORE,SOCKET,NODE output instead of this "
        "machine's topology (volley plan shows the placement).",
    ),
    rehearse: bool = typer.Option(
        False,
        "--rehearse",
        help="Rehearse the run planned on --topology's machine here: its CPUs folded onto "
        "this machine's (one worker per planned client CPU), every run, restart and merge "
        "as planned, and the time each phase of a run takes. Its latencies are not "
        "meaningful: no history, and compare and plot refuse the result.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Measure a server's latency with pinned ping-pong clients until the mean is known to
    --precision (or for --runs COUNT or --duration DURATION), and print the answer with the
    precision it reached.

    Exit status: 0 measured, whatever the precision reached; 1 the run failed; 2 bad input;
    3 a target not met, with --require-precision only; 130 interrupted.
    """
    try:
        team = hosts.join()  # None unless an MPI launcher started several of us
    except hosts.HostsError as e:
        fail(str(e), e.status)
    config = _configure(BenchOptions.of(locals()), team, json_path)
    sittings = None
    # The rule and the result are rank 0's; a rehearsal's latencies are no sitting.
    if not (team and team.rank) and not config.rehearsal:
        config, sittings = _earlier_sittings(config, history_place or history.default_place())
    warn_before(config)
    try:
        progress = None if quiet else StreamProgress()
        if team:
            result = _bench_on_hosts(team, config, clients is not None, progress, json_path)
        else:
            result = session.benchmark(config, progress)
    except KeyboardInterrupt:
        fail("interrupted before any run started", EXIT_INTERRUPTED)
    except (server.ServerError, coordinator.BenchError, play.RunFailed) as e:
        fail(str(e), EXIT_FAILED)
    _report(_keep_sitting(result, sittings), json_path)
    raise typer.Exit(exit_status(result.status, require_precision))


def _configure(
    raw: BenchOptions, team: hosts.Team | None, json_path: str | None
) -> coordinator.BenchConfig:
    """The checked configuration; on bad input, exit 2 (on many hosts, rank 0 ends the job)."""
    try:
        config = make_config(raw)
        if not (team and team.rank):
            check_json_path(json_path)
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
    return config


def _report(result: results.BenchResult, json_path: str | None) -> None:
    """Write the result (to --json) and print its summary; exit 1 if it cannot be written."""
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
    if result.rehearsal:
        say("\n".join(phase_lines(result)), sys.stderr if json_path == "-" else sys.stdout)
    if unwritten:
        fail(unwritten, EXIT_FAILED)


def check_json_path(json_path: str | None) -> None:
    """--json PATH must be writable before any work is done (BadInput otherwise); ``-``
    (stdout) needs no check. Every command's --json is checked so."""
    if json_path and json_path != "-":
        results.check_writable(Path(json_path))


def exit_status(status: str, require_precision: bool) -> int:
    """A measurement that completed exits 0 whatever its precision: the result says how
    precise it is. Missing a target is a failure only where the caller asks for it."""
    if status == results.NOT_SIGNIFICANT and not require_precision:
        return 0
    return EXIT_CODES[status]


def warn_before(config: coordinator.BenchConfig) -> None:
    """What makes the measurement less than asked for, said before it starts; --quiet
    hides progress, never these."""
    for warning in config.placement.warnings:
        say(f"warning: {warning}", sys.stderr)
    if config.idle_states == IdleStates.SHALLOW:
        denied = machine.idle_hold_problem()
        if denied:
            say(
                f"warning: cannot hold the CPUs out of deep idle states ({denied}); "
                "measuring with them (run as root, or --idle-states any to say so)",
                sys.stderr,
            )


def _keep_sitting(
    result: results.BenchResult, sittings: history.History | None
) -> results.BenchResult:
    """Keep the sitting unless it differs from the earlier ones; the result says which."""
    sitting = history.Sitting.of(result)
    if sittings is None or sitting is None:
        return result
    check = sittings.check(sitting)
    if check.prediction_interval_ns:
        result = replace(result, history=check.to_json())
    if not check.consistent:
        return result  # a sitting from another state of the machine would poison tau2
    disturbed = history.too_disturbed(result)
    if disturbed:
        say(f"warning: this sitting is not kept in the history: {disturbed}", sys.stderr)
        return result
    try:
        sittings.add(sitting)
    except OSError as e:
        say(f"warning: cannot keep this sitting in {sittings.path}: {e}", sys.stderr)
    return result


def _earlier_sittings(
    config: coordinator.BenchConfig, place: str
) -> tuple[coordinator.BenchConfig, history.History | None]:
    """``config`` with what earlier sittings of it say, and their history to add to."""
    if place == history.OFF:
        return config, None
    try:
        found = history.History(place, history.configuration(config))
    except OSError as e:
        say(f"warning: cannot read earlier sittings in {place} ({e}); --history off", sys.stderr)
        return config, None
    earlier = replace(config, earlier_sittings=len(found.sittings), between=found.between())
    return earlier, found


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


@dataclass(frozen=True)
class BenchOptions:
    """volley-bench's measurement options as typed, none checked yet (``make_config`` checks
    them): the fields are named as ``bench``'s parameters, and default as its options do."""

    server_path: str | None = None
    args: list[str] | None = None
    cores: str | None = None
    server_cores: str | None = None
    clients: int | None = None
    precision: list[str] = field(default_factory=lambda: [BENCH_DEFAULTS["precision"]])
    confidence: str = BENCH_DEFAULTS["confidence"]
    max_time: str | None = None
    fixed_runs: int | None = None
    duration: str | None = None
    warmup: str = BENCH_DEFAULTS["warmup"]
    run_time: str = BENCH_DEFAULTS["run-time"]
    min_runs: int = runs.MIN_RUNS
    restart: str = BENCH_DEFAULTS["restart"]
    noisy: str = BENCH_DEFAULTS["noisy"]
    op_timeout: str = BENCH_DEFAULTS["op-timeout"]
    startup_timeout: str = BENCH_DEFAULTS["startup-timeout"]
    idle_states: str = BENCH_DEFAULTS["idle-states"]
    port: int | None = None
    server_address: str = server.LOOPBACK
    connect: str | None = None
    rate: str | None = None
    arrivals: str = BENCH_DEFAULTS["arrivals"]
    spin: str | None = None
    topology_file: str | None = None
    rehearse: bool = False

    @classmethod
    def of(cls, given: Mapping[str, Any]) -> BenchOptions:
        """The options among ``given`` (``bench``'s parameters, by name)."""
        return cls(**{f.name: given[f.name] for f in fields(cls)})


def target_of(server_path: str | None, connect: str | None) -> tuple[str | None, Address | None]:
    """SERVER or --connect HOST:PORT, exactly one of them; BadInput otherwise."""
    address = parse_address(connect) if connect else None
    if address and server_path:
        raise BadInput("give either SERVER or --connect HOST:PORT, not both")
    if not address and not server_path:
        raise BadInput(
            "missing SERVER: give a server binary (like target/servers/c-threaded) "
            "or --connect HOST:PORT"
        )
    return server_path, address


def make_config(raw: BenchOptions) -> coordinator.BenchConfig:
    """Turn the options into a checked BenchConfig; BadInput says what is wrong."""
    server_path, address = target_of(raw.server_path, raw.connect)
    if raw.server_address != server.LOOPBACK:
        check_server_address(raw.server_address, address is not None)
    if server_path:
        server_path = server.resolve(server_path)
    if address:
        server.probe(*address)
    check_port(raw.port, raw.server_address)
    placement, planned, clients = _placement(raw, address is not None)
    if raw.min_runs < 2:
        raise BadInput(f"--min-runs {raw.min_runs} must be at least 2 (an interval needs two runs)")
    noisy = choose(Noisy, raw.noisy, "--noisy")
    idle_states = choose(IdleStates, raw.idle_states, "--idle-states")
    restart = choose(Restart, raw.restart, "--restart")
    run_time_s = parse_duration_s(raw.run_time, "--run-time")
    rate_ops_s, arrivals, spin_ns = _open_loop(raw, clients, run_time_s)
    check_fixed_size(raw.fixed_runs, raw.duration, raw.max_time)
    return coordinator.BenchConfig(
        server=server_path or raw.connect or "",
        server_args=raw.args or [],
        clients=clients,
        placement=placement,
        targets=parse_targets(raw.precision or ["1%"]),
        confidence=parse_confidence(raw.confidence),
        max_time_s=parse_duration_s(raw.max_time or BENCH_DEFAULTS["max-time"], "--max-time"),
        warmup_s=parse_duration_s(raw.warmup, "--warmup", allow_zero=True),
        run_time_s=run_time_s,
        min_runs=raw.min_runs,
        restart=Restart.CONNECTIONS if address else restart,
        noisy=noisy,
        op_timeout_s=parse_duration_s(raw.op_timeout, "--op-timeout"),
        startup_timeout_s=parse_duration_s(raw.startup_timeout, "--startup-timeout"),
        port=raw.port,
        connect=address,
        server_address=raw.server_address,
        rate_ops_s=rate_ops_s,
        arrivals=arrivals,
        idle_states=idle_states,
        spin_ns=spin_ns,
        runs=raw.fixed_runs,
        duration_s=None if raw.duration is None else parse_duration_s(raw.duration, "--duration"),
        planned=planned,
        topology=raw.topology_file,
    )


def check_port(port: int | None, address: str) -> None:
    """BadInput unless --port is left out, or a free TCP port on ``address``."""
    if port is not None and not 0 < port < 65536:
        raise BadInput(f"--port {port} is not a TCP port (1-65535)")
    if port is not None and not server.port_is_free(address, port):
        raise BadInput(
            f"--port {port} is already in use on {address}; pick another "
            "or leave --port out to get a free one"
        )


def _placement(
    raw: BenchOptions, remote_server: bool
) -> tuple[cpus.Placement, cpus.Placement | None, int]:
    """Where the server and the clients run, where a rehearsal's plan put them (None when
    not rehearsing), and how many clients."""
    planned = None
    if raw.rehearse:
        planned, placement = rehearsal_placement(raw, remote_server)
    else:
        placed_by, differs = topology.for_placement(raw.topology_file)
        placement = cpus.place(raw.cores, raw.server_cores, None, placed_by, remote_server)
        placement = replace(placement, warnings=placement.warnings + differs)
    clients = len(placement.client_cpus) if raw.clients is None else raw.clients
    if clients < 1:
        raise BadInput(f"--clients {clients} must be at least 1")
    return placement, planned, clients


def rehearsal_placement(
    raw: BenchOptions, remote_server: bool
) -> tuple[cpus.Placement, cpus.Placement]:
    """--rehearse: the placement planned on the --topology machine (all its CPUs usable,
    as volley plan shows it), and that placement folded onto the CPUs usable here."""
    if raw.topology_file is None:
        raise BadInput(
            "--rehearse plays the plan of the machine a --topology FILE describes: give "
            "--topology FILE (its lscpu -p=CPU,CORE,SOCKET,NODE output)"
        )
    lab = topology.load(raw.topology_file)
    planned = cpus.place(raw.cores, raw.server_cores, lab.cpus, lab, remote_server=remote_server)
    return planned, cpus.fold(planned, cpus.usable_cpus())


def _open_loop(
    raw: BenchOptions, clients: int, run_time_s: float
) -> tuple[float | None, Arrivals, int]:
    """The open loop's offered rate (None: the closed loop), its arrivals and its spin."""
    rate_ops_s = parse_rate(raw.rate) if raw.rate is not None else None
    arrivals = choose(Arrivals, raw.arrivals, "--arrivals")
    if rate_ops_s is not None and rate_ops_s / clients * run_time_s < 1:
        raise BadInput(
            f"--rate {raw.rate} is less than one op per client per run ({clients} client"
            f"{'' if clients == 1 else 's'}, {run_time_s:g} s runs); raise it or use fewer clients"
        )
    if raw.spin is not None and rate_ops_s is None:
        raise BadInput("--spin applies to the open loop: give --rate too")
    return rate_ops_s, arrivals, worker.SPIN_NS if raw.spin is None else parse_spin_ns(raw.spin)


def check_fixed_size(fixed_runs: int | None, duration: str | None, max_time: str | None) -> None:
    """BadInput unless at most one of --runs, --duration and --max-time bounds the runs:
    --max-time bounds the search for precision, and would cut a fixed size short."""
    given = [
        option
        for option, value in (("--runs", fixed_runs), ("--duration", duration))
        if value is not None
    ]
    if len(given) == 2:
        raise BadInput("give either --runs COUNT or --duration DURATION, not both")
    if given and max_time is not None:
        raise BadInput(
            f"{given[0]} fixes how long the measurement is: leave out --max-time, which "
            "bounds the search for --precision"
        )
    if fixed_runs is not None and fixed_runs < 2:
        raise BadInput(f"--runs {fixed_runs} must be at least 2 (an interval needs two runs)")


SPIN_LIMIT_NS = 10_000_000  # longer than any wake-up: spinning more only burns the CPU
_SPIN = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ns|us|µs|ms|s)?\s*")


def parse_spin_ns(text: str) -> int:
    """``--spin``: ``"50us"``, ``"0.1ms"``, ``"0"`` -> nanoseconds."""
    match = _SPIN.fullmatch(text)
    if not match or (match.group(2) is None and float(match.group(1)) != 0):
        raise BadInput(f"--spin {text!r} is not a duration; write it like 50us, 0.1ms or 0")
    spin_ns = float(match.group(1)) * _TIME_NS[match.group(2) or "ns"]
    if spin_ns > SPIN_LIMIT_NS:
        raise BadInput(f"--spin {text!r} is more than 10ms: a wake-up takes microseconds")
    return int(spin_ns)


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


SETTINGS = {"help_option_names": ["-h", "--help"]}


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


def bench_main() -> None:
    single = typer.Typer(
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings=SETTINGS,
    )
    single.command()(bench)
    run(single)

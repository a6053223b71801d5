"""The server contract of the README's "Contributing servers", one check per clause, in the
order ``volley check`` runs them.

Each check is a small function registered in ``CHECKS``: it returns its verdict when the
server keeps that clause and raises ``probe.Failed`` when it does not. An advisory check is
shown but not counted: it looks at something the contract leaves open (the usage error
without ``-p``), so its failure is advice, not a broken server.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from volley.engine import server
from volley.numbers.units import format_ms
from volley.studies.probe import (
    MASK,
    REPLY_TIMEOUT_S,
    Failed,
    Target,
    ask,
    converse,
    exit_status,
    expect_reply,
    gather,
    hexword,
    hint,
    pack,
    receive,
    reply_to,
    run_once,
    send,
    show,
    show_bytes,
)

END_TIMEOUT_S = 2.0  # zero and SIGTERM must end the server within this
USAGE_TIMEOUT_S = 5.0  # a JVM takes a while even to print its usage line
PAUSE_S = 0.05  # between the pieces of a split word, and after a close
EXTRA_WAIT_S = 0.1  # how long to listen for replies nobody asked for
CONCURRENT_CONNECTIONS = 64
PIPELINED_WORDS = 100
OTHER_CONNECTIONS = 4  # open while a zero challenge arrives
WORDS_BEFORE_ZERO = (3, 15)  # words sent with a zero behind them in one write, a server each
BUSY_CONNECTIONS = 8
BUSY_REPLIES = 3  # each busy connection gets this many replies before SIGTERM ...
BUSY_RAMP_S = 1.0  # ... or this long passes (a server serving one at a time never gets there)
# Sustained: long connections, each reply checked; words go in windows so that it takes
# seconds, not the minutes one word at a time would.
SUSTAINED_CONNECTIONS = 8
SUSTAINED_WORDS = 20_000  # on each of those connections, at the same time
LONG_WORDS = 100_000  # then on one connection alone
WINDOW_WORDS = 500  # written at once, then all their replies read
SUSTAINED_BOUND_S = 15.0  # a slow server is checked as far as it gets by then
# Thousands of replies per window on a busy machine: a window's replies may take longer
# than one reply's REPLY_TIMEOUT_S without the server being stuck.
WINDOW_TIMEOUT_S = 5.0
# Reset with replies pending: enough words that the server is still writing replies when
# the reset comes, and enough tries that a server that can die of it is caught every time.
PENDING_WORDS = 4000
RESET_TRIES = 20
RESET_BOUND_S = 1.5
# A loopback address besides 127.0.0.1: Linux routes all of 127.0.0.0/8 to lo, no setup.
OTHER_LOOPBACK = "127.0.0.2"


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    run: Callable[[Target], str]  # the verdict when it passes; raises Failed otherwise
    needs_binary: bool  # starts, ends or runs the server itself, so not with --connect
    advisory: bool = False  # shown, not counted: the contract does not require it


CHECKS: dict[str, Check] = {}  # in the order they run

CheckFunction = Callable[[Target], str]


def check(
    name: str, description: str, needs_binary: bool = False, advisory: bool = False
) -> Callable[[CheckFunction], CheckFunction]:
    def register(run: CheckFunction) -> CheckFunction:
        CHECKS[name] = Check(name, description, run, needs_binary, advisory)
        return run

    return register


@contextlib.contextmanager
def after(what: str) -> Iterator[None]:
    """Prefix a failure's verdict with the situation it happened in."""
    try:
        yield
    except Failed as f:
        raise Failed(f"after {what}: {f.verdict}", f.sent, f.expected, f.received) from None


@check("listens", "starts with -p PORT and listens within the startup timeout")
def listens(target: Target) -> str:
    if target.fixed:
        with target.connect(target.fixed):
            return "accepts connections on {}:{}".format(*target.fixed)
    took = target.start()
    assert target.process is not None
    return f"listening on {target.process.host}:{target.process.port} {took:.2f} s after start"


BASIC_WORDS = [1, 2, 42, 255, 256, 1000, 65536, 0x01020304, 123456789, 0x0A0B0C0D]


@check("basic", "words answered with word + 1 in network byte order, one at a time")
def basic(target: Target) -> str:
    with target.connect(target.address()) as sock:
        converse(sock, BASIC_WORDS, "on one connection, one at a time")
    return f"{len(BASIC_WORDS)} words answered with word + 1, big-endian"


EDGE_WORDS = [0xFF, 0xFFFF, 0xFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 1]


@check("edge-values", "carries across bytes, 0x7FFFFFFF, and wrap-around of 0xFFFFFFFF to 0")
def edge_values(target: Target) -> str:
    with target.connect(target.address()) as sock:
        converse(sock, EDGE_WORDS, "on one connection, one at a time")
    return "carries, 0x7FFFFFFF -> 0x80000000 and 0xFFFFFFFF -> 0x00000000 all right"


SPLITS = [(0x12345678, (1, 1, 1, 1)), (0x0A0B0C0D, (3, 1)), (0x01020304, (2, 2))]


@check("split-word", "a word sent in single bytes with pauses (and 3+1, 2+2) is one word")
def split_word(target: Target) -> str:
    with target.connect(target.address()) as sock:
        for index, (n, sizes) in enumerate(SPLITS):
            data, offset = pack(n), 0
            how = f"(sent as {'+'.join(map(str, sizes))} bytes, {format_ms(PAUSE_S)} apart)"
            for k, size in enumerate(sizes):
                if k:
                    time.sleep(PAUSE_S)
                send(sock, data[offset : offset + size], f"{hexword(n)} {how}")
                offset += size
            expect_reply(sock, n, how, SPLITS[index - 1][0] if index else None)
    return "words split into pieces with pauses answered once each, correctly"


@check("pipelined", f"{PIPELINED_WORDS} words in one write answered in order, one reply each")
def pipelined(target: Target) -> str:
    words = [0x01000000 + i * 0x00010101 for i in range(PIPELINED_WORDS)]
    expected = [reply_to(w) for w in words]
    sent = f"{PIPELINED_WORDS} words in one write: {show(words)}"
    with target.connect(target.address()) as sock:
        send(sock, b"".join(pack(w) for w in words), sent)
        data, problem = receive(sock, 4 * len(words), REPLY_TIMEOUT_S)
        got = [int.from_bytes(data[i : i + 4], "big") for i in range(0, len(data) // 4 * 4, 4)]
        for i, reply in enumerate(got):
            if reply != expected[i]:
                raise Failed(
                    f"reply {i + 1} of {len(words)} was {hexword(reply)}, expected "
                    f"{hexword(expected[i])}: replies come in order, one per word",
                    sent,
                    f"from reply {i + 1}: {show(expected[i:])}",
                    f"from reply {i + 1}: {show(got[i:])}",
                )
        if problem:
            raise Failed(
                f"{len(got)} of {len(words)} replies, then {problem}",
                sent,
                f"{len(words)} replies: {show(expected)}",
                show_bytes(data),
            )
        extra, _ = receive(sock, 4, EXTRA_WAIT_S)
        if extra:
            raise Failed(
                f"more than {len(words)} replies: {show_bytes(extra)} after the last one",
                sent,
                f"{len(words)} replies and no more",
                f"... then {show_bytes(extra)}",
            )
        ask(sock, 0x00ABCDEF, "(after the pipelined words)")
    return f"{PIPELINED_WORDS} words in one write answered in order, none dropped or repeated"


@check("concurrent", f"{CONCURRENT_CONNECTIONS} connections opened first are served at once")
def concurrent(target: Target) -> str:
    count = CONCURRENT_CONNECTIONS
    address = target.address()
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(target.connect(address)) for _ in range(count)]
        for round_, order in enumerate((range(count), range(count - 1, -1, -1))):
            words = [0x00C0FFEE + (round_ * count + i) * 0x0101 for i in range(count)]
            sent = (
                f"one word on each of {count} connections opened beforehand"
                f"{' (in reverse order, second round)' if round_ else ''}: {show(words)}"
            )
            for i in order:
                send(socks[i], pack(words[i]), sent)
            replies, problems = gather(socks, 4, REPLY_TIMEOUT_S)
            missing = [i for i, problem in enumerate(problems) if problem]
            if missing:
                first = missing[0]
                raise Failed(
                    f"only {count - len(missing)} of {count} connections got a reply within "
                    f"{REPLY_TIMEOUT_S:g} s"
                    + (
                        ": connections must be served at the same time"
                        if all("no reply" in (problems[i] or "") for i in missing)
                        else f"; connection {first + 1}: {problems[first]}"
                    ),
                    sent,
                    f"{count} replies within {REPLY_TIMEOUT_S:g} s",
                    f"{count - len(missing)} replies; connection {first + 1}: {problems[first]}",
                )
            for i, data in enumerate(replies):
                got = int.from_bytes(data, "big")
                if got != reply_to(words[i]):
                    raise Failed(
                        f"reply to {hexword(words[i])} on connection {i + 1} of {count} was "
                        f"{hexword(got)}, expected {hexword(reply_to(words[i]))}"
                        f"{hint(words[i], got, words[i] - count * 0x0101 if round_ else None)}",
                        sent,
                        hexword(reply_to(words[i])),
                        hexword(got),
                    )
    return f"{count} connections opened first all answered at once, twice"


def challenges(count: int, seed: int) -> np.ndarray:
    """``count`` non-zero words that touch every byte (a multiplicative hash of the index)."""
    words = (np.arange(seed, seed + count, dtype=np.uint64) * 2654435761) & MASK
    words[words == 0] = 1
    return words.astype(np.uint32)


def play_windows(sock: socket.socket, words: np.ndarray, where: str, deadline: float) -> int:
    """Send ``words`` a window at a time and check every reply, until done or ``deadline``:
    how many were answered. Failed at the first wrong or missing reply, naming its place."""
    sent = words.astype(">u4").tobytes()
    expected = ((words.astype(np.uint64) + 1) & MASK).astype(">u4").tobytes()
    for start in range(0, len(words), WINDOW_WORDS):
        if time.monotonic() > deadline:
            return start
        end = min(start + WINDOW_WORDS, len(words))
        window = f"words {start + 1}-{end} of {len(words)} {where}"
        send(sock, sent[4 * start : 4 * end], window)
        data, problem = receive(sock, 4 * (end - start), WINDOW_TIMEOUT_S)
        want = expected[4 * start : 4 * end]
        if data != want[: len(data)] or problem:
            got = np.frombuffer(data[: len(data) // 4 * 4], dtype=">u4")
            good = np.frombuffer(want, dtype=">u4")[: len(got)]
            wrong = np.flatnonzero(got != good)
            first = int(wrong[0]) if len(wrong) else len(got)
            index = start + first
            n = int(words[index])
            if len(wrong):
                verdict = (
                    f"reply to word {index + 1} of {len(words)} {where} was "
                    f"{hexword(int(got[first]))}, expected {hexword(reply_to(n))}"
                    f"{hint(n, int(got[first]), int(words[index - 1]) if index else None)}"
                )
                received = hexword(int(got[first]))
            else:
                verdict = f"{problem}, waiting for the reply to word {index + 1} {where}"
                received = show_bytes(data[4 * first :])
            raise Failed(verdict, f"{hexword(n)} ({window})", hexword(reply_to(n)), received)
    return len(words)


@check(
    "sustained",
    f"{SUSTAINED_CONNECTIONS} connections x {SUSTAINED_WORDS:,} words at once, then one of "
    f"{LONG_WORDS:,} words; every reply checked",
)
def sustained(target: Target) -> str:
    address = target.address()
    began = time.monotonic()
    deadline = began + SUSTAINED_BOUND_S
    failures: list[Failed] = []
    answered = [0] * SUSTAINED_CONNECTIONS

    def rally(i: int, sock: socket.socket) -> None:
        try:
            where = f"on connection {i + 1} of {SUSTAINED_CONNECTIONS}"
            words = challenges(SUSTAINED_WORDS, 1 + i * SUSTAINED_WORDS)
            answered[i] = play_windows(sock, words, where, deadline)
        except Failed as f:
            failures.append(f)

    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(target.connect(address)) for _ in range(SUSTAINED_CONNECTIONS)]
        threads = [
            threading.Thread(target=rally, args=(i, sock), daemon=True)
            for i, sock in enumerate(socks)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            # Each window's wait is bounded, so this is too; the bound is only a backstop.
            thread.join(WINDOW_TIMEOUT_S * (SUSTAINED_WORDS // WINDOW_WORDS + 1))
    if failures:
        raise failures[0]
    with target.connect(address) as sock:
        long = play_windows(sock, challenges(LONG_WORDS, 7), "on one long connection", deadline)
    took = time.monotonic() - began
    total = SUSTAINED_CONNECTIONS * SUSTAINED_WORDS + LONG_WORDS
    if sum(answered) + long < total:
        return (
            f"{sum(answered) + long:,} of {total:,} words answered right on long connections "
            f"when the check stopped at {SUSTAINED_BOUND_S:g} s (a slow server)"
        )
    return f"{total:,} words answered right on long connections in {took:.1f} s"


@check("reconnect", "closed connections (also after half a word, or reset) do not stop it")
def reconnect(target: Target) -> str:
    address = target.address()
    with target.connect(address) as sock:
        ask(sock, 11, "(on a first connection)")
    time.sleep(PAUSE_S)
    with after("a connection was closed"), target.connect(address) as sock:
        ask(sock, 21, "(on a new connection)")
        send(sock, pack(0x12345678)[:2], "half a word (12 34), then close")
    time.sleep(PAUSE_S)
    with after("a connection was closed after half a word"), target.connect(address) as sock:
        converse(sock, [31, 32], "on a new connection")
    with target.connect(address) as sock:
        send(sock, pack(41), "0x00000029, then a reset")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(PAUSE_S)
    with after("a connection was reset with its reply due"), target.connect(address) as sock:
        ask(sock, 51, "(on a new connection)")
    target.connect(address).close()
    time.sleep(PAUSE_S)
    with after("a connection closed without a word"), target.connect(address) as sock:
        ask(sock, 61, "(on a new connection)")
    return "kept serving new connections after closes, half a word, and a reset"


@check(
    "reset-pending",
    "a client that resets with replies still pending does not kill it (SIGPIPE)",
)
def reset_pending(target: Target) -> str:
    address = target.address()
    words = challenges(PENDING_WORDS, 11)
    burst = words.astype(">u4").tobytes()
    deadline = time.monotonic() + RESET_BOUND_S
    tries = 0
    try:
        while tries < RESET_TRIES and (tries == 0 or time.monotonic() < deadline):
            tries += 1
            earlier = (
                after(f"{tries - 1} connections were reset with replies pending")
                if tries > 1
                else contextlib.nullcontext()
            )
            with earlier, target.connect(address) as sock:
                send(sock, burst, f"{PENDING_WORDS} words in one write")
                expect_reply(sock, int(words[0]), f"(word 1 of {PENDING_WORDS} in one write)")
                # Half-close first: a reset that finds the server's side closing (CLOSE_WAIT)
                # makes its next write fail with EPIPE, which raises SIGPIPE; after a plain
                # reset a write fails with ECONNRESET once, and a server that stops there
                # escapes. A client that gives up on its replies often looks like this.
                with contextlib.suppress(OSError):  # the server may have dropped it already
                    sock.shutdown(socket.SHUT_WR)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            pending = f"a connection was reset with {PENDING_WORDS - 1} replies pending"
            with after(pending), target.connect(address) as sock:
                ask(sock, 0x5EED0000 + tries, "(on a new connection)")
    except Failed as f:
        if exit_status(target.process) == -signal.SIGPIPE:
            f.verdict += (
                " (the server exited with signal SIGPIPE: ignore SIGPIPE, or send with "
                "MSG_NOSIGNAL, and drop the connection)"
            )
            f.exit_told = True
        raise
    return f"kept serving after {tries} resets with replies pending"


@check(
    "zero",
    "a zero challenge ends the whole server at once, other connections open",
    needs_binary=True,
)
def zero(target: Target) -> str:
    process = target.live()
    address = process.host, process.port
    sent = f"0x00000000 on one of {OTHER_CONNECTIONS + 1} open connections"
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(target.connect(address))
        # A reply shows the connection is served; whether it is right is other checks' job.
        where = "0x00000007 (before the zero, on the connection that sends it)"
        send(sock, pack(7), where)
        data, problem = receive(sock, 4, REPLY_TIMEOUT_S)
        if problem:
            verdict = f"{problem}, waiting for the reply to 0x00000007"
            raise Failed(verdict, where, "0x00000008", show_bytes(data))
        others = [stack.enter_context(target.connect(address)) for _ in range(OTHER_CONNECTIONS)]
        for i, other in enumerate(others):
            with contextlib.suppress(OSError):
                other.sendall(pack(100 + i))
        gather(others, 4, 0.5)  # let them be served; whether they are is another check's
        family = process.family()
        began = time.monotonic()
        send(sock, pack(0), sent)
        report = process.watch_end("zero", began, END_TIMEOUT_S, family)
        if report.after_s is None:
            data, _ = receive(sock, 4, EXTRA_WAIT_S)
            target.retire()
            raise Failed(
                f"still running {END_TIMEOUT_S:g} s after a zero challenge",
                sent,
                "the server process ends (exit status 0)",
                f"reply {show_bytes(data)}; the process kept running (killed)"
                if data
                else "no reply; the process kept running (killed)",
            )
    target.record("zero", report)
    if report.exit_status != 0:
        status = server.describe_status(report.exit_status or 0)
        raise Failed(
            f"ended {format_ms(report.after_s)} after a zero challenge, but with {status}",
            sent,
            "exit status 0",
            status,
        )
    return (
        f"ended {format_ms(report.after_s)} after a zero challenge, "
        f"{OTHER_CONNECTIONS} other connections open"
    )


@check(
    "zero-after-words",
    f"words before a zero in the same write ({' and '.join(map(str, WORDS_BEFORE_ZERO))}) "
    "are answered before it ends",
    needs_binary=True,
)
def zero_after_words(target: Target) -> str:
    for count in WORDS_BEFORE_ZERO:
        process = target.live()
        words = [0x00D0D000 + i for i in range(count)]
        expected = [reply_to(w) for w in words]
        sent = f"{count} words, then 0x00000000, in one write: {show(words)}"
        with target.connect((process.host, process.port)) as sock:
            family = process.family()
            began = time.monotonic()
            send(sock, b"".join(pack(w) for w in [*words, 0]), sent)
            data, problem = receive(sock, 4 * count, REPLY_TIMEOUT_S)
            report = process.watch_end("zero", began, END_TIMEOUT_S, family)
        if report.after_s is None:
            target.retire()
            raise Failed(
                f"still running {END_TIMEOUT_S:g} s after {count} words and a zero in one write",
                sent,
                f"{count} replies, then the server process ends",
                f"{show_bytes(data)}; the process kept running (killed)",
            )
        target.record(f"zero after {count} words", report)
        got = [int.from_bytes(data[i : i + 4], "big") for i in range(0, len(data) // 4 * 4, 4)]
        if problem or got != expected:
            raise Failed(
                f"{len(got)} of {count} replies before the server ended"
                + (f" ({problem})" if problem else ", not the right ones")
                + ": words before a zero are answered first",
                sent,
                f"{count} replies: {show(expected)}, then the end",
                show_bytes(data),
            )
    counts = " and ".join(map(str, WORDS_BEFORE_ZERO))
    return f"{counts} words before a zero in one write all answered, then it ended"


def judge_term(target: Target, situation: str, report: server.ServerEnd, pid: int) -> str:
    if report.after_s is None:
        target.retire()
        raise Failed(
            f"still running {END_TIMEOUT_S:g} s after SIGTERM ({situation})",
            f"SIGTERM to pid {pid} ({situation})",
            f"the process ends within {END_TIMEOUT_S:g} s",
            "still running (killed)",
        )
    target.record(f"SIGTERM ({situation})", report)
    return f"ended {format_ms(report.after_s)} after SIGTERM"


@check("sigterm-idle", "SIGTERM ends it promptly while it waits for connections", needs_binary=True)
def sigterm_idle(target: Target) -> str:
    process = target.live()
    return judge_term(target, "idle", process.terminate(END_TIMEOUT_S), process.pid) + " (idle)"


@check(
    "sigterm-busy",
    f"SIGTERM ends it promptly with {BUSY_CONNECTIONS} busy connections",
    needs_binary=True,
)
def sigterm_busy(target: Target) -> str:
    process = target.live()
    address = process.host, process.port
    stop = threading.Event()
    counts = [0] * BUSY_CONNECTIONS

    def rally(i: int, sock: socket.socket) -> None:
        n = 1000 * (i + 1)
        with contextlib.suppress(OSError):
            while not stop.is_set():
                sock.sendall(pack(n))
                if receive(sock, 4, REPLY_TIMEOUT_S)[1]:
                    return
                counts[i] += 1
                n = reply_to(n) or 1

    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(target.connect(address)) for _ in range(BUSY_CONNECTIONS)]
        threads = [
            threading.Thread(target=rally, args=(i, sock), daemon=True)
            for i, sock in enumerate(socks)
        ]
        try:
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + BUSY_RAMP_S
            while min(counts) < BUSY_REPLIES and time.monotonic() < deadline:
                if process.process.poll() is not None:
                    break
                time.sleep(0.01)
            status = process.process.poll()
            if status is not None:
                raise Failed(
                    f"the server exited with {server.describe_status(status)} while busy, "
                    "before SIGTERM was sent",
                    f"words back and forth on {BUSY_CONNECTIONS} connections",
                    "the server keeps serving until SIGTERM",
                    f"{sum(counts)} replies, then the process was gone",
                    exit_told=True,
                )
            report = process.terminate(END_TIMEOUT_S)
        finally:
            stop.set()
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            for thread in threads:
                if thread.is_alive():
                    thread.join(REPLY_TIMEOUT_S)
    verdict = judge_term(target, "busy", report, process.pid)
    return f"{verdict} ({BUSY_CONNECTIONS} busy connections, {sum(counts)} replies)"


@check(
    "cleanup", "nothing of it (children included) is left running after it ends", needs_binary=True
)
def cleanup(target: Target) -> str:
    if not target.ends:  # run alone (--only cleanup): end the server once, busy, here
        process = target.live()
        address = process.host, process.port
        with contextlib.ExitStack() as stack:
            for i in range(OTHER_CONNECTIONS):
                ask(stack.enter_context(target.connect(address)), 5 + i, "(before SIGTERM)")
            report = process.terminate(END_TIMEOUT_S)
        judge_term(target, f"{OTHER_CONNECTIONS} connections open", report, process.pid)
    hows = ", ".join(e.how for e in target.ends)
    left = [e for e in target.ends if e.leftovers]
    if left:
        first = left[0]
        raise Failed(
            f"{len(first.leftovers)} of its processes still ran {server.SETTLE_S:g} s after "
            f"the server ended by {first.how}",
            f"the server ended by {hows}",
            "no process of its process group or its descendants left",
            "; ".join(f"after {e.how}: {', '.join(e.leftovers)}" for e in left),
        )
    return f"nothing left running after it ended by {hows}"


@check(
    "address",
    f"with -a {OTHER_LOOPBACK} it listens there, and only there (advice: the seed's contract "
    "only asks for -p; servers/README.md adds -a)",
    needs_binary=True,
    advisory=True,
)
def address(target: Target) -> str:
    host = OTHER_LOOPBACK
    target.start(host)
    process = target.live()
    sent = " ".join(process.command)
    listening = sorted(process.listening_on())
    if listening != [host]:
        raise Failed(
            f"started with -a {host}, it listens on {', '.join(listening)}"
            + (" (every address)" if "0.0.0.0" in listening else ""),
            sent,
            f"listening on {host}:{process.port} only",
            f"listening on {', '.join(f'{a}:{process.port}' for a in listening)}",
        )
    with target.connect((host, process.port)) as sock:
        ask(sock, 7, f"(on {host})")
    target.retire()
    return f"listens on {host}:{process.port} only, and answers there"


@check(
    "usage",
    "without -p it prints a line on stderr and exits with status 2 (advice: the contract "
    "only asks servers to accept -p)",
    needs_binary=True,
    advisory=True,
)
def usage(target: Target) -> str:
    assert target.path is not None
    command = [target.path, *target.args]
    status, stderr = run_once(command, target.cpus, USAGE_TIMEOUT_S)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = f"stderr: {lines[0]}" if lines else "nothing on stderr"
    if status is None:
        verdict = f"still running {USAGE_TIMEOUT_S:g} s after starting without -p (killed)"
        received = f"still running; {said}"
    elif status != 2:
        verdict = f"exited with {server.describe_status(status)} without -p, not with status 2"
        received = f"{server.describe_status(status)}; {said}"
    elif not lines:
        verdict = "exit status 2 without -p, but nothing on stderr"
        received = f"status 2; {said}"
    else:
        return f"exit status 2 without -p; {said if len(said) <= 80 else said[:77] + '...'}"
    raise Failed(
        verdict, " ".join(command) + " (no -p)", "exit status 2, a line on stderr", received
    )

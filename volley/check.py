"""``volley check``: does a server keep the contract of the README's "Contributing servers"?

Each check is a small function in an ordered table. The runner starts the server the way
volley-bench does (pinned, on a free port, with a bounded wait for it to listen), gives a
check a fresh server when the one before ended it or failed, and kills whatever is left at
the end. Every wait is bounded, so a broken server fails a check instead of hanging it.

An advisory check is shown but not counted: it looks at something the contract leaves
open (the usage error without ``-p``), so its failure is advice, not a broken server.

JSON format history (``version``):
  1  first format: server, command, passed, total, checks (one CheckResult each), notes.
  2  each check has ``advisory``; ``passed``, ``total`` and ``all_passed`` count only the
     checks that are not advisory.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import psutil

from volley import __version__, server
from volley.results import strict_dumps
from volley.units import format_ms

FORMAT_VERSION = 2
MASK = 0xFFFFFFFF
REPLY_TIMEOUT_S = 2.0  # a reply later than this counts as missing
CONNECT_TIMEOUT_S = 2.0
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
SHOWN_WORDS = 6
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
DYING_S = 0.25  # after a failure, how long to look whether the server is on its way out
# A loopback address besides 127.0.0.1: Linux routes all of 127.0.0.0/8 to lo, no setup.
OTHER_LOOPBACK = "127.0.0.2"


class Failed(Exception):
    """A check failed: a one-line verdict, and what was sent, expected and received.
    ``exit_told``: the verdict already says that the server exited, and how."""

    def __init__(
        self,
        verdict: str,
        sent: str = "",
        expected: str = "",
        received: str = "",
        exit_told: bool = False,
    ):
        super().__init__(verdict)
        self.verdict, self.sent, self.expected, self.received = verdict, sent, expected, received
        self.exit_told = exit_told


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    verdict: str
    sent: str = ""
    expected: str = ""
    received: str = ""
    elapsed_s: float = 0.0
    advisory: bool = False  # shown, not counted


@dataclass(frozen=True)
class CheckRun:
    server: str
    command: list[str]
    results: list[CheckResult]
    notes: list[str] = field(default_factory=list)

    @property
    def counted(self) -> list[CheckResult]:
        return [r for r in self.results if not r.advisory]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.counted)

    @property
    def total(self) -> int:
        return len(self.counted)

    @property
    def all_passed(self) -> bool:
        return self.passed == self.total

    @property
    def advice(self) -> list[CheckResult]:
        return [r for r in self.results if r.advisory and not r.passed]


# --- words ---------------------------------------------------------------------------------


def pack(n: int) -> bytes:
    return n.to_bytes(4, "big")


def reply_to(n: int) -> int:
    return (n + 1) & MASK


def hexword(n: int) -> str:
    return f"0x{n:08X}"


def show(words: Sequence[int]) -> str:
    shown = " ".join(hexword(w) for w in words[:SHOWN_WORDS])
    return shown + (f" ... ({len(words)} words)" if len(words) > SHOWN_WORDS else "")


def show_bytes(data: bytes) -> str:
    """Received bytes as words, and a trailing partial word as bytes."""
    whole = len(data) // 4 * 4
    parts = [show([int.from_bytes(data[i : i + 4], "big") for i in range(0, whole, 4)])]
    if len(data) > whole:
        parts.append(f"partial word {data[whole:].hex(' ')}")
    return " + ".join(p for p in parts if p) or "nothing"


def hint(sent: int, got: int, previous: int | None = None) -> str:
    """A guess at the mistake behind a wrong reply, for the verdict."""
    if sent == MASK and got == MASK:
        return " (no wrap-around: 0xFFFFFFFF + 1 is 0)"
    little = reply_to(int.from_bytes(pack(sent), "little")).to_bytes(4, "little")
    if got == int.from_bytes(little, "big"):
        return " (little-endian? words are in network byte order, big-endian)"
    if previous is not None and got == reply_to(previous):
        return " (the reply to the word before, again: one reply per word)"
    if got == sent:
        return " (the challenge came back unchanged)"
    return ""


def reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def receive(sock: socket.socket, size: int, timeout_s: float) -> tuple[bytes, str | None]:
    """Up to ``size`` bytes within ``timeout_s``: what came and, if not all of it, why."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, f"nothing more within {timeout_s:g} s" if data else (
                f"no reply within {timeout_s:g} s"
            )
        sock.settimeout(left)
        try:
            chunk = sock.recv(size - len(data))
        except TimeoutError:
            continue
        except OSError as e:
            return data, f"connection error: {reason(e)}"
        if not chunk:
            return data, "the server closed the connection"
        data += chunk
    return data, None


def send(sock: socket.socket, data: bytes, what: str) -> None:
    try:
        sock.sendall(data)
    except OSError as e:
        raise Failed(
            f"could not send {what}: {reason(e)}",
            sent=what,
            expected="the connection open, reading",
            received=reason(e),
        ) from None


def expect_reply(sock: socket.socket, n: int, where: str, previous: int | None = None) -> None:
    """Read the reply to challenge ``n``; Failed says what went wrong."""
    expected = reply_to(n)
    data, problem = receive(sock, 4, REPLY_TIMEOUT_S)
    sent, want = f"{hexword(n)} {where}", hexword(expected)
    if problem:
        verdict = f"{problem}, waiting for the reply to {hexword(n)}"
        raise Failed(verdict, sent, want, show_bytes(data))
    got = int.from_bytes(data, "big")
    if got != expected:
        verdict = f"reply to {hexword(n)} was {hexword(got)}, expected {want}"
        raise Failed(verdict + hint(n, got, previous), sent, want, hexword(got))


def ask(sock: socket.socket, n: int, where: str, previous: int | None = None) -> None:
    send(sock, pack(n), f"{hexword(n)} {where}")
    expect_reply(sock, n, where, previous)


def converse(sock: socket.socket, words: Sequence[int], where: str) -> None:
    """Each word in turn, waiting for its reply before sending the next."""
    for i, n in enumerate(words):
        ask(sock, n, f"(word {i + 1} of {len(words)} {where})", words[i - 1] if i else None)


def gather(
    socks: Sequence[socket.socket], size: int, timeout_s: float
) -> tuple[list[bytes], list[str | None]]:
    """Read ``size`` bytes from every socket at once: what came, and why not all of it."""
    data = [b""] * len(socks)
    problems: list[str | None] = [None] * len(socks)
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        for i, sock in enumerate(socks):
            selector.register(sock, selectors.EVENT_READ, i)
        while selector.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                i, sock = key.data, socks[key.data]
                try:
                    chunk = sock.recv(size - len(data[i]))
                except (BlockingIOError, TimeoutError):
                    continue
                except OSError as e:
                    problems[i] = f"connection error: {reason(e)}"
                    chunk = b""
                if not chunk:
                    problems[i] = problems[i] or "the server closed the connection"
                data[i] += chunk
                if not chunk or len(data[i]) == size:
                    selector.unregister(sock)
        for key in list(selector.get_map().values()):
            problems[key.data] = f"no reply within {timeout_s:g} s"
    return data, problems


# --- the server under test -------------------------------------------------------------------


@dataclass(frozen=True)
class Ending:
    """One time the server ended when told to, for the cleanup check."""

    how: str  # "zero", "SIGTERM (idle)", ...
    exited_after_s: float
    leftovers: list[str]  # "PID command" of each of its processes still running after it


class Target:
    """The server under test: started on demand, restarted when a check ended it or failed.

    With ``address`` (--connect) it is a server someone else runs: never started or ended.
    """

    def __init__(
        self,
        path: str | None,
        args: list[str],
        cpus: list[int],
        startup_timeout_s: float,
        address: tuple[str, int] | None = None,
    ):
        self.path, self.args, self.cpus = path, args, cpus
        self.startup_timeout_s = startup_timeout_s
        self.fixed = address
        self.process: server.ServerProcess | None = None
        self.start_error: str | None = None  # the check in which the server failed to start
        self.ends: list[Ending] = []
        self.exits: list[str] = []  # checks that found the server had exited on its own
        self.current_check = ""

    def start(self, host: str = server.LOOPBACK) -> float:
        """A fresh server listening (on ``host``, given as -a unless it is the loopback); the
        seconds that took. Failed if it does not listen."""
        self.retire()
        if self.start_error:  # once is enough: each try may take the whole startup timeout
            raise Failed(f"not run: the server did not start (see {self.start_error})")
        assert self.path is not None
        if host == server.LOOPBACK:  # failing on another address blocks no other check
            self.start_error = self.current_check
        began = time.monotonic()
        process = server.start(self.path, self.args, server.choose_port(host), self.cpus, host)
        try:
            process.wait_listening(self.startup_timeout_s, connect=False)
        except server.ServerError as e:
            status, tail = process.process.poll(), process.output_tail()
            process.kill()
            raise Failed(
                str(e),
                sent=" ".join(process.command),
                expected=f"listening on {process.host}:{process.port} within "
                f"{self.startup_timeout_s:g} s",
                received=(
                    f"exited with {server.describe_status(status)}"
                    if status is not None
                    else "not listening (killed)"
                )
                + (f"; its output: {tail}" if tail else "; no output"),
                exit_told=status is not None,
            ) from None
        self.start_error = None
        self.process = process
        return time.monotonic() - began

    def live(self) -> server.ServerProcess:
        """The running server, started anew if there is none or it exited on its own."""
        if self.process is not None:
            status = self.process.process.poll()
            if status is None:
                return self.process
            self.exits.append(f"{self.current_check} ({server.describe_status(status)})")
        self.start()
        assert self.process is not None
        return self.process

    def address(self) -> tuple[str, int]:
        if self.fixed:
            return self.fixed
        process = self.live()
        return process.host, process.port

    def connect(self, address: tuple[str, int]) -> socket.socket:
        """A connection to ``address`` (never restarts the server: a refusal is a failure)."""
        host, port = address
        try:
            sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
        except OSError as e:
            note = self.exit_note()
            raise Failed(
                f"could not connect to {host}:{port}: {reason(e)}{note}",
                sent=f"a new connection to {host}:{port}",
                expected="accepted",
                received=f"{reason(e)}{note}",
                exit_told=bool(note),
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def exit_note(self) -> str:
        status = self.process.process.poll() if self.process else None
        return (
            f" (the server has exited with {server.describe_status(status)})"
            if (status is not None)
            else ""
        )

    def record(self, how: str, report: server.ServerEnd) -> None:
        """Keep how the server ended for the cleanup check, then kill what is left of it."""
        assert report.after_s is not None
        self.ends.append(Ending(how, report.after_s, describe_processes(report.leftovers)))
        self.retire()

    def retire(self) -> None:
        """Kill the server and everything it started, if it runs (never raises)."""
        if self.process is not None:
            self.process.kill()
            self.process = None


def describe_processes(pids: list[int]) -> list[str]:
    """``"PID command line"`` for each process, for messages."""
    described = []
    for pid in pids:
        try:
            command = " ".join(psutil.Process(pid).cmdline()) or "?"
        except psutil.Error:
            command = "(gone)"
        described.append(f"{pid} {command}")
    return described


def run_once(command: list[str], cpus: list[int], timeout_s: float) -> tuple[int | None, str]:
    """Run ``command`` as a server is run, for at most ``timeout_s``: its exit status (None
    if it was still running and had to be killed) and the start of its stderr. Whatever is
    left of its process group is killed either way."""
    with tempfile.TemporaryFile(prefix="volley-run-") as err:  # no name, nothing left
        try:
            process, watchdog = server.spawn(command, cpus, subprocess.DEVNULL, err)
        except OSError as e:
            raise Failed(f"could not start {command[0]!r}: {e.strerror or e}") from None
        try:
            status: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            status = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        watchdog.dismiss()
        err.seek(0)
        return status, err.read(server.LOG_TAIL_BYTES).decode(errors="replace")


# --- the checks ------------------------------------------------------------------------------


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


# --- running ---------------------------------------------------------------------------------


def select(only: list[str] | None, connect: bool) -> list[Check]:
    """The checks to run, in table order; ValueError for an unknown name."""
    names = [n.strip() for item in only or [] for n in item.split(",") if n.strip()]
    if only is not None and not names:
        raise ValueError(f"--only names no check; the checks are: {', '.join(CHECKS)}")
    for name in names:
        if name not in CHECKS:
            raise ValueError(f"--only: unknown check {name!r}; the checks are: {', '.join(CHECKS)}")
    chosen = [c for c in CHECKS.values() if not names or c.name in names]
    if connect:
        needing = [c.name for c in chosen if c.needs_binary]
        if names and needing:
            runnable = ", ".join(c.name for c in CHECKS.values() if not c.needs_binary)
            raise ValueError(
                f"check {needing[0]} needs SERVER, not --connect (it starts or "
                f"ends the server); with --connect these run: {runnable}"
            )
        chosen = [c for c in chosen if not c.needs_binary]
    return chosen


def attempt(check: Check, target: Target) -> tuple[str, Failed | None]:
    """Run one check: its verdict if it passed, else how it failed."""
    try:
        return check.run(target), None
    except Failed as f:
        return "", f
    except (server.ServerError, OSError) as e:
        return "", Failed(str(e))


def exit_status(process: server.ServerProcess | None) -> int | None:
    """Its exit status if it has exited or does so within DYING_S (a dying server resets
    connections a moment before it is gone), else None."""
    if process is None:
        return None
    with contextlib.suppress(subprocess.TimeoutExpired):
        return process.process.wait(timeout=DYING_S)
    return None


def run_one(check: Check, target: Target) -> CheckResult:
    began = time.monotonic()
    target.current_check = check.name
    for again in (False, True):
        inherited = target.process
        verdict, failure = attempt(check, target)
        if failure is None:
            break
        status = exit_status(target.process)
        if status is None:
            break
        if not failure.exit_told:
            failure.verdict += f" (the server exited with {server.describe_status(status)})"
            failure.exit_told = True
        if again or inherited is None or target.process is not inherited:
            break
        # It may have been dying of what the check before did (say, it exits when a connection
        # closes): that is the reconnect check's to find, so this one gets a server of its own.
        target.exits.append(f"{check.name} ({server.describe_status(status)})")
        target.retire()
    elapsed_s = round(time.monotonic() - began, 4)
    if failure is None:
        return CheckResult(check.name, True, verdict, "", "", "", elapsed_s, check.advisory)
    target.retire()  # the next check gets a fresh server, not this one's state
    f = failure
    return CheckResult(
        check.name, False, f.verdict, f.sent, f.expected, f.received, elapsed_s, check.advisory
    )


def run(
    checks: list[Check],
    path: str | None,
    args: list[str],
    cpus: list[int],
    startup_timeout_s: float,
    address: tuple[str, int] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> CheckRun:
    """Run ``checks`` against the server at ``path`` (or running at ``address``). Kills
    everything it started before returning, also when interrupted (SIGINT or SIGTERM)."""
    target = Target(path, args, cpus, startup_timeout_s, address)
    results: list[CheckResult] = []
    with server.stop_signals():
        try:
            for c in checks:
                results.append(run_one(c, target))
                if on_result:
                    on_result(results[-1])
        finally:
            target.retire()
    notes = []
    if target.exits:
        notes.append(
            f"the server had exited on its own when these checks began or soon after, so "
            f"they ran (again) on a fresh server: {', '.join(target.exits)}"
        )
    if address:
        skipped = [c.name for c in CHECKS.values() if c.needs_binary]
        notes.append(f"not run with --connect (they start or end the server): {', '.join(skipped)}")
    server_name = path if path else "{}:{}".format(*address) if address else ""
    command = [path, "-p", "PORT", *args] if path else []
    return CheckRun(server_name, command, results, notes)


def listing() -> str:
    width = max(len(name) for name in CHECKS)
    return "\n".join(
        f"{c.name:<{width}}  {c.description}{'' if c.needs_binary else '  (also --connect)'}"
        for c in CHECKS.values()
    )


class Formatter:
    """Lines for each result as it comes: an aligned table, or a plain list for pipes."""

    def __init__(self, checks: list[Check], table: bool):
        self.table = table
        self.width = max([len(c.name) for c in checks] + [len("check")])

    def header(self) -> list[str]:
        if not self.table:
            return []
        w = self.width
        return [
            f"{'check':<{w}}  result  {'time':>8}  verdict",
            f"{'-' * w}  ------  {'-' * 8}  {'-' * 7}",
        ]

    def result(self, r: CheckResult) -> list[str]:
        mark = "pass" if r.passed else "note" if r.advisory else "FAIL"
        details = [
            (k, v)
            for k, v in (("sent", r.sent), ("expected", r.expected), ("received", r.received))
            if v
        ]
        if self.table:
            indent = " " * (self.width + 20)
            lines = [f"{r.name:<{self.width}}  {mark:<6}  {r.elapsed_s:>6.2f} s  {r.verdict}"]
            return lines + [f"{indent}{k + ':':<10}{v}" for k, v in details]
        lines = [f"{mark.upper()} {r.name}: {r.verdict} ({r.elapsed_s:.2f} s)"]
        return lines + [f"    {k + ':':<10}{v}" for k, v in details]

    def summary(self, run: CheckRun) -> list[str]:
        notes = [f"note: {n}" for n in run.notes]
        advice = run.advice
        if advice:
            names = ", ".join(r.name for r in advice)
            notes.append(f"note: advice only, not counted: {names}")
        return notes + [f"{run.passed}/{run.total} checks passed"]


def dumps(run: CheckRun) -> str:
    data = {
        "version": FORMAT_VERSION,
        "volley_version": __version__,
        "server": run.server,
        "command": run.command,
        "passed": run.passed,
        "total": run.total,
        "all_passed": run.all_passed,
        "checks": [asdict(r) for r in run.results],
        "notes": run.notes,
    }
    return strict_dumps(data, indent=2) + "\n"

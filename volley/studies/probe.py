"""The checker's side of a conversation with a server under ``volley check``: challenges
and the replies they must get, read with a bound on every wait, and the server under test
itself (``Target``), started the way volley-bench starts one and restarted when a check
ended it. A problem becomes ``Failed``: one line of verdict, and what was sent, expected and
received.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from volley.engine import server

MASK = 0xFFFFFFFF
REPLY_TIMEOUT_S = 2.0  # a reply later than this counts as missing
CONNECT_TIMEOUT_S = 2.0
SHOWN_WORDS = 6
DYING_S = 0.25  # after a failure, how long to look whether the server is on its way out


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


def exit_status(process: server.ServerProcess | None) -> int | None:
    """Its exit status if it has exited or does so within DYING_S (a dying server resets
    connections a moment before it is gone), else None."""
    if process is None:
        return None
    with contextlib.suppress(subprocess.TimeoutExpired):
        return process.process.wait(timeout=DYING_S)
    return None

"""The server under test: start it pinned on a free port, wait until it listens, and end it
the way the seed's contract says (a zero challenge, then SIGTERM, then SIGKILL), always
reaping its whole process group.

When Volley itself ends without doing that (SIGKILL, a crash of the interpreter), two
things end the server within a second: a parent-death signal that the kernel sends, set
before exec (the server itself, however it changes its process group), and a watchdog
(``volley/engine/watchdog.py``) holding a pipe from us that SIGKILLs the server's process group,
session and descendants when the pipe closes (the server's children, which a parent-death
signal misses). Each covers the other's start-up: the signal is set before the server
runs, the watchdog from a few milliseconds later.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import math
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

import psutil

LOOPBACK = "127.0.0.1"
# How long each polite way of ending the server gets before the next, ruder one.
ZERO_GRACE_S = 2.0
TERM_GRACE_S = 2.0
LOG_TAIL_LINES = 8
# Waiting for the server to listen or its family to end: a first look after FIRST_POLL_S,
# each next one twice as late, up to POLL_S apart. A fixed 20 ms cost every run 10 ms on
# average and 20 ms when the server was not quite up at the first look (bench/scale).
FIRST_POLL_S = 0.0005
POLL_S = 0.02
# After the server itself has ended, how long its children get to follow it.
SETTLE_S = 1.0
LOG_TAIL_BYTES = 64 * 1024
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "watchdog.py")
_libc = ctypes.CDLL(None, use_errno=True)


class ServerError(RuntimeError):
    """The server could not be started, or misbehaved around its start or end."""


def resolve(path: str) -> str:
    """The executable to run for SERVER, or a ServerError saying what is wrong with it."""
    if os.sep not in path and not os.path.exists(path):
        found = shutil.which(path)
        if found:
            return found
    if not os.path.exists(path):
        raise ServerError(f"server {path!r} does not exist; build it first (make servers)")
    if not os.path.isfile(path):
        raise ServerError(f"server {path!r} is not a file; give the server binary")
    if not os.access(path, os.X_OK):
        raise ServerError(f"server {path!r} is not executable; chmod +x it")
    return os.path.abspath(path)


def ephemeral_ports() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        # SO_REUSEADDR like the servers: a port in TIME_WAIT is usable, a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str = LOOPBACK) -> int:
    """A free port below the ephemeral range, so no client's own port can ever take it."""
    low = ephemeral_ports()[0]
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        if port_is_free(host, port):
            return port
    raise ServerError("found no free TCP port on the loopback; pass one with --port")


def substitute(args: list[str], server_cores: int, client_cores: int) -> list[str]:
    """Fill in the seed's SCORES/CCORES: {server_cpus} and {client_cpus} (or the older
    {server_cores}, {client_cores}) become the NUMBER of server and client CPUs."""
    counts = {"server": str(server_cores), "client": str(client_cores)}
    for side, count in counts.items():
        args = [a.replace(f"{{{side}_cpus}}", count) for a in args]
        args = [a.replace(f"{{{side}_cores}}", count) for a in args]
    return args


@dataclass(frozen=True)
class ServerEnd:
    """How the server ended: what ended it, how long that took, what outlived it."""

    how: str  # "zero", "sigterm", "sigkill", "exited" (already gone), "running" (did not end)
    exit_status: int | None
    # From being told to end until it exited; None when not timed or it did not exit.
    after_s: float | None = None
    leftovers: list[int] = field(default_factory=list)  # its processes alive after it ended


@dataclass
class ServerProcess:
    command: list[str]
    port: int
    process: subprocess.Popen[bytes]
    # Its stdout and stderr: a file with no name (unlinked at once), so nothing is left in
    # /tmp however we end, and the server never blocks on output nobody drains (a pipe
    # would, and a thread draining it would compete with the measurement).
    log: IO[bytes]
    host: str = LOOPBACK
    watchdog: Watchdog | None = None
    # Every process of its family seen so far, so stop() finds them once they are orphaned.
    seen: dict[int, psutil.Process] = field(default_factory=dict, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output_tail(self) -> str:
        try:
            size = os.fstat(self.log.fileno()).st_size
            data = os.pread(self.log.fileno(), LOG_TAIL_BYTES, max(0, size - LOG_TAIL_BYTES))
        except (OSError, ValueError):
            return ""
        lines = data.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        return " | ".join(line.strip() for line in lines if line.strip())

    def wait_listening(self, timeout_s: float, connect: bool = True) -> None:
        """Return once the server accepts a connection; ServerError if it exits or never does.

        With ``connect=False`` it watches the server's sockets for a listener on the port
        instead of connecting, so a server that reacts to a closed connection is not disturbed.
        """
        deadline = time.monotonic() + timeout_s
        pause = FIRST_POLL_S
        while True:
            status = self.process.poll()
            if status is not None:
                tail = self.output_tail()
                raise ServerError(
                    f"server exited with {describe_status(status)} before listening on port "
                    f"{self.port}" + (f"; its last output: {tail}" if tail else "")
                )
            if self._accepts() if connect else self._listens():
                return
            if time.monotonic() > deadline:
                what = "accept connections" if connect else "listen"
                elsewhere = sorted(self.listening_on() - {self.host}) if connect else []
                raise ServerError(
                    f"server did not {what} on {self.host}:{self.port} within {timeout_s:g} s "
                    + (
                        f"(it listens on {', '.join(elsewhere)}: does it take -a ADDRESS?)"
                        if elsewhere
                        else "(raise --startup-timeout if it is just slow)"
                    )
                )
            time.sleep(pause)
            pause = min(2 * pause, POLL_S)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _listens(self) -> bool:
        return bool(self.listening_on())

    def listening_on(self) -> set[str]:
        """The addresses the server and its family listen on at its port (none yet: empty)."""
        try:
            processes = [psutil.Process(self.pid), *self._family()]
        except psutil.Error:
            return set()
        found = set()
        for p in processes:
            try:
                sockets = p.net_connections(kind="tcp")
            except psutil.Error:
                continue
            for s in sockets:
                if s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == self.port:
                    found.add(unmapped(s.laddr.ip))
        return found

    def family(self) -> list[psutil.Process]:
        """The server's processes besides itself that are alive now: its descendants and the
        rest of its process group (which survives it, orphaned)."""
        found = {p.pid: p for p in self._family()}
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if p.pid != self.pid and p.pid not in found and os.getpgid(p.pid) == self.pid:
                    found[p.pid] = p
        self.seen.update(found)
        return [p for p in found.values() if _alive(p)]

    def terminate(self, timeout_s: float = TERM_GRACE_S) -> ServerEnd:
        """SIGTERM to the server process alone (as ``kill PID`` sends it) and report how it
        ended. Kills nothing else: call stop() or kill() afterwards."""
        family = self.family()
        sent = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        return self.watch_end("sigterm", sent, timeout_s, family)

    def watch_end(
        self, how: str, since: float, timeout_s: float, family: list[psutil.Process]
    ) -> ServerEnd:
        """Wait until ``since + timeout_s`` for the server to exit after being told to end
        (``how``), then up to SETTLE_S for ``family`` (taken before telling it) and its
        process group to follow. Kills nothing."""
        if not self._exited_within(max(0.0, since + timeout_s - time.monotonic())):
            return ServerEnd("running", None)
        took = time.monotonic() - since
        family = family + self.family()
        wait_until(lambda: not any(_alive(p) for p in family), time.monotonic() + SETTLE_S)
        leftovers = sorted({p.pid for p in family if _alive(p)})
        return ServerEnd(how, self.process.returncode, took, leftovers)

    def kill(self) -> ServerEnd:
        """End the server and everything it started at once with SIGKILL; always reaps.
        Never raises. For after watching how it ends, or a server that misbehaved."""
        family = self._family()
        how = "exited" if self.process.poll() is not None else "sigkill"
        leftovers = [p.pid for p in family if _alive(p)]
        self._kill_all(family)
        return ServerEnd(how, self.process.returncode, leftovers=leftovers)

    def stop(self, zero: bool = True) -> ServerEnd:
        """End the server and everything it started; always reaps. Never raises."""
        family = self._family()
        how = "exited"
        if self.process.poll() is None and zero and send_zero(self.host, self.port):
            how = "zero"
        if not self._exited_within(ZERO_GRACE_S if how == "zero" else 0):
            how = "sigterm"
            self._signal_group(signal.SIGTERM)
            if not self._exited_within(TERM_GRACE_S):
                how = "sigkill"
        # Whatever it left behind (children in its group or elsewhere) gets the same end.
        leftovers = [p.pid for p in family if _alive(p)]
        if leftovers and how != "sigkill":
            self._signal_group(signal.SIGTERM)
            wait_until(lambda: not any(_alive(p) for p in family), time.monotonic() + TERM_GRACE_S)
        self._kill_all(family)
        return ServerEnd(how, self.process.returncode, leftovers=leftovers)

    def _kill_all(self, family: list[psutil.Process]) -> None:
        self._signal_group(signal.SIGKILL)
        for p in family:
            if _alive(p):
                with contextlib.suppress(psutil.Error):
                    p.kill()
        self.process.wait()
        if self.watchdog is not None:
            self.watchdog.dismiss()
        self.log.close()

    def _family(self) -> list[psutil.Process]:
        """Its descendants now, and those seen before (orphans are no longer descendants)."""
        found = descendants(self.pid)
        known = {p.pid for p in found}
        return found + [p for pid, p in self.seen.items() if pid not in known and _alive(p)]

    def _exited_within(self, seconds: float) -> bool:
        return exited_within(self.process, seconds)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)  # the server leads its own process group


def descendants(pid: int) -> list[psutil.Process]:
    """The descendants of ``pid`` now (as psutil's children(recursive=True) finds them),
    read from each of their threads' list of children in /proc where the kernel keeps one:
    psutil reads every process's stat, 2-3 ms with 70 processes, on every server stop."""
    if not _CHILD_LISTS:
        try:
            return psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return []
    found = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child in _children(parent):
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(child))
                todo.append(child)
    return found


def _children(pid: int) -> list[int]:
    children = []
    with contextlib.suppress(OSError):  # it has ended
        for thread in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{thread}/children") as f:
                children += [int(child) for child in f.read().split()]
    return children


# Whether the kernel lists each thread's children (CONFIG_PROC_CHILDREN, Linux 3.5).
_CHILD_LISTS = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def exited_within(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether ``process`` has exited (reaped: its returncode set), waiting up to
    ``seconds`` for it. Wakes as it exits: Popen.wait(timeout) instead sleeps in steps
    that double up to 50 ms, so it saw an exit up to twice as late as it happened."""
    if process.poll() is not None or seconds <= 0:
        return process.returncode is not None
    try:
        handle = os.pidfd_open(process.pid)  # Linux 5.3: readable once the process exits
    except OSError:  # an older kernel, or no pidfd in this container
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        watch = select.poll()
        watch.register(handle, select.POLLIN)
        watch.poll(math.ceil(seconds * 1000))
    finally:
        os.close(handle)
    return process.poll() is not None


def wait_until(done: Callable[[], bool], deadline: float) -> bool:
    """Look at ``done`` until it is true (True) or ``deadline`` (monotonic) has passed
    (False), FIRST_POLL_S after the first look, then twice as long each time up to POLL_S."""
    pause = FIRST_POLL_S
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(2 * pause, POLL_S)
    return True


def unmapped(address: str) -> str:
    """An IPv4 address as itself, also where a dual-stack socket (the JVM's) shows it mapped
    into IPv6 (``::ffff:127.0.0.2``)."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe_status(status: int) -> str:
    if status < 0:
        return f"signal {signal.Signals(-status).name}"
    return f"status {status}"


def probe(host: str, port: int, timeout_s: float = 1.0) -> None:
    """ServerError unless something accepts connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        raise ServerError(
            f"nothing accepts connections at {host}:{port} ({e.strerror or e}); start the "
            "server first, or give its binary instead of --connect"
        ) from None


def send_zero(host: str, port: int) -> bool:
    """The seed's way to end a server: a zero challenge on a fresh connection."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"\0\0\0\0")
    except OSError:
        return False
    return True


def spawn(
    command: list[str], cpus: list[int] | None, output: IO[bytes] | int, errors: IO[bytes] | int
) -> tuple[subprocess.Popen[bytes], Watchdog]:
    """Start ``command`` pinned to ``cpus``, in its own session and process group, ended
    with us however we end (see the top of this module). OSError if it cannot start."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=errors,
        start_new_session=True,
        preexec_fn=pinned_and_tied(cpus),
    )
    try:
        return process, Watchdog.start(process.pid)
    except OSError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def start(
    path: str,
    args: list[str],
    port: int,
    cpus: list[int],
    host: str = LOOPBACK,
) -> ServerProcess:
    """Start the server as ``path -p PORT [-a HOST] ARGS`` (see spawn), its output kept aside.
    ``-a`` only for a host other than the loopback, so a server that knows only the seed's
    ``-p`` runs as before."""
    address = ["-a", host] if host != LOOPBACK else []
    command = [path, "-p", str(port), *address, *args]
    log = tempfile.TemporaryFile(prefix="volley-server-")  # noqa: SIM115 (closed in _kill_all)
    try:
        process, watchdog = spawn(command, cpus, log, log)
    except OSError as e:
        log.close()
        raise ServerError(f"could not start server {path!r}: {e.strerror or e}") from None
    return ServerProcess(command, port, process, log, host, watchdog)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals(handler: Callable[[int, FrameType | None], Any] | None = None) -> Iterator[None]:
    """While inside, Ctrl-C, SIGTERM and SIGHUP (someone asking Volley to stop) call
    ``handler``, by default raising KeyboardInterrupt so that the ``finally`` blocks on the
    way out end every server started; the previous handlers come back on leaving. SIGTERM
    and SIGHUP would otherwise kill us without ending anything. Only the main thread may
    set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: signal.signal(sig, handler or signal.default_int_handler) for sig in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def pinned_and_tied(cpus: list[int] | None) -> Callable[[], None]:
    """What a child does between fork and exec: pin itself to ``cpus`` if given (so threads
    it starts inherit the mask), and ask for SIGKILL when we die.

    The kernel sends the parent-death signal when the *thread* that forked the child ends,
    not the process. Servers are started from the main thread (the coordinator and the
    checks run there), which lives as long as Volley does, so this is Volley's death."""
    parent = os.getpid()

    def preexec() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # we died before the signal was set: it never comes
            os._exit(1)

    return preexec


@dataclass
class Watchdog:
    """Our side of a process's watchdog (``volley/engine/watchdog.py``): the write end of its pipe.

    Only we hold it (pipes are close-on-exec), so it closes when we end, however we end."""

    process: subprocess.Popen[bytes]
    pipe: int

    @classmethod
    def start(cls, watched: int) -> Watchdog:
        read, write = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", WATCHDOG, str(watched)],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # out of reach of the terminal's Ctrl-C and hang-up
            )
        finally:
            os.close(read)
        return cls(process, write)

    def dismiss(self) -> None:
        """The watched process ended properly: the watchdog leaves without killing."""
        if self.pipe < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self.pipe, b"x")
        os.close(self.pipe)
        self.pipe = -1
        exited_within(self.process, TERM_GRACE_S)

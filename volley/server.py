"""The server under test: start it pinned on a free port, wait until it listens, and end it
the way the seed's contract says (a zero challenge, then SIGTERM, then SIGKILL), always
reaping its whole process group."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import psutil

LOOPBACK = "127.0.0.1"
# How long each polite way of ending the server gets before the next, ruder one.
ZERO_GRACE_S = 2.0
TERM_GRACE_S = 2.0
LOG_TAIL_LINES = 8
POLL_S = 0.02


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
    """Fill in the seed's SCORES/CCORES as {server_cores} and {client_cores}."""
    return [
        a.replace("{server_cores}", str(server_cores)).replace("{client_cores}", str(client_cores))
        for a in args
    ]


@dataclass
class StopReport:
    """How the server ended and what had to be killed after it."""

    how: str  # "zero", "sigterm", "sigkill" or "exited" (it was already gone)
    exit_status: int | None
    leftovers: list[int] = field(default_factory=list)  # processes alive after it ended


@dataclass
class ServerProcess:
    command: list[str]
    port: int
    process: subprocess.Popen[bytes]
    log_path: str
    host: str = LOOPBACK

    @property
    def pid(self) -> int:
        return self.process.pid

    def output_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            return ""
        return " | ".join(line.strip() for line in lines if line.strip())

    def wait_listening(self, timeout_s: float) -> None:
        """Return once the server accepts a connection; ServerError if it exits or never does."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.process.poll()
            if status is not None:
                tail = self.output_tail()
                raise ServerError(
                    f"server exited with {describe_status(status)} before listening on port "
                    f"{self.port}" + (f"; its last output: {tail}" if tail else "")
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"server did not accept connections on {self.host}:{self.port} within "
                    f"{timeout_s:g} s (raise --startup-timeout if it is just slow)"
                )
            time.sleep(POLL_S)

    def stop(self, zero: bool = True) -> StopReport:
        """End the server and everything it started; always reaps. Never raises."""
        family = self._family()
        how = "exited"
        if self.process.poll() is None and zero:
            send_zero(self.host, self.port)
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
            deadline = time.monotonic() + TERM_GRACE_S
            while any(_alive(p) for p in family) and time.monotonic() < deadline:
                time.sleep(POLL_S)
        self._signal_group(signal.SIGKILL)
        for p in family:
            if _alive(p):
                try:
                    p.kill()
                except psutil.Error:
                    pass
        self.process.wait()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass
        return StopReport(how, self.process.returncode, leftovers)

    def _family(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return []

    def _exited_within(self, seconds: float) -> bool:
        try:
            self.process.wait(timeout=seconds) if seconds > 0 else None
        except subprocess.TimeoutExpired:
            return False
        return self.process.poll() is not None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)  # the server leads its own process group
        except (ProcessLookupError, PermissionError):
            pass


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe_status(status: int) -> str:
    if status < 0:
        return f"signal {signal.Signals(-status).name}"
    return f"status {status}"


def send_zero(host: str, port: int) -> None:
    """The seed's way to end a server: a zero challenge on a fresh connection."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"\0\0\0\0")
    except OSError:
        pass


def start(
    path: str,
    args: list[str],
    port: int,
    cpus: list[int],
    host: str = LOOPBACK,
) -> ServerProcess:
    """Start ``path -p PORT ARGS`` pinned to ``cpus``, in its own process group."""
    command = [path, "-p", str(port), *args]
    log_fd, log_path = tempfile.mkstemp(prefix="volley-server-", suffix=".log")
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            # Pinned before exec, so threads the server starts inherit the mask.
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
    except OSError as e:
        os.unlink(log_path)
        raise ServerError(f"could not start server {path!r}: {e.strerror or e}") from None
    finally:
        os.close(log_fd)
    return ServerProcess(command, port, process, log_path, host)

"""volley-bench --server-address (issue 16): the server it starts listens there, given -a, and
the clients connect there. 127.0.0.2 is on the loopback (Linux routes all of 127/8 to lo), so
the tests need no network setup and nothing leaves the machine."""

from __future__ import annotations

import json
import subprocess
import time

import psutil
import pytest
from helpers import BRIEF, FAULTY, bench, bench_command

from volley.engine import server as server_module
from volley.records.results import BenchResult

# Every test here starts real servers or volley processes (the slow tier).
pytestmark = pytest.mark.real

OTHER = "127.0.0.2"


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs the descendants of ``pid`` listen on now."""
    found = set()
    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return found
    for p in family:
        try:
            sockets = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        found |= {
            (server_module.unmapped(s.laddr.ip), s.laddr.port)
            for s in sockets
            if s.status == psutil.CONN_LISTEN and s.laddr
        }
    return found


def test_the_server_listens_on_the_server_address_and_the_clients_reach_it(c_threaded, tmp_path):
    result = tmp_path / "r.json"
    command = bench_command(
        "--clients", "2", "--server-address", OTHER, "--json", result, *BRIEF, c_threaded
    )
    seen: set[tuple[str, int]] = set()
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            seen |= listening(process.pid)
            time.sleep(0.02)
        out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode in (0, 3), err.decode()  # 3: not significant in a second, fine
    assert seen, "never saw the server listening"
    assert {address for address, _ in seen} == {OTHER}, seen
    # The result and its summary say where the server was.
    assert BenchResult.from_json(json.loads(result.read_text())).server_address == OTHER
    assert f", listening on {OTHER}" in out.decode()


def test_a_server_that_ignores_the_address_fails_the_run():
    done = bench("--server-address", OTHER, "--startup-timeout", "2s", *BRIEF, FAULTY)
    # Without -a the fixture is a good server; with --fault ignore-address it stays on 127.0.0.1.
    assert done.status in (0, 3), done.stderr
    done = bench(
        "--server-address", OTHER, "--startup-timeout", "2s", *BRIEF,
        FAULTY, "--", "--fault", "ignore-address",
    )  # fmt: skip
    assert done.status == 1, done.stdout + done.stderr
    assert f"did not accept connections on {OTHER}:" in done.stderr
    assert "it listens on 127.0.0.1: does it take -a ADDRESS?" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server-address", "localhost"], "is not an IPv4 address"),
        (["--server-address", "192.0.2.1"], "is not an address of this machine"),
        (["--server-address", OTHER, "--connect", "127.0.0.1:1"], "--connect"),
    ],
)
def test_bad_server_address_is_one_line_and_status_2(c_threaded, args, message):
    server = [] if "--connect" in args else [c_threaded]
    done = bench(*args, *server, timeout=30)
    assert done.status == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr

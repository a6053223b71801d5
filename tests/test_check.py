"""volley check against the broken fixture server: each fault fails the check it breaks and
passes the others; bad input is one line and exit status 2."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from helpers import FAULTY, check, strict_loads

from volley.engine.server import choose_port
from volley.studies import check as checks
from volley.studies.contract import CHECKS
from volley.studies.probe import Target

# Every test here starts real servers or volley processes (the slow tier).
pytestmark = pytest.mark.real

ALL = list(CHECKS)
ADVISORY = {name for name, c in CHECKS.items() if c.advisory}
COUNTED = [name for name in ALL if name not in ADVISORY]
# A server that answers wrongly fails every check that looks at replies.
REPLIES = {
    "basic",
    "edge-values",
    "split-word",
    "pipelined",
    "concurrent",
    "sustained",
    "reconnect",
    "zero-after-words",
}

# fault, its --after (replies before it starts, see faulty_server.py), the checks it fails.
FAULTS = [
    ("none", None, set()),
    ("slow-start", None, set()),
    ("byte-order", None, REPLIES | {"reset-pending", "address"}),
    ("no-wrap", None, {"edge-values"}),
    ("short-read", None, {"split-word"}),
    ("batch-drop", None, {"pipelined", "sustained", "zero-after-words"}),
    ("exit-on-close", None, {"sustained", "reconnect", "reset-pending"}),
    ("ignore-sigterm", None, {"sigterm-idle", "sigterm-busy"}),
    ("ignore-zero", None, {"zero", "zero-after-words"}),
    ("zero-drops-replies", None, {"zero-after-words"}),
    ("one-at-a-time", None, {"concurrent", "sustained"}),
    ("double-reply", None, REPLIES),
    ("no-usage", None, {"usage"}),
    # Total counts: past 20 replies only the big checks (and a busy server) get.
    ("crash-after", 20, {"pipelined", "concurrent", "sustained", "reset-pending", "sigterm-busy"}),
    ("wrong-after", 50, {"pipelined", "concurrent", "sustained", "reset-pending"}),
    ("stall-after", 50, {"pipelined", "concurrent", "sustained", "reset-pending"}),
    # Per connection: only the pipelined, sustained and reset-pending checks send more than
    # 16 words on one (the last reads one reply), and only the sustained check more than
    # 5,000 (issue 10, item 11).
    ("close-after", 16, {"pipelined", "sustained"}),
    ("late-wrong", 5000, {"sustained"}),
    ("fork-children", None, {"cleanup"}),
    # Dies of SIGPIPE when a client resets with replies pending (issue 10, item 12).
    ("sigpipe", None, {"reset-pending"}),
    # Takes -a ADDRESS but listens on 127.0.0.1 (issue 16): advice, since the seed asks for -p only.
    ("ignore-address", None, {"address"}),
]


# What the verdict of the failing check says, for some faults.
VERDICTS = {
    "byte-order": ("basic", "little-endian"),
    "no-wrap": ("edge-values", "no wrap-around"),
    "short-read": ("split-word", "reply to 0x12345678 was"),
    "batch-drop": ("pipelined", "1 of 100 replies"),
    "exit-on-close": ("reconnect", "exited with status 0"),
    "ignore-sigterm": ("sigterm-idle", "still running 2 s after SIGTERM"),
    "ignore-zero": ("zero", "still running 2 s after a zero challenge"),
    "zero-drops-replies": ("zero-after-words", "0 of 3 replies before the server ended"),
    "one-at-a-time": ("concurrent", "must be served at the same time"),
    "double-reply": ("basic", "one reply per word"),
    "no-usage": ("usage", "still running"),
    "crash-after": ("sigterm-busy", "exited with status 1 while busy"),
    "fork-children": ("cleanup", "2 of its processes still ran"),
    "late-wrong": ("sustained", "reply to word 5001 of 20000 on connection"),
    "sigpipe": ("reset-pending", "exited with signal SIGPIPE: ignore SIGPIPE"),
    "ignore-address": ("address", "started with -a 127.0.0.2, it listens on 127.0.0.1"),
}


def check_fault(fault: str, *options: str, after: int | None = None) -> tuple[int, dict]:
    extra = ["--after", str(after)] if after is not None else []
    done = check(*options, "--json", "-", FAULTY, "--", "--fault", fault, *extra)
    assert done.stdout, done.stderr
    return done.status, strict_loads(done.stdout)


def failed(report: dict) -> set[str]:
    return {c["name"] for c in report["checks"] if not c["passed"]}


@pytest.mark.parametrize(("fault", "after", "expected"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_fails_the_check_it_breaks(fault, after, expected):
    began = time.monotonic()
    status, report = check_fault(fault, after=after)
    assert [c["name"] for c in report["checks"]] == ALL
    assert failed(report) == expected, [c for c in report["checks"] if not c["passed"]]
    counted = expected - ADVISORY
    assert status == (1 if counted else 0)
    assert report["passed"] == len(COUNTED) - len(counted)
    assert report["total"] == len(COUNTED)
    assert report["all_passed"] == (not counted)
    for c in report["checks"]:
        if not c["passed"]:
            assert c["verdict"] and c["expected"] and c["received"], c
        assert c["elapsed_s"] < 10, c  # every wait is bounded
    if fault in VERDICTS:
        name, phrase = VERDICTS[fault]
        [verdict] = [c["verdict"] for c in report["checks"] if c["name"] == name]
        assert phrase in verdict
    assert time.monotonic() - began < 40


def test_wrong_reply_says_what_was_sent_expected_and_received():
    _, report = check_fault("no-wrap")
    [edge] = [c for c in report["checks"] if c["name"] == "edge-values"]
    assert edge["sent"].startswith("0xFFFFFFFF")
    assert edge["expected"] == "0x00000000"
    assert edge["received"] == "0xFFFFFFFF"
    assert "wrap-around" in edge["verdict"]


def test_never_listening_server_fails_after_the_startup_timeout():
    began = time.monotonic()
    done = check("--startup-timeout", "1s", FAULTY, "--", "--fault", "never-listen")
    assert done.status == 1
    assert time.monotonic() - began < 15
    first = done.stdout.splitlines()[0]
    assert first.startswith("FAIL listens: server did not listen on 127.0.0.1:")
    assert "within 1 s" in first
    assert "not run: the server did not start (see listens)" in done.stdout
    assert done.stdout.splitlines()[-1] == f"0/{len(COUNTED)} checks passed"  # usage is advice


def test_server_exiting_before_listening_shows_its_status_and_output():
    done = check(FAULTY, "--", "--fault", "exit-early")
    assert done.status == 1
    first = done.stdout.splitlines()[0]
    assert "exited with status 3 before listening" in first
    assert "cannot open config" in first


def test_missing_usage_error_is_advice_not_a_failure():
    # Issue 10, item 10: the seed asks servers to accept -p, not to refuse running without it.
    done = check(FAULTY, "--only", "basic,usage", "--", "--fault", "no-usage")
    assert done.status == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("NOTE usage: still running")
    assert "advice only, not counted: usage" in done.stdout
    assert lines[-1] == "1/1 checks passed"


def test_address_starts_the_server_on_a_second_loopback_address_and_talks_there():
    done = check(FAULTY, "--only", "address")
    assert done.status == 0, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("PASS address: listens on 127.0.0.2:") and "only" in first
    done = check(FAULTY, "--only", "address", "--", "--fault", "ignore-address")
    assert done.status == 0, done.stdout + done.stderr  # advice, not counted
    assert done.stdout.startswith(
        "NOTE address: started with -a 127.0.0.2, it listens on 127.0.0.1"
    )
    assert "-p " in done.stdout and " -a 127.0.0.2 --fault ignore-address" in done.stdout


def test_reset_with_replies_pending_catches_a_server_dying_of_sigpipe_every_time():
    # Issue 10, item 12: the race must be won by the check every time, quickly.
    for _ in range(20):
        target = Target(str(FAULTY), ["--fault", "sigpipe"], [0], 10)
        run = checks.run([CHECKS["reset-pending"]], target)
        [result] = run.results
        assert not result.passed and "SIGPIPE" in result.verdict, result
        assert result.elapsed_s < 2.5


def test_plain_output_lists_each_check_and_a_summary():
    done = check(FAULTY, "--only", "basic,usage")
    assert done.status == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("PASS basic: ")
    assert lines[1].startswith("PASS usage: exit status 2")
    assert lines[-1] == "1/1 checks passed"  # usage is advice, not counted


def test_only_is_repeatable_and_comma_separated(tmp_path):
    out = tmp_path / "check.json"
    done = check("--only", "usage,basic", "--only", "edge-values", "--json", out, FAULTY)
    assert done.status == 0, done.stdout + done.stderr
    report = strict_loads(out.read_text())
    assert [c["name"] for c in report["checks"]] == ["basic", "edge-values", "usage"]
    assert report["version"] == 2 and report["total"] == 2  # usage is advisory
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left over


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "nope", FAULTY], "unknown check 'nope'"),
        (["--only", ",", FAULTY], "--only names no check"),
        ([], "missing SERVER"),
        (["/nonexistent/server"], "does not exist"),
        (["--startup-timeout", "soon", FAULTY], "is not a duration"),
        (["--connect", "127.0.0.1:1", FAULTY], "not both"),
        (["--connect", "localhost"], "is not HOST:PORT"),
        (["--connect", "127.0.0.1:1", "--only", "zero"], "needs SERVER"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args, message):
    done = check(*args, timeout=30)
    assert done.status == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_connect_runs_the_checks_that_need_no_restart():
    port = choose_port()
    command = [sys.executable, str(FAULTY), "-p", str(port)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the fixture server did not listen"
                time.sleep(0.05)
        done = check("--connect", f"127.0.0.1:{port}", "--json", "-")
        assert done.status == 0, done.stdout + done.stderr
        report = strict_loads(done.stdout)
        names = [c["name"] for c in report["checks"]]
        assert names == [n for n in ALL if not CHECKS[n].needs_binary]
        assert process.poll() is None  # left running
    finally:
        process.kill()
        process.wait()

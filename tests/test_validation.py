"""The ground-truth suite (bench/validation): its synthetic rows at modest counts, each
against its target with a binomial margin, and its servers against the contract and their
truth.

Each synthetic row is seeded, so a count is a fixed sample: the margin (three binomial
standard deviations at the target) is there so that a change of code that leaves the truth
alone does not trip a row by the luck of its sample. Before the sequential plan, the family
of statistics and the drawn run lengths, the A/A compare --run row (19% any-row), the A/A
file compare row (18.5%) and the freeze row (2% coverage) failed here.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, strict_loads, volley

from volley.engine.server import choose_port
from volley.numbers.units import STATISTICS

if str(ROOT) not in sys.path:  # bench/ is not installed: found from the checkout's root
    sys.path.insert(0, str(ROOT))
from bench.validation import synthetic  # noqa: E402
from bench.validation.synthetic import Rate, false_verdicts, share_of  # noqa: E402

FALSE_TARGET = 0.05  # A/A: at most this share of comparisons call a difference
COVERAGE_TARGET = 0.93  # every coverage row
POWER_TARGET = 0.8  # Δ = 5% and 20% of the mean, seen as "slower"


def at_most(rate: Rate, target: float) -> bool:
    return rate.share <= target + 3 * rate.sd(target)


def at_least(rate: Rate, target: float) -> bool:
    return rate.share >= target - 3 * rate.sd(target)


# --- synthetic rows ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aa_run() -> list[dict]:
    return synthetic.aa_compare_run(60)


@pytest.fixture(scope="module")
def aa_files() -> list[dict]:
    return synthetic.aa_file_compare(80)


def test_aa_compare_run_calls_a_difference_in_at_most_5_percent_on_any_row(aa_run):
    rate = false_verdicts(aa_run)
    assert at_most(rate, FALSE_TARGET), f"{rate.hits} of {rate.count} A/A comparisons"


@pytest.mark.parametrize("statistic", STATISTICS)
def test_aa_file_compare_calls_each_statistic_different_in_at_most_5_percent(aa_files, statistic):
    rate = false_verdicts(aa_files, statistic)
    assert at_most(rate, FALSE_TARGET), f"{rate.hits} of {rate.count} A/A comparisons"


def test_aa_file_compare_calls_a_difference_in_at_most_5_percent_on_any_row(aa_files):
    rate = false_verdicts(aa_files)
    assert at_most(rate, FALSE_TARGET), f"{rate.hits} of {rate.count} A/A comparisons"


@pytest.mark.parametrize("delta", [0.05, 0.20], ids=["5%", "20%"])
def test_compare_run_sees_a_server_slower_by_delta(delta):
    rate = share_of(synthetic.power(40, delta), "seen")
    assert at_least(rate, POWER_TARGET), f"seen in {rate.hits} of {rate.count}"
    assert sorted(rate.took_s)[rate.count // 2] < 60  # the median verdict within --max-time


def test_the_freeze_servers_interval_holds_its_analytic_mean():
    rate = share_of(synthetic.freeze_coverage(60), "covered")
    assert at_least(rate, COVERAGE_TARGET), f"covered in {rate.hits} of {rate.count}"


def test_the_bimodal_difference_holds_q_times_d():
    rate = share_of(synthetic.bimodal_coverage(100), "covered")
    assert at_least(rate, COVERAGE_TARGET), f"covered in {rate.hits} of {rate.count}"


def test_a_history_with_one_disturbed_sitting_keeps_coverage():
    # Four earlier sittings, the second with a CPU hog. The pilot alone (precision 50%)
    # keeps each sitting at ten runs: a cheap sitting.
    outcomes = synthetic.history_coverage(30, earlier=4, disturbed=1, precision=0.5)
    rate = share_of(outcomes, "covered")
    assert at_least(rate, COVERAGE_TARGET), f"covered in {rate.hits} of {rate.count}"


def test_without_a_history_a_sitting_cannot_see_how_sittings_differ():
    # The row's own control: the history is what covers the spread between sittings.
    outcomes = synthetic.history_coverage(30, earlier=0, disturbed=None, precision=0.5)
    assert share_of(outcomes, "covered").share < 0.7


# --- the truth servers ---------------------------------------------------------------------

TRUTHS = ["truth-plain", "truth-delta", "truth-freeze", "truth-bimodal"]


@pytest.fixture(scope="module")
def truths(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The truth servers, built by the Makefile's validation-servers into a directory of
    the test's own."""
    if not (shutil.which(os.environ.get("CC", "cc")) and shutil.which("make")):
        pytest.skip("no C compiler (cc) or make on PATH: the truth servers cannot be built")
    place = tmp_path_factory.mktemp("validation")
    subprocess.run(
        ["make", "-s", "validation-servers", f"VALIDATION_DIR={place}", "STRICT=1"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return place


@pytest.mark.real
@pytest.mark.parametrize("name", TRUTHS)
def test_truth_server_keeps_the_contract(truths, name):
    done = volley("check", "--json", "-", truths / name, timeout=90)
    report = strict_loads(done.stdout)
    failed = [c for c in report["checks"] if not c["passed"]]
    assert done.status == 0 and not failed, failed


@pytest.mark.real
def test_a_bad_parameter_is_one_line_and_exit_status_2(truths):
    done = subprocess.run(
        [truths / "truth-delta", "-p", str(choose_port())],
        env={**os.environ, "VOLLEY_TRUTH_DELTA_NS": "fast"},
        capture_output=True,
        text=True,
        timeout=5,
    )
    assert done.returncode == 2
    said = "truth-delta: VOLLEY_TRUTH_DELTA_NS=fast: give a number from 0 to 1e+09"
    assert done.stderr.strip() == said


class Started:
    """A truth server on 127.0.0.1 with ``env``, ended (SIGTERM) on exit."""

    def __init__(self, binary: Path, env: dict[str, str]) -> None:
        self.port = choose_port()
        self.process = subprocess.Popen(
            [binary, "-p", str(self.port)], env={**os.environ, **env}, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not listen within 5 s"
                time.sleep(0.01)

    def ask_s(self, word: int) -> float:
        """Seconds from sending ``word`` to its reply (checked)."""
        began = time.monotonic()
        self.sock.sendall(struct.pack("!I", word))
        reply = b""
        while len(reply) < 4:
            reply += self.sock.recv(4 - len(reply))
            assert reply, "the server closed the connection"
        assert struct.unpack("!I", reply)[0] == word + 1
        return time.monotonic() - began

    def __enter__(self) -> Started:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()
        self.process.terminate()
        self.process.wait(5)


@pytest.mark.real
def test_the_freeze_holds_replies_in_the_first_part_of_each_period(truths):
    # 100 ms of every 500 ms; time.monotonic() is the server's CLOCK_MONOTONIC on Linux.
    env = {"VOLLEY_TRUTH_FREEZE_MS": "100", "VOLLEY_TRUTH_FREEZE_PERIOD_MS": "500"}
    with Started(truths / "truth-freeze", env) as server:
        for phase_s, held_s in ((0.02, 0.08), (0.25, 0.0)):
            now = time.monotonic()
            time.sleep((phase_s - now % 0.5) % 0.5)  # to that phase of the next period
            took = server.ask_s(7)
            assert held_s - 0.01 < took < held_s + 0.02, (phase_s, took)


@pytest.mark.real
def test_the_bimodal_server_delays_a_share_q_of_replies_by_d(truths):
    # q = 0.5, d = 2 ms: a loopback reply without the delay takes well under 1 ms.
    env = {"VOLLEY_TRUTH_BIMODAL_SHARE": "0.5", "VOLLEY_TRUTH_BIMODAL_DELAY_NS": "2000000"}
    with Started(truths / "truth-bimodal", env) as server:
        took = [server.ask_s(i + 1) for i in range(200)]
    delayed = [t for t in took if t > 0.001]
    assert abs(len(delayed) - 100) <= 3 * math.sqrt(200 * 0.25), len(delayed)
    assert min(delayed) >= 0.002


@pytest.mark.real
@pytest.mark.slow
def test_truth_delta_adds_about_delta_per_reply(truths, tmp_path):
    """Closed loop, one client, plain against plain + 50 us interleaved: the mean's
    difference is about 50 us (loose: the machine is shared)."""
    delta_ns = 50_000
    done = volley(
        "compare", "--run", "--json", "-", "--clients", "1", "--min-runs", "3", "--warmup", "0.05s",
        "--run-time", "0.2s", "--max-time", "6s", "-q", "-o", tmp_path / "delta",
        truths / "truth-plain", truths / "truth-delta",
        env={"VOLLEY_TRUTH_DELTA_NS": str(delta_ns)}, timeout=60,
    )  # fmt: skip
    assert done.status in (0, 3), done.stderr
    rows = done.json()["pairings"][0]["comparisons"][0]["rows"]
    mean = next(r for r in rows if r["statistic"] == "mean")
    assert 0.7 * delta_ns < mean["difference_ns"]["value"] < 1.5 * delta_ns, mean

"""Open loop (issue 14): words sent on a schedule, latency from the scheduled send time.

The loop itself is tested on socketpairs with a peer thread; the whole benchmark against
the freezing fixture server and a bundled C server. Rates and runs are small: the machine
is shared, and these tests check behaviour, not the generator's precision (that is
bench/openloop/run.py)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from helpers import FAULTY, bench, server

from volley import _core
from volley.engine import _reference
from volley.present.report import summary
from volley.records import results

IMPLEMENTATIONS = [pytest.param(_core, id="cython"), pytest.param(_reference, id="reference")]
SECOND = 1_000_000_000
OP_TIMEOUT_NS = 2 * SECOND


class Peer(threading.Thread):
    """The server side of one connection: answers every word, optionally after a pause."""

    def __init__(self, sock: socket.socket, mode: str = "echo+1", after: int = 0) -> None:
        super().__init__(daemon=True)
        self.sock, self.mode, self.after = sock, mode, after
        self.words = 0

    def run(self) -> None:
        buf = b""
        with self.sock:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return
                buf += chunk
                out = b""
                while len(buf) >= 4:
                    (word,) = struct.unpack("!I", buf[:4])
                    buf = buf[4:]
                    self.words += 1
                    late = self.words > self.after
                    if late and self.mode == "close":
                        return
                    if late and self.mode == "stall":
                        time.sleep(1.0)
                        return
                    if late and self.mode == "pause":  # one 100 ms pause, then all answered
                        time.sleep(0.1)
                        self.mode = "echo+1"
                    step = 2 if late and self.mode == "wrong" else 1
                    out += struct.pack("!I", (word + step) & 0xFFFFFFFF)
                if out:
                    self.sock.sendall(out)


def play_open(core, mode="echo+1", after=0, rate=2000.0, arrivals=1, warmup_s=0.05, run_s=0.2):
    ours, theirs = socket.socketpair()
    Peer(theirs, mode, after).start()
    latency = memoryview(bytearray(8 * 100_000)).cast("q")
    stop = memoryview(bytearray(1))
    with ours:
        start = core.monotonic_ns() + 1_000_000
        measure_from = start + int(warmup_s * SECOND)
        deadline = measure_from + int(run_s * SECOND)
        result = core.play_open(
            ours.fileno(),
            latency,
            5,
            start,
            deadline,
            stop,
            measure_from,
            rate,
            arrivals,
            OP_TIMEOUT_NS,
        )
    return result, list(latency[: result[0]]), stop[0]


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
@pytest.mark.parametrize("arrivals", [0, 1], ids=["poisson", "fixed"])
def test_sends_on_schedule_and_records_every_op_of_the_window(core, arrivals):
    (done, outcome, err, challenge, reply, due, late, replied, most, b0, b1, window), lat, stop = (
        play_open(core, arrivals=arrivals)
    )
    assert (outcome, err, stop) == (core.OK, 0, 0)
    assert reply == (challenge + 1) & 0xFFFFFFFF
    assert window == 200_000_000
    assert done == due > 0  # every word due in the window was answered and recorded
    if arrivals == 1:
        assert 399 <= due <= 401  # 2000/s for 0.2 s
    else:
        assert 300 < due < 500  # Poisson: 400 expected, sd 20
    assert all(0 < x < SECOND for x in lat)
    # Replies in the window differ from words due in it by what was in flight at its edges.
    assert 0 <= late <= due and most >= 1 and abs(replied - due) <= 2 * most


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_a_pause_counts_for_every_op_due_during_it(core):
    # The peer pauses 100 ms at its 150th word (75 ms into the 2000/s schedule: in the
    # window). The sender keeps sending; each of the ~200 words due in the pause waits for
    # its end, so latencies from schedule run from ~100 ms down to ~0. A closed loop would
    # have recorded one slow op.
    (done, outcome, *_, most, b0, b1, window), lat, _ = play_open(core, "pause", after=150)
    assert outcome == core.OK
    assert most >= 150  # words piled up, pipelined, while the peer paused
    slow = [x for x in lat if x > 10_000_000]
    assert len(slow) >= 150
    assert max(lat) >= 90_000_000


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_wrong_reply_is_caught_in_order(core):
    (done, outcome, _, challenge, reply, *_), _, stop = play_open(core, "wrong", after=120)
    assert outcome == core.WRONG_REPLY and stop == 1
    assert reply == (challenge + 2) & 0xFFFFFFFF
    assert done == 120 - 100  # 100 warm-up words at 2000/s in 50 ms, then 20 recorded


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_peer_closing_and_stalling_are_reported(core):
    assert play_open(core, "close", after=10)[0][1] == core.PEER_CLOSED
    ours, theirs = socket.socketpair()
    Peer(theirs, "stall", after=3).start()
    latency, stop = memoryview(bytearray(8 * 1000)).cast("q"), memoryview(bytearray(1))
    with ours:
        now = core.monotonic_ns()
        result = core.play_open(
            ours.fileno(), latency, 5, now, now + SECOND, stop, now, 1000.0, 1, 100_000_000
        )
    # Ended by the 100 ms op timeout, not the deadline a second away: the outcome says which.
    assert result[1] == core.OP_TIMEOUT and stop[0] == 1


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_stop_flag_ends_the_run(core):
    ours, theirs = socket.socketpair()
    Peer(theirs).start()
    latency, stop = memoryview(bytearray(8 * 1000)).cast("q"), memoryview(bytearray(1))
    stop[0] = 1
    with ours:
        now = core.monotonic_ns()
        result = core.play_open(
            ours.fileno(), latency, 5, now, now + 10 * SECOND, stop, now, 1000.0, 1, SECOND
        )
    assert result[:2] == (0, core.OK)


def test_play_open_releases_the_gil():
    ours, theirs = socket.socketpair()
    peer = Peer(theirs)
    peer.start()
    latency, stop = memoryview(bytearray(8 * 1000)).cast("q"), memoryview(bytearray(1))
    now = _core.monotonic_ns()
    thread = threading.Thread(
        target=_core.play_open,
        args=(ours.fileno(), latency, 5, now, now + 300_000_000, stop, now, 1000.0, 1, SECOND),
    )
    thread.start()
    # The peer got a word: play_open() is under way (its 300 ms outlast the count below).
    deadline = time.monotonic() + 5
    while not peer.words:
        assert time.monotonic() < deadline, "play_open() sent nothing"
        time.sleep(0.001)
    counted = 0
    while thread.is_alive() and counted < 100_000:
        counted += 1
    thread.join()
    ours.close()
    assert counted == 100_000, "play_open() held the GIL"


# --- the whole benchmark ----------------------------------------------------------------

# One-second runs: every measured window then holds exactly one 200 ms freeze of the
# fixture, whatever the phase at which runs start.
FREEZE_RUNS = ["--warmup", "0.1s", "--run-time", "1s", "--min-runs", "3", "--max-time", "4s"]
FREEZE_RUNS += ["--precision", "50%", "--quiet", "--clients", "2", "--json", "-"]


@pytest.mark.real
def test_open_loop_sees_a_freeze_that_closed_loop_hides():
    """The fixture answers nothing in the first 200 ms of every second.

    Open loop at 400 ops/s (far below what the server sustains): a fifth of the ops are
    due during a freeze and wait for its end, on average 100 ms; so the mean is at least
    0.2 * 100 ms = 20 ms (we ask >= 10 ms, for the ops' own latency and noise), and the
    slowest 1% of all ops are the slowest twentieth of the frozen ones, which waited
    190-200 ms (we ask p99 >= 150 ms). Closed loop: each client stops sending during a
    freeze, so only one op per client per second is slow (<= 200 ms) among the thousands
    it completes in the other 800 ms: the mean is 1 s over ops per second, under 5 ms
    for any server faster than 200 ops/s per client, and this one is far faster.
    """
    freeze = ["--", "--fault", "freeze"]
    opened = bench(FAULTY, *FREEZE_RUNS, "--rate", "400", *freeze, timeout=60)
    assert opened.status in (0, 3), opened.stderr
    data = opened.json()
    assert data["load"]["model"] == "open"
    assert data["latency_ns"]["mean"] >= 10e6
    assert data["latency_ns"]["p99"] >= 150e6
    closed = bench(FAULTY, *FREEZE_RUNS, *freeze, timeout=60)
    assert closed.status in (0, 3), closed.stderr
    data = closed.json()
    assert data["load"] == {"model": "closed"}
    assert data["latency_ns"]["mean"] < 5e6


QUICK_OPEN = ["--warmup", "0.1s", "--run-time", "0.5s", "--min-runs", "4", "--max-time", "3s"]
QUICK_OPEN += ["--precision", "50%", "--quiet", "--json", "-"]


@pytest.mark.real
def test_achieved_rate_follows_a_modest_offered_rate():
    done = bench(
        server("c-epoll"), *QUICK_OPEN, "--clients", "2", "--rate", "2k", "--arrivals", "fixed"
    )
    assert done.status in (0, 3), done.stderr
    load = done.json()["load"]
    assert load["rate_ops_s"] == 2000 and load["arrivals"] == "fixed"
    assert abs(load["achieved_ops_s"] - 2000) <= 0.02 * 2000
    assert load["max_outstanding"] >= 1
    assert 0 <= load["late_sends_share"] <= 1


@pytest.mark.real
def test_a_rate_far_above_capacity_is_flagged_saturated():
    # One client cannot even send 2M words/s; the server's replies fall far short.
    done = bench(server("c-epoll"), *QUICK_OPEN, "--clients", "1", "--rate", "2M", timeout=90)
    assert done.status in (0, 3), done.stderr
    data = done.json()
    assert data["load"]["saturated"] is True
    assert data["load"]["achieved_ops_s"] < 0.9 * 2e6
    assert "SATURATED" in summary(results.BenchResult.from_json(data))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate '0' must be more than zero"),
        (["--rate", "-5k"], "--rate '-5k' is not a rate"),
        (["--rate", "fast"], "--rate 'fast' is not a rate"),
        (["--rate", "1", "--clients", "4"], "less than one op per client per run"),
        (["--rate", "1k", "--arrivals", "bursty"], "--arrivals 'bursty' is not one of"),
    ],
)
def test_bad_open_loop_input_is_one_line_exit_2(args, message, tmp_path):
    done = bench(FAULTY, "--quiet", *args)
    assert done.status == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_load_round_trips_and_old_results_read_as_closed():
    run = results.RunSummary(
        n=10,
        duration_s=0.5,
        mean_ns=1,
        p50_ns=1,
        p90_ns=1,
        p99_ns=1,
        p99_9_ns=1,
        achieved_ops_s=20.0,
        due=10,
        late=1,
        max_outstanding=3,
        backlog_growth=0,
    )
    load = results.LoadInfo.from_runs(20.0, "poisson", [run], 10_000)
    assert load.saturated is False and load.achieved_ops_s == 20.0
    assert load.late_sends_share == 0.1 and load.max_outstanding == 3
    assert results.LoadInfo.from_json(load.to_json()) == load
    assert results.RunSummary.from_json(run.to_json()) == run
    closed = results.RunSummary(
        n=1, duration_s=1, mean_ns=1, p50_ns=1, p90_ns=1, p99_ns=1, p99_9_ns=1
    )
    assert "achieved_ops_s" not in closed.to_json()
    assert results.LoadInfo.from_json(None) == results.LoadInfo()
    short = results.LoadInfo.from_runs(
        20.0, "fixed", [results.RunSummary(**{**run.__dict__, "achieved_ops_s": 19.0})], 10_000
    )
    assert short.saturated is True  # 5% short of what the schedule offered


# --- rate sweeps and the latency-versus-load figure --------------------------------------

EXPERIMENT = """
servers = ["c-epoll"]
clients = 2
server-cpus = 1
client-cpus = 1
"""


def test_experiment_rates_accept_lists_and_ranges(tmp_path):
    from volley.records import experiment
    from volley.studies import sweep

    path = tmp_path / "e.toml"
    exp = experiment.parse(EXPERIMENT + 'rates = ["10k..30k step 10k", 5000, "1.5M", 20000]', path)
    assert exp.rates == (10e3, 20e3, 30e3, 5e3, 1.5e6)
    points = exp.points()
    assert [p.rate_ops_s for p in points] == list(exp.rates)
    assert experiment.Point.from_json(points[0].to_json()) == points[0]
    command = sweep.bench_command(exp, sweep.plan(exp, [0, 1], set()), points[-1])
    assert command[command.index("--rate") + 1] == "1500000"
    closed = experiment.parse(EXPERIMENT, path)
    assert closed.rates == (None,) and "--rate" not in sweep.bench_command(
        closed, sweep.plan(closed, [0, 1], set()), closed.points()[0]
    )
    assert closed.points()[0].key() == ("c-epoll", 2, 1, 1)  # as before rates: --resume works
    for bad in ("rates = [0]", 'rates = ["fast"]', "rates = []", 'rates = ["9k..1k step 1k"]'):
        with pytest.raises(experiment.ExperimentError, match="rates"):
            experiment.parse(EXPERIMENT + bad, path)


def open_record(server_name: str, rate: float, achieved: float, p50: float, saturated: bool):
    from dataclasses import replace

    from test_sweep import bench_result

    from volley.records.experiment import Point
    from volley.records.results import LatencySummary, LoadInfo
    from volley.records.store import SweepInfo, SweepRecord

    point = Point(server_name, 2, 1, 1, rate)
    latency = LatencySummary(
        p50, 1, p50, p50, 1, p50 * 10, p50, p50 * 2, p50 * 5, p50 * 8, [(50.0, p50)]
    )
    load = LoadInfo("open", rate, "poisson", achieved, saturated=saturated)
    result = replace(bench_result(point), latency_ns=latency, load=load)
    return SweepRecord(point, 0, SweepInfo("rates", "rates.toml"), result)


def test_a_rate_sweep_plots_latency_against_achieved_throughput(tmp_path):
    pytest.importorskip("matplotlib")
    from volley.present import figures, plot
    from volley.records import store

    records = [
        open_record(name, rate, min(rate, cap), 50e3 * (1 + rate / cap), rate > cap)
        for name, cap in (("a", 30e3), ("b", 60e3))
        for rate in (10e3, 20e3, 40e3, 80e3)
    ]
    path = tmp_path / "results.jsonl"
    for record in records:
        store.append(path, record)
    loaded = plot.load(path)
    assert {m.rate_ops_s for m in loaded.measurements} == {10e3, 20e3, 40e3, 80e3}
    assert sum(m.saturated for m in loaded.measurements) == 3
    written, _ = figures.plot(path, tmp_path / "perf.png")
    assert written == [tmp_path / "perf-load.png"]  # open-loop points only: one figure
    assert written[0].stat().st_size > 10_000


# --- the generator's own lateness (issue 25, item 5) ------------------------------------


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_spinning_before_sends_keeps_the_schedule_and_records_each_sends_lag(core):
    """With ``spin_ns`` the loop wakes early and polls until each send is due: the same
    words go out (every one of the window recorded once, in its lag buffer too), none
    before its time; the latencies still count from the schedule."""
    ours, theirs = socket.socketpair()
    Peer(theirs).start()
    latency = memoryview(bytearray(8 * 10_000)).cast("q")
    lags = memoryview(bytearray(b"\xff" * 8 * 10_000)).cast("q")  # -1: no send recorded
    stop = memoryview(bytearray(1))
    with ours:
        start = core.monotonic_ns() + 1_000_000
        measure_from = start + 50_000_000
        result = core.play_open(
            ours.fileno(), latency, 5, start, measure_from + 200_000_000, stop, measure_from,
            2000.0, 1, OP_TIMEOUT_NS, send_lag_ns=lags, spin_ns=200_000,
        )  # fmt: skip
    done, outcome, *_, due, late, replied, most, b0, b1, window = result
    assert outcome == core.OK and 399 <= due <= 401 and done == due
    sent = [x for x in lags if x >= 0]  # never early: every send's lag is >= 0
    assert len(sent) == due and sent == list(lags[:due])
    assert all(lat >= lag for lat, lag in zip(latency[:done], sent, strict=True))


def test_spin_is_whole_for_a_lone_client_shared_out_for_several_and_none_beside_the_server():
    from volley.engine.worker import SPIN_SHARE, spin_for

    assert spin_for(50_000, 1, 20_000.0) == 50_000  # its own CPU: spinning starves no one
    # Four clients at 5k each: 50 us each would be the whole CPU; 40% of it is 20 us each.
    assert spin_for(50_000, 4, 5_000.0) == int(SPIN_SHARE / 20_000 * 1e9) == 20_000
    assert spin_for(50_000, 4, 250.0) == 50_000  # 1k ops/s on the CPU: 5% of it, whole
    assert spin_for(50_000, 1, 1_000.0, server_on_cpu=True) == 0
    assert spin_for(0, 1, 1_000.0) == 0


def spin_json(*args: str) -> dict:
    done = bench(server("c-epoll"), *QUICK_OPEN, "--clients", "1", "--rate", "2k", *args)
    assert done.status in (0, 3), done.stderr
    return done.json()


@pytest.mark.real
def test_send_lag_is_in_the_json_per_run_and_over_the_benchmark_and_in_the_summary():
    data = spin_json()
    load = data["load"]
    assert load["spin_ns"] == 50_000  # the default, for a client on its own CPU
    lag = load["send_lag_ns"]
    assert set(lag) == {"p50", "p90", "p99", "max"}
    assert 0 <= lag["p50"] <= lag["p90"] <= lag["p99"] <= lag["max"]
    for run in data["runs"]:
        assert 0 <= run["send_lag_p50_ns"] <= run["send_lag_p99_ns"] <= run["send_lag_max_ns"]
    assert lag["max"] == max(run["send_lag_max_ns"] for run in data["runs"])
    text = summary(results.BenchResult.from_json(data))
    assert "send lag   p50" in text and "spinning 50.00 us before each send" in text
    assert spin_json("--spin", "0")["load"]["spin_ns"] == 0


def lagging(lag_p50_ns: float, latency_p50_ns: float) -> results.BenchResult:
    from dataclasses import replace

    from test_sweep import bench_result

    from volley.records.experiment import Point

    result = bench_result(Point("s", 1, 1, 1, 1000.0), mean=latency_p50_ns)
    runs = [replace(r, send_lag_p50_ns=lag_p50_ns, send_lag_p90_ns=lag_p50_ns,
                    send_lag_p99_ns=lag_p50_ns, send_lag_max_ns=lag_p50_ns)
            for r in result.runs]  # fmt: skip
    load = results.LoadInfo.from_runs(1000.0, "poisson", runs, 10_000, spin_ns=0)
    return replace(result, runs=runs, load=load)


def test_a_send_lag_that_is_a_tenth_of_the_latency_is_warned_about():
    warned = summary(lagging(lag_p50_ns=20_000, latency_p50_ns=50_000))
    assert "WARNING: the generator sent late by 20.00 us (p50), 40% of the latency p50" in warned
    assert "not the server's" in warned and "(no spin)" in warned
    assert "WARNING" not in summary(lagging(lag_p50_ns=400, latency_p50_ns=50_000))
    # Round trip: the optional fields come back; files without them read as unmeasured.
    again = results.BenchResult.from_json(lagging(20_000, 50_000).to_json())
    assert again.load.send_lag_ns == {"p50": 20_000, "p90": 20_000, "p99": 20_000, "max": 20_000}
    assert again.runs[0].send_lag_p50_ns == 20_000
    old = lagging(20_000, 50_000).to_json()
    del old["load"]["send_lag_ns"], old["load"]["spin_ns"]
    for run in old["runs"]:
        for name in results.SEND_LAG_FIELDS.values():
            del run[name]
    assert "send lag" not in summary(results.BenchResult.from_json(old))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "1k", "--spin", "fast"], "--spin 'fast' is not a duration"),
        (["--rate", "1k", "--spin", "50"], "--spin '50' is not a duration"),
        (["--rate", "1k", "--spin", "20ms"], "--spin '20ms' is more than 10ms"),
        (["--spin", "50us"], "--spin applies to the open loop: give --rate too"),
    ],
)
def test_bad_spin_is_one_line_exit_2(args, message):
    done = bench(FAULTY, "--quiet", *args)
    assert done.status == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


# --- a periodic stall, sampled at every phase (issue 25, item 6) ------------------------


@pytest.mark.real
@pytest.mark.slow
def test_runs_shorter_than_a_periodic_freeze_sample_all_of_its_phases():
    """The fixture freezes the first 200 ms of every second; runs of 0.3 s on average see
    all of a freeze, part of one, or none, depending on the phase at which they start.
    Drawn run lengths spread those phases over the second, so some runs catch a freeze and
    some do not (with one fixed cadence near a multiple of a second every run started at
    the same phase: issue 25 measured 7.2 ms instead of 20 ms), and the mean over all ops
    comes near the analytic 0.2 x 100 ms = 20 ms (asked: 8-35 ms, for ~25 runs whose means
    spread from ~0 to ~70 ms)."""
    done = bench(
        FAULTY, "--rate", "1000", "--clients", "2", "--warmup", "0.1s", "--run-time", "0.3s",
        "--max-time", "20s", "--precision", "1%", "--quiet", "--history", "off",
        "--json", "-", "--", "--fault", "freeze", timeout=90,
    )  # fmt: skip
    assert done.status in (0, 3), done.stderr
    data = done.json()
    means = [run["mean_ns"] for run in data["runs"]]
    assert len(means) >= 15
    caught = sum(m > 10e6 for m in means) / len(means)
    assert 0.15 <= caught <= 0.85, means
    assert 8e6 <= data["latency_ns"]["mean"] <= 35e6
    lengths = [run["duration_s"] for run in data["runs"]]
    assert max(lengths) - min(lengths) > 0.1  # the windows' lengths were drawn

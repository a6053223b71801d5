"""The ping-pong loop, run against both implementations: the Cython core that measures and
the pure-Python reference that states the protocol. Peers are threads on a socketpair."""

import socket
import struct
import threading
import time

import pytest

from volley import _core
from volley.engine import _reference

IMPLEMENTATIONS = [pytest.param(_core, id="cython"), pytest.param(_reference, id="reference")]
FAR_FUTURE = 1 << 62


def buffers(capacity: int):
    return memoryview(bytearray(8 * capacity)).cast("q"), memoryview(bytearray(1))


class Peer(threading.Thread):
    """A server side for one connection, misbehaving on request."""

    def __init__(self, sock: socket.socket, mode: str = "echo+1", after: int = 0) -> None:
        super().__init__(daemon=True)
        self.sock, self.mode, self.after = sock, mode, after
        self.challenges: list[int] = []

    def run(self) -> None:
        with self.sock:
            while True:
                data = b""
                while len(data) < 4:
                    chunk = self.sock.recv(4 - len(data))
                    if not chunk:
                        return
                    data += chunk
                (word,) = struct.unpack("!I", data)
                self.challenges.append(word)
                late = len(self.challenges) > self.after
                if late and self.mode == "close":
                    return
                if late and self.mode == "stall":
                    time.sleep(1.0)
                    return
                reply = (word + (2 if late and self.mode == "wrong" else 1)) & 0xFFFFFFFF
                out = struct.pack("!I", reply)
                if self.mode == "dribble":  # one byte per segment: short reads
                    for b in out:
                        self.sock.send(bytes([b]))
                        time.sleep(0.0005)
                else:
                    self.sock.sendall(out)


def connected(mode: str = "echo+1", after: int = 0):
    ours, theirs = socket.socketpair()
    peer = Peer(theirs, mode, after)
    peer.start()
    return ours, peer


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_fills_the_buffer_with_positive_latencies(core):
    sock, peer = connected()
    latency, stop = buffers(200)
    with sock:
        done, outcome, err, challenge, reply = core.play(
            sock.fileno(), latency, 7, 0, FAR_FUTURE, stop
        )
    assert (done, outcome, err) == (200, core.OK, 0)
    assert reply == (challenge + 1) & 0xFFFFFFFF
    assert all(0 < latency[i] < 1e9 for i in range(200))
    assert len(peer.challenges) == 200 and 0 not in peer.challenges
    assert stop[0] == 0


def test_both_implementations_send_the_same_challenges():
    seen = []
    for core in (_core, _reference):
        sock, peer = connected()
        latency, stop = buffers(50)
        with sock:
            core.play(sock.fileno(), latency, 12345, 0, FAR_FUTURE, stop)
        peer.join(2)
        seen.append(peer.challenges)
    assert seen[0] == seen[1] and len(set(seen[0])) == 50


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_reassembles_a_reply_split_into_single_bytes(core):
    sock, _ = connected("dribble")
    latency, stop = buffers(20)
    with sock:
        assert core.play(sock.fileno(), latency, 1, 0, FAR_FUTURE, stop)[:2] == (20, core.OK)


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_wrong_reply_stops_with_both_values_and_raises_the_stop_flag(core):
    sock, peer = connected("wrong", after=5)
    latency, stop = buffers(100)
    with sock:
        done, outcome, _, challenge, reply = core.play(
            sock.fileno(), latency, 3, 0, FAR_FUTURE, stop
        )
    assert (done, outcome) == (5, core.WRONG_REPLY)
    assert challenge == peer.challenges[-1]
    assert reply == (challenge + 2) & 0xFFFFFFFF
    assert stop[0] == 1


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_peer_closing_is_reported(core):
    sock, _ = connected("close", after=3)
    latency, stop = buffers(100)
    with sock:
        done, outcome, *_ = core.play(sock.fileno(), latency, 3, 0, FAR_FUTURE, stop)
    assert (done, outcome) == (3, core.PEER_CLOSED)


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_stalled_peer_becomes_an_op_timeout(core):
    sock, _ = connected("stall", after=2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 100_000))
    latency, stop = buffers(100)
    with sock:
        done, outcome, *_ = core.play(sock.fileno(), latency, 3, 0, FAR_FUTURE, stop)
    # The deadline is far away: only the 100 ms receive timeout can have ended the play, and
    # the outcome says it did (how fast is the machine's business, not the test's).
    assert (done, outcome) == (2, core.OP_TIMEOUT)


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_stop_flag_and_deadline_end_the_round(core):
    sock, _ = connected()
    latency, stop = buffers(100)
    with sock:
        stop[0] = 1
        assert core.play(sock.fileno(), latency, 3, 0, FAR_FUTURE, stop)[:2] == (0, core.OK)
        stop[0] = 0
        # A deadline already past still completes the op in flight, then stops.
        assert core.play(sock.fileno(), latency, 3, 0, 1, stop)[:2] == (1, core.OK)


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_waits_for_the_common_start(core):
    sock, _ = connected()
    latency, stop = buffers(1)
    with sock:
        start = core.monotonic_ns() + 150_000_000
        core.play(sock.fileno(), latency, 3, start, FAR_FUTURE, stop)
        assert core.monotonic_ns() >= start


@pytest.mark.parametrize("core", IMPLEMENTATIONS)
def test_warm_up_ops_are_played_but_not_recorded(core):
    sock, _ = connected()
    latency, stop = buffers(100_000)
    with sock:
        start = core.monotonic_ns()
        measure_from = start + 100_000_000
        deadline = measure_from + 50_000_000
        recorded, outcome, *_ = core.play(
            sock.fileno(), latency, 3, start, deadline, stop, measure_from
        )
        assert outcome == core.OK and recorded > 0
        # Only ops of the last 50 ms are there: their latencies add up to no more than that
        # (plus the one op in flight at the deadline).
        assert sum(latency[:recorded]) <= 50_000_000 + max(latency[:recorded])
        assert core.monotonic_ns() >= deadline


def test_play_releases_the_gil():
    # While one thread is blocked inside play() waiting for a slow peer, another runs Python.
    sock, peer = connected("stall", after=0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 500_000))
    latency, stop = buffers(1)
    thread = threading.Thread(
        target=_core.play, args=(sock.fileno(), latency, 3, 0, FAR_FUTURE, stop)
    )
    thread.start()
    # The peer got the first word: play() is in (or on its way into) its wait for the reply.
    deadline = time.monotonic() + 5
    while not peer.challenges:
        assert time.monotonic() < deadline, "play() sent nothing"
        time.sleep(0.001)
    counted = 0
    while thread.is_alive() and counted < 100_000:
        counted += 1
    thread.join()
    sock.close()
    assert counted == 100_000, "play() held the GIL while blocked"

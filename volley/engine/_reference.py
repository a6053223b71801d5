"""A pure-Python twin of ``volley._core.play`` and ``play_open``: same signatures, same
outcomes.

It is the readable statement of the protocol, and the tests run against both: this one
proves the protocol, the Cython one proves the speed. Never used to measure.
"""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct
import time
from dataclasses import dataclass, field

# The outcomes are the Cython loop's own: one definition of each.
from volley._core import FAILED_ERRNO, OK, OP_TIMEOUT, PEER_CLOSED, WRONG_REPLY  # noqa: F401

WORD = struct.Struct("!I")
LATE_TOLERANCE_NS = 10_000
RING_WORDS = 1 << 14
ARRIVALS = {"poisson": 0, "fixed": 1}
MAX_WAIT_NS = 10_000_000


def _next_challenge(state: int) -> int:
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state


def play(
    fd: int,
    latency_ns: memoryview,
    seed: int,
    start_ns: int,
    deadline_ns: int,
    stop: memoryview,
    measure_from_ns: int = 0,
) -> tuple[int, int, int, int, int]:
    state = seed if seed else 0x9E3779B9
    challenge = reply = 0
    if start_ns > 0:
        time.sleep(max(0, start_ns - time.monotonic_ns()) / 1e9)
    done = 0
    while done < len(latency_ns) and not stop[0]:
        state = challenge = _next_challenge(state)
        t0 = time.monotonic_ns()
        try:
            _send_all(fd, WORD.pack(challenge))
            reply = WORD.unpack(_recv_exactly(fd, 4))[0]
        except EOFError:
            stop[0] = 1
            return done, PEER_CLOSED, 0, challenge, reply
        except OSError as e:
            stop[0] = 1
            timed_out = e.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
            return done, OP_TIMEOUT if timed_out else FAILED_ERRNO, e.errno or 0, challenge, reply
        t1 = time.monotonic_ns()
        if reply != (challenge + 1) & 0xFFFFFFFF:
            stop[0] = 1
            return done, WRONG_REPLY, 0, challenge, reply
        if t0 >= measure_from_ns:
            latency_ns[done] = t1 - t0
            done += 1
        if t1 >= deadline_ns:
            break
    return done, OK, 0, challenge, reply


def _send_all(fd: int, data: bytes) -> None:
    while data:
        sent = os.write(fd, data)
        data = data[sent:]


def _recv_exactly(fd: int, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = os.read(fd, size - len(chunks))
        if not chunk:
            raise EOFError
        chunks += chunk
    return chunks


def monotonic_ns() -> int:
    return time.monotonic_ns()


def play_open(
    fd: int,
    latency_ns: memoryview,
    seed: int,
    start_ns: int,
    deadline_ns: int,
    stop: memoryview,
    measure_from_ns: int,
    rate_ops_s: float,
    arrivals: int,
    op_timeout_ns: int,
    late_tolerance_ns: int = LATE_TOLERANCE_NS,
    send_lag_ns: memoryview | None = None,
    spin_ns: int = 0,
) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int]:
    """The open loop, stated plainly: see ``volley._core.play_open`` for the contract (whose
    parameters these are). One method of ``_OpenLoop`` per step of its loop, in its order,
    so that the two can be read side by side."""
    loop = _OpenLoop(
        sock=socket.socket(fileno=os.dup(fd)),
        latency_ns=latency_ns,
        stop=stop,
        schedule=_Schedule(seed, start_ns, rate_ops_s, arrivals),
        measure_from_ns=measure_from_ns,
        end_ns=deadline_ns,
        op_timeout_ns=op_timeout_ns,
        late_tolerance_ns=late_tolerance_ns,
        send_lag_ns=send_lag_ns,
        spin_ns=spin_ns,
        state=seed if seed else 0x9E3779B9,
    )
    if start_ns > 0:
        time.sleep(max(0, start_ns - time.monotonic_ns()) / 1e9)
    loop.last_progress = time.monotonic_ns()
    try:
        loop.run()
    finally:
        loop.sock.close()
    return loop.result()


class _Schedule:
    """When each word of one client is due: fixed or exponential gaps at the offered rate."""

    def __init__(self, seed: int, start_ns: int, rate_ops_s: float, arrivals: int) -> None:
        self.gaps = random.Random(seed)
        self.gap_ns = 1e9 / rate_ops_s
        self.fixed = arrivals == 1
        self.start_ns = start_ns
        self.offset = self.gaps.random() * self.gap_ns if self.fixed else self._gap()

    def _gap(self) -> float:
        return self.gap_ns if self.fixed else self.gaps.expovariate(1.0) * self.gap_ns

    @property
    def next_ns(self) -> int:
        return self.start_ns + int(self.offset)

    def advance(self) -> None:
        self.offset += self._gap()


@dataclass
class _OpenLoop:
    """One client's open loop: what it was given, and where it is."""

    sock: socket.socket
    latency_ns: memoryview
    stop: memoryview
    schedule: _Schedule
    measure_from_ns: int
    end_ns: int
    op_timeout_ns: int
    late_tolerance_ns: int
    send_lag_ns: memoryview | None
    spin_ns: int
    state: int
    ring: list[tuple[int, int]] = field(default_factory=list)  # (challenge, due ns) outstanding
    done: int = 0
    err: int = 0
    outcome: int = OK
    challenge: int = 0
    reply: int = 0
    due: int = 0
    late: int = 0
    replied: int = 0
    most: int = 0
    lagged: int = 0
    backlog_start: int = -1
    backlog_end: int = -1
    sending: bool = True
    pending: bytes = b""
    last_progress: int = 0

    def run(self) -> None:
        while not self.stop[0] and self.outcome == OK:
            now = time.monotonic_ns()
            if self.backlog_start < 0 and now >= self.measure_from_ns:
                self.backlog_start = self._backlog(now)
            self._send_due(now)
            if self.outcome != OK:
                break
            now = time.monotonic_ns()
            self._stop_sending(now)
            if self.backlog_end < 0 and now >= self.end_ns:
                self.backlog_end = self._backlog(self.end_ns)
            if not self.sending and not self.ring and now >= self.end_ns:
                break
            wait_ns = self._wait_ns(now)
            if wait_ns > 0 and not select.select([self.sock], [], [], wait_ns / 1e9)[0]:
                self._check_stall()
                continue
            if not self._receive():
                break

    def _backlog(self, at_ns: int) -> int:
        """Words outstanding at ``at_ns``, counting those due but not yet sent."""
        next_ns = self.schedule.next_ns
        behind = (at_ns - next_ns) / self.schedule.gap_ns if self.sending and next_ns < at_ns else 0
        return len(self.ring) + int(behind)

    def _send_due(self, now: int) -> None:
        """Send every word due by ``now`` that the socket and the ring take."""
        schedule = self.schedule
        while (
            self.sending
            and schedule.next_ns <= now
            and schedule.next_ns < self.end_ns
            and len(self.ring) < RING_WORDS
        ):
            next_ns = schedule.next_ns
            self.state = self.challenge = _next_challenge(self.state)
            t = time.monotonic_ns()
            try:
                if self.sock.send(WORD.pack(self.challenge), socket.MSG_DONTWAIT) != 4:
                    self.outcome = OP_TIMEOUT
                    return
            except BlockingIOError:
                return
            except OSError as e:
                self.outcome, self.err = FAILED_ERRNO, e.errno or 0
                return
            if not self.ring:
                self.last_progress = t
            self.ring.append((self.challenge, next_ns))
            if next_ns >= self.measure_from_ns:
                self._count_send(t - next_ns)
            schedule.advance()

    def _count_send(self, lag_ns: int) -> None:
        self.most = max(self.most, len(self.ring))
        self.due += 1
        self.late += lag_ns > self.late_tolerance_ns
        if self.send_lag_ns is not None and self.lagged < len(self.send_lag_ns):
            self.send_lag_ns[self.lagged] = lag_ns
            self.lagged += 1

    def _stop_sending(self, now: int) -> None:
        """Stop at the window's end; far behind, count the rest of the window late."""
        schedule = self.schedule
        if self.sending and schedule.next_ns >= self.end_ns:
            self.sending = False
        elif self.sending and now - self.end_ns > self.end_ns - self.measure_from_ns:
            self.sending = False  # far behind: the rest of the window is dropped, and late
            while schedule.next_ns < self.end_ns:
                self.due += schedule.next_ns >= self.measure_from_ns
                self.late += schedule.next_ns >= self.measure_from_ns
                schedule.advance()

    def _wait_ns(self, now: int) -> int:
        wait_ns = MAX_WAIT_NS
        if self.sending and len(self.ring) < RING_WORDS:
            wait_ns = min(self.schedule.next_ns - now - self.spin_ns, MAX_WAIT_NS)
        elif not self.sending and 0 < self.end_ns - now < wait_ns:
            wait_ns = self.end_ns - now
        return wait_ns

    def _check_stall(self) -> None:
        if self.ring and time.monotonic_ns() - self.last_progress > self.op_timeout_ns:
            self.outcome = OP_TIMEOUT

    def _receive(self) -> bool:
        """Read what replies have come and match them; False when the loop must end."""
        try:
            data = self.sock.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            self._check_stall()
            return True
        except OSError as e:
            self.outcome, self.err = FAILED_ERRNO, e.errno or 0
            return False
        if not data:
            self.outcome = PEER_CLOSED
            return False
        t = self.last_progress = time.monotonic_ns()
        self.pending += data
        while len(self.pending) >= 4:
            (self.reply,), self.pending = WORD.unpack(self.pending[:4]), self.pending[4:]
            if not self.ring:
                self.outcome, self.challenge = WRONG_REPLY, 0
                return True
            self.challenge, due_at = self.ring.pop(0)
            if self.reply != (self.challenge + 1) & 0xFFFFFFFF:
                self.outcome = WRONG_REPLY
                return True
            self._count_reply(t, due_at)
        return True

    def _count_reply(self, t: int, due_at: int) -> None:
        self.replied += self.measure_from_ns <= t < self.end_ns
        if self.measure_from_ns <= due_at < self.end_ns and self.done < len(self.latency_ns):
            self.latency_ns[self.done] = t - due_at
            self.done += 1
            if self.done == len(self.latency_ns) and self.sending:
                self.end_ns = t

    def result(self) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int]:
        if self.outcome != OK:
            self.stop[0] = 1
        window = max(0, self.end_ns - self.measure_from_ns)
        backlog_end = len(self.ring) if self.backlog_end < 0 else self.backlog_end
        return (
            self.done, self.outcome, self.err, self.challenge, self.reply, self.due,
            self.late, self.replied, self.most, max(self.backlog_start, 0), backlog_end, window,
        )  # fmt: skip

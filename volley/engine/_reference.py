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
    """The open loop, stated plainly: see ``volley._core.play_open`` for the contract."""
    # Long because _core.play_open is: one statement here for each of its steps, in its
    # order, so that the two can be read side by side.
    state = seed if seed else 0x9E3779B9
    gaps = random.Random(seed)
    gap_ns = 1e9 / rate_ops_s

    def next_gap() -> float:
        return gap_ns if arrivals == 1 else gaps.expovariate(1.0) * gap_ns

    offset = gaps.random() * gap_ns if arrivals == 1 else next_gap()
    sock = socket.socket(fileno=os.dup(fd))
    ring: list[tuple[int, int]] = []  # (challenge, scheduled ns) of each word outstanding
    end_ns, done, err, outcome, challenge, reply = deadline_ns, 0, 0, OK, 0, 0
    due = late = replied = most = lagged = 0
    backlog_start = backlog_end = -1
    sending, pending = True, b""
    if start_ns > 0:
        time.sleep(max(0, start_ns - time.monotonic_ns()) / 1e9)
    last_progress = time.monotonic_ns()
    try:
        while not stop[0] and outcome == OK:
            now = time.monotonic_ns()
            next_ns = start_ns + int(offset)
            if backlog_start < 0 and now >= measure_from_ns:
                behind = (now - next_ns) / gap_ns if sending and next_ns < now else 0
                backlog_start = len(ring) + int(behind)
            while sending and next_ns <= now and next_ns < end_ns and len(ring) < RING_WORDS:
                state = challenge = _next_challenge(state)
                t = time.monotonic_ns()
                try:
                    if sock.send(WORD.pack(challenge), socket.MSG_DONTWAIT) != 4:
                        outcome = OP_TIMEOUT
                        break
                except BlockingIOError:
                    break
                except OSError as e:
                    outcome, err = FAILED_ERRNO, e.errno or 0
                    break
                if not ring:
                    last_progress = t
                ring.append((challenge, next_ns))
                if next_ns >= measure_from_ns:
                    most = max(most, len(ring))
                    due += 1
                    late += t - next_ns > late_tolerance_ns
                    if send_lag_ns is not None and lagged < len(send_lag_ns):
                        send_lag_ns[lagged] = t - next_ns
                        lagged += 1
                offset += next_gap()
                next_ns = start_ns + int(offset)
            if outcome != OK:
                break
            now = time.monotonic_ns()
            if sending and next_ns >= end_ns:
                sending = False
            elif sending and now - end_ns > end_ns - measure_from_ns:
                sending = False  # far behind: the rest of the window is dropped, and late
                while next_ns < end_ns:
                    due += next_ns >= measure_from_ns
                    late += next_ns >= measure_from_ns
                    offset += next_gap()
                    next_ns = start_ns + int(offset)
            if backlog_end < 0 and now >= end_ns:
                behind = (end_ns - next_ns) / gap_ns if sending and next_ns < end_ns else 0
                backlog_end = len(ring) + int(behind)
            if not sending and not ring and now >= end_ns:
                break
            wait_ns = MAX_WAIT_NS
            if sending and len(ring) < RING_WORDS:
                wait_ns = min(next_ns - now - spin_ns, MAX_WAIT_NS)
            elif not sending and 0 < end_ns - now < wait_ns:
                wait_ns = end_ns - now
            if wait_ns > 0 and not select.select([sock], [], [], wait_ns / 1e9)[0]:
                if ring and time.monotonic_ns() - last_progress > op_timeout_ns:
                    outcome = OP_TIMEOUT
                continue
            try:
                data = sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if ring and time.monotonic_ns() - last_progress > op_timeout_ns:
                    outcome = OP_TIMEOUT
                continue
            except OSError as e:
                outcome, err = FAILED_ERRNO, e.errno or 0
                break
            if not data:
                outcome = PEER_CLOSED
                break
            t = last_progress = time.monotonic_ns()
            pending += data
            while len(pending) >= 4:
                (reply,), pending = WORD.unpack(pending[:4]), pending[4:]
                if not ring:
                    outcome, challenge = WRONG_REPLY, 0
                    break
                challenge, due_at = ring.pop(0)
                if reply != (challenge + 1) & 0xFFFFFFFF:
                    outcome = WRONG_REPLY
                    break
                replied += measure_from_ns <= t < end_ns
                if measure_from_ns <= due_at < end_ns and done < len(latency_ns):
                    latency_ns[done] = t - due_at
                    done += 1
                    if done == len(latency_ns) and sending:
                        end_ns = t
    finally:
        sock.close()
    if outcome != OK:
        stop[0] = 1
    window = max(0, end_ns - measure_from_ns)
    if backlog_end < 0:
        backlog_end = len(ring)
    return (
        done, outcome, err, challenge, reply, due, late, replied, most,
        max(backlog_start, 0), backlog_end, window,
    )  # fmt: skip

"""A pure-Python twin of ``volley._core.play``: same signature, same outcomes.

It is the readable statement of the protocol, and the tests run against both: this one
proves the protocol, the Cython one proves the speed. Never used to measure.
"""

from __future__ import annotations

import errno
import os
import struct
import time

OK, FAILED_ERRNO, PEER_CLOSED, WRONG_REPLY, OP_TIMEOUT = range(5)
WORD = struct.Struct("!I")


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

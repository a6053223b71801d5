# cython: language_level=3
"""The measuring loop: one client's ping-pong on one connected blocking socket.

Everything between the two clock reads is a send and a recv; the loop holds no GIL and
touches no Python object. Policy (when rounds start and end, what a failure means) is
decided by the caller and passed in as plain numbers.
"""
from libc.stdint cimport int64_t, uint32_t, uint8_t

from volley._posix cimport (
    CLOCK_MONOTONIC, EAGAIN, EINTR, MSG_NOSIGNAL, TIMER_ABSTIME,
    clock_gettime, clock_nanosleep, errno, htonl, ntohl, recv, send, ssize_t, timespec,
)

# Outcomes of play(); mirrored by volley._reference and turned into messages by the worker.
OK = 0
FAILED_ERRNO = 1
PEER_CLOSED = 2
WRONG_REPLY = 3
OP_TIMEOUT = 4

cdef enum Outcome:
    _OK = 0
    _FAILED_ERRNO = 1
    _PEER_CLOSED = 2
    _WRONG_REPLY = 3
    _OP_TIMEOUT = 4


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline uint32_t next_challenge(uint32_t *state) noexcept nogil:
    # xorshift32 never yields zero from a non-zero state, and zero would end the server.
    cdef uint32_t x = state[0]
    x ^= x << 13
    x ^= x >> 17
    x ^= x << 5
    state[0] = x
    return x


cdef inline Outcome failure_from_errno(int err) noexcept nogil:
    # SO_RCVTIMEO/SO_SNDTIMEO expire as EAGAIN (== EWOULDBLOCK on Linux): the op timeout.
    if err == EAGAIN:
        return _OP_TIMEOUT
    return _FAILED_ERRNO


cdef Outcome send_word(int fd, uint32_t word, int *err) noexcept nogil:
    cdef uint32_t wire = htonl(word)
    cdef char *p = <char *>&wire
    cdef size_t left = 4
    cdef ssize_t n
    while left > 0:
        n = send(fd, p, left, MSG_NOSIGNAL)
        if n < 0:
            if errno == EINTR:
                continue
            err[0] = errno
            return failure_from_errno(errno)
        p += n
        left -= <size_t>n
    return _OK


cdef Outcome recv_word(int fd, uint32_t *word, int *err) noexcept nogil:
    cdef uint32_t wire = 0
    cdef char *p = <char *>&wire
    cdef size_t left = 4
    cdef ssize_t n
    while left > 0:
        n = recv(fd, p, left, 0)
        if n == 0:
            return _PEER_CLOSED
        if n < 0:
            if errno == EINTR:
                continue
            err[0] = errno
            return failure_from_errno(errno)
        p += n
        left -= <size_t>n
    word[0] = ntohl(wire)
    return _OK


def play(int fd, int64_t[::1] latency_ns, uint32_t seed, int64_t start_ns,
         int64_t deadline_ns, uint8_t[::1] stop, int64_t measure_from_ns=0):
    """Play ping-pong on ``fd`` until ``latency_ns`` is full, CLOCK_MONOTONIC passes
    ``deadline_ns``, ``stop[0]`` becomes non-zero, or an op fails.

    Waits until ``start_ns`` (absolute CLOCK_MONOTONIC) so every client of a run starts
    together. Ops that start before ``measure_from_ns`` are the warm-up: played, checked,
    not recorded, so the synchronised start is never in the data. On failure sets
    ``stop[0]`` so the other clients end their run too.
    Returns ``(recorded, outcome, errno, challenge, reply)``.
    """
    cdef Py_ssize_t capacity = latency_ns.shape[0]
    cdef int64_t *samples = &latency_ns[0] if capacity > 0 else NULL
    cdef uint8_t *stop_flag = &stop[0]
    cdef uint32_t state = seed if seed != 0 else 0x9E3779B9
    cdef uint32_t challenge = 0, reply = 0
    cdef int err = 0
    cdef Outcome outcome = _OK
    cdef Py_ssize_t done = 0
    cdef int64_t t0, t1
    cdef timespec start

    with nogil:
        if start_ns > 0:
            start.tv_sec = start_ns // 1000000000
            start.tv_nsec = start_ns % 1000000000
            while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &start, NULL) == EINTR:
                pass
        while done < capacity and stop_flag[0] == 0:
            challenge = next_challenge(&state)
            t0 = now_ns()
            outcome = send_word(fd, challenge, &err)
            if outcome == _OK:
                outcome = recv_word(fd, &reply, &err)
            t1 = now_ns()
            if outcome == _OK and reply != <uint32_t>(challenge + 1):
                outcome = _WRONG_REPLY
            if outcome != _OK:
                stop_flag[0] = 1
                break
            if t0 >= measure_from_ns:
                samples[done] = t1 - t0
                done += 1
            if t1 >= deadline_ns:
                break

    return done, <int>outcome, err, challenge, reply


def monotonic_ns():
    """CLOCK_MONOTONIC in nanoseconds: the clock play() measures with and waits on."""
    return now_ns()

# cython: language_level=3
"""The measuring loops, one client on one connected socket each: ``play`` is the closed
loop (ping-pong), ``play_open`` the open loop (words sent on a schedule, pipelined).

Neither loop holds the GIL or touches a Python object per op. Policy (when runs start and
end, what a failure means) is decided by the caller and passed in as plain numbers.
"""
from libc.math cimport log
from libc.stdint cimport int64_t, uint32_t, uint64_t, uint8_t
from libc.stdlib cimport free, malloc

from volley._posix cimport (
    CLOCK_MONOTONIC, EAGAIN, EINTR, MSG_DONTWAIT, MSG_NOSIGNAL, POLLIN,
    PR_SET_TIMERSLACK, TIMER_ABSTIME, clock_gettime, clock_nanosleep, errno, htonl, ntohl,
    pollfd, ppoll, prctl, recv, send, ssize_t, timespec,
)

# Outcomes of play(), defined once: C constants in the loops below, and module-level ints
# for volley._reference and the worker's messages.
ctypedef int Outcome
cpdef enum:
    OK = 0
    FAILED_ERRNO = 1
    PEER_CLOSED = 2
    WRONG_REPLY = 3
    OP_TIMEOUT = 4


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline void sleep_until(int64_t when_ns) noexcept nogil:
    # The common start of a run: every client of every worker waits for the same instant.
    cdef timespec ts
    if when_ns <= 0:
        return
    ts.tv_sec = when_ns // 1000000000
    ts.tv_nsec = when_ns % 1000000000
    while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR:
        pass


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
        return OP_TIMEOUT
    return FAILED_ERRNO


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
    return OK


cdef Outcome recv_word(int fd, uint32_t *word, int *err) noexcept nogil:
    cdef uint32_t wire = 0
    cdef char *p = <char *>&wire
    cdef size_t left = 4
    cdef ssize_t n
    while left > 0:
        n = recv(fd, p, left, 0)
        if n == 0:
            return PEER_CLOSED
        if n < 0:
            if errno == EINTR:
                continue
            err[0] = errno
            return failure_from_errno(errno)
        p += n
        left -= <size_t>n
    word[0] = ntohl(wire)
    return OK


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
    cdef Outcome outcome = OK
    cdef Py_ssize_t done = 0
    cdef int64_t t0, t1

    with nogil:
        sleep_until(start_ns)
        while done < capacity and stop_flag[0] == 0:
            challenge = next_challenge(&state)
            t0 = now_ns()
            outcome = send_word(fd, challenge, &err)
            if outcome == OK:
                outcome = recv_word(fd, &reply, &err)
            t1 = now_ns()
            if outcome == OK and reply != <uint32_t>(challenge + 1):
                outcome = WRONG_REPLY
            if outcome != OK:
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


# ---- Open loop ----------------------------------------------------------------------
#
# One thread per connection, on a non-blocking socket (MSG_DONTWAIT), waiting in ppoll
# until the next scheduled send or a reply, whichever comes first. Measured against a
# sender and a receiver thread per connection (bench/openloop/compare_designs.py, one
# client CPU, c-epoll): the same send lag at 1k-10k ops/s (p50 30-50 us, the wake-up),
# but two threads fell behind by 0.3-1 s at 30k-50k ops/s, where one thread kept p50 lag
# under 100 us: two wake-ups and context switches per op instead of one. One thread also
# needs no ring shared across threads. The lag is reported on every run (late sends, and
# with ``send_lag_ns`` each send's lag). Waking from ppoll takes 15-30 us on the development
# VM, which every send would leave late by: volley-bench passes ``spin_ns`` (its --spin,
# volley.worker.SPIN_NS by default) so that sends leave within a microsecond of schedule.

# A send that leaves more than this after its scheduled time is counted late: the generator
# fell behind. Waking from ppoll takes a few microseconds on an idle Linux machine.
LATE_TOLERANCE_NS = 10_000
# Words outstanding on one connection at most; when the ring is full the next send waits,
# and counts as late. 2**14 words is over 0.3 s of a stall at 50k ops/s on one connection.
# Longest ppoll: a stop asked for by another client is seen this soon.
cdef enum:
    _RING_WORDS = 1 << 14
    _MAX_WAIT_NS = 10_000_000
    _RECV_BYTES = 4096
RING_WORDS = _RING_WORDS

ARRIVALS = {"poisson": 0, "fixed": 1}


cdef inline double next_uniform(uint64_t *state) noexcept nogil:
    # xorshift64*, top 53 bits: a uniform double in (0, 1], never 0 (log(0) is -inf).
    cdef uint64_t x = state[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    state[0] = x
    x = x * <uint64_t>0x2545F4914F6CDD1DULL
    return (<double>(x >> 11) + 1.0) / 9007199254740992.0


cdef inline double next_gap(uint64_t *gaps, double gap_ns, int arrivals) noexcept nogil:
    # The time to a connection's next send: fixed, or exponential (Poisson arrivals).
    if arrivals == 1:
        return gap_ns
    return -log(next_uniform(gaps)) * gap_ns


def play_open(int fd, int64_t[::1] latency_ns, uint32_t seed, int64_t start_ns,
              int64_t deadline_ns, uint8_t[::1] stop, int64_t measure_from_ns,
              double rate_ops_s, int arrivals, int64_t op_timeout_ns,
              int64_t late_tolerance_ns=LATE_TOLERANCE_NS, send_lag_ns=None,
              int64_t spin_ns=0):
    """Send words on ``fd`` at ``rate_ops_s`` (``arrivals``: 0 Poisson, 1 fixed gaps) from
    ``start_ns`` until ``deadline_ns``, whether or not earlier replies have come, then wait
    for the outstanding replies. Each reply is checked, in order, against its challenge;
    its latency is reply time minus *scheduled* send time, so a stall counts for every op
    that was due during it (no coordinated omission).

    Ops scheduled before ``measure_from_ns`` are the warm-up: played, checked, not
    recorded. The measured window is [measure_from_ns, deadline_ns), cut short if
    ``latency_ns`` fills. Words due in the window go out even if the generator only gets
    to them after it (late, their latency still counted from schedule), unless it is still
    behind one more window's length past the deadline. A connection with words outstanding
    and no reply for ``op_timeout_ns`` fails with OP_TIMEOUT. On failure sets ``stop[0]``.

    Returns ``(recorded, outcome, errno, challenge, reply, due, late, replied,
    max_outstanding, backlog_start, backlog_end, window_ns)``: ``due`` words scheduled in
    the window, ``late`` of them sent more than ``late_tolerance_ns`` after schedule (or
    dropped), ``replied`` replies received in the window, ``max_outstanding`` the most
    words sent and unanswered at once, ``backlog_*`` the words due and unanswered at the
    window's start and end. ``send_lag_ns``, if given (an int64 buffer), receives how late
    each send of the window left, for the generator's own benchmark. ``spin_ns`` > 0 wakes
    that much before each send and spins (non-blocking recv) until it is due: sends on
    time despite a slow wake-up, at the cost of a busy CPU.
    """
    cdef Py_ssize_t capacity = latency_ns.shape[0]
    cdef int64_t *samples = &latency_ns[0] if capacity > 0 else NULL
    cdef int64_t[::1] lags_view
    cdef int64_t *lags = NULL
    cdef Py_ssize_t lags_capacity = 0, lagged = 0
    if send_lag_ns is not None:
        lags_view = send_lag_ns
        lags_capacity = lags_view.shape[0]
        lags = &lags_view[0] if lags_capacity > 0 else NULL
    cdef uint8_t *stop_flag = &stop[0]
    cdef uint32_t state = seed if seed != 0 else 0x9E3779B9
    cdef uint64_t gaps = (<uint64_t>seed << 32) ^ <uint64_t>0x9E3779B97F4A7C15ULL
    cdef double gap_ns = 1e9 / rate_ops_s if rate_ops_s > 0 else 1e18
    cdef uint32_t *challenges = <uint32_t *>malloc(_RING_WORDS * sizeof(uint32_t))
    cdef int64_t *scheduled = <int64_t *>malloc(_RING_WORDS * sizeof(int64_t))
    cdef uint32_t mask = _RING_WORDS - 1
    cdef uint64_t head = 0, tail = 0  # words sent, replies checked
    cdef uint32_t challenge = 0, reply = 0, wire
    cdef int err = 0
    cdef Outcome outcome = OK
    cdef Py_ssize_t done = 0
    cdef int64_t end_ns = deadline_ns, now, t, wait_ns, due_at
    cdef int64_t last_progress = 0
    cdef double next_offset
    cdef int64_t next_ns
    cdef long due = 0, late = 0, replied = 0, max_outstanding = 0
    cdef long backlog_start = -1, backlog_end = -1
    cdef bint sending = True
    cdef unsigned char buf[_RECV_BYTES]
    cdef unsigned char partial[4]
    cdef int have = 0  # bytes of a reply word received so far
    cdef ssize_t n, i
    cdef pollfd pfd
    cdef timespec ts

    if challenges == NULL or scheduled == NULL:
        free(challenges)
        free(scheduled)
        raise MemoryError()

    with nogil:
        # The default 50 us timer slack would make every timed wake-up up to 50 us late.
        prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
        if arrivals == 1:
            next_offset = next_uniform(&gaps) * gap_ns  # a random phase per connection
        else:
            next_offset = -log(next_uniform(&gaps)) * gap_ns
        next_ns = start_ns + <int64_t>next_offset
        sleep_until(start_ns)
        last_progress = now_ns()
        while True:
            if stop_flag[0] != 0:
                break
            now = now_ns()
            if backlog_start < 0 and now >= measure_from_ns:
                backlog_start = <long>(head - tail) + <long>(
                    (now - next_ns) / gap_ns if sending and next_ns < now else 0)
            # Every due word goes out (up to a batch, so replies are read between bursts).
            i = 0
            while sending and next_ns <= now and i < 64:
                if next_ns >= end_ns:
                    break
                if head - tail >= _RING_WORDS:
                    break  # the ring is full: the send waits, and will count as late
                challenge = next_challenge(&state)
                wire = htonl(challenge)
                t = now_ns()
                n = send(fd, &wire, 4, MSG_NOSIGNAL | MSG_DONTWAIT)
                if n != 4:
                    if n < 0 and (errno == EAGAIN or errno == EINTR):
                        break  # the socket buffer is full: retry once it drains
                    if n >= 0:
                        # A partial 4-byte send cannot be undone; the buffer is nearly
                        # full only when the server stopped reading, so wait for it.
                        outcome = OP_TIMEOUT
                    else:
                        err = errno
                        outcome = FAILED_ERRNO
                    break
                if head == tail:
                    last_progress = t
                challenges[head & mask] = challenge
                scheduled[head & mask] = next_ns
                head += 1
                if head - tail > <uint64_t>max_outstanding and next_ns >= measure_from_ns:
                    max_outstanding = <long>(head - tail)
                if next_ns >= measure_from_ns:
                    due += 1
                    if t - next_ns > late_tolerance_ns:
                        late += 1
                    if lagged < lags_capacity:
                        lags[lagged] = t - next_ns
                        lagged += 1
                next_offset += next_gap(&gaps, gap_ns, arrivals)
                next_ns = start_ns + <int64_t>next_offset
                i += 1
            if outcome != OK:
                break
            now = now_ns()
            if sending and next_ns >= end_ns:
                sending = False  # every word due in the window is out, however late
            elif sending and now - end_ns > end_ns - measure_from_ns:
                # Far behind (one more window past the deadline): the rest due in the
                # window is dropped, counted due and late, so the run reports a shortfall.
                sending = False
                while next_ns < end_ns:
                    if next_ns >= measure_from_ns:
                        due += 1
                        late += 1
                    next_offset += next_gap(&gaps, gap_ns, arrivals)
                    next_ns = start_ns + <int64_t>next_offset
            if backlog_end < 0 and now >= end_ns:
                backlog_end = <long>(head - tail) + <long>(
                    (end_ns - next_ns) / gap_ns if sending and next_ns < end_ns else 0)
            if not sending and head == tail and now >= end_ns:
                break
            # Wait for a reply, or until the next send is due.
            wait_ns = _MAX_WAIT_NS
            if sending and head - tail < _RING_WORDS:
                wait_ns = next_ns - now - spin_ns
                if wait_ns > _MAX_WAIT_NS:
                    wait_ns = _MAX_WAIT_NS
            elif not sending and end_ns - now > 0 and end_ns - now < wait_ns:
                wait_ns = end_ns - now
            if wait_ns > 0:
                pfd.fd = fd
                pfd.events = POLLIN
                pfd.revents = 0
                ts.tv_sec = wait_ns // 1000000000
                ts.tv_nsec = wait_ns % 1000000000
                if ppoll(&pfd, 1, &ts, NULL) <= 0:
                    if head != tail and now_ns() - last_progress > op_timeout_ns:
                        outcome = OP_TIMEOUT
                        break
                    continue
            n = recv(fd, buf, _RECV_BYTES, MSG_DONTWAIT)
            if n == 0:
                outcome = PEER_CLOSED
                break
            if n < 0:
                if errno == EAGAIN or errno == EINTR:
                    if head != tail and now_ns() - last_progress > op_timeout_ns:
                        outcome = OP_TIMEOUT
                        break
                    continue
                err = errno
                outcome = FAILED_ERRNO
                break
            t = now_ns()
            last_progress = t
            i = 0
            while i < n:
                partial[have] = buf[i]
                have += 1
                i += 1
                if have < 4:
                    continue
                have = 0
                reply = ntohl((<uint32_t *>partial)[0])
                if tail == head:
                    outcome = WRONG_REPLY  # a reply to nothing sent
                    challenge = 0
                    break
                challenge = challenges[tail & mask]
                due_at = scheduled[tail & mask]
                tail += 1
                if reply != <uint32_t>(challenge + 1):
                    outcome = WRONG_REPLY
                    break
                if t >= measure_from_ns and t < end_ns:
                    replied += 1
                if due_at >= measure_from_ns and due_at < end_ns:
                    if done < capacity:
                        samples[done] = t - due_at
                        done += 1
                        if done == capacity and sending:
                            end_ns = t  # the buffer is full: the window ends here
            if outcome != OK:
                break

    free(challenges)
    free(scheduled)
    if outcome != OK:
        stop[0] = 1
    if backlog_start < 0:
        backlog_start = 0
    if backlog_end < 0:
        backlog_end = <long>(head - tail)
    window = end_ns - measure_from_ns if end_ns > measure_from_ns else 0
    return (done, <int>outcome, err, challenge, reply, due, late, replied, max_outstanding,
            backlog_start, backlog_end, window)


# ---- How far apart two CPUs are -----------------------------------------------------
#
# One cache line bounced between two threads, each pinned to one of the CPUs: the round
# trip is what every request and reply between them pays in the memory system. It tells
# the placement a hypervisor gave two virtual CPUs (one core's two hyperthreads or two
# cores: on the development VM about 60 or 310 ns, switching within minutes), which moves
# a ping-pong's latency by a third.

cdef extern from *:
    """
    static inline long long volley_load(long long *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void volley_store(long long *p, long long v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    """
    long long volley_load(long long *p) nogil
    void volley_store(long long *p, long long v) nogil

# Set by the measuring side when it is done: the answering side leaves.
cdef enum:
    BOUNCE_DONE = -1
    BOUNCE_SPINS_PER_CLOCK = 256  # spins between two looks at the deadline


def bounce(int64_t[::1] line, int64_t[::1] batch_ns, int batch, bint measure,
           int64_t deadline_ns):
    """One side of a cache-line ping-pong on a 64-byte-aligned word inside ``line`` (give
    both sides the same array of at least 16 words, zeroed). The measuring side writes odd
    values and waits for the next even one, timing ``batch`` exchanges into each slot of
    ``batch_ns``; the answering side turns each odd value into the next even one. Both stop
    at ``deadline_ns`` (a side whose partner is not running would spin forever). Returns the
    batches timed (the measuring side) or the exchanges answered."""
    if line.shape[0] < 16:
        raise ValueError("line must hold at least 16 words")
    cdef long long *word = <long long *>((<size_t>&line[0] + 63) & ~(<size_t>63))
    cdef long long seen = 0, value = 0
    cdef int64_t done = 0, began
    cdef int spins = 0
    cdef bint late = False
    cdef Py_ssize_t slots = batch_ns.shape[0]
    with nogil:
        if measure:
            while done < slots and not late:
                began = now_ns()
                if began > deadline_ns:
                    break
                for _ in range(batch):
                    value += 1
                    volley_store(word, value)
                    value += 1
                    while volley_load(word) != value:
                        spins += 1
                        if spins == BOUNCE_SPINS_PER_CLOCK:
                            spins = 0
                            if now_ns() > deadline_ns:
                                late = True
                                break
                    if late:
                        break
                if not late:
                    batch_ns[done] = now_ns() - began
                    done += 1
            volley_store(word, BOUNCE_DONE)
        else:
            while True:
                seen = volley_load(word)
                if seen == BOUNCE_DONE:
                    break
                if seen % 2 == 1:
                    volley_store(word, seen + 1)
                    done += 1
                    continue
                spins += 1
                if spins == BOUNCE_SPINS_PER_CLOCK:
                    spins = 0
                    if now_ns() > deadline_ns:
                        break
    return done

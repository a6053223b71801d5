# cython: language_level=3, boundscheck=False, wraparound=False
"""The other design, for comparison only: a sender thread that sleeps until each scheduled
time (clock_nanosleep, absolute) and sends, while a receiver thread drains the replies. It
checks nothing; it measures only how late the sender sends (its best case)."""
from libc.math cimport log
from libc.stdint cimport int64_t, uint64_t

from volley._posix cimport (
    CLOCK_MONOTONIC, MSG_NOSIGNAL, PR_SET_TIMERSLACK, TIMER_ABSTIME, clock_gettime,
    clock_nanosleep, prctl, recv, send, timespec,
)


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def send_on_schedule(int fd, int64_t[::1] lag_ns, double rate_ops_s, int64_t start_ns,
                     int64_t measure_from_ns, int64_t deadline_ns):
    """Send a word at each Poisson time; the lag of each send after measure_from_ns."""
    cdef uint64_t x = 88172645463325252ULL
    cdef double offset = 0, gap = 1e9 / rate_ops_s
    cdef int64_t due, t
    cdef Py_ssize_t n = 0
    cdef unsigned int word = 0x01000000
    cdef timespec ts
    with nogil:
        prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
        while True:
            x ^= x >> 12
            x ^= x << 25
            x ^= x >> 27
            offset += -log((<double>((x * <uint64_t>0x2545F4914F6CDD1DULL) >> 11) + 1.0)
                           / 9007199254740992.0) * gap
            due = start_ns + <int64_t>offset
            if due >= deadline_ns:
                break
            ts.tv_sec = due // 1000000000
            ts.tv_nsec = due % 1000000000
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)
            t = now_ns()
            send(fd, &word, 4, MSG_NOSIGNAL)
            if due >= measure_from_ns and n < lag_ns.shape[0]:
                lag_ns[n] = t - due
                n += 1
    return n


def drain(int fd, long words):
    """Receive ``words`` replies (4 bytes each) and discard them."""
    cdef char buf[4096]
    cdef long left = words * 4
    cdef long got
    with nogil:
        while left > 0:
            got = recv(fd, buf, 4096, 0)
            if got <= 0:
                break
            left -= got

# C declarations used by the hot loop, kept apart from its logic.
from libc.stdint cimport int64_t, uint32_t


cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EINTR
        EAGAIN


cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    enum:
        CLOCK_MONOTONIC
        TIMER_ABSTIME
    int clock_gettime(clockid_t clk, timespec *tp)
    int clock_nanosleep(clockid_t clk, int flags, const timespec *request, timespec *remain)


cdef extern from "<sys/socket.h>" nogil:
    ctypedef long ssize_t
    enum:
        MSG_NOSIGNAL
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)


cdef extern from "<arpa/inet.h>" nogil:
    uint32_t htonl(uint32_t host)
    uint32_t ntohl(uint32_t net)


cdef extern from "<sys/socket.h>" nogil:
    enum:
        MSG_DONTWAIT


cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t
    cdef struct pollfd:
        int fd
        short events
        short revents
    enum:
        POLLIN
    int ppoll(pollfd *fds, nfds_t nfds, const timespec *timeout, const void *sigmask)


cdef extern from "<sys/prctl.h>" nogil:
    enum:
        PR_SET_TIMERSLACK
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
              unsigned long arg5)

// Optimised: one epoll event loop thread per CPU in the affinity mask, each with its own
// SO_REUSEPORT listener; non-blocking sockets with per-connection word and output buffers.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF 4096 /* bytes read per event; multiple of 4, so replies fit in RBUF bytes */
#define ACCEPT_PAUSE_MS 10 /* out of file descriptors: how long the listener rests */

struct conn {
	int fd;
	int waiting;                    /* output pending: polling for EPOLLOUT, not EPOLLIN */
	unsigned inlen;                 /* bytes of a partial word held in `in` */
	unsigned outoff, outlen;        /* reply bytes out[outoff..outlen) not yet written */
	unsigned char in[4];
	unsigned char out[RBUF];
};

static void usage(void)
{
	fprintf(stderr, "usage: c-epoll -p PORT [-a ADDRESS]\n");
	exit(2);
}

/* "-p PORT [-a ADDRESS]": PORT a decimal in 1..65535, ADDRESS an IPv4 address (default
 * 127.0.0.1). */
static struct sockaddr_in parse_args(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	long port = 0;
	int opt;
	opterr = 0; /* one line on a bad flag: ours */
	while ((opt = getopt(argc, argv, "p:a:")) != -1) {
		char *end;
		switch (opt) {
		case 'p':
			errno = 0;
			port = strtol(optarg, &end, 10);
			if (optarg[0] < '0' || optarg[0] > '9' || errno != 0 || *end != '\0' ||
			    port < 1 || port > 65535)
				usage();
			break;
		case 'a':
			if (inet_pton(AF_INET, optarg, &addr.sin_addr) != 1) {
				fprintf(stderr, "c-epoll: -a %s is not an IPv4 address\n", optarg);
				exit(2);
			}
			break;
		default:
			usage();
		}
	}
	if (port == 0 || optind != argc)
		usage();
	addr.sin_port = htons((uint16_t)port);
	return addr;
}

static int listen_on(const struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("socket");
		exit(1);
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (bind(fd, (const struct sockaddr *)addr, sizeof *addr) < 0 || listen(fd, 4096) < 0) {
		perror("bind/listen");
		exit(1);
	}
	return fd;
}

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000L + t.tv_nsec / 1000000;
}

static void set_events(int ep, struct conn *c, int waiting)
{
	struct epoll_event ev = { .events = waiting ? EPOLLOUT : EPOLLIN, .data.ptr = c };
	c->waiting = waiting;
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write pending replies; on a full socket wait for EPOLLOUT. Returns -1 if the peer failed. */
static int flush(int ep, struct conn *c)
{
	while (c->outoff < c->outlen) {
		ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
		if (w >= 0) {
			c->outoff += (unsigned)w;
		} else if (errno == EAGAIN) {
			if (!c->waiting)
				set_events(ep, c, 1);
			return 0;
		} else if (errno != EINTR) {
			return -1;
		}
	}
	c->outoff = c->outlen = 0;
	if (c->waiting)
		set_events(ep, c, 0);
	return 0;
}

/* One read per readiness event (level-triggered); answers every complete word. */
static int on_readable(int ep, struct conn *c)
{
	unsigned char buf[RBUF];
	ssize_t n = read(c->fd, buf, sizeof buf);
	if (n <= 0)
		return n == 0 || (errno != EAGAIN && errno != EINTR) ? -1 : 0;
	for (ssize_t i = 0; i < n; i++) {
		c->in[c->inlen++] = buf[i];
		if (c->inlen < 4)
			continue;
		uint32_t x;
		memcpy(&x, c->in, 4);
		x = ntohl(x);
		if (x == 0) { /* zero word: answer the words before it, then the whole server ends */
			while (c->outoff < c->outlen) {
				ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
				if (w < 0 && errno != EINTR)
					break; /* best effort: a full socket must not delay the end */
				c->outoff += w > 0 ? (unsigned)w : 0;
			}
			_exit(0);
		}
		x = htonl(x + 1);
		memcpy(c->out + c->outlen, &x, 4);
		c->outlen += 4;
		c->inlen = 0;
	}
	return flush(ep, c);
}

/* Accept every pending connection. Returns 1 when out of file descriptors or memory. */
static int on_acceptable(int ep, int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct conn *c = calloc(1, sizeof *c);
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		if (!c || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			free(c);
			close(fd);
			continue;
		}
		c->fd = fd;
	}
}

/* Watch the listener for connections (events EPOLLIN) or not (0). */
static void watch_listener(int ep, int lfd, int op, unsigned events)
{
	struct epoll_event ev = { .events = events, .data.ptr = NULL }; /* NULL: the listener */
	if (epoll_ctl(ep, op, lfd, &ev) < 0) {
		perror("epoll_ctl");
		exit(1);
	}
}

static void *event_loop(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		perror("epoll_create1");
		exit(1);
	}
	watch_listener(ep, lfd, EPOLL_CTL_ADD, EPOLLIN);
	/* Out of file descriptors, the pending connection stays queued and the level-triggered
	 * listener would wake us again at once: a busy spin. So it rests until `resume_ms`. */
	long resume_ms = 0;
	struct epoll_event evs[256];
	for (;;) {
		int timeout = -1;
		if (resume_ms) {
			long left = resume_ms - now_ms();
			if (left > 0) {
				timeout = (int)left;
			} else {
				watch_listener(ep, lfd, EPOLL_CTL_MOD, EPOLLIN);
				resume_ms = 0;
			}
		}
		int n = epoll_wait(ep, evs, 256, timeout);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				if (on_acceptable(ep, lfd)) {
					watch_listener(ep, lfd, EPOLL_CTL_MOD, 0);
					resume_ms = now_ms() + ACCEPT_PAUSE_MS;
				}
			} else if ((c->waiting ? flush(ep, c) : on_readable(ep, c)) < 0) {
				close(c->fd); /* also removes it from the epoll set */
				free(c);
			}
		}
		if (n < 0 && errno != EINTR) {
			perror("epoll_wait");
			exit(1);
		}
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN); /* a peer closing mid-write must not kill the server */

	cpu_set_t set;
	int ncpu = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
	if (ncpu < 1)
		ncpu = 1;

	int lfds[CPU_SETSIZE]; /* bind every listener before serving, so errors show up front */
	for (int i = 0; i < ncpu; i++)
		lfds[i] = listen_on(&addr);
	for (int i = 1; i < ncpu; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, event_loop, (void *)(intptr_t)lfds[i]) != 0) {
			fprintf(stderr, "pthread_create failed\n");
			exit(1);
		}
	}
	event_loop((void *)(intptr_t)lfds[0]);
}

// Process per connection, blocking I/O: the classic forking server.
// Children die with the parent (PR_SET_PDEATHSIG); the parent kills and reaps them all on exit.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void usage(void)
{
	fprintf(stderr, "usage: c-forking -p PORT [-a ADDRESS]\n");
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
				fprintf(stderr, "c-forking: -a %s is not an IPv4 address\n", optarg);
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
	if (bind(fd, (const struct sockaddr *)addr, sizeof *addr) < 0 || listen(fd, 4096) < 0) {
		perror("bind/listen");
		exit(1);
	}
	return fd;
}

/* Read exactly n bytes; returns 0 on success, -1 on EOF or error. */
static int read_full(int fd, unsigned char *buf, size_t n)
{
	while (n > 0) {
		ssize_t r = read(fd, buf, n);
		if (r > 0) {
			buf += r;
			n -= (size_t)r;
		} else if (r == 0 || errno != EINTR) {
			return -1;
		}
	}
	return 0;
}

/* Write all n bytes, coping with partial writes; returns 0 or -1. */
static int write_full(int fd, const unsigned char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w >= 0) {
			buf += w;
			n -= (size_t)w;
		} else if (errno != EINTR) {
			return -1;
		}
	}
	return 0;
}

/* Child: serve one connection, then exit. */
static void serve(int fd, pid_t parent)
{
	uint32_t word;
	while (read_full(fd, (unsigned char *)&word, 4) == 0) {
		uint32_t x = ntohl(word);
		if (x == 0) {
			kill(parent, SIGUSR1); /* the parent ends itself and every child */
			_exit(0);
		}
		word = htonl(x + 1);
		if (write_full(fd, (unsigned char *)&word, 4) < 0)
			break;
	}
	_exit(0);
}

static volatile sig_atomic_t stop_sig, child_exited;
static void on_signal(int sig)
{
	if (sig == SIGCHLD)
		child_exited = 1;
	else
		stop_sig = sig;
}

static pid_t *kids; /* live (unreaped) children */
static size_t nkids, capkids;

static void reap(int flags)
{
	pid_t pid;
	while ((pid = waitpid(-1, NULL, flags)) > 0 || (pid < 0 && errno == EINTR))
		for (size_t i = 0; i < nkids; i++)
			if (kids[i] == pid) {
				kids[i] = kids[--nkids];
				break;
			}
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = parse_args(argc, argv);
	int lfd = listen_on(&addr);
	pid_t self = getpid();
	signal(SIGPIPE, SIG_IGN); /* a peer closing mid-write must not kill a child */

	/* Signals stay blocked except inside ppoll, so none is lost between checks. */
	sigset_t block, orig;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &orig);
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);

	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	while (!stop_sig) {
		if (ppoll(&pfd, 1, NULL, &orig) < 0 && errno != EINTR) {
			perror("ppoll");
			break;
		}
		if (child_exited) {
			child_exited = 0;
			reap(WNOHANG);
		}
		if (stop_sig || !(pfd.revents & POLLIN))
			continue;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				usleep(1000); /* out of resources: back off instead of spinning */
			continue;
		}
		if (nkids == capkids) {
			capkids = capkids ? 2 * capkids : 256;
			if (!(kids = realloc(kids, capkids * sizeof *kids))) {
				perror("realloc");
				break;
			}
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		pid_t pid = fork();
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != self)
				_exit(0); /* parent already gone */
			signal(SIGTERM, SIG_DFL);
			signal(SIGUSR1, SIG_DFL);
			signal(SIGCHLD, SIG_DFL);
			sigprocmask(SIG_SETMASK, &orig, NULL);
			close(lfd);
			serve(fd, self);
		}
		if (pid > 0)
			kids[nkids++] = pid;
		close(fd); /* fork failed: drop this connection only */
	}

	/* Shutting down (SIGTERM, or a child saw a zero word): kill and reap every child. */
	for (size_t i = 0; i < nkids; i++)
		kill(kids[i], SIGKILL);
	reap(0);
	if (stop_sig == SIGTERM) { /* die by SIGTERM, as the default disposition would */
		signal(SIGTERM, SIG_DFL);
		raise(SIGTERM);
		sigprocmask(SIG_SETMASK, &orig, NULL);
	}
	return stop_sig == SIGUSR1 ? 0 : 1;
}

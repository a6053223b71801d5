/* The server every truth server is (see truth.h): c-threaded with a hook before each reply. */
#include "truth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

void spin_ns(long ns)
{
	if (ns <= 0)
		return;
	long until = now_ns() + ns;
	while (now_ns() < until)
		;
}

double env_number(const char *name, double fallback, double low, double high)
{
	const char *text = getenv(name);
	if (text == NULL || *text == '\0')
		return fallback;
	char *end;
	errno = 0;
	double value = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(value >= low && value <= high)) {
		fprintf(stderr, "%s: %s=%s: give a number from %g to %g\n", truth_name, name, text,
			low, high);
		exit(2);
	}
	return value;
}

static void usage(void)
{
	fprintf(stderr, "usage: %s -p PORT [-a ADDRESS]\n", truth_name);
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
				fprintf(stderr, "%s: -a %s is not an IPv4 address\n", truth_name, optarg);
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
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

static void *serve(void *arg)
{
	struct truth_conn *conn = arg;
	int fd = conn->fd;
	uint32_t word;
	while (read_full(fd, (unsigned char *)&word, 4) == 0) {
		uint32_t x = ntohl(word);
		if (x == 0)
			_exit(0); /* zero word: the whole server ends at once */
		truth_before_reply(conn);
		word = htonl(x + 1);
		if (write_full(fd, (unsigned char *)&word, 4) < 0)
			break;
	}
	close(fd);
	free(conn);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = parse_args(argc, argv);
	truth_setup();
	int lfd = listen_on(&addr);
	signal(SIGPIPE, SIG_IGN); /* a peer closing mid-write must not kill the server */

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

	uint64_t accepted = 0;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				usleep(1000); /* out of resources: back off instead of spinning */
			continue;         /* EINTR, ECONNABORTED, ...: keep accepting */
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct truth_conn *conn = malloc(sizeof *conn);
		pthread_t t;
		if (conn != NULL) {
			*conn = (struct truth_conn){ .fd = fd, .index = accepted++, .rng = 0 };
			if (pthread_create(&t, &attr, serve, conn) == 0)
				continue;
			free(conn);
		}
		close(fd); /* cannot serve it: drop this connection only */
	}
}

// Thread per connection, blocking I/O: the baseline design.
// Each accepted connection gets a detached pthread with a small (64 KiB) stack.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void usage(void)
{
	fprintf(stderr, "usage: c-threaded -p PORT [-a ADDRESS]\n");
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
				fprintf(stderr, "c-threaded: -a %s is not an IPv4 address\n", optarg);
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
	int fd = (int)(intptr_t)arg;
	uint32_t word;
	while (read_full(fd, (unsigned char *)&word, 4) == 0) {
		uint32_t x = ntohl(word);
		if (x == 0)
			_exit(0); /* zero word: the whole server ends at once */
		word = htonl(x + 1);
		if (write_full(fd, (unsigned char *)&word, 4) < 0)
			break;
	}
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = parse_args(argc, argv);
	int lfd = listen_on(&addr);
	signal(SIGPIPE, SIG_IGN); /* a peer closing mid-write must not kill the server */

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				usleep(1000); /* out of resources: back off instead of spinning */
			continue;         /* EINTR, ECONNABORTED, ...: keep accepting */
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		pthread_t t;
		if (pthread_create(&t, &attr, serve, (void *)(intptr_t)fd) != 0)
			close(fd); /* cannot serve it: drop this connection only */
	}
}

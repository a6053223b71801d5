// A minimal ping-pong client: the floor volley-bench's overhead is measured against.
//
// It does what volley's hot loop does and nothing else: pin to one CPU, open CLIENTS
// blocking TCP_NODELAY connections, and in one pthread per connection send a 4-byte
// network-order xorshift challenge, receive the reply, check it is challenge + 1, with
// clock_gettime(CLOCK_MONOTONIC) around send+recv. All threads start at one absolute
// instant, play WARMUP seconds unrecorded, then SECONDS recorded. Prints one JSON line:
// {"clients", "n", "mean_ns", "throughput_ops_s", "measured_s"} where throughput is n over
// the wall-clock measuring span (first recorded op's start to last one's end).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000LL
// Like volley: every thread gets this long to start before the common start instant.
#define START_SLACK_NS 20000000LL
#define OP_TIMEOUT_S 10

struct client {
	pthread_t thread;
	int fd;
	uint32_t state;
	int64_t start_ns, measure_ns, deadline_ns;
	// Results of the recorded stretch.
	int64_t n, sum_ns, first_t0, last_t1;
	int failed;
};

static void usage(void)
{
	fprintf(stderr, "usage: pingpong -h HOST -p PORT -c CLIENTS -C CPU -t SECONDS "
			"[-w WARMUP_S]\n");
	exit(2);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

// xorshift32, as in volley/_core.pyx: never zero from a non-zero state (zero ends the server).
static uint32_t next_challenge(uint32_t *state)
{
	uint32_t x = *state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*state = x;
	return x;
}

static int send_word(int fd, uint32_t word)
{
	uint32_t wire = htonl(word);
	char *p = (char *)&wire;
	size_t left = 4;
	while (left > 0) {
		ssize_t n = send(fd, p, left, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		left -= (size_t)n;
	}
	return 0;
}

static int recv_word(int fd, uint32_t *word)
{
	uint32_t wire = 0;
	char *p = (char *)&wire;
	size_t left = 4;
	while (left > 0) {
		ssize_t n = recv(fd, p, left, 0);
		if (n == 0)
			return -1;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		left -= (size_t)n;
	}
	*word = ntohl(wire);
	return 0;
}

// One exchange; returns its latency in ns and the end time in *t1, or -1 on failure.
static int64_t exchange(struct client *c, int64_t *t0_out, int64_t *t1_out)
{
	uint32_t challenge = next_challenge(&c->state), reply = 0;
	int64_t t0 = now_ns();
	int rc = send_word(c->fd, challenge);
	if (rc == 0)
		rc = recv_word(c->fd, &reply);
	int64_t t1 = now_ns();
	if (rc != 0) {
		perror("pingpong: send/recv");
		return -1;
	}
	if (reply != challenge + 1) {
		fprintf(stderr, "pingpong: wrong reply %u to challenge %u\n", reply, challenge);
		return -1;
	}
	*t0_out = t0;
	*t1_out = t1;
	return t1 - t0;
}

static void *play(void *arg)
{
	struct client *c = arg;
	struct timespec start = { .tv_sec = c->start_ns / NS_PER_S,
				  .tv_nsec = c->start_ns % NS_PER_S };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &start, NULL) == EINTR)
		;
	int64_t t0, t1 = 0, latency;
	while (t1 < c->measure_ns) { // warm-up: played, not recorded
		if (exchange(c, &t0, &t1) < 0)
			goto failed;
	}
	c->first_t0 = -1;
	do {
		latency = exchange(c, &t0, &t1);
		if (latency < 0)
			goto failed;
		if (c->first_t0 < 0)
			c->first_t0 = t0;
		c->sum_ns += latency;
		c->n++;
	} while (t1 < c->deadline_ns);
	c->last_t1 = t1;
	return NULL;
failed:
	c->failed = 1;
	return NULL;
}

static int connect_to(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	int rc = getaddrinfo(host, port, &hints, &ai);
	if (rc != 0) {
		fprintf(stderr, "pingpong: %s:%s: %s\n", host, port, gai_strerror(rc));
		exit(1);
	}
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		fprintf(stderr, "pingpong: connect %s:%s: %s\n", host, port, strerror(errno));
		exit(1);
	}
	freeaddrinfo(ai);
	int one = 1;
	struct timeval timeout = { .tv_sec = OP_TIMEOUT_S };
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
	return fd;
}

static double parse_number(const char *text, double low)
{
	char *end;
	errno = 0;
	double value = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(value >= low))
		usage();
	return value;
}

int main(int argc, char **argv)
{
	const char *host = NULL, *port = NULL;
	int clients = 0, cpu = -1;
	double seconds = 0, warmup_s = 1.0;
	int opt;
	while ((opt = getopt(argc, argv, "h:p:c:C:t:w:")) != -1) {
		switch (opt) {
		case 'h': host = optarg; break;
		case 'p': port = optarg; break;
		case 'c': clients = (int)parse_number(optarg, 1); break;
		case 'C': cpu = (int)parse_number(optarg, 0); break;
		case 't': seconds = parse_number(optarg, 0.001); break;
		case 'w': warmup_s = parse_number(optarg, 0); break;
		default: usage();
		}
	}
	if (!host || !port || clients < 1 || cpu < 0 || seconds <= 0 || optind != argc)
		usage();

	// Pinning comes first, so every thread inherits it (as in a volley worker).
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) < 0) {
		perror("pingpong: sched_setaffinity");
		return 1;
	}

	struct client *all = calloc((size_t)clients, sizeof *all);
	if (!all) {
		perror("pingpong: calloc");
		return 1;
	}
	srand((unsigned)(getpid() ^ now_ns()));
	for (int i = 0; i < clients; i++) {
		all[i].fd = connect_to(host, port);
		all[i].state = ((uint32_t)rand() << 1) | 1;
		int64_t t0, t1;
		if (exchange(&all[i], &t0, &t1) < 0) // one exchange proves the connection
			return 1;
	}

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	int64_t start_ns = now_ns() + START_SLACK_NS;
	int64_t measure_ns = start_ns + (int64_t)(warmup_s * NS_PER_S);
	int64_t deadline_ns = measure_ns + (int64_t)(seconds * NS_PER_S);
	for (int i = 0; i < clients; i++) {
		all[i].start_ns = start_ns;
		all[i].measure_ns = measure_ns;
		all[i].deadline_ns = deadline_ns;
		int rc = pthread_create(&all[i].thread, &attr, play, &all[i]);
		if (rc != 0) {
			fprintf(stderr, "pingpong: pthread_create: %s\n", strerror(rc));
			return 1;
		}
	}

	int64_t n = 0, sum_ns = 0, first = INT64_MAX, last = 0;
	int failed = 0;
	for (int i = 0; i < clients; i++) {
		pthread_join(all[i].thread, NULL);
		failed |= all[i].failed;
		n += all[i].n;
		sum_ns += all[i].sum_ns;
		if (all[i].first_t0 < first)
			first = all[i].first_t0;
		if (all[i].last_t1 > last)
			last = all[i].last_t1;
		close(all[i].fd);
	}
	free(all);
	if (failed || n == 0)
		return 1;
	double measured_s = (double)(last - first) / NS_PER_S;
	printf("{\"clients\": %d, \"n\": %lld, \"mean_ns\": %.1f, \"throughput_ops_s\": %.1f, "
	       "\"measured_s\": %.6f}\n",
	       clients, (long long)n, (double)sum_ns / (double)n, (double)n / measured_s, measured_s);
	return 0;
}

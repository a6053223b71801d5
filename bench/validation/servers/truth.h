/* What every truth server shares (truth.c): c-threaded's contract and structure (thread
 * per connection, blocking I/O, "-p PORT [-a ADDRESS]", a zero word ends it, SIGTERM's
 * default action ends it at once), with one hook before each reply where a truth server
 * adds the latency it is known to add. A server's main.c defines:
 *   truth_name                 its name, for its usage and error lines;
 *   truth_setup()              reads its parameters from the environment (exit 2 if bad);
 *   truth_before_reply(conn)   runs after a word is read and before its reply is written.
 * Parameters come from the environment because the seed's contract gives a server -p only,
 * and `volley compare --run` starts servers without arguments. */
#ifndef TRUTH_H
#define TRUTH_H
#define _GNU_SOURCE
#include <stdint.h>

struct truth_conn {
	int fd;
	uint64_t index; /* 0 for the first connection accepted, 1 for the next, ... */
	uint64_t rng;   /* the hook's own state; 0 until the hook sets it */
};

extern const char truth_name[];
void truth_setup(void);
void truth_before_reply(struct truth_conn *conn);

/* CLOCK_MONOTONIC in nanoseconds. */
long now_ns(void);
/* Busy-wait ns nanoseconds: a sleep would add the kernel's timer slack (50 us). */
void spin_ns(long ns);
/* The environment variable NAME as a number in [low, high], or FALLBACK when unset; one
 * line and exit 2 when it is not such a number. */
double env_number(const char *name, double fallback, double low, double high);

#endif

// Truth: a share q of replies (each chosen by a per-connection xorshift, independently) gets d ns more busy-wait: mean = plain + q·d; env VOLLEY_TRUTH_BIMODAL_SHARE (q, 0.1), VOLLEY_TRUTH_BIMODAL_DELAY_NS (d, 50000), VOLLEY_TRUTH_SEED.
#include "../truth.h"

#include <unistd.h>

const char truth_name[] = "truth-bimodal";

static uint64_t threshold; /* a reply is delayed when its draw is below this */
static long delay_ns;
static uint64_t seed;

/* SplitMix64: turns a seed and a connection's index into a well-mixed nonzero state. */
static uint64_t splitmix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ULL;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return (x ^ (x >> 31)) | 1;
}

void truth_setup(void)
{
	double share = env_number("VOLLEY_TRUTH_BIMODAL_SHARE", 0.1, 0, 1);
	delay_ns = (long)env_number("VOLLEY_TRUTH_BIMODAL_DELAY_NS", 50000, 0, 1e9);
	// 2^64 * share, exactly 0 or all draws at the ends.
	threshold = share >= 1 ? UINT64_MAX : (uint64_t)(share * 18446744073709551616.0);
	// Unset: a fresh seed per server, so that runs (fresh servers) draw independently and
	// the share delayed is q in expectation, not one fixed draw repeated in every run.
	seed = (uint64_t)env_number("VOLLEY_TRUTH_SEED", (double)((uint64_t)now_ns() ^
			((uint64_t)getpid() << 32)), 0, 9007199254740992.0);
}

void truth_before_reply(struct truth_conn *conn)
{
	if (conn->rng == 0)
		conn->rng = splitmix64(seed ^ splitmix64(conn->index));
	/* xorshift64* (Vigna): a 64-bit draw per reply. */
	uint64_t x = conn->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	conn->rng = x;
	if (x * 0x2545F4914F6CDD1DULL < threshold)
		spin_ns(delay_ns);
}

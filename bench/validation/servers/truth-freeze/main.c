// Truth: no reply during the first F ms of every P ms of CLOCK_MONOTONIC (held until F ends); env VOLLEY_TRUTH_FREEZE_MS (200), VOLLEY_TRUTH_FREEZE_PERIOD_MS (1000).
#include "../truth.h"

#include <time.h>

const char truth_name[] = "truth-freeze";

static long freeze_ns, period_ns;

void truth_setup(void)
{
	double period_ms = env_number("VOLLEY_TRUTH_FREEZE_PERIOD_MS", 1000, 1, 3600e3);
	double freeze_ms = env_number("VOLLEY_TRUTH_FREEZE_MS", 200, 0, period_ms);
	period_ns = (long)(period_ms * 1e6);
	freeze_ns = (long)(freeze_ms * 1e6);
}

// The phase is CLOCK_MONOTONIC's, the same for every connection and every server started
// on this machine: all of them freeze together, like a machine-wide stall.
void truth_before_reply(struct truth_conn *conn)
{
	(void)conn;
	long now = now_ns();
	long phase = now % period_ns;
	if (phase >= freeze_ns)
		return;
	long end = now - phase + freeze_ns;
	struct timespec until = { .tv_sec = end / 1000000000L, .tv_nsec = end % 1000000000L };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) != 0)
		; /* EINTR: sleep on to the same instant */
}

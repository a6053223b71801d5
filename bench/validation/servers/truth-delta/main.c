// Truth: truth-plain + exactly Δ ns of busy-wait per reply, Δ from env VOLLEY_TRUTH_DELTA_NS (default 0).
#include "../truth.h"

const char truth_name[] = "truth-delta";

static long delta_ns;

void truth_setup(void)
{
	delta_ns = (long)env_number("VOLLEY_TRUTH_DELTA_NS", 0, 0, 1e9);
}

void truth_before_reply(struct truth_conn *conn)
{
	(void)conn;
	spin_ns(delta_ns);
}

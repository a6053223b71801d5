// Truth: nothing added (c-threaded's design); two copies of this binary are A/A, equal by construction.
#include "../truth.h"

const char truth_name[] = "truth-plain";

void truth_setup(void)
{
}

void truth_before_reply(struct truth_conn *conn)
{
	(void)conn;
}

"""volley's hot loop alone: ``_core.play`` in pinned Python threads, without volley's engine.

The middle term between pingpong.c and volley-bench (run.py --with-core): the same loop
volley's workers run, in one process pinned to one CPU, a Python thread per connection,
one warm-up and one measured stretch as pingpong.c plays them; no coordinator, no runs, no
worker protocol. Prints pingpong's JSON line. If this matches C and volley-bench does not,
the cost is in the engine around the loop; if it matches volley-bench, in the loop itself.

    python bench/overhead/core_client.py -p PORT -c CLIENTS -C CPU -t SECONDS [-w WARMUP_S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading

from volley import _core
from volley.engine import server, worker

# As pingpong.c: every thread gets this long to reach the common start.
START_SLACK_NS = 20_000_000
OP_TIMEOUT_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("-c", "--clients", type=int, required=True)
    parser.add_argument("-C", "--cpu", type=int, required=True)
    parser.add_argument("-t", "--seconds", type=float, required=True)
    parser.add_argument("-w", "--warmup", type=float, default=1.0)
    args = parser.parse_args()
    # Pinning first, so every thread inherits it (as in a volley worker and pingpong.c).
    os.sched_setaffinity(0, {args.cpu})
    threading.stack_size(worker.CLIENT_STACK_BYTES)
    import numpy as np  # after pinning, as the worker does

    address = (server.LOOPBACK, args.port)
    sockets = [worker.connect(*address, OP_TIMEOUT_S) for _ in range(args.clients)]
    start_ns = _core.monotonic_ns() + START_SLACK_NS
    measure_ns = start_ns + int(args.warmup * 1e9)
    deadline_ns = measure_ns + int(args.seconds * 1e9)
    # Room for every op at 1 us each: more than any loopback round trip allows.
    latencies = [np.zeros(int(args.seconds * 1e6) + 1, np.int64) for _ in sockets]
    stop = bytearray(1)
    results: list[tuple] = [()] * len(sockets)

    def play(i: int) -> None:
        seed = random.getrandbits(32) | 1
        results[i] = _core.play(
            sockets[i].fileno(), latencies[i], seed, start_ns, deadline_ns, stop, measure_ns
        )

    threads = [threading.Thread(target=play, args=(i,)) for i in range(len(sockets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # a plain blocking join: nothing else wakes this CPU
    if any(r[1] != _core.OK for r in results):
        sys.exit(f"core_client: a client failed: {results}")
    recorded = [lat[: r[0]] for lat, r in zip(latencies, results, strict=True)]
    n = sum(len(r) for r in recorded)
    total_ns = sum(int(r.sum()) for r in recorded)
    # Over the recorded stretch, as pingpong.c counts it: from the window's start to its end.
    measured_s = args.seconds
    print(
        json.dumps(
            {
                "clients": args.clients,
                "n": n,
                "mean_ns": total_ns / n,
                "throughput_ops_s": n / measured_s,
                "measured_s": measured_s,
            }
        )
    )


if __name__ == "__main__":
    main()

"""One thread per connection (ppoll, _core.play_open) against a sender and a receiver
thread per connection (bench/openloop/two_threads.pyx): the sends' lag behind schedule,
alternating A, B, A, B at each rate against one c-epoll server, medians over rounds.

    python bench/openloop/compare_designs.py [--reps 3] [--seconds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
from pathlib import Path

import numpy as np
import pyximport

from volley import _core
from volley.engine import server, worker
from volley.system import cpus

HERE = Path(__file__).resolve().parent
SERVER = HERE.parent.parent / "target" / "servers" / "c-epoll"
pyximport.install(language_level=3, inplace=False)
import two_threads  # noqa: E402


def one_thread(host: str, port: int, rate: float, seconds: float) -> np.ndarray:
    sock = worker.connect(host, port, 5.0)
    lags = np.zeros(int(rate * seconds * 2) + 1000, np.int64)
    latency = np.zeros_like(lags)
    start = _core.monotonic_ns() + 10_000_000
    measure_from = start + 200_000_000
    result = _core.play_open(
        sock.fileno(), latency, 7, start, measure_from + int(seconds * 1e9),
        np.zeros(1, np.uint8), measure_from, rate, 0, 5_000_000_000, send_lag_ns=lags,
    )  # fmt: skip
    sock.close()
    return lags[: result[5]]


def two_threads_run(host: str, port: int, rate: float, seconds: float) -> np.ndarray:
    sock = worker.connect(host, port, 5.0)
    lags = np.zeros(int(rate * seconds * 2) + 1000, np.int64)
    start = _core.monotonic_ns() + 10_000_000
    measure_from = start + 200_000_000
    deadline = measure_from + int(seconds * 1e9)
    sent = [0]

    def sender() -> None:
        sent[0] = two_threads.send_on_schedule(
            sock.fileno(), lags, rate, start, measure_from, deadline
        )

    receiver = threading.Thread(target=two_threads.drain, args=(sock.fileno(), 1 << 40))
    sending = threading.Thread(target=sender)
    receiver.start()
    sending.start()
    sending.join()
    sock.shutdown(2)  # ends the drain
    receiver.join()
    sock.close()
    return lags[: sent[0]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rates", default="1000,10000,50000")
    args = parser.parse_args()
    usable = cpus.usable_cpus()
    port = server.choose_port()
    process = server.start(str(SERVER), [], port, [usable[0]])
    try:
        process.wait_listening(10.0)
        os.sched_setaffinity(0, {usable[1 % len(usable)]})
        print(f"load average {Path('/proc/loadavg').read_text().split()[:3]}")
        designs = {"one thread (ppoll)": one_thread, "two threads": two_threads_run}
        for rate in (float(r) for r in args.rates.split(",")):
            found: dict[str, list[tuple[float, float, float]]] = {d: [] for d in designs}
            for _ in range(args.reps):
                for name, run in designs.items():
                    lags = run(process.host, port, rate, args.seconds)
                    found[name].append(tuple(np.percentile(lags, [50, 99, 99.9]) / 1e3))
            for name, rows in found.items():
                p50, p99, p999 = (statistics.median(r[i] for r in rows) for i in range(3))
                print(
                    f"{rate:>8,.0f} ops/s  {name:<20} lag p50 {p50:8.1f} us  "
                    f"p99 {p99:8.1f} us  p99.9 {p999:8.1f} us"
                )
    finally:
        process.stop()


if __name__ == "__main__":
    main()

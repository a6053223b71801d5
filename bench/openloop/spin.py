"""How long should the open loop spin before each send? The sends' lag behind schedule and
the latency from schedule, for each spin (``play_open``'s ``spin_ns``) at each rate per
client CPU, with one client on that CPU and with several sharing it.

One c-epoll server on the first usable CPU for the whole benchmark; the clients, threads
of this process pinned to the next CPU, each on its own connection at rate / clients
(Poisson). The spin "auto" is what volley-bench uses by default (``worker.spin_for`` of
``worker.SPIN_NS``: all of it for a lone client, shared out where several share the CPU).
Every (rate, clients) cell plays its spins in turn, A B C D A B C D ..., for
``--reps`` rounds, so drifting background load touches every spin alike; each row is the
median over rounds of the run's lag p50 / p90 / p99 (all clients' sends pooled) and of its
latency p50. Runs are short (``--seconds``): this is about the typical send, not the tail.

This is a measurement, not a test: nothing here judges or asserts a timing.

Measured on the 2-vCPU development VM, load average 0.17 / 0.22 / 0.17, with the defaults
(what volley.engine.worker.SPIN_NS and SPIN_SHARE rest on; "auto" at 4 clients and 20k ops/s is
12 us with SPIN_SHARE 0.25, since raised to 0.4 = 20 us):

      ops/s clients        spin   lag p50   lag p90   lag p99  latency p50
      1,000       1         0us    17.8us    30.4us    41.3us       41.2us
      1,000       1        20us     0.3us     2.8us    13.5us       21.5us
      1,000       1        50us     0.2us     0.4us    11.2us       21.8us
      1,000       4         0us    20.2us    30.7us    46.1us       42.9us
      1,000       4        20us     0.4us     7.1us    20.5us       21.1us
      1,000       4        50us     0.3us     0.4us    13.9us       18.2us
      5,000       1         0us    14.5us    22.6us    41.6us       34.4us
      5,000       1        20us     0.3us     0.4us    12.7us       19.5us
      5,000       1        50us     0.3us     0.5us    11.4us       21.4us
      5,000       4         0us    15.8us    24.8us    46.8us       33.5us
      5,000       4        20us     0.3us     9.5us    29.9us       19.4us
      5,000       4        50us     0.3us     5.4us    49.0us       20.9us
     20,000       1         0us    14.1us    19.6us    31.8us       34.2us
     20,000       1        20us     0.3us     3.1us    11.5us       19.0us
     20,000       1        50us     0.3us     1.9us     8.8us       14.8us
     20,000       4         0us    20.5us    54.3us   108.4us       65.5us
     20,000       4        20us     3.5us    42.0us   123.6us       51.1us
     20,000       4        50us     0.6us    83.5us   214.2us       71.5us
     20,000       4   auto 12us     9.5us    46.5us   116.3us       56.4us

Run it from the checkout root with ``PYTHONPATH=.`` so that this tree's volley is used.

    python bench/openloop/spin.py [--spins 0,20,50,100,auto] [--rates 1k,5k,20k]
                                  [--clients 1,4] [--reps 3] [--seconds 0.3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
from pathlib import Path

import numpy as np

from volley import _core
from volley.engine import server, worker
from volley.numbers.units import parse_rate
from volley.system import cpus, machine

ROOT = Path(__file__).resolve().parent.parent.parent
SERVER = ROOT / "target" / "servers" / "c-epoll"
WARMUP_NS = 100_000_000


def one_run(
    address: tuple[str, int], rate: float, clients: int, seconds: float, spin_ns: int
) -> dict[str, float]:
    """``clients`` connections sharing ``rate``: the pooled send lags' and latencies'
    percentiles (ns)."""
    socks = [worker.connect(*address, 5.0) for _ in range(clients)]
    capacity = int(rate / clients * seconds * 1.5) + 1000
    latency = np.zeros((clients, capacity), np.int64)
    lags = np.zeros((clients, capacity), np.int64)
    found: list[tuple] = [()] * clients
    stop = np.zeros(1, np.uint8)
    start = _core.monotonic_ns() + 20_000_000
    measure_from = start + WARMUP_NS
    deadline = measure_from + int(seconds * 1e9)

    def play(i: int) -> None:
        found[i] = _core.play_open(
            socks[i].fileno(), latency[i], 2 * i + 1, start, deadline, stop, measure_from,
            rate / clients, _core.ARRIVALS["poisson"], 5_000_000_000,
            send_lag_ns=lags[i], spin_ns=spin_ns,
        )  # fmt: skip

    threads = [threading.Thread(target=play, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in socks:
        s.close()
    if any(r[1] != _core.OK for r in found):
        raise SystemExit(f"a run at {rate:,.0f} ops/s failed: {[r[1] for r in found]}")
    sent = np.concatenate([lags[i, : min(r[5], capacity)] for i, r in enumerate(found)])
    got = np.concatenate([latency[i, : r[0]] for i, r in enumerate(found)])
    p50, p90, p99 = np.percentile(sent, [50, 90, 99])
    return {"lag p50": p50, "lag p90": p90, "lag p99": p99, "latency p50": np.median(got)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spins", default="0,20,50,auto", help="spins to compare, in us")
    parser.add_argument("--rates", default="1k,5k,20k", help="ops/s per client CPU")
    parser.add_argument("--clients", default="1,4", help="clients sharing the client CPU")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.3)
    args = parser.parse_args()
    spins = args.spins.split(",")
    rates = [parse_rate(r) for r in args.rates.split(",")]
    counts = [int(c) for c in args.clients.split(",")]
    usable = cpus.usable_cpus()
    server_cpu, client_cpu = usable[0], usable[1 % len(usable)]
    port = server.choose_port()
    process = server.start(str(SERVER), [], port, [server_cpu])
    try:
        process.wait_listening(10.0)
        os.sched_setaffinity(0, {client_cpu})
        print(f"load average {' / '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print(f"c-epoll on CPU {server_cpu}, clients on CPU {client_cpu}; "
              f"medians of {args.reps} rounds of {args.seconds:g} s")  # fmt: skip
        # The CPUs held out of deep idle states, as volley-bench holds them by default.
        with machine.shallow_idle() as (idle, why):
            print(f"idle states {idle}{f' ({why})' if why else ''}")
            print(f"{'ops/s':>7} {'clients':>7} {'spin':>11} {'lag p50':>9} {'lag p90':>9} "
                  f"{'lag p99':>9} {'latency p50':>12}")  # fmt: skip
            table(process.host, port, args, spins, rates, counts)
    finally:
        process.stop()


def spin_ns(spin: str, rate: float, clients: int) -> int:
    """A spin of the command line ("50", in us, or "auto") for one client at this cell."""
    if spin == "auto":
        return worker.spin_for(worker.SPIN_NS, clients, rate / clients)
    return int(float(spin) * 1e3)


def table(host: str, port: int, args: argparse.Namespace, spins: list[str],
          rates: list[float], counts: list[int]) -> None:  # fmt: skip
    for rate in rates:
        for clients in counts:
            # "auto" is played only where it differs from every spin given in numbers.
            given = {spin_ns(s, rate, clients) for s in spins if s != "auto"}
            cell = [s for s in spins if s != "auto" or spin_ns(s, rate, clients) not in given]
            rows: dict[str, list[dict[str, float]]] = {s: [] for s in cell}
            for _ in range(args.reps):
                for spin in cell:
                    ns = spin_ns(spin, rate, clients)
                    rows[spin].append(one_run((host, port), rate, clients, args.seconds, ns))
            for spin, found in rows.items():
                med = {k: statistics.median(r[k] for r in found) / 1e3 for k in found[0]}
                shown = (
                    f"{'auto ' if spin == 'auto' else ''}{spin_ns(spin, rate, clients) / 1e3:.0f}us"
                )
                print(
                    f"{rate:>7,.0f} {clients:>7} {shown:>11} "
                    f"{med['lag p50']:>7.1f}us {med['lag p90']:>7.1f}us "
                    f"{med['lag p99']:>7.1f}us {med['latency p50']:>10.1f}us"
                )


if __name__ == "__main__":
    main()

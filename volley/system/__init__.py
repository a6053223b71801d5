"""The machine under the benchmark: its CPUs (lists, topology, placement of server and clients),
its environment and readiness (`volley system`), and the noise other processes put on the
pinned CPUs during a run.

Above ``numbers``; it reads the machine and changes nothing but the idle-state hold.
"""

__all__ = ["cpus", "machine", "noise", "topology"]

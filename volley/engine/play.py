"""What one run asks of the engine and what the engine hands back.

The measuring loop (``volley.measure.runs``) decides which runs to play; an ``Engine``
plays them: the coordinator here, a fake in the tests, the hosts of an MPI job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from volley.numbers import stats
from volley.system.noise import Noise


class RunFailed(RuntimeError):
    """A run could not be played (its server did not start, its clients could not connect)."""


@dataclass(frozen=True)
class RunRequest:
    index: int  # 1-based, per alternative
    warmup_s: float
    measure_s: float  # this run's measured stretch (run_length_s: it varies from run to run)
    alternative: int = 0  # which server, when several are compared run by run


@dataclass(frozen=True)
class OpenRun:
    """An open-loop run's load counts, summed over its clients."""

    window_s: float  # the measured window
    due: int  # words scheduled in it
    late: int  # of those, sent more than the tolerance late
    replied: int  # replies received in it
    max_outstanding: int  # on one connection
    backlog_growth: int  # words due and unanswered at the window's end, minus at its start
    # How late the sends left their schedule over all clients: "p50", "p90", "p99", "max"
    # (ns); None where not measured (clients on other hosts).
    send_lag_ns: dict[str, float] | None = None


@dataclass
class PlayedRun:
    """What an engine hands back from one run."""

    latencies: list[npt.NDArray[np.int64]]  # per client: its recorded ops, in order
    full: bool = False  # a client filled its buffer and stopped early
    failure: str | None = None  # the worst thing that went wrong, said for a person
    server_pid: int | None = None
    noise: Noise | None = None  # what else ran on the pinned CPUs meanwhile
    open: OpenRun | None = None  # None: played closed-loop
    # The ops already summarized where they were measured (another host's clients), in
    # place of ``latencies``; with it, ``busiest_s`` is the longest a client spent in ops.
    record: stats.LatencyRecord | None = None
    busiest_s: float = 0.0
    # Where the run's wall time went, in seconds per phase (coordinator.PHASES, with
    # ``start_skew``, ``start_late`` and ``total``); None from an engine that does not say.
    phases_s: dict[str, float] | None = None

    def summarized(self) -> tuple[stats.LatencyRecord, float]:
        """The run's ops as a record, and the longest a client spent in ops (seconds)."""
        if self.record is not None:
            return self.record, self.busiest_s
        latency = np.concatenate(self.latencies) if self.latencies else np.zeros(0, np.int64)
        busiest_ns = max((float(lat.sum()) for lat in self.latencies), default=0.0)
        return stats.LatencyRecord.of(latency), busiest_ns / 1e9


class Engine(Protocol):
    @property
    def interrupted(self) -> bool: ...

    def play(self, request: RunRequest) -> PlayedRun: ...

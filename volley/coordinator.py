"""The coordinator: starts the server and the pinned workers, runs rounds until the mean
latency is known to the asked precision, and turns what was measured into a result.

A round: every client of every worker starts at one absolute CLOCK_MONOTONIC instant and
plays until a common deadline; the coordinator then folds the round's latencies (read from
shared memory with numpy) into the running statistics and decides whether to go on.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import multiprocessing
import os
import resource
import signal
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any, cast

import numpy as np

from volley import _core, server, stats, worker
from volley.cpus import Placement, spread
from volley.results import (
    FAILED,
    INTERRUPTED,
    NOT_SIGNIFICANT,
    SIGNIFICANT,
    BenchResult,
    HostInfo,
    LatencySummary,
    WorkerInfo,
)

SLICE_NS = 10_000_000  # time-slice width for the batch-means interval
MIN_ROUNDS = 3  # effects slower than one round must get a chance to show up
# Per-client latency buffer per round, capped so the shared mapping stays bounded
# (pages are only backed once written, so the cap is address space, not memory).
MAX_CAPACITY = 1 << 20
MAPPING_BUDGET_SAMPLES = 1 << 29
# Time for every worker to receive a round and start its threads before the common start.
START_SLACK_NS = 20_000_000
THREAD_START_NS = 200_000  # waking one client thread takes ~65 us on a busy CPU
WORKER_CLOSE_S = 2.0
# Worse failures first: a wrong reply or a stall explains the others, not the other way round.
FAILURE_RANK = {
    _core.WRONG_REPLY: 0,
    _core.OP_TIMEOUT: 1,
    _core.FAILED_ERRNO: 2,
    _core.PEER_CLOSED: 3,
}


class BenchError(RuntimeError):
    """The benchmark could not run at all (no result to report)."""


@dataclass(frozen=True)
class BenchConfig:
    server: str  # the binary, or "HOST:PORT" with --connect
    server_args: list[str]
    clients: int
    placement: Placement
    precision: stats.Precision
    confidence: float = 0.95
    max_time_s: float = 180.0
    warmup_s: float = 1.0
    round_time_s: float = 1.0
    op_timeout_s: float = 10.0
    startup_timeout_s: float = 10.0
    port: int | None = None
    connect: tuple[str, int] | None = None  # measure a running server, leave it running


@dataclass(frozen=True)
class RoundProgress:
    """What a progress display needs after each round."""

    round: int
    n: int
    mean_ns: float
    half_width_ns: float
    target_ns: float
    elapsed_s: float
    warmup: bool = False


class Progress:
    """Receives one RoundProgress per round; the silent default."""

    def round(self, progress: RoundProgress) -> None:
        pass

    def done(self) -> None:
        pass


def raise_open_files_limit(clients: int) -> None:
    """Each client is one socket here and one in the server, which inherits our limit."""
    needed = clients + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(
            f"{clients} clients need {needed} open files but the hard limit is {hard}; "
            "raise it (ulimit -Hn, or limits.conf) or use fewer clients"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def benchmark(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run the whole benchmark: server up, rounds, server down. Always cleans up."""
    raise_open_files_limit(config.clients)
    # Until the rounds start (and catch it themselves), SIGTERM must unwind like Ctrl-C so
    # that the server is still ended; by default it would kill us and orphan the server.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _benchmark(config, progress)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _benchmark(config: BenchConfig, progress: Progress | None) -> BenchResult:
    progress = progress or Progress()
    placement = config.placement
    if config.connect:
        host, port = config.connect
        return Coordinator(config, host, port, progress).run()
    path = server.resolve(config.server)
    port = config.port or server.choose_port()
    args = server.substitute(
        config.server_args, len(placement.server_cpus), len(placement.client_cpus)
    )
    process = server.start(path, args, port, placement.server_cpus)
    try:
        process.wait_listening(config.startup_timeout_s)
        coordinator = Coordinator(config, process.host, port, progress)
        coordinator.server_process = process
        return coordinator.run()
    finally:
        process.stop()


@dataclass
class Worker:
    process: multiprocessing.process.BaseProcess
    pipe: Connection
    plan: worker.WorkerPlan


@dataclass
class Coordinator:
    config: BenchConfig
    host: str
    port: int
    progress: Progress
    server_process: server.ServerProcess | None = None
    workers: list[Worker] = field(default_factory=list)
    interrupted: bool = False
    control: np.ndarray | None = None  # byte 0 of the shared mapping: the stop flag

    def run(self) -> BenchResult:
        config = self.config
        capacity = min(MAX_CAPACITY, max(1024, MAPPING_BUDGET_SAMPLES // config.clients))
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.start = time.monotonic()
        path, mapping = self._create_mapping(capacity)
        self.control = np.frombuffer(mapping, dtype=np.uint8, count=1)
        self.samples = np.frombuffer(
            mapping, dtype=np.int64, count=config.clients * capacity, offset=worker.CONTROL_BYTES
        ).reshape(config.clients, capacity)
        previous = self._catch_signals()
        try:
            self._start_workers(path, capacity)
            # Every worker has it mapped now; unlinked, it cannot outlive a killed run.
            os.unlink(path)
            return self._measure(capacity)
        finally:
            self._close_workers()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.progress.done()
            with contextlib.suppress(OSError):
                os.unlink(path)
            # numpy views keep the mapping exported; a traceback may still hold some, and
            # then the mapping goes when they do.
            del self.control, self.samples
            with contextlib.suppress(BufferError):
                mapping.close()

    def _create_mapping(self, capacity: int) -> tuple[str, mmap.mmap]:
        directory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
        fd, path = tempfile.mkstemp(prefix="volley-samples-", dir=directory)
        try:
            os.ftruncate(fd, worker.CONTROL_BYTES + self.config.clients * capacity * 8)
            return path, mmap.mmap(fd, 0)
        finally:
            os.close(fd)

    def _catch_signals(self) -> dict[signal.Signals, Any]:
        def stop(signum: int, frame: FrameType | None) -> None:
            if self.interrupted:
                raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for anything
            self.interrupted = True
            self._request_stop()

        previous: dict[signal.Signals, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop)
        return previous

    def _request_stop(self) -> None:
        if self.control is not None:
            self.control[0] = 1

    def _start_workers(self, path: str, capacity: int) -> None:
        config = self.config
        context = multiprocessing.get_context("spawn")
        groups = spread(config.clients, config.placement.client_cpus)
        for index, client_ids in enumerate(groups):
            plan = worker.WorkerPlan(
                index=index,
                cpu=config.placement.client_cpus[index],
                client_ids=client_ids,
                host=self.host,
                port=self.port,
                op_timeout_s=config.op_timeout_s,
                samples_path=path,
                capacity=capacity,
            )
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker.main, args=(plan, theirs), name=f"volley-worker-{index}", daemon=True
            )
            process.start()
            theirs.close()
            self.workers.append(Worker(process, ours, plan))
        # Connecting thousands of clients takes a while; a stalled server is caught by the
        # workers' own op timeout, this bound is only for a worker that hangs.
        timeout = 2 * config.op_timeout_s + 30 + config.clients * 0.01
        for message in self._collect(timeout, "connecting its clients"):
            if message[0] == "failed":
                raise BenchError(message[1])

    def _collect(self, timeout_s: float, doing: str) -> list[tuple]:
        """One message from every worker, in worker order; BenchError if one dies or hangs."""
        replies: dict[int, tuple] = {}
        pending = {w.pipe: i for i, w in enumerate(self.workers)}
        deadline = time.monotonic() + timeout_s
        while pending:
            left = deadline - time.monotonic()
            ready = wait(list(pending), timeout=max(0.0, min(left, 0.5)))
            if not ready and left <= 0:
                index = next(iter(pending.values()))
                raise BenchError(
                    f"worker {index} did not answer within {timeout_s:.0f} s while {doing}"
                )
            if self.interrupted and not ready and doing == "connecting its clients":
                raise KeyboardInterrupt
            for pipe in ready:
                pipe = cast(Connection, pipe)
                index = pending.pop(pipe)
                try:
                    replies[index] = pipe.recv()
                except (EOFError, OSError):
                    code = self.workers[index].process.exitcode
                    raise BenchError(
                        f"worker {index} (CPU {self.workers[index].plan.cpu}) "
                        f"died while {doing} (exit code {code})"
                    ) from None
        return [replies[i] for i in range(len(self.workers))]

    def _close_workers(self) -> None:
        for w in self.workers:
            try:
                w.pipe.send(("close",))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + WORKER_CLOSE_S
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.pipe.close()

    def _play_round(self, round_s: float) -> list[worker.ClientReport]:
        per_worker = max(len(w.plan.client_ids) for w in self.workers)
        start_ns = _core.monotonic_ns() + START_SLACK_NS + per_worker * THREAD_START_NS
        deadline_ns = start_ns + int(round_s * 1e9)
        for w in self.workers:
            w.pipe.send(("round", start_ns, deadline_ns))
        timeout = (deadline_ns - _core.monotonic_ns()) / 1e9 + self.config.op_timeout_s + 10
        reports = [r for done in self._collect(timeout, "playing a round") for r in done[1]]
        return sorted(reports, key=lambda r: r.client)

    def _measure(self, capacity: int) -> BenchResult:
        config = self.config
        record = stats.LatencyRecord(slice_ns=SLICE_NS)
        round_s = config.round_time_s
        status, error, rounds, measured_ns = NOT_SIGNIFICANT, None, 0, 0
        warmup_left = config.warmup_s
        interval = stats.Interval(math.nan, math.inf, 0)
        self.measure_start = time.monotonic()
        while True:
            if self.interrupted:
                status = INTERRUPTED
                break
            elapsed = time.monotonic() - self.measure_start
            if elapsed >= config.max_time_s:
                break
            warmup = warmup_left > 0
            length = min(round_s, warmup_left if warmup else config.max_time_s - elapsed)
            reports = self._play_round(max(length, 0.01))
            latencies = [self.samples[r.client, : r.completed] for r in reports]
            # A client that filled its buffer ended early: make later rounds short enough.
            spans = [int(lat.sum()) for lat in latencies]
            full = [s for r, s in zip(reports, spans, strict=True) if r.completed == capacity]
            if full:
                round_s = min(round_s, 0.8 * min(full) / 1e9)
            failure = first_failure(reports)
            if warmup:
                warmup_left -= length
            else:
                rounds += 1
                measured_ns += max(spans, default=0)
                record.add_round(latencies, int(length * 1e9))
                interval = record.interval(config.confidence)
            if failure and not self.interrupted:
                status, error = FAILED, self._describe_failure(failure, rounds)
                break
            if self.interrupted:
                status = INTERRUPTED
                break
            self.progress.round(
                RoundProgress(
                    round=rounds,
                    n=record.n,
                    mean_ns=interval.mean,
                    half_width_ns=interval.half_width,
                    target_ns=config.precision.target_ns(interval.mean),
                    elapsed_s=time.monotonic() - self.measure_start,
                    warmup=warmup,
                )
            )
            if rounds >= MIN_ROUNDS and stats.is_significant(interval, config.precision):
                status = SIGNIFICANT
                break
        return self._result(status, error, record, interval, rounds, measured_ns)

    def _describe_failure(self, failure: worker.ClientReport, rounds: int) -> str:
        index, plan = next(
            (i, w.plan) for i, w in enumerate(self.workers) if failure.client in w.plan.client_ids
        )
        where = "warm-up" if rounds == 0 else f"round {rounds}"
        message = (
            f"client {failure.client} (worker {index}, CPU {plan.cpu}), {where}, "
            f"op {failure.completed + 1} of the round: {failure.describe()}"
        )
        process = self.server_process
        if process is not None:
            try:
                process.process.wait(timeout=0.2)
            except Exception:
                pass
            status = process.process.poll()
            if status is not None:
                message += f"; the server exited with {server.describe_status(status)}"
        return message

    def _result(
        self,
        status: str,
        error: str | None,
        record: stats.LatencyRecord,
        interval: stats.Interval,
        rounds: int,
        measured_ns: int,
    ) -> BenchResult:
        config = self.config
        latency = None
        if record.n:
            p50, p90, p99, p999 = record.histogram.percentiles(stats.PERCENTILES)
            wanted = stats.distribution_percentiles()
            values = record.histogram.percentiles(wanted)
            latency = LatencySummary(
                mean=record.mean_ns,
                stddev=record.stddev_ns,
                ci_low=interval.low,
                ci_high=interval.high,
                min=float(record.min_ns),
                max=float(record.max_ns),
                p50=float(p50),
                p90=float(p90),
                p99=float(p99),
                p99_9=float(p999),
                distribution=[(p, float(v)) for p, v in zip(wanted, values, strict=True)],
            )
        measured_s = measured_ns / 1e9
        return BenchResult(
            status=status,
            server=config.server,
            server_args=config.server_args,
            clients=config.clients,
            client_cores=config.placement.client_cpus,
            # A server we did not start runs wherever it runs: record no CPUs for it.
            server_cores=[] if config.connect else config.placement.server_cpus,
            n=record.n,
            rounds=rounds,
            elapsed_s=round(time.monotonic() - self.start, 3),
            measured_s=round(measured_s, 3),
            throughput_ops_s=record.n / measured_s if measured_s else 0.0,
            confidence=config.confidence,
            precision=str(config.precision),
            ci_batches=interval.batches,
            latency_ns=latency,
            workers=[
                WorkerInfo(
                    pid=w.process.pid or 0, cpus=[w.plan.cpu], clients=len(w.plan.client_ids)
                )
                for w in self.workers
            ],
            host=HostInfo.this_machine(),
            started_at=self.started_at,
            warmup_s=config.warmup_s,
            error=error,
        )


def first_failure(reports: list[worker.ClientReport]) -> worker.ClientReport | None:
    failed = [r for r in reports if r.failed]
    return min(failed, key=lambda r: (FAILURE_RANK.get(r.outcome, 9), r.client), default=None)

"""One measurement from its configuration to its result: the engine started for it, the
measuring loop run on that engine, and the result assembled from what both know.

The loop drives the engine, never the other way round: ``volley.engine`` plays single runs,
``runs`` decides which, and this module ties them together for volley-bench,
``volley compare --run`` and the hosts of an MPI job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from volley import _core
from volley.engine.coordinator import BenchConfig, Coordinator, engine_for
from volley.measure.runs import Measurement, Progress, RunPlan, alternate, by_placement, measure
from volley.records.results import BenchResult, LoadInfo, RunSummary, WorkerInfo

# The seam where the tests put a fake engine (volley.engine.fake.starter): everything above
# it, the command lines included, then runs without a socket.
start_engine: Callable[[BenchConfig], AbstractContextManager[Coordinator]] = engine_for
# The loop's clock, replaced with the fake engine's (volley.engine.fake.FakeClock) beside it.
clock: Callable[[], float] = time.monotonic


def run_plan(config: BenchConfig) -> RunPlan:
    """The loop's policy for ``config``: its targets and bounds."""
    return RunPlan(
        targets=config.targets,
        confidence=config.confidence,
        max_time_s=config.max_time_s,
        warmup_s=config.warmup_s,
        run_time_s=config.run_time_s,
        min_runs=config.min_runs,
        noisy=config.noisy,
        between=config.between,
        runs=config.runs,
        duration_s=config.duration_s,
    )


def benchmark(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run the whole benchmark: workers up, runs until the targets are met, everything
    ended. Returns a result for failed and interrupted benchmarks too, once the workers
    are up; BenchError or ServerError if it could not start at all."""
    progress = progress or Progress()
    try:
        with start_engine(config) as engine:
            return result(engine, measure(engine, run_plan(config), progress, clock=clock))
    finally:
        progress.done()


def run_by_run(
    config: BenchConfig,
    judge: Callable[[list[BenchResult], int, int], str | None],
    on_round: Callable[[int, list[BenchResult]], None] | None = None,
) -> list[BenchResult]:
    """Compare ``config.alternatives`` run by run, one run of each per round in a fresh
    random order (``runs.alternate``), until ``judge`` stops them; one result per
    alternative."""
    with start_engine(config) as engine:

        def results(found: list[Measurement]) -> list[BenchResult]:
            return [result(engine, m, i) for i, m in enumerate(found)]

        found = alternate(
            engine,
            run_plan(config),
            len(config.alternatives),
            lambda found, rounds, left: judge(results(found), rounds, left),
            (lambda rounds, found: on_round(rounds, results(found))) if on_round else None,
            clock=clock,
        )
        return results(found)


def result(engine: Coordinator, measurement: Measurement, alternative: int = 0) -> BenchResult:
    """The result of ``measurement``: what the loop found, with what the engine ran it on."""
    config = engine.config
    server_path, server_args = config.alternative(alternative)
    record = measurement.record
    latency = measurement.latency_summary()
    runs = measurement.runs
    return BenchResult(
        status=measurement.status,
        server=server_path,
        server_args=server_args,
        clients=config.clients,
        client_cores=config.placement.client_cpus,
        # A server we did not start runs wherever it runs: record no CPUs for it.
        server_cores=[] if config.connect else config.placement.server_cpus,
        n=record.n,
        rounds=len(runs),
        elapsed_s=round(clock() - engine.start, 3),
        measured_s=round(measurement.measured_s, 3),
        throughput_ops_s=record.n / measurement.measured_s if measurement.measured_s else 0.0,
        confidence=config.confidence,
        precision=" ".join(str(t) for t in config.targets),
        ci_batches=len(runs),
        latency_ns=latency,
        workers=_workers_of(engine),
        host=engine.environment,
        started_at=engine.started_at,
        warmup_s=config.warmup_s,
        error=measurement.error,
        runs=runs,
        dropped_runs=measurement.dropped,
        restart=engine.restart,
        targets=[str(t) for t in config.targets],
        server_address=config.connect[0] if config.connect else config.server_address,
        earlier_sittings=config.earlier_sittings,
        between_sittings_ns={
            name: math.sqrt(b.tau2) for name, b in config.between.items() if b.tau2 > 0
        },
        placements=by_placement(runs, config.confidence),
        mode=run_plan(config).mode,
        planned_runs=measurement.forecast.needed if measurement.forecast else None,
        rehearsal=config.rehearsal,
        topology=config.topology,
        planned_server_cores=config.planned.server_cpus if config.planned else [],
        planned_client_cores=config.planned.client_cpus if config.planned else [],
        load=_load_of(engine, runs),
    )


def _workers_of(engine: Coordinator) -> list[WorkerInfo]:
    return [
        WorkerInfo(pid=w.process.pid or 0, cpus=[w.plan.cpu], clients=len(w.plan.client_ids))
        for w in engine.workers
    ]


def _load_of(engine: Coordinator, runs: list[RunSummary]) -> LoadInfo:
    """The open loop's load over ``runs``; a closed loop's, empty."""
    config = engine.config
    if config.rate_ops_s is None:
        return LoadInfo()
    return LoadInfo.from_runs(
        config.rate_ops_s, config.arrivals, runs, _core.LATE_TOLERANCE_NS, engine.spin_ns()
    )

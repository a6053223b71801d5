"""Latency statistics: moments and a log-linear histogram over all measured ops, and
confidence intervals that rest on runs.

Why runs: one invocation used to measure one server instance, one set of connections and
one stretch of time, and its intervals (batch means over 10 ms slices) described only
that: across independent invocations the 95% interval held the mean about half the time.
Users ask about the server, not one instance of it, so the unit of evidence is the run (a
fresh server, fresh connections, its warm-up discarded) and an interval is a t interval
over run-level values. Each interval is centred on the statistic over all measured ops and
is as wide as the spread of the per-run values says, inflated for any serial correlation
between runs (a machine that drifts): the long-run variance is the larger of an AR(1) and
a Newey-West (Bartlett, sqrt(n) lags) estimate, so neither a smooth drift nor a lumpy
one passes as independent runs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from volley.units import STATISTICS

# Histogram resolution: 2**SUB_BITS buckets per power of two, i.e. under 0.1% relative error.
SUB_BITS = 10
MAX_EXPONENT = 48  # 2**48 ns is over three days: no single op is that slow
PERCENTILE_NAMES = STATISTICS[1:]  # "p50" ... "p99.9"


def percentile_of(statistic: str) -> float:
    """ "p99.9" -> 99.9"""
    return float(statistic[1:])


PERCENTILES = tuple(percentile_of(name) for name in PERCENTILE_NAMES)  # 50.0 ... 99.9


@functools.lru_cache(maxsize=4096)
def t_quantile(confidence: float, df: float) -> float:
    """Two-sided Student t critical value for any df > 0 (Welch's df is fractional).

    Below df = 30 the t density is integrated numerically and the quantile found by
    bisection (exact to 1e-6); above, the Cornish-Fisher expansion is < 1e-4 off.
    """
    if df <= 0:
        return math.inf
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if df >= 30:
        v = float(df)
        return (
            z
            + (z**3 + z) / (4 * v)
            + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
        )
    # P(|T| <= x) = 2 * integral_0^x pdf; substitute t = tan(u) so that the range is finite.
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def central(x: float) -> float:
        u = np.linspace(0.0, math.atan(x), 2001)
        t = np.tan(u)
        f = scale * (1 + t * t / df) ** (-(df + 1) / 2) / np.cos(u) ** 2
        h = u[1] - u[0]
        return float(2 * h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))

    low, high = z, z
    while central(high) < confidence:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if central(middle) < confidence else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    """A confidence interval: a centre and a half-width (infinite when not known yet)."""

    centre: float
    half_width: float
    runs: int

    @property
    def low(self) -> float:
        return self.centre - self.half_width

    @property
    def high(self) -> float:
        return self.centre + self.half_width


def long_run_variance(values: npt.ArrayLike) -> float:
    """Variance of one value of a series, counting its serial correlation: the variance of
    the series' mean is this over n. The larger of the AR(1) estimate (a smooth drift) and
    the Bartlett-kernel Newey-West estimate with sqrt(n) lags (any short-range pattern);
    never below the plain sample variance. Infinite for fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < 2:
        return math.inf
    d = x - x.mean()
    gamma0 = float(np.dot(d, d)) / n
    plain = gamma0 * n / (n - 1)
    if gamma0 == 0:
        return 0.0
    r = float(np.dot(d[:-1], d[1:])) / n / gamma0
    ar1 = plain * (1 + r) / (1 - r) if r < 1 else math.inf
    lags = math.ceil(math.sqrt(n))
    bartlett = gamma0
    for k in range(1, min(lags, n - 1) + 1):
        bartlett += 2 * (1 - k / (lags + 1)) * float(np.dot(d[:-k], d[k:])) / n
    return max(plain, ar1, bartlett * n / (n - 1))


def run_interval(centre: float, run_values: npt.ArrayLike, confidence: float) -> Interval:
    """CI for a statistic from its per-run values: t (df = runs - 1) over the long-run
    variance, centred on the statistic over all ops."""
    x = np.asarray(run_values, dtype=np.float64)
    x = x[np.isfinite(x)]
    k = len(x)
    if k < 2:
        return Interval(centre, math.inf, k)
    half = t_quantile(confidence, k - 1) * math.sqrt(long_run_variance(x) / k)
    return Interval(centre, half, k)


def planned_runs(pilot_values: npt.ArrayLike, target_ns: float, confidence: float) -> int:
    """Stein's two-stage rule: from the pilot runs' spread, how many runs in all give an
    interval no wider than ``target_ns``."""
    x = np.asarray(pilot_values, dtype=np.float64)
    k = len(x)
    if k < 2 or target_ns <= 0:
        return k
    spread = math.sqrt(long_run_variance(x))
    return max(k, math.ceil((t_quantile(confidence, k - 1) * spread / target_ns) ** 2))


class Histogram:
    """Log-linear latency histogram (HdrHistogram's idea): constant relative precision."""

    def __init__(self) -> None:
        self.counts = np.zeros((MAX_EXPONENT + 1) << SUB_BITS, dtype=np.int64)

    @staticmethod
    def bucket_of(latency_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        v = np.maximum(latency_ns, 1)
        exponent = np.minimum(np.floor(np.log2(v)).astype(np.int64), MAX_EXPONENT)
        # Below 2**SUB_BITS every nanosecond has its own bucket.
        shift = np.maximum(exponent - SUB_BITS, 0)
        return np.where(
            exponent < SUB_BITS,
            v,
            ((exponent - SUB_BITS + 1) << SUB_BITS) + ((v >> shift) & ((1 << SUB_BITS) - 1)),
        )

    @staticmethod
    def lowest_of(bucket: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        block, offset = bucket >> SUB_BITS, bucket & ((1 << SUB_BITS) - 1)
        return np.where(block == 0, bucket, ((1 << SUB_BITS) + offset) << np.maximum(block - 1, 0))

    def record(self, latency_ns: npt.NDArray[np.int64]) -> None:
        self.counts += np.bincount(self.bucket_of(latency_ns), minlength=len(self.counts))

    def percentiles(self, wanted: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Latency at each percentile: the midpoint of the bucket that holds it."""
        p = np.asarray(wanted, dtype=np.float64)
        cumulative = np.cumsum(self.counts)
        total = cumulative[-1]
        if total == 0:
            return np.full(p.shape, math.nan)
        # The rank in exact decimal arithmetic: in floats 99.9% of 1000 is 999.0000000000001,
        # which would round up to the next value.
        rank = np.array(
            [max(1, math.ceil(Fraction(str(float(x))) * int(total) / 100)) for x in p.flat],
            dtype=np.int64,
        ).reshape(p.shape)
        bucket = np.searchsorted(cumulative, rank).astype(np.int64)
        low = self.lowest_of(bucket)
        high = self.lowest_of(bucket + 1)
        return (low + np.maximum(high - low - 1, 0) / 2).astype(np.float64)


def distribution_percentiles() -> list[float]:
    """Percentiles for a latency-distribution plot: dense in the tail, like HdrHistogram's."""
    points = {0.0, 100.0}
    for nines in range(0, 6):
        tail = 10.0**-nines  # fraction left above: 1, 0.1, ... 1e-5
        for step in np.linspace(0, 0.9, 10):
            points.add(round(100 * (1 - tail + step * tail), 6))
    return sorted(points)


@dataclass
class LatencyRecord:
    """Moments (exact: Chan's parallel update), extremes and a histogram over ops, merged
    run by run."""

    n: int = 0
    mean_ns: float = 0.0
    m2: float = 0.0
    min_ns: int = 0
    max_ns: int = 0
    histogram: Histogram = field(default_factory=Histogram)

    def add(self, latency: npt.NDArray[np.int64], histogram: Histogram | None = None) -> None:
        """Merge ops; ``histogram``, if given, already holds exactly these ops."""
        if len(latency):
            self.merge(LatencyRecord.of(latency, histogram))

    @classmethod
    def of(
        cls, latency: npt.NDArray[np.int64], histogram: Histogram | None = None
    ) -> LatencyRecord:
        """The record of these ops alone; ``histogram``, if given, already holds them."""
        record = cls()
        if histogram is None:
            record.histogram.record(latency)
        else:
            record.histogram = histogram
        if len(latency):
            mean = float(latency.mean())
            record.n, record.mean_ns = len(latency), mean
            record.m2 = float(np.square(latency - mean).sum())
            record.min_ns, record.max_ns = int(latency.min()), int(latency.max())
        return record

    def merge(self, other: LatencyRecord) -> None:
        """Add another record's ops (another run, or another host's clients)."""
        if other.n == 0:
            return
        self.histogram.counts += other.histogram.counts
        if self.n == 0:
            self.n, self.mean_ns, self.m2 = other.n, other.mean_ns, other.m2
            self.min_ns, self.max_ns = other.min_ns, other.max_ns
            return
        total = self.n + other.n
        delta = other.mean_ns - self.mean_ns
        self.mean_ns += delta * other.n / total
        self.m2 += other.m2 + delta * delta * self.n * other.n / total
        self.n = total
        self.min_ns, self.max_ns = min(self.min_ns, other.min_ns), max(self.max_ns, other.max_ns)

    @property
    def stddev_ns(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def value(self, statistic: str) -> float:
        """ "mean" or a percentile name ("p50" ... "p99.9") over every op merged so far."""
        if statistic == "mean":
            return self.mean_ns if self.n else math.nan
        return float(self.histogram.percentiles([percentile_of(statistic)])[0])

"""Latency statistics: moments, a log-linear histogram for percentiles, and a confidence
interval for the mean that stays honest when latencies are autocorrelated.

Why batch means: consecutive ops of one client, and ops of different clients at the same
moment, share the server's state (caches, queues, GC pauses, a noisy neighbour), so samples
are not independent and sigma/sqrt(n) is far too narrow. We group ops into equal time
slices and treat each batch of slices as one observation. The number of batches is kept
between MAX_BATCHES/2 and MAX_BATCHES, so batches grow with the run ("fixed number of
batches"): whatever the correlation time, batches eventually outlast it, and correlation
between neighbouring batches that is still left widens the interval (AR(1) factor).
Stopping at the first batch size whose neighbours look uncorrelated is not safe: slow
drifts hide behind fine batches that look independent of each other.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

# Batches are merged pairwise down to at most this many; fewer than half of it and the
# t interval's own uncertainty is too large to stop on.
MAX_BATCHES = 64
MIN_BATCHES = MAX_BATCHES // 2
# Histogram resolution: 2**SUB_BITS buckets per power of two, i.e. under 0.1% relative error.
SUB_BITS = 10
MAX_EXPONENT = 48  # 2**48 ns is over three days: no single op is that slow
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def t_quantile(confidence: float, df: float) -> float:
    """Two-sided Student t critical value; ``df`` may be fractional (Welch's).

    A Cornish-Fisher expansion (< 1e-3 off for df >= 5); below that it is solved exactly,
    because an interval over a handful of runs has df 2 to 4, where the expansion is
    several percent too small.
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if df <= 0:
        return math.inf
    if df < 5:
        return _t_quantile_exact(confidence, df)
    v = float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def _t_quantile_exact(confidence: float, df: float) -> float:
    """Bisection on the t distribution's tail, P(T > t) = I_{df/(df+t^2)}(df/2, 1/2) / 2."""
    tail = (1 - confidence) / 2
    low, high = 0.0, 1.0
    while 0.5 * _incomplete_beta(df / (df + high * high), df / 2, 0.5) > tail:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if 0.5 * _incomplete_beta(df / (df + middle * middle), df / 2, 0.5) > tail:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return (low + high) / 2


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction, Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1.0 - _incomplete_beta(1 - x, b, a)
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * fraction / a


@dataclass(frozen=True)
class Interval:
    """A confidence interval for the mean latency."""

    mean: float
    half_width: float
    batches: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def lag1_correlation(x: npt.NDArray[np.float64]) -> float:
    d = x - x.mean()
    denominator = float(np.dot(d, d))
    return float(np.dot(d[:-1], d[1:]) / denominator) if denominator > 0 else 0.0


def batch_means_interval(sums: npt.ArrayLike, counts: npt.ArrayLike, confidence: float) -> Interval:
    """CI for sum(sums)/sum(counts) from consecutive batches of (sum, count).

    Neighbouring batches are merged pairwise until at most MAX_BATCHES remain; the variance
    is that of a ratio estimator (batches may hold different numbers of ops), inflated by
    the AR(1) factor (1+r)/(1-r) for whatever lag-1 correlation r is left.
    """
    y = np.asarray(sums, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    keep = n > 0
    y, n = y[keep], n[keep]
    total = float(n.sum())
    if total == 0:
        return Interval(math.nan, math.inf, 0)
    mean = float(y.sum()) / total
    while len(y) > MAX_BATCHES:
        even = len(y) - len(y) % 2
        y = y[:even:2] + y[1:even:2] + np.append(np.zeros(even // 2 - 1), y[even:].sum())
        n = n[:even:2] + n[1:even:2] + np.append(np.zeros(even // 2 - 1), n[even:].sum())
    k = len(y)
    if k < 2:
        return Interval(mean, math.inf, k)
    r = lag1_correlation(y / n)
    residual = y - mean * n
    variance = float(np.dot(residual, residual)) / (k - 1) * k / total**2
    if r > 0:
        variance *= (1 + r) / (1 - r)
    return Interval(mean, t_quantile(confidence, k - 1) * math.sqrt(variance), k)


def naive_interval(samples: npt.ArrayLike, confidence: float) -> Interval:
    """The seed client's interval, sigma/sqrt(n): right only for independent samples."""
    x = np.asarray(samples, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return Interval(float(x.mean()), z * float(x.std(ddof=1)) / math.sqrt(len(x)), len(x))


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
        rank = np.maximum(np.ceil(p / 100 * total), 1)
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
    """Everything the run needs from its latencies, updated round by round.

    Percentiles come from the histogram; mean and stddev are exact (Chan's parallel
    update); the interval uses per-time-slice sums.
    """

    slice_ns: int
    n: int = 0
    mean_ns: float = 0.0
    m2: float = 0.0
    min_ns: int = 0
    max_ns: int = 0
    histogram: Histogram = field(default_factory=Histogram)
    slice_sums: list[npt.NDArray[np.float64]] = field(default_factory=list)
    slice_counts: list[npt.NDArray[np.int64]] = field(default_factory=list)

    def add_round(self, per_client: list[npt.NDArray[np.int64]], round_ns: int) -> None:
        """Merge one round: each array is one client's latencies in the order it did them."""
        slices = max(1, -(-round_ns // self.slice_ns) + 1)
        played = [latency for latency in per_client if len(latency)]
        if not played:
            self.slice_sums.append(np.zeros(slices))
            self.slice_counts.append(np.zeros(slices, dtype=np.int64))
            return
        # One pass over all clients at once: thousands of small numpy calls cost more than
        # the round. Ops are back to back, so a client's clock is the running sum of its
        # own latencies: the global running sum minus what came before its first op.
        lengths = np.array([len(latency) for latency in played])
        latency = np.concatenate(played)
        running = np.cumsum(latency)
        first = np.cumsum(lengths) - lengths
        clock = running - np.repeat(running[first] - latency[first], lengths)
        index = np.minimum(clock // self.slice_ns, slices - 1)
        sums = np.bincount(index, weights=latency, minlength=slices).astype(np.float64)
        self.slice_sums.append(sums)
        self.slice_counts.append(np.bincount(index, minlength=slices))
        self._add_moments(latency)
        self.histogram.record(latency)

    def _add_moments(self, latency: npt.NDArray[np.int64]) -> None:
        m = len(latency)
        mean = float(latency.mean())
        m2 = float(np.square(latency - mean).sum())
        lo, hi = int(latency.min()), int(latency.max())
        if self.n == 0:
            self.n, self.mean_ns, self.m2, self.min_ns, self.max_ns = m, mean, m2, lo, hi
            return
        total = self.n + m
        delta = mean - self.mean_ns
        self.mean_ns += delta * m / total
        self.m2 += m2 + delta * delta * self.n * m / total
        self.n = total
        self.min_ns, self.max_ns = min(self.min_ns, lo), max(self.max_ns, hi)

    @property
    def stddev_ns(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def interval(self, confidence: float) -> Interval:
        if not self.slice_sums:
            return Interval(math.nan, math.inf, 0)
        return batch_means_interval(
            np.concatenate(self.slice_sums), np.concatenate(self.slice_counts), confidence
        )


@dataclass(frozen=True)
class Precision:
    """The stopping target: CI half-width as a fraction of the mean, or in nanoseconds."""

    relative: float | None = None
    absolute_ns: float | None = None

    def target_ns(self, mean_ns: float) -> float:
        if self.relative is not None:
            return self.relative * mean_ns
        assert self.absolute_ns is not None
        return self.absolute_ns

    def __str__(self) -> str:
        if self.relative is not None:
            return f"{self.relative * 100:g}%"
        return f"{self.absolute_ns:g}ns"


_UNITS_NS = {"ns": 1.0, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9}


def parse_precision(text: str) -> Precision:
    """``"1%"`` (of the mean) or an absolute time such as ``"5us"``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%|ns|us|µs|ms|s)\s*", text)
    if not match:
        raise ValueError(
            f"bad precision {text!r}: write a share of the mean like 1% or a time like 5us"
        )
    value, unit = float(match.group(1)), match.group(2)
    if unit == "%":
        if not 0 < value < 100:
            raise ValueError(f"bad precision {text!r}: a percentage must be above 0 and below 100")
        return Precision(relative=value / 100)
    if value <= 0:
        raise ValueError(f"bad precision {text!r}: the time must be above zero")
    return Precision(absolute_ns=value * _UNITS_NS[unit])


def is_significant(interval: Interval, precision: Precision) -> bool:
    """The stopping rule: enough independent batches and a narrow enough interval."""
    if interval.batches < MIN_BATCHES or not math.isfinite(interval.half_width):
        return False
    return interval.half_width <= precision.target_ns(interval.mean)

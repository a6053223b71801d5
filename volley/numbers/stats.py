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
one passes as independent runs, and its degrees of freedom are those of the runs' effective
number (``long_run``).
"""

from __future__ import annotations

import base64
import functools
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from volley.numbers.units import STATISTICS, format_ns

# Histogram resolution: 2**SUB_BITS buckets per power of two, i.e. under 0.1% relative error.
SUB_BITS = 10
MAX_EXPONENT = 48  # 2**48 ns is over three days: no single op is that slow

# HdrHistogram's standard encoded form (the "HISTFAAA..." text of its V2 compressed
# encoding). Our layout is HdrHistogram's with a lowest discernible value of 1 ns and 3
# significant digits, index for index: exact below 2,048 ns, then 1,024 sub-buckets per
# power of two. With highest trackable value 2**MAX_EXPONENT its counts end where ours can.
# Written here with zlib, struct and base64 rather than through the `hdrhistogram` package:
# about forty lines against a dependency for every machine that runs volley-bench; the
# tests decode our text with that package to prove the two agree.
HDR_LOWEST_NS = 1
HDR_HIGHEST_NS = 1 << MAX_EXPONENT
HDR_SIGNIFICANT_DIGITS = 3
_HDR_COOKIE = 0x1C849303 | 0x10  # V2 encoding, 8-byte counts
_HDR_COMPRESSED_COOKIE = 0x1C849304 | 0x10
# Big-endian: cookie, payload length, normalizing index offset, significant digits, lowest
# and highest trackable values, integer-to-double ratio; then the payload.
_HDR_HEADER = struct.Struct(">Iiiiqqd")
_HDR_OUTER = struct.Struct(">Ii")  # compressed cookie, length; then the deflated header+payload

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


# Fewer runs than this and the lag-1 correlation's own noise (about 1/sqrt(n)) swamps its
# bias: corrected, with the df of the effective runs, independent runs of 10 had intervals
# 2.5 times the plain ones on average (at 20, 1.2 times; at 40, 1.1), a pilot that plans
# several times the runs it needs, and a comparison of 5 runs a side that finds nothing.
CORRELATION_FROM = 20


def long_run_variance(values: npt.ArrayLike) -> float:
    """Variance of one value of a series, counting its serial correlation: the variance of
    the series' mean is this over n (``long_run``)."""
    return long_run(values)[0]


def long_run(values: npt.ArrayLike) -> tuple[float, float]:
    """The long-run variance of a series and its degrees of freedom.

    The variance is the larger of the AR(1) estimate (a smooth drift) and the
    Bartlett-kernel Newey-West estimate with sqrt(n) lags (any short-range pattern), never
    below the plain sample variance. All n runs together never count for less than one.

    From CORRELATION_FROM runs on, the correlation is counted in full: the lag-1
    correlation is taken with Kendall's correction for its bias, r + (1 + 4r)/n (the plain
    estimate sits low by about that much), and the df are those of n_eff = n * plain /
    long-run independent runs (n - 1 when the runs are independent): runs that hang
    together tell less about their own spread, as well as about their mean. At 40 runs with
    a true correlation of 0.7 the interval held the mean 86.6% of the time without the two,
    92.9% with them (bench/calibration/correlated_runs.py). Below, df n - 1. Infinite
    variance and no df for fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < 2:
        return math.inf, 0.0
    d = x - x.mean()
    gamma0 = float(np.dot(d, d)) / n
    plain = gamma0 * n / (n - 1)
    if gamma0 == 0:
        return 0.0, n - 1.0
    r = float(np.dot(d[:-1], d[1:])) / n / gamma0
    counted = n >= CORRELATION_FROM
    if counted:
        r = (n * r + 1) / (n - 4)
    ar1 = plain * min(n, (1 + r) / (1 - r)) if r < 1 else plain * n
    lags = math.ceil(math.sqrt(n))
    bartlett = gamma0
    for k in range(1, min(lags, n - 1) + 1):
        bartlett += 2 * (1 - k / (lags + 1)) * float(np.dot(d[:-k], d[k:])) / n
    variance = max(plain, ar1, bartlett * n / (n - 1))
    if not counted:
        return variance, n - 1.0
    return variance, min(n - 1.0, max(1.0, n * plain / variance - 1))


def run_interval(
    centre: float,
    run_values: npt.ArrayLike,
    confidence: float,
    between: Between | None = None,
) -> Interval:
    """CI for a statistic from its per-run values: t (the runs' df, ``long_run``) over the
    long-run variance, centred on the statistic over all ops. With ``between``, widened by how much
    sittings differ: its tau2 is added, at ``sitting_df`` degrees of freedom. Never narrower
    than half the histogram bucket that holds the centre (``resolution_ns``): runs whose
    percentile falls in one bucket agree only to that resolution."""
    x = finite(run_values)
    k = len(x)
    if k < 2:
        return Interval(centre, math.inf, k)
    variance, df = long_run(x)
    side = RunMean(centre, variance / k, k, df, between)
    half = t_quantile(confidence, sitting_df(df, between)) * math.sqrt(side.variance)
    return Interval(centre, max(half, resolution_ns(centre) / 2), k)


def resolution_ns(value_ns: float) -> float:
    """The width of the histogram bucket that holds ``value_ns``: 1 ns below 2**(SUB_BITS+1),
    then 2**(exponent - SUB_BITS)."""
    if not math.isfinite(value_ns) or value_ns < (2 << SUB_BITS):
        return 1.0
    return float(1 << (int(value_ns).bit_length() - 1 - SUB_BITS))


def sitting_df(runs_df: float, between: Between | None) -> float:
    """The one df rule for a sitting's interval, its planned runs and its out-of-reach test:
    the runs' df (``long_run``), or, with a between-sittings part, the smaller of the runs'
    and the sittings'. Satterthwaite's df can exceed both parts' and so make an interval with
    few runs narrower than the one with infinitely many (t(df) sqrt(tau2)); with the smaller
    df the half-width only shrinks as runs are added, towards exactly ``between_alone``."""
    if between is None or between.tau2 <= 0:
        return runs_df
    return min(runs_df, between.df)


# Fewer earlier sittings than this and Paule-Mandel's tau2 (often 0 from two or three
# sittings) is floored by the sittings' own spread around their weighted mean
# (bench/calibration/history_sim.py: coverage >= 93% from 2 sittings on at every ratio).
FLOORED_BELOW = 6
# An earlier sitting outside its leave-one-out prediction interval at this confidence is
# left out of tau2: one disturbed sitting (a CPU hog, a migration) would otherwise set it.
OUTLIER_CONFIDENCE = 0.99


@dataclass(frozen=True)
class Between:
    """How much sittings (invocations) of one configuration on one machine differ beyond
    what each one's runs show: the variance of the between-sitting component of a
    statistic, ``tau2`` (ns squared), estimated from ``sittings`` earlier sittings
    (``df`` = sittings - 1 degrees of freedom) as a random-effects meta-analysis (Kalibera
    & Jones, ISMM 2013): Paule-Mandel's tau2, their weighted ``mean`` and its variance
    ``mean_variance``; ``left_out`` sittings were outliers against the others."""

    tau2: float
    sittings: int
    mean: float = math.nan
    mean_variance: float = math.nan
    left_out: int = 0

    @property
    def df(self) -> int:
        return self.sittings - 1

    @classmethod
    def of(cls, values: Sequence[float], within_variances: Sequence[float]) -> Between | None:
        """From earlier sittings' values and within variances: outliers left out, then
        Paule-Mandel, floored while the sittings are few; None for fewer than two."""
        y = np.asarray(values, dtype=np.float64)
        v = np.maximum(np.asarray(within_variances, dtype=np.float64), 0.0)
        if len(y) < 2:
            return None
        kept = _not_outliers(y, v)
        return cls._fit(y[kept], v[kept], int((~kept).sum()))

    @classmethod
    def _fit(
        cls, y: npt.NDArray[np.float64], v: npt.NDArray[np.float64], left_out: int = 0
    ) -> Between:
        tau2 = paule_mandel(y, v)
        if len(y) < FLOORED_BELOW:
            tau2 = max(tau2, _spread_around_mean(y, v))
        mean, mean_variance = _weighted_mean(y, v + tau2)
        return cls(tau2, len(y), mean, mean_variance, left_out)

    def predicts(self, value: float, within: float, confidence: float) -> tuple[float, float]:
        """The prediction interval of a further sitting's value whose runs give ``within``."""
        half = t_quantile(confidence, self.df) * math.sqrt(self.tau2 + self.mean_variance + within)
        return self.mean - half, self.mean + half


def paule_mandel(values: npt.NDArray[np.float64], within: npt.NDArray[np.float64]) -> float:
    """Paule-Mandel's tau2: the one at which the generalised Q, sum w_i (y_i - mean_w)^2 with
    w_i = 1 / (v_i + tau2), equals k - 1 (0 if Q is below that already at tau2 = 0). Q falls
    as tau2 grows, so bisection finds it."""
    k = len(values)

    def q(tau2: float) -> float:
        mean, _ = _weighted_mean(values, within + tau2)
        return float(np.sum((values - mean) ** 2 / np.maximum(within + tau2, 1e-300)))

    if k < 2 or q(0.0) <= k - 1:
        return 0.0
    low, high = 0.0, max(float(np.var(values, ddof=1)), 1e-300)
    while q(high) > k - 1:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if q(middle) > k - 1 else (low, middle)
    return high


def _spread_around_mean(values: npt.NDArray[np.float64], within: npt.NDArray[np.float64]) -> float:
    """The sittings' variance around their inverse-variance weighted mean (their within part
    included): what few sittings show however they split it."""
    mean, _ = _weighted_mean(values, within)
    return float(np.sum((values - mean) ** 2) / (len(values) - 1))


def _weighted_mean(
    values: npt.NDArray[np.float64], variances: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """The inverse-variance weighted mean of ``values``, and its variance."""
    w = 1.0 / np.maximum(variances, 1e-300)
    return float(np.dot(w, values) / w.sum()), float(1.0 / w.sum())


def _not_outliers(
    values: npt.NDArray[np.float64], within: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Which sittings to keep: at most one, the farthest outside its leave-one-out prediction
    interval, is left out, and only with three or more others to predict it."""
    kept = np.ones(len(values), dtype=bool)
    if len(values) < 4:
        return kept
    worst, worst_z = -1, 1.0
    for i in range(len(values)):
        others = np.arange(len(values)) != i
        rest = Between._fit(values[others], within[others])
        low, high = rest.predicts(float(values[i]), float(within[i]), OUTLIER_CONFIDENCE)
        z = abs(values[i] - rest.mean) / max((high - low) / 2, 1e-300)
        if z > worst_z:
            worst, worst_z = i, z
    if worst >= 0:
        kept[worst] = False
    return kept


def finite(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The finite ones of ``values`` (a run whose statistic is not known counts for none)."""
    x = np.asarray(values, dtype=np.float64)
    return x[np.isfinite(x)]


def run_variance(run_values: npt.ArrayLike) -> tuple[float, int]:
    """The variance of the mean of per-run values (serial correlation counted), and how
    many finite values it rests on."""
    x = finite(run_values)
    return (long_run_variance(x) / len(x) if len(x) else math.inf), len(x)


def between_alone(between: Between, confidence: float) -> float:
    """The half-width the spread between sittings gives an interval however many runs it
    has (the limit of ``run_interval`` under ``sitting_df``): no target narrower than this
    can be met."""
    return t_quantile(confidence, between.df) * math.sqrt(between.tau2)


def planned_runs(
    pilot_values: npt.ArrayLike,
    target_ns: float,
    confidence: float,
    between: Between | None = None,
) -> int:
    """Stein's two-stage rule: from the pilot runs' spread, how many runs in all give an
    interval no wider than ``target_ns``; with ``between``, what is left of the target after
    the spread between sittings, at ``sitting_df`` (the pilot itself when nothing is left:
    the sequential tail and ``between_alone`` decide)."""
    x = np.asarray(pilot_values, dtype=np.float64)
    k = len(x)
    if k < 2 or target_ns <= 0:
        return k
    variance, df = long_run(x)
    quantile = t_quantile(confidence, sitting_df(df, between))
    left = (target_ns / quantile) ** 2 - (between.tau2 if between else 0.0)
    if left <= 0:
        return k
    return max(k, math.ceil(variance / left))


def reachable_half_width(
    pilot_values: npt.ArrayLike,
    runs: int,
    confidence: float,
    between: Between | None = None,
) -> float:
    """The inverse of ``planned_runs``: the half-width ``runs`` runs give at the pilot
    runs' spread (and ``between`` sittings'), so that a plan of N runs for a target
    reaches that target here. Infinite for fewer than two pilot runs or runs."""
    x = np.asarray(pilot_values, dtype=np.float64)
    k = len(x)
    if k < 2 or runs < 2:
        return math.inf
    variance, df = long_run(x)
    quantile = t_quantile(confidence, sitting_df(df, between))
    return quantile * math.sqrt(variance / runs + (between.tau2 if between else 0.0))


class Histogram:
    """Log-linear latency histogram (HdrHistogram's idea): constant relative precision."""

    def __init__(self) -> None:
        self.counts = np.zeros((MAX_EXPONENT + 1) << SUB_BITS, dtype=np.int64)

    @staticmethod
    def bucket_of(latency_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        # Beyond the last power of two a value counts in the last bucket, not at a wrapped one.
        v = np.clip(latency_ns, 1, (2 << MAX_EXPONENT) - 1)
        # frexp is exact for integers this small, where log2 rounds 2**49 - 1 up to 49.
        exponent = np.frexp(v.astype(np.float64))[1].astype(np.int64) - 1
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

    def add(self, other: Histogram) -> None:
        """Merge ``other``'s ops into this one: exact, bucket by bucket."""
        self.counts += other.counts

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def encode(self) -> str:
        """HdrHistogram's compressed V2 encoding, base64 ("HISTFAAA..."): zig-zag LEB128
        counts up to the last non-empty bucket, a run of empty buckets as minus its length."""
        payload = bytearray()
        previous = -1
        for index in np.flatnonzero(self.counts).tolist():
            gap = index - previous - 1
            if gap:
                _put_varint(payload, -gap if gap > 1 else 0)
            _put_varint(payload, int(self.counts[index]))
            previous = index
        header = _HDR_HEADER.pack(
            _HDR_COOKIE, len(payload), 0, HDR_SIGNIFICANT_DIGITS, HDR_LOWEST_NS, HDR_HIGHEST_NS, 1.0
        )
        compressed = zlib.compress(header + payload)
        outer = _HDR_OUTER.pack(_HDR_COMPRESSED_COOKIE, len(compressed))
        return base64.b64encode(outer + compressed).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Histogram:
        """The histogram of HdrHistogram's encoded form, if its layout is ours."""
        histogram = cls()
        try:
            payload = _hdr_payload(text)
            position = index = 0
            while position < len(payload):
                value, position = _get_varint(payload, position)
                if value < 0:  # a run of empty buckets
                    index -= value
                    continue
                if index >= len(histogram.counts):
                    raise ValueError("the encoded histogram holds values beyond volley's range")
                histogram.counts[index] = value
                index += 1
        except (struct.error, zlib.error, IndexError) as e:  # binascii's errors are ValueErrors
            raise ValueError(f"not an HdrHistogram encoding ({e})") from e
        return histogram

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


def _hdr_payload(text: str) -> memoryview:
    """The counts payload of HdrHistogram's compressed V2 encoding, its header checked."""
    data = base64.b64decode(text, validate=True)
    cookie, length = _HDR_OUTER.unpack_from(data)
    if cookie & ~0xF0 != _HDR_COMPRESSED_COOKIE & ~0xF0 or length != len(data) - _HDR_OUTER.size:
        raise ValueError("not an HdrHistogram compressed V2 encoding")
    raw = zlib.decompress(data[_HDR_OUTER.size :])
    cookie, size, offset, digits, lowest, _, _ = _HDR_HEADER.unpack_from(raw)
    if cookie & ~0xF0 != _HDR_COOKIE & ~0xF0:
        raise ValueError("not an HdrHistogram V2 encoding")
    if (digits, lowest, offset) != (HDR_SIGNIFICANT_DIGITS, HDR_LOWEST_NS, 0):
        raise ValueError(
            f"an HdrHistogram of {digits} significant digits from {lowest} (index offset "
            f"{offset}) is not volley's layout ({HDR_SIGNIFICANT_DIGITS} digits from 1 ns)"
        )
    return memoryview(raw)[_HDR_HEADER.size : _HDR_HEADER.size + size]


def _put_varint(out: bytearray, value: int) -> None:
    """HdrHistogram's ZigZagEncoding.putLong: LEB128 of the zig-zag value, the ninth byte
    carrying a full eight bits."""
    v = (value << 1) if value >= 0 else ((-value << 1) - 1)
    for _ in range(8):
        if v < 0x80:
            out.append(v)
            return
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _get_varint(data: memoryview, position: int) -> tuple[int, int]:
    v = 0
    for shift in range(0, 56, 7):
        byte = data[position]
        position += 1
        v |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (v >> 1) ^ -(v & 1), position
    v |= data[position] << 56
    return (v >> 1) ^ -(v & 1), position + 1


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
        self.histogram.add(other.histogram)
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


# --- two results: Welch's difference, Fieller's ratio ---------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A value with its confidence interval; an unknown bound is NaN, an open one infinite."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class RunMean:
    """One side of a comparison for one statistic: its value, and the variance of that
    value as its runs say, plus as earlier sittings say (``Between``) when the side is a
    sitting of its own, compared with another sitting."""

    mean: float
    runs_variance: float  # of the value: the runs' long-run variance / runs
    runs: int
    runs_df: float  # of runs_variance (long_run)
    between: Between | None = None

    @property
    def variance(self) -> float:
        return self.runs_variance + (self.between.tau2 if self.between else 0.0)

    def parts(self) -> list[tuple[float, float]]:
        """(variance, degrees of freedom) of each part of ``variance``."""
        found: list[tuple[float, float]] = [(self.runs_variance, self.runs_df)]
        if self.between and self.between.tau2 > 0:
            found.append((self.between.tau2, self.between.df))
        return found

    @classmethod
    def of(cls, values: Sequence[float], centre: float = math.nan) -> RunMean:
        """Centred on ``centre`` (the statistic over all ops) when given, like the result's
        own interval, else on the mean of ``values``; the spread is that of ``values``,
        widened, like the result's own interval, when the runs drift."""
        x = np.asarray(values, dtype=np.float64)
        if not math.isfinite(centre):
            centre = float(x.mean()) if len(x) else math.nan
        if len(x) < 2:
            return cls(centre, math.nan, len(x), 0.0)
        variance, df = long_run(x)
        return cls(centre, variance / len(x), len(x), df)


def satterthwaite_df(parts: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance estimates,
    each given as (variance, its degrees of freedom); one part keeps its own."""
    if len(parts) == 1:
        return parts[0][1]
    denominator = sum(v * v / df for v, df in parts)
    return sum(v for v, _ in parts) ** 2 / denominator if denominator > 0 else math.inf


def welch_df(a: RunMean, b: RunMean) -> float:
    """Welch-Satterthwaite degrees of freedom of mean_B - mean_A (fractional)."""
    return satterthwaite_df(a.parts() + b.parts())


def difference(a: RunMean, b: RunMean, confidence: float) -> Estimate:
    """Welch's interval for mean_B - mean_A."""
    half = t_quantile(confidence, welch_df(a, b)) * math.sqrt(a.variance + b.variance)
    d = b.mean - a.mean
    return Estimate(d, d - half, d + half)


def ratio(a: RunMean, b: RunMean, confidence: float) -> Estimate:
    """Fieller's interval for mean_B / mean_A from independent sides: the roots of
    (mean_B - rho mean_A)^2 = t^2 (var_B + rho^2 var_A), with Welch's df of the difference so
    that the interval holds 1 exactly when the difference's holds 0."""
    t2 = t_quantile(confidence, welch_df(a, b)) ** 2
    r = b.mean / a.mean
    leading = a.mean**2 - t2 * a.variance
    # Not positive: mean_A itself is not told apart from zero and the set is unbounded.
    if leading <= 0:
        return Estimate(r, -math.inf, math.inf)
    root = math.sqrt(t2 * (a.variance * b.mean**2 + b.variance * leading))
    return Estimate(r, (a.mean * b.mean - root) / leading, (a.mean * b.mean + root) / leading)


def paired(
    a: RunMean, b: RunMean, a_values: Sequence[float], b_values: Sequence[float], confidence: float
) -> tuple[Estimate, Estimate, float]:
    """The difference, ratio and df of ``b`` against ``a`` (centred on their means) from runs
    played in the same rounds (``a_values[i]`` and ``b_values[i]`` in round i).

    The difference's variance is that of the per-round differences. The ratio is Fieller's
    set for paired data: every rho for which B - rho A is not told apart from zero, with the
    variance of the per-round values b_i - rho a_i, so that it holds 1 exactly when the
    difference's interval holds 0. Not the closed form with a covariance: the long-run
    variance is not a quadratic form (it is the largest of three estimates), so the
    covariance it would imply can exceed what the two variances allow, and the interval
    come out far too narrow."""
    a_runs = np.asarray(a_values, dtype=np.float64)
    b_runs = np.asarray(b_values, dtype=np.float64)
    n = len(a_runs)
    df = long_run(b_runs - a_runs)[1]
    t = t_quantile(confidence, df)

    def spread(rho: float) -> float:  # variance of the mean over rounds of b_i - rho a_i
        return long_run_variance(b_runs - rho * a_runs) / n

    half = t * math.sqrt(spread(1.0))
    d = b.mean - a.mean
    return Estimate(d, d - half, d + half), _fieller_set(a.mean, b.mean, spread, t), df


def _fieller_set(
    a_mean: float, b_mean: float, spread: Callable[[float], float], t: float
) -> Estimate:
    """{rho : (B - rho A)^2 <= t^2 spread(rho)}, found outward from B / A (always inside)
    by doubling steps, then bisection. With a spread that is the largest of several
    quadratics in rho the set is a union of Fieller intervals around B / A, so an interval;
    a side that reaches a million times B / A is open (A not told apart from zero)."""
    r = b_mean / a_mean

    def outside(rho: float) -> bool:
        return (b_mean - rho * a_mean) ** 2 > t * t * spread(rho)

    def bound(direction: float) -> float:
        scale = max(abs(r), 1e-12)
        step, inner = scale * 1e-3, r
        while not outside(r + direction * step):
            inner = r + direction * step
            step *= 2
            if step > 1e6 * scale:
                return direction * math.inf
        outer = r + direction * step
        for _ in range(60):
            middle = (inner + outer) / 2
            inner, outer = (inner, middle) if outside(middle) else (middle, outer)
        return inner

    return Estimate(r, bound(-1.0), bound(1.0))


# --- Patterns in the run values ---------------------------------------------------------
#
# The intervals treat runs as exchangeable (inflated for serial correlation). A person
# should also hear when they are visibly not: run means that drift, that wander (each run
# like the one before), or that fall in two groups (a CPU placement, a periodic stall that
# some runs catch). Each check has its own false-alarm rate on independent normal run
# means, chosen so that together they stay under 5% (tests/test_runs.py measures it).

PATTERN_MIN_RUNS = 10  # fewer runs cannot tell a pattern from chance
PATTERN_ALPHA = {"drift": 0.01, "wander": 0.01, "groups": 0.01}
# Each group of a split holds at least this share of the runs (and 3): one odd run is an
# outlier, not a group.
PATTERN_GROUP_SHARE = 0.1
_PATTERN_SIMULATIONS = 4000
_PATTERN_SIMULATED_RUNS_MAX = 200  # beyond, the critical values of 200 runs (conservative)


def _kendall_trend(x: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Kendall's tau of ``x`` against its index, and its two-sided p-value (normal
    approximation with the variance corrected for ties)."""
    n = len(x)
    signs = np.sign(x[None, :] - x[:, None])[np.triu_indices(n, 1)]
    s = float(signs.sum())
    _, counts = np.unique(x, return_counts=True)
    ties = float(np.sum(counts * (counts - 1) * (2 * counts + 5)))
    variance = (n * (n - 1) * (2 * n + 5) - ties) / 18
    if variance <= 0:
        return 0.0, 1.0
    z = (s - math.copysign(1, s)) / math.sqrt(variance) if s else 0.0  # continuity
    return s / (n * (n - 1) / 2), 2 * (1 - NormalDist().cdf(abs(z)))


def _lag1(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Lag-1 autocorrelation of each row of ``x`` (the AR(1) r of long_run_variance)."""
    d = x - x.mean(axis=-1, keepdims=True)
    total = np.sum(d * d, axis=-1)
    return np.sum(d[..., :-1] * d[..., 1:], axis=-1) / np.where(total > 0, total, 1.0)


def _best_split(x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray]:
    """For each row of ``x``: the largest share of its variance that a split of its sorted
    values into a low and a high group explains (each group at least PATTERN_GROUP_SHARE
    of the values, and 3), and how many values the low group of that split holds."""
    v = np.sort(x, axis=-1)
    n = v.shape[-1]
    least = max(3, math.ceil(PATTERN_GROUP_SHARE * n))
    k = np.arange(least, n - least + 1)
    low_sum = np.cumsum(v, axis=-1)[..., k - 1]
    total_sum = v.sum(axis=-1, keepdims=True)
    # Between-groups sum of squares of the split after k values: k (n - k) / n (mean gap)^2.
    gap = (total_sum - low_sum) / (n - k) - low_sum / k
    between = k * (n - k) / n * gap**2
    d = v - v.mean(axis=-1, keepdims=True)
    total = np.sum(d * d, axis=-1, keepdims=True)
    share = between / np.where(total > 0, total, 1.0)
    return share.max(axis=-1), k[share.argmax(axis=-1)]


@functools.cache
def _pattern_critical(n: int) -> tuple[float, float]:
    """The lag-1 correlation and the best split's share of variance that independent
    normal run means of this count exceed with the PATTERN_ALPHA chance: simulated once,
    with a fixed seed, so that the report is the same for the same runs."""
    rng = np.random.default_rng(20131012)
    x = rng.standard_normal((_PATTERN_SIMULATIONS, n))
    r = float(np.quantile(_lag1(x), 1 - PATTERN_ALPHA["wander"]))
    share = float(np.quantile(_best_split(x)[0], 1 - PATTERN_ALPHA["groups"]))
    return r, share


def run_pattern(values: Sequence[float]) -> str | None:
    """A sentence for a person when the run values (in run order, ns) drift (Kendall's
    trend test), wander (lag-1 correlation) or fall in two groups (the best split of the
    sorted values explains more of their variance than chance would); None when they look
    like independent draws, or with fewer than PATTERN_MIN_RUNS runs."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n < PATTERN_MIN_RUNS or np.ptp(x) == 0:
        return None
    r_critical, share_critical = _pattern_critical(min(n, _PATTERN_SIMULATED_RUNS_MAX))
    tau, p = _kendall_trend(x)
    if p < PATTERN_ALPHA["drift"]:
        fifth = max(2, n // 5)
        return (
            f"run means drift {'up' if tau > 0 else 'down'}: {format_ns(x[:fifth].mean())} "
            f"in the first {fifth} runs, {format_ns(x[-fifth:].mean())} in the last {fifth} "
            f"(Kendall's tau {tau:+.2f}, p = {p:.2g}): the server or the machine changed "
            "while it ran"
        )
    r = float(_lag1(x))
    if r > r_critical:
        return (
            f"run means wander: each run is like the one before (lag-1 correlation "
            f"{r:.2f}): a state that changes slowly (the machine, or a periodic stall in "
            "step with the runs)"
        )
    share, k = _best_split(x)
    if share > share_critical:
        v = np.sort(x)
        return (
            f"run means fall in two groups: {k} runs near {format_ns(v[:k].mean())}, "
            f"{n - k} near {format_ns(v[k:].mean())}: a state that differs between runs "
            "(where the CPUs are, a stall some runs catch); the mean mixes them"
        )
    return None

import math

import numpy as np
import pytest

from volley import stats
from volley.stats import (
    MIN_BATCHES,
    Histogram,
    Interval,
    LatencyRecord,
    Precision,
    batch_means_interval,
    is_significant,
    naive_interval,
    parse_precision,
    t_quantile,
)


@pytest.mark.parametrize(
    ("df", "expected"), [(5, 2.5706), (10, 2.2281), (31, 2.0395), (100, 1.9840), (10**6, 1.9600)]
)
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.95, df) == pytest.approx(expected, abs=2e-3)


def test_t_quantile_other_confidence():
    assert t_quantile(0.99, 30) == pytest.approx(2.750, abs=3e-3)


@pytest.mark.parametrize(
    ("confidence", "df", "expected"),
    [(0.95, 1, 12.706), (0.95, 2, 4.303), (0.95, 3, 3.182), (0.95, 4, 2.776), (0.99, 2, 9.925)],
)
def test_t_quantile_is_exact_for_few_degrees_of_freedom(confidence, df, expected):
    assert t_quantile(confidence, df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_takes_fractional_degrees_of_freedom():
    # Welch's df is fractional: the quantile falls between its integer neighbours, smoothly.
    values = [t_quantile(0.95, df / 4) for df in range(4, 41)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert t_quantile(0.95, 4.9999) == pytest.approx(t_quantile(0.95, 5), abs=1e-3)


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """A stationary AR(1) series with unit innovations, mean zero."""
    lags = np.arange(int(np.log(1e-9) / np.log(phi)) if phi > 0 else 1)
    kernel = phi**lags
    noise = rng.normal(size=n + len(kernel))
    return np.convolve(noise, kernel, mode="valid")[:n]


def coverage(phi: float, trials: int = 400, n: int = 8000, batch: int = 10):
    """How often each interval holds the true mean (0) of an AR(1) series."""
    rng = np.random.default_rng(20261126)
    ours = naive = 0
    for _ in range(trials):
        x = ar1(rng, n, phi) + 1000.0
        sums = x.reshape(-1, batch).sum(axis=1)
        iv = batch_means_interval(sums, np.full(len(sums), batch), 0.95)
        ours += iv.low <= 1000 <= iv.high
        iv = naive_interval(x, 0.95)
        naive += iv.low <= 1000 <= iv.high
    return ours / trials, naive / trials


def test_autocorrelated_series_naive_undercovers_batch_means_covers():
    ours, naive = coverage(phi=0.9)
    assert naive < 0.6, "the naive interval should be far too narrow on AR(1) data"
    assert 0.9 <= ours <= 0.99


def test_independent_samples_both_cover():
    ours, naive = coverage(phi=0.0, trials=200)
    assert 0.9 <= ours <= 0.995 and 0.9 <= naive <= 0.99


def test_batch_means_handles_unequal_counts_as_ratio():
    sums = np.array([10.0, 40.0, 0.0, 30.0] * 10)
    counts = np.array([1, 4, 0, 3] * 10)
    iv = batch_means_interval(sums, counts, 0.95)
    assert iv.mean == pytest.approx(10.0)
    assert iv.half_width == pytest.approx(0.0, abs=1e-9)  # every batch mean is exactly 10
    assert iv.batches == 30  # empty batches are dropped


def test_batch_means_merges_down_to_the_maximum():
    rng = np.random.default_rng(1)
    iv = batch_means_interval(rng.normal(size=1000) + 5, np.ones(1000), 0.95)
    assert stats.MAX_BATCHES // 2 < iv.batches <= stats.MAX_BATCHES


def test_too_few_batches_have_no_interval():
    assert math.isinf(batch_means_interval([5.0], [1], 0.95).half_width)
    assert batch_means_interval([], [], 0.95).batches == 0


def test_histogram_percentiles_within_a_tenth_of_a_percent():
    rng = np.random.default_rng(7)
    latency = rng.lognormal(mean=10, sigma=1.0, size=200_000).astype(np.int64) + 1
    h = Histogram()
    h.record(latency[:100_000])
    h.record(latency[100_000:])
    wanted = [1, 50, 90, 99, 99.9, 100]
    got = h.percentiles(wanted)
    exact = np.percentile(latency, wanted, method="inverted_cdf")
    assert np.all(np.abs(got - exact) <= 0.001 * exact + 1)


def test_histogram_small_values_are_exact_and_huge_ones_do_not_overflow():
    h = Histogram()
    h.record(np.array([1, 2, 3, 1000, 2**47], dtype=np.int64))
    assert list(h.percentiles([20, 40, 60, 80])) == [1, 2, 3, 1000]
    assert h.percentiles([100])[0] == pytest.approx(2**47, rel=1e-3)


def test_latency_record_moments_are_exact_across_rounds():
    rng = np.random.default_rng(3)
    rounds = [[rng.integers(1000, 90_000, size=m) for m in (500, 800, 1)] for _ in range(4)]
    record = LatencyRecord(slice_ns=10_000_000)
    for clients in rounds:
        record.add_round(clients, round_ns=100_000_000)
    everything = np.concatenate([a for clients in rounds for a in clients])
    assert record.n == len(everything)
    assert record.mean_ns == pytest.approx(everything.mean(), rel=1e-12)
    assert record.stddev_ns == pytest.approx(everything.std(ddof=1), rel=1e-9)
    assert (record.min_ns, record.max_ns) == (everything.min(), everything.max())


def test_latency_record_slices_by_each_clients_own_clock():
    # Two clients of 1 ms ops over 100 ms: each 10 ms slice holds 10 ops of each.
    record = LatencyRecord(slice_ns=10_000_000)
    ops = np.full(100, 1_000_000, dtype=np.int64)
    record.add_round([ops, ops], round_ns=100_000_000)
    counts = record.slice_counts[0]
    assert counts.sum() == 200
    assert list(counts[1:10]) == [20] * 9  # slice 0 gets the 9 ops before 10 ms ends
    iv = record.interval(0.95)
    assert iv.mean == pytest.approx(1_000_000)


@pytest.mark.parametrize(
    ("text", "relative", "absolute"),
    [
        ("1%", 0.01, None),
        ("0.5%", 0.005, None),
        ("5us", None, 5000.0),
        ("2ms", None, 2e6),
        ("100ns", None, 100.0),
        ("1.5 µs", None, 1500.0),
    ],
)
def test_parse_precision(text, relative, absolute):
    p = parse_precision(text)
    assert p.relative == (pytest.approx(relative) if relative else None)
    assert p.absolute_ns == (pytest.approx(absolute) if absolute else None)


@pytest.mark.parametrize("text", ["0%", "100%", "-1%", "abc", "5", "0us", "5 parsecs", ""])
def test_parse_precision_rejects_nonsense(text):
    with pytest.raises(ValueError, match="bad precision"):
        parse_precision(text)


def test_stopping_rule():
    one_percent = Precision(relative=0.01)
    assert is_significant(Interval(100.0, 0.9, MIN_BATCHES), one_percent)
    assert not is_significant(Interval(100.0, 1.1, MIN_BATCHES), one_percent)
    assert not is_significant(Interval(100.0, 0.1, MIN_BATCHES - 1), one_percent)
    assert not is_significant(Interval(100.0, math.inf, 64), one_percent)
    five_ns = Precision(absolute_ns=5.0)
    assert is_significant(Interval(1e6, 4.9, 64), five_ns)
    assert not is_significant(Interval(1e6, 5.1, 64), five_ns)

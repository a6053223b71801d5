import math

import numpy as np
import pytest

from volley.numbers import stats
from volley.numbers.stats import (
    HDR_HIGHEST_NS,
    HDR_LOWEST_NS,
    HDR_SIGNIFICANT_DIGITS,
    MAX_EXPONENT,
    SUB_BITS,
    Histogram,
    LatencyRecord,
    long_run,
    long_run_variance,
    planned_runs,
    run_interval,
    t_quantile,
)
from volley.numbers.units import BadInput, Target, parse_target, parse_targets


@pytest.mark.parametrize(
    ("df", "expected"),
    [
        (1, 12.706),
        (2, 4.303),
        (3, 3.182),
        (5, 2.5706),
        (9, 2.2622),
        (10, 2.2281),
        (31, 2.0395),
        (100, 1.9840),
        (10**6, 1.9600),
    ],
)
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.95, df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_other_confidence_and_fractional_df():
    assert t_quantile(0.99, 30) == pytest.approx(2.750, abs=3e-3)
    assert t_quantile(0.95, 4) < t_quantile(0.95, 3.5) < t_quantile(0.95, 3)


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """A stationary AR(1) series with unit innovations, mean zero."""
    x = np.empty(n)
    x[0] = rng.normal() / math.sqrt(1 - phi**2)
    noise = rng.normal(size=n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    return x


def coverage(phi: float, trials: int = 400, n: int = 40) -> tuple[float, float]:
    """How often a run interval over n run values holds the true mean (0), and how often
    the plain t interval (no correlation allowed for) does."""
    rng = np.random.default_rng(20261126)
    ours = plain = 0
    for _ in range(trials):
        x = ar1(rng, n, phi) * 1e3  # in ns: far above the histogram's 1 ns resolution
        iv = run_interval(float(x.mean()), x, 0.95)
        ours += iv.low <= 0 <= iv.high
        half = t_quantile(0.95, n - 1) * x.std(ddof=1) / math.sqrt(n)
        plain += abs(x.mean()) <= half
    return ours / trials, plain / trials


def test_correlated_runs_widen_the_interval():
    ours, plain = coverage(phi=0.5)
    assert plain < 0.85, "the plain t interval should be too narrow on correlated runs"
    assert ours >= 0.88


def test_independent_runs_both_cover():
    ours, plain = coverage(phi=0.0)
    assert 0.93 <= ours <= 0.99 and 0.92 <= plain <= 0.98


def test_strongly_correlated_runs_still_cover():
    # Kendall's correction of the lag-1 correlation and the df of the effective runs: without
    # them this held the mean 87% of the time at phi 0.7 and 40 runs (2,000 trials:
    # bench/calibration/correlated_runs.py).
    ours, _ = coverage(phi=0.7)
    assert ours >= 0.91


def test_correlated_runs_have_fewer_degrees_of_freedom():
    rng = np.random.default_rng(8)
    independent = [long_run(rng.normal(size=40))[1] for _ in range(200)]
    correlated = [long_run(ar1(rng, 40, 0.7))[1] for _ in range(200)]
    assert max(independent) <= 39 and np.median(independent) > 25
    assert np.median(correlated) < 15
    assert long_run([1.0])[1] == 0 and long_run([2.0, 2.0, 2.0])[1] == 2


def test_long_run_variance_is_never_below_the_sample_variance():
    rng = np.random.default_rng(5)
    for _ in range(50):
        x = rng.normal(size=30)
        assert long_run_variance(x) >= x.var(ddof=1) - 1e-12
    alternating = np.array([1.0, -1.0] * 20)
    assert long_run_variance(alternating) == pytest.approx(alternating.var(ddof=1))


def test_too_few_runs_have_no_interval():
    assert math.isinf(run_interval(5.0, [5.0], 0.95).half_width)
    assert run_interval(5.0, [], 0.95).runs == 0
    assert run_interval(5.0, [4.0, 6.0, math.nan], 0.95).runs == 2


def test_run_interval_is_centred_on_all_ops_and_as_wide_as_the_runs_spread():
    iv = run_interval(100.0, [99.0, 101.0, 99.0, 101.0], 0.95)
    assert iv.centre == 100.0
    assert iv.half_width == pytest.approx(t_quantile(0.95, 3) * math.sqrt(4 / 3 / 4))


def test_planned_runs_follow_the_pilot_spread():
    rng = np.random.default_rng(6)
    pilot = 100 + rng.normal(0, 3, 10)
    wanted = planned_runs(pilot, 1.0, 0.95)
    variance, df = long_run(pilot)
    expected = (t_quantile(0.95, df) * math.sqrt(variance) / 1.0) ** 2
    assert wanted == max(10, math.ceil(expected))
    assert planned_runs(pilot, 100.0, 0.95) == 10  # the pilot alone is enough


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


def test_percentile_rank_is_exact_not_rounded_up_by_floats():
    # Issue 10, item 9: in floats 99.9% of 1000 is 999.0000000000001, rank 1000.
    h = Histogram()
    h.record(np.arange(1, 1001, dtype=np.int64))
    assert list(h.percentiles([50, 90, 99, 99.9, 100])) == [500, 900, 990, 999, 1000]
    assert list(h.percentiles([0, 0.1])) == [1, 1]


def test_histogram_small_values_are_exact_and_huge_ones_do_not_overflow():
    h = Histogram()
    h.record(np.array([1, 2, 3, 1000, 2**47], dtype=np.int64))
    assert list(h.percentiles([20, 40, 60, 80])) == [1, 2, 3, 1000]
    assert h.percentiles([100])[0] == pytest.approx(2**47, rel=1e-3)


def test_latency_record_moments_are_exact_across_runs():
    rng = np.random.default_rng(3)
    runs = [rng.integers(1000, 90_000, size=m) for m in (500, 800, 1, 2000)]
    record = LatencyRecord()
    for latency in runs:
        record.add(latency)
    everything = np.concatenate(runs)
    assert record.n == len(everything)
    assert record.mean_ns == pytest.approx(everything.mean(), rel=1e-12)
    assert record.stddev_ns == pytest.approx(everything.std(ddof=1), rel=1e-9)
    assert (record.min_ns, record.max_ns) == (everything.min(), everything.max())
    assert record.value("p50") == pytest.approx(np.percentile(everything, 50), rel=2e-3)


def test_latency_record_takes_a_histogram_of_the_same_ops():
    latency = np.arange(1, 1001, dtype=np.int64)
    histogram = Histogram()
    histogram.record(latency)
    record = LatencyRecord()
    record.add(latency, histogram)
    assert np.array_equal(record.histogram.counts, histogram.counts)
    assert record.value("mean") == pytest.approx(500.5)


@pytest.mark.parametrize(
    ("text", "statistic", "relative", "absolute"),
    [
        ("1%", "mean", 0.01, None),
        ("0.5%", "mean", 0.005, None),
        ("5us", "mean", None, 5000.0),
        ("2ms", "mean", None, 2e6),
        ("100ns", "mean", None, 100.0),
        ("1.5 µs", "mean", None, 1500.0),
        ("p99:5%", "p99", 0.05, None),
        ("p99.9:20us", "p99.9", None, 20_000.0),
        ("mean:2%", "mean", 0.02, None),
    ],
)
def test_parse_target(text, statistic, relative, absolute):
    t = parse_target(text)
    assert t.statistic == statistic
    assert t.relative == (pytest.approx(relative) if relative else None)
    assert t.absolute_ns == (pytest.approx(absolute) if absolute else None)


@pytest.mark.parametrize(
    "text", ["0%", "100%", "-1%", "abc", "5", "0us", "5 parsecs", "", "p98:5%", "p99"]
)
def test_parse_target_rejects_nonsense(text):
    with pytest.raises(BadInput, match="--precision"):
        parse_target(text)


def test_a_later_target_for_the_same_statistic_wins():
    targets = parse_targets(["1%", "p99:5%", "2%"])
    assert targets == [Target("mean", relative=0.02), Target("p99", relative=0.05)]
    assert Target("p99", relative=0.05).half_width_ns(200_000) == pytest.approx(10_000)
    assert str(Target("p99.9", absolute_ns=5000)) == "p99.9:5000ns"


# --- HdrHistogram's encoded form -----------------------------------------------------------


def hdr_histogram():
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(HDR_LOWEST_NS, HDR_HIGHEST_NS, HDR_SIGNIFICANT_DIGITS)


def test_every_bucket_is_one_hdrhistogram_bucket_at_the_same_index():
    hdr = hdr_histogram()
    buckets = np.arange(1, (MAX_EXPONENT - SUB_BITS + 2) << SUB_BITS, dtype=np.int64)
    lowest = Histogram.lowest_of(buckets)
    highest = Histogram.lowest_of(buckets + 1) - 1
    assert np.array_equal(Histogram.bucket_of(lowest), buckets)
    assert np.array_equal(Histogram.bucket_of(highest), buckets)
    assert [hdr.get_counts_array_index(int(v)) for v in lowest] == buckets.tolist()
    assert [hdr.get_counts_array_index(int(v)) for v in highest] == buckets.tolist()
    # and HdrHistogram's buckets are no wider: each one's range is exactly ours
    assert [hdr.get_lowest_equivalent_value(int(v)) for v in highest] == lowest.tolist()
    assert hdr.counts_len == buckets[-1] + 1


def test_a_value_beyond_the_layout_counts_in_its_last_bucket():
    last = (MAX_EXPONENT - SUB_BITS + 2 << SUB_BITS) - 1
    beyond = np.array([2 ** (MAX_EXPONENT + 1) - 1, 2 ** (MAX_EXPONENT + 2), 2**62], np.int64)
    assert Histogram.bucket_of(beyond).tolist() == [last] * 3


def test_encoding_round_trips_and_hdrhistogram_reads_it_both_ways():
    from hdrh.histogram import HdrHistogram

    rng = np.random.default_rng(11)
    latency = rng.lognormal(mean=10.5, sigma=0.8, size=50_000).astype(np.int64) + 1
    latency[:4] = [1, 2047, 2048, 2**48]  # both ends of the layout
    h = Histogram()
    h.record(latency)
    text = h.encode()
    assert text.startswith("HISTF")
    assert np.array_equal(Histogram.decode(text).counts, h.counts)
    theirs = HdrHistogram.decode(text)
    assert theirs.get_total_count() == len(latency) == h.total
    assert [theirs.get_count_at_index(i) for i in np.flatnonzero(h.counts)] == (
        h.counts[h.counts > 0].tolist()
    )
    reference = hdr_histogram()
    for v in latency[:5000].tolist():
        reference.record_value(v)
    mine = Histogram()
    mine.record(latency[:5000])
    assert np.array_equal(Histogram.decode(reference.encode().decode()).counts, mine.counts)
    assert Histogram.decode(Histogram().encode()).total == 0


def test_merged_histograms_are_the_histogram_of_all_ops():
    rng = np.random.default_rng(5)
    first = rng.integers(20_000, 90_000, size=30_000)
    second = rng.lognormal(mean=11, sigma=1.5, size=20_000).astype(np.int64) + 1
    one, two, both = LatencyRecord(), LatencyRecord(), LatencyRecord()
    one.add(first)
    two.add(second)
    both.add(np.concatenate([first, second]))
    merged = Histogram.decode(one.histogram.encode())
    merged.add(Histogram.decode(two.histogram.encode()))
    assert np.array_equal(merged.counts, both.histogram.counts)
    assert merged.encode() == both.histogram.encode()
    # and the same in HdrHistogram's own merge
    theirs = hdr_histogram()
    theirs.decode_and_add(one.histogram.encode())
    theirs.decode_and_add(two.histogram.encode())
    assert Histogram.decode(theirs.encode().decode()).encode() == both.histogram.encode()


def test_a_foreign_layout_is_refused_by_name():
    from hdrh.histogram import HdrHistogram

    other = HdrHistogram(1, 10**9, 2)
    other.record_value(1234)
    with pytest.raises(ValueError, match="2 significant digits"):
        Histogram.decode(other.encode().decode())
    with pytest.raises(ValueError):
        Histogram.decode("bm90IGEgaGlzdG9ncmFt")
    for broken in ("", "SElTVA==", Histogram().encode()[:-8] + "AAAAAAAA"):
        with pytest.raises(ValueError):
            Histogram.decode(broken)


def test_an_interval_is_never_narrower_than_the_bucket_that_holds_its_centre():
    # Every run's p99 read from the same bucket: zero spread between runs, yet the value is
    # known only to the bucket's width (8 ns at 10 us: 1024 buckets per power of two).
    centre = 10_000.0
    assert stats.resolution_ns(centre) == 8.0
    assert stats.resolution_ns(1_500.0) == 1.0  # exact below 2048 ns
    assert stats.resolution_ns(2_048.0) == 2.0
    interval = run_interval(centre, [centre] * 12, 0.95)
    assert interval.half_width == pytest.approx(4.0)
    assert interval.low <= centre - 4.0 and interval.high >= centre + 4.0
    # A wider interval is left alone.
    assert run_interval(centre, [centre - 100, centre + 100] * 6, 0.95).half_width > 50

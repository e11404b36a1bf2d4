"""KLL sketch and moments (components.sketches): rank error within the bound, exact when small,
mergeable, ties, NaN, bytes."""

from __future__ import annotations

import numpy as np
import pytest

from components.sketches import DEFAULT_K, KLLSketch, Moments, NumericSummary

QS = np.linspace(0.001, 0.999, 999)
DOCUMENTED_BOUND = 2e-3  # the module docstring's figure for 1e5-1e6 values, merged or not


def rank_errors(data: np.ndarray, sketch: KLLSketch, qs: np.ndarray = QS) -> np.ndarray:
    """For each q, how far q is from the true rank interval of the sketch's value (fraction)."""
    xs = np.sort(data[np.isfinite(data)])
    values = sketch.quantiles(qs)
    below = np.searchsorted(xs, values, side="left")  # values < v
    at_most = np.searchsorted(xs, values, side="right")  # values <= v
    target = qs * xs.size
    return np.maximum(0.0, np.maximum(below - target, target - at_most)) / xs.size


def merged(parts: list[np.ndarray], k: int = DEFAULT_K) -> KLLSketch:
    s = KLLSketch(k)
    for p in parts:
        s.merge(KLLSketch.of(p, k))
    return s


@pytest.mark.parametrize(
    ("n", "blocks"), [(100_000, 1), (100_000, 100), (1_000_000, 1), (1_000_000, 250)]
)
def test_rank_error_within_reported_and_documented_bound(n: int, blocks: int) -> None:
    rng = np.random.default_rng(n + blocks)
    data = rng.lognormal(0.0, 2.0, n)
    sketch = merged(np.array_split(data, blocks)) if blocks > 1 else KLLSketch.of(data)
    assert sketch.n == n and not sketch.is_exact
    errors = rank_errors(data, sketch)
    assert errors.max() <= sketch.rank_error() <= DOCUMENTED_BOUND
    assert sketch.rank_error() <= sketch.max_rank_error
    # memory does not follow n: about 3k items plus a few per level
    assert sketch.size <= 3 * DEFAULT_K + 8 * 40


def test_exact_while_nothing_is_compacted() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=DEFAULT_K - 1)
    whole = KLLSketch.of(data)
    parts = merged(np.array_split(data, 37))
    for s in (whole, parts):
        assert s.is_exact and s.rank_error() == 0.0 and s.max_rank_error == 0.0
        assert s.median() == float(np.median(data))
        np.testing.assert_array_equal(
            s.quantiles([0.0, 0.25, 0.9, 1.0]), np.quantile(data, [0.0, 0.25, 0.9, 1.0])
        )
    even = KLLSketch.of(np.array([4.0, 1.0, 3.0, 2.0]))
    assert even.median() == 2.5  # numpy's median: the mean of the middle two
    bigger = KLLSketch.of(rng.normal(size=DEFAULT_K))
    assert not bigger.is_exact and bigger.rank_error() > 0


def test_merge_of_many_small_sketches_matches_one_pass() -> None:
    rng = np.random.default_rng(1)
    data = rng.exponential(size=300_000)
    one = KLLSketch.of(data)
    many = merged(np.array_split(data, 3000))  # 100 values each: every part exact
    assert many.n == one.n == data.size
    for s in (one, many):
        assert rank_errors(data, s).max() <= s.rank_error()
    # the merge order is the only thing that changes the result: same order, same bytes
    assert merged(np.array_split(data, 3000)).to_bytes() == many.to_bytes()


def test_ties_heavy_data() -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(0, 10, 200_000).astype(np.float64)  # ten values, massive ties
    s = merged(np.array_split(data, 40))
    assert rank_errors(data, s).max() <= s.rank_error()
    assert set(np.unique(s.quantiles(QS))) <= set(range(10))
    assert s.median() == float(np.median(data))
    constant = KLLSketch.of(np.full(50_000, 7.0))
    assert constant.quantile(0.0) == constant.median() == constant.quantile(1.0) == 7.0


def test_nan_and_infinite_values_are_ignored() -> None:
    values = np.array([np.nan, 1.0, np.inf, 2.0, -np.inf, 3.0, np.nan])
    s = KLLSketch.of(values)
    m = Moments.of(values)
    assert s.n == 3 and s.median() == 2.0
    assert (m.count, m.mean, m.min, m.max) == (3, 2.0, 1.0, 3.0)
    assert m.variance == pytest.approx(2.0 / 3.0)


def test_all_nan_and_one_value() -> None:
    empty = NumericSummary.of(np.full(10, np.nan))
    assert empty.sketch.n == 0 and empty.moments.count == 0 and empty.moments.std == 0.0
    with pytest.raises(ValueError, match="no values"):
        empty.sketch.median()
    one = NumericSummary.of(np.array([np.nan, 5.5]))
    assert one.sketch.median() == 5.5 and one.moments.mean == 5.5 and one.moments.std == 0.0
    empty.merge(one)  # an empty summary merges like zero
    assert empty.sketch.median() == 5.5 and empty.moments.count == 1


def test_moments_merge_is_exact_and_stable_with_a_large_mean() -> None:
    rng = np.random.default_rng(3)
    data = 1e9 + rng.normal(0.0, 1.0, 100_000)  # sum(x**2)/n - mean**2 loses every digit here
    m = Moments()
    for part in np.array_split(data, 97):
        m = m.merge(Moments.of(part))
    assert m.count == data.size and m.min == data.min() and m.max == data.max()
    assert m.mean == pytest.approx(data.mean(), rel=1e-15)
    assert m.std == pytest.approx(data.std(), rel=1e-9)


def test_bytes_round_trip_and_bad_payloads() -> None:
    rng = np.random.default_rng(4)
    summary = NumericSummary.of(rng.normal(size=50_000), seed=7)
    data = summary.to_bytes()
    again = NumericSummary.from_bytes(data)
    assert again.to_bytes() == data and again.moments == summary.moments
    np.testing.assert_array_equal(again.sketch.quantiles(QS), summary.sketch.quantiles(QS))
    assert again.sketch.rank_error() == summary.sketch.rank_error()
    assert len(data) < 8 * (3 * DEFAULT_K + 400)  # compact: 8 bytes an item plus a header
    with pytest.raises(ValueError, match="payload"):
        KLLSketch.from_bytes(summary.sketch.to_bytes()[:-8])
    with pytest.raises(ValueError, match="payload"):
        NumericSummary.from_bytes(b"nothing of the kind")


def test_same_inputs_same_bytes_and_bad_arguments() -> None:
    rng = np.random.default_rng(5)
    data = rng.normal(size=20_000)
    assert KLLSketch.of(data, seed=3).to_bytes() == KLLSketch.of(data.copy(), seed=3).to_bytes()
    with pytest.raises(ValueError, match="k must be"):
        KLLSketch(k=2)
    with pytest.raises(ValueError, match="cannot merge"):
        KLLSketch(k=64).merge(KLLSketch.of(data, k=128))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        KLLSketch.of(data).quantiles([1.5])
    s = KLLSketch.of(data)
    assert s.rank(float(np.median(data))) == pytest.approx(0.5, abs=s.rank_error() + 1e-9)

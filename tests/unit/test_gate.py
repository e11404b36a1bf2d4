"""The champion/challenger gate on constructed cases: clearly better, clearly worse, within noise."""

from __future__ import annotations

import numpy as np
import pytest

from components import gate, metrics


def _ranking(seed: int = 0, queries: int = 300, size: int = 10) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(queries), size)
    rel = rng.integers(0, 5, size=queries * size).astype(np.float64)
    good = rel + rng.normal(0, 1.0, size=rel.size)
    bad = rng.normal(0, 1.0, size=rel.size)
    return rel, groups, good, bad


def test_per_query_values_average_to_the_metric() -> None:
    rel, groups, good, _ = _ranking()
    whole = metrics.ranking_metrics(rel, good, groups, ks=(5,), threshold=2.0)
    assert metrics.per_query(rel, good, groups, "ndcg@5").mean() == pytest.approx(whole["ndcg@5"])
    per_map = metrics.per_query(rel, good, groups, "map@5", threshold=2.0)
    assert per_map.mean() == pytest.approx(whole["map@5"])
    assert metrics.per_query(rel, good, groups, "mrr", 2.0).mean() == pytest.approx(whole["mrr"])
    assert len(per_map) == 300
    with pytest.raises(ValueError, match="not a per-query ranking metric"):
        metrics.per_query(rel, good, groups, "auc")


def test_clearly_better_ranker_is_promoted() -> None:
    rel, groups, good, bad = _ranking()
    d = gate.decide("ranking", "ndcg@10", rel, good, bad, groups, min_improvement=0.01)
    assert d.promote and d.unit == "queries" and d.units == 300
    assert d.improvement is not None and d.low is not None and d.high is not None
    assert d.low > 0.01 and d.low <= d.improvement <= d.high
    assert d.challenger > d.champion  # type: ignore[operator]
    assert "better on ndcg@10" in d.reason and "lower bound exceeds" in d.reason


def test_clearly_worse_ranker_is_not_promoted() -> None:
    rel, groups, good, bad = _ranking()
    d = gate.decide("ranking", "ndcg@10", rel, bad, good, groups)
    assert not d.promote and d.high is not None and d.high < 0
    assert "worse on ndcg@10" in d.reason and "production stays" in d.reason


def test_difference_within_noise_is_not_promoted() -> None:
    rel, groups, good, _ = _ranking()
    rng = np.random.default_rng(7)
    twin = good + rng.normal(0, 0.05, size=good.size)  # the same model, slightly perturbed
    d = gate.decide("ranking", "ndcg@10", rel, twin, good, groups)
    assert not d.promote
    assert d.low is not None and d.high is not None and d.low <= 0 <= d.high
    assert "not confidently better" in d.reason
    # the same scores: an interval of exactly zero, and zero is not above min_improvement 0
    same = gate.decide("ranking", "ndcg@10", rel, good, good, groups)
    assert not same.promote and same.low == same.high == 0.0


def test_a_margin_blocks_a_small_real_gain() -> None:
    rel, groups, good, bad = _ranking()
    d = gate.decide("ranking", "ndcg@10", rel, good, bad, groups, min_improvement=0.5)
    assert not d.promote and "min_improvement 0.5" in d.reason


def test_no_champion_promotes() -> None:
    rel, groups, good, _ = _ranking()
    d = gate.decide("ranking", "ndcg@10", rel, good, None, groups)
    assert d.promote and d.champion is None and "no production version" in d.reason


def _binary(seed: int = 0, n: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float64)
    z = 1.5 * (2 * y - 1) + rng.normal(0, 1.5, n)
    good = 1 / (1 + np.exp(-z))
    weak = 1 / (1 + np.exp(-(0.2 * z + rng.normal(0, 1.5, n))))
    return y, good, weak


def test_auc_is_recomputed_per_resample() -> None:
    y, good, weak = _binary()
    d = gate.decide("binary", "auc", y, good, weak, resamples=300)
    assert d.promote and d.unit == "rows" and d.units == len(y)
    assert d.challenger == pytest.approx(metrics.roc_auc(y.astype(int), good))
    worse = gate.decide("binary", "auc", y, weak, good, resamples=300)
    assert not worse.promote and "worse" in worse.reason


def test_logloss_improvement_is_positive_when_lower() -> None:
    y, good, weak = _binary()
    d = gate.decide("binary", "logloss", y, good, weak)
    assert d.challenger < d.champion  # type: ignore[operator]
    assert d.improvement is not None and d.improvement > 0 and d.promote


def test_multiclass_accuracy_per_row() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 3000)
    good = np.full((3000, 3), 0.1)
    good[np.arange(3000), y] = 0.8
    flip = rng.random(3000) < 0.2
    good[flip] = good[flip][:, ::-1]
    uniform = rng.dirichlet(np.ones(3), size=3000)
    d = gate.decide("multiclass", "accuracy", y, good, uniform)
    assert d.promote and d.challenger == pytest.approx((good.argmax(1) == y).mean())


def test_bad_arguments() -> None:
    y, good, weak = _binary(n=200)
    with pytest.raises(ValueError, match="confidence"):
        gate.paired_bootstrap("binary", "auc", y, good, weak, confidence=1.2)
    with pytest.raises(ValueError, match="same rows"):
        gate.paired_bootstrap("binary", "auc", y, good[:-1], weak)
    with pytest.raises(ValueError, match="resamples"):
        gate.paired_bootstrap("binary", "auc", y, good, weak, resamples=10)


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2", "mape"])
def test_regression_gate_by_rows(metric: str) -> None:
    rng = np.random.default_rng(3)
    y = np.exp(rng.normal(2, 0.5, 2000))
    good = y * np.exp(rng.normal(0, 0.1, 2000))
    bad = y * np.exp(rng.normal(0, 0.4, 2000))
    better = gate.decide("regression", metric, y, good, bad, min_improvement=0.0)
    assert better.promote and better.unit == "rows" and better.improvement > 0  # type: ignore[operator]
    whole = metrics.regression_metrics(y, good)[metric]
    assert better.challenger == pytest.approx(whole)
    worse = gate.decide("regression", metric, y, bad, good)
    assert not worse.promote and "worse on" in worse.reason
    twin = gate.decide("regression", metric, y, good + rng.normal(0, 1e-3, 2000), good)
    assert not twin.promote and "not confidently better" in twin.reason
    named = gate.decide("regression", metric, y, bad, good, champion_name="the rule baseline 'r'")
    assert "the rule baseline 'r' stays" in named.reason


# -- sample weights and the no-relevant convention -------------------------------------------


def _split_quality(seed: int = 0, queries: int = 300) -> tuple[np.ndarray, ...]:
    """A challenger far better than the champion on the even queries and far worse on the odd
    ones, so that query weights alone decide which model is better."""
    rel, groups, good, bad = _ranking(seed, queries)
    even = groups % 2 == 0
    challenger = np.where(even, good, bad)
    champion = np.where(even, bad, good)
    return rel, groups, challenger, champion, even


def test_query_weights_decide_the_ranking_gate() -> None:
    rel, groups, challenger, champion, even = _split_quality()
    plain = gate.decide("ranking", "ndcg@10", rel, challenger, champion, groups)
    assert not plain.promote and plain.low < 0 < plain.high  # type: ignore[operator]
    heavy_even = np.where(even, 10.0, 1.0)
    d = gate.decide("ranking", "ndcg@10", rel, challenger, champion, groups, weights=heavy_even)
    assert d.promote and d.units == 300 and d.low > 0  # type: ignore[operator]
    whole = metrics.ranking_metrics(rel, challenger, groups, ks=(10,), weights=heavy_even)
    assert d.challenger == pytest.approx(whole["ndcg@10"], rel=1e-12)
    heavy_odd = np.where(even, 1.0, 10.0)
    worse = gate.decide("ranking", "ndcg@10", rel, challenger, champion, groups, weights=heavy_odd)
    assert not worse.promote and worse.high < 0  # type: ignore[operator]
    # a weight of 0 takes a query out of the comparison entirely: only the even queries count
    only_even = even.astype(np.float64)
    d0 = gate.decide("ranking", "map", rel, challenger, champion, groups, weights=only_even)
    ev = np.isin(groups, groups[even])
    alone = gate.decide("ranking", "map", rel[ev], challenger[ev], champion[ev], groups[ev])
    assert d0.challenger == pytest.approx(alone.challenger, rel=1e-12)
    assert d0.improvement == pytest.approx(alone.improvement, rel=1e-12)
    assert d0.promote and alone.promote


def test_ranking_gate_refuses_mixed_weights_within_a_query() -> None:
    rel, groups, good, bad = _ranking()
    w = np.ones(len(rel))
    w[25] = 2.0  # a row of query 2
    with pytest.raises(ValueError, match="query 2 has rows with weights 1 and 2"):
        gate.decide("ranking", "ndcg@10", rel, good, bad, groups, weights=w)


def test_skip_leaves_queries_without_a_relevant_row_out_of_the_units() -> None:
    rel, groups, good, bad = _ranking()
    empty = groups < 60  # 60 queries without any relevant row
    rel = np.where(empty, 0.0, rel)
    for option, units in (("one", 300), ("zero", 300), ("skip", 240)):
        d = gate.decide("ranking", "ndcg@10", rel, good, bad, groups, no_relevant=option)
        assert d.units == units and d.promote, option
        whole = metrics.ranking_metrics(rel, good, groups, ks=(10,), no_relevant=option)
        assert d.challenger == pytest.approx(whole["ndcg@10"], rel=1e-12), option
    one = gate.decide("ranking", "ndcg@10", rel, good, bad, groups, no_relevant="one")
    skip = gate.decide("ranking", "ndcg@10", rel, good, bad, groups, no_relevant="skip")
    # both models score 1 (one) on the empty queries, so skipping them scales the gain by 300/240
    assert skip.improvement == pytest.approx(one.improvement * 300 / 240, rel=1e-12)  # type: ignore[operator]
    with pytest.raises(ValueError, match="mrr is undefined with no_relevant='skip'"):
        gate.decide("ranking", "mrr", np.zeros(len(rel)), good, bad, groups, no_relevant="skip")


@pytest.mark.parametrize(("task", "metric"), [("binary", "auc"), ("binary", "logloss")])
def test_row_weights_decide_the_binary_gate(task: str, metric: str) -> None:
    y, good, weak = _binary(n=3000)
    first = np.arange(len(y)) < len(y) // 2
    challenger = np.where(first, good, weak)  # better on the first half only
    champion = np.where(first, weak, good)
    w_first = np.where(first, 20.0, 1.0)
    d = gate.decide(task, metric, y, challenger, champion, weights=w_first, resamples=200)
    assert d.promote and d.unit == "rows" and d.units == len(y)
    whole = metrics.binary_metrics(y, challenger, weights=w_first)[metric]
    assert d.challenger == pytest.approx(whole, rel=1e-12)
    w_second = np.where(first, 1.0, 20.0)
    worse = gate.decide(task, metric, y, challenger, champion, weights=w_second, resamples=200)
    assert not worse.promote and worse.high < 0  # type: ignore[operator]


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2", "mape"])
def test_row_weights_in_the_regression_gate(metric: str) -> None:
    rng = np.random.default_rng(5)
    y = np.exp(rng.normal(2, 0.5, 2000))
    first = np.arange(2000) < 1000
    tight, loose = y * np.exp(rng.normal(0, 0.05, 2000)), y * np.exp(rng.normal(0, 0.4, 2000))
    challenger, champion = np.where(first, tight, loose), np.where(first, loose, tight)
    w = np.where(first, 25.0, 1.0)
    d = gate.decide("regression", metric, y, challenger, champion, weights=w, resamples=200)
    assert d.promote, metric
    whole = metrics.regression_metrics(y, challenger, w)[metric]
    assert d.challenger == pytest.approx(whole, rel=1e-12)
    back = gate.decide("regression", metric, y, challenger, champion, weights=w[::-1])
    assert not back.promote and "worse on" in back.reason


def test_multiclass_weights_and_bad_weights() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 3000)
    w = rng.exponential(1.0, 3000)
    proba = rng.dirichlet(np.ones(3), size=3000)
    proba[np.arange(3000), y] += 0.3
    proba /= proba.sum(axis=1, keepdims=True)
    uniform = np.full((3000, 3), 1 / 3)
    for metric in ("accuracy", "macro_f1", "logloss"):
        d = gate.decide("multiclass", metric, y, proba, uniform, weights=w, resamples=100)
        expected = metrics.multiclass_metrics(y, proba, weights=w)[metric]
        assert d.challenger == pytest.approx(expected, rel=1e-12), metric
    with pytest.raises(ValueError, match="weights must hold one value per row"):
        gate.decide("multiclass", "accuracy", y, proba, uniform, weights=w[:-1])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        gate.paired_bootstrap("multiclass", "logloss", y, proba, uniform, weights=-w)

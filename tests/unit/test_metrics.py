"""components.metrics against scikit-learn (ties included) and slow per-query references."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from components import metrics

SEEDS = [0, 1, 2, 3]
KS = [1, 3, 5, 10, None]


# --------------------------------------------------------------------------------------------
# classification


def binary_data(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    # rounded to one decimal so that many scores tie, across and within the classes
    p = np.clip(np.round(0.35 * y + 0.65 * rng.random(n), 1), 0.01, 0.99)
    return y, p


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_matches_sklearn_with_ties(seed: int) -> None:
    y, p = binary_data(seed)
    assert len(np.unique(p)) < len(p) // 5  # plenty of ties
    assert metrics.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), rel=1e-12)
    assert metrics.roc_auc(y.astype(bool), -p) == pytest.approx(skm.roc_auc_score(y, -p), rel=1e-12)


def test_roc_auc_edge_values() -> None:
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert metrics.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_roc_auc_single_class_raises(labels: list[int]) -> None:
    with pytest.raises(ValueError, match="only one class"):
        metrics.roc_auc(labels, [0.1, 0.5, 0.9])


@pytest.mark.parametrize("seed", SEEDS)
def test_log_loss_matches_sklearn(seed: int) -> None:
    y, p = binary_data(seed)
    assert metrics.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-12)


def test_log_loss_clips_at_1e_15() -> None:
    # 1 - (1 - 1e-15) is not exactly 1e-15 in float64; sklearn's clipping has the same rounding
    expected = -(math.log(1e-15) + math.log(1.0 - (1.0 - 1e-15))) / 2
    assert metrics.log_loss([1, 0], [0.0, 1.0]) == pytest.approx(expected, rel=1e-12)
    assert metrics.log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15), rel=1e-12)
    assert metrics.log_loss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log1p(-1e-15), rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_and_f1_match_sklearn(seed: int) -> None:
    y, p = binary_data(seed)
    pred = (p >= 0.5).astype(np.int64)
    assert metrics.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred), rel=1e-12)
    assert metrics.f1_binary(y, pred) == pytest.approx(skm.f1_score(y, pred), rel=1e-12)


def test_f1_without_positives_is_zero() -> None:
    assert metrics.f1_binary([0, 0, 0], [0, 0, 0]) == 0.0
    assert metrics.f1_binary([1, 0, 0], [0, 0, 0]) == 0.0
    assert metrics.f1_binary([1, 0, 1], [1, 0, 1]) == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_metrics(seed: int) -> None:
    y, p = binary_data(seed)
    out = metrics.binary_metrics(y, p, threshold=0.5)
    assert list(out) == ["auc", "logloss", "accuracy", "f1"]
    pred = (p >= 0.5).astype(np.int64)
    assert out["auc"] == pytest.approx(skm.roc_auc_score(y, p), rel=1e-12)
    assert out["logloss"] == pytest.approx(skm.log_loss(y, p), rel=1e-12)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), rel=1e-12)
    assert out["f1"] == pytest.approx(skm.f1_score(y, pred), rel=1e-12)


def multiclass_data(seed: int, n: int = 300, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k - 1, n)  # class k-1 never occurs in y_true
    proba = rng.dirichlet(np.ones(k), n)
    proba[np.arange(n), y] += 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    return y, proba


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_log_loss_matches_sklearn(seed: int) -> None:
    y, proba = multiclass_data(seed)
    expected = skm.log_loss(y, proba, labels=list(range(proba.shape[1])))
    assert metrics.multiclass_log_loss(y, proba) == pytest.approx(expected, rel=1e-12)


def test_multiclass_log_loss_clips_and_renormalises() -> None:
    proba = np.array([[0.0, 1.0], [0.2, 0.6]])  # row 2 sums to 0.8
    expected = (-math.log(1e-15) - math.log(0.75)) / 2
    assert metrics.multiclass_log_loss([0, 1], proba) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_macro_f1_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 200)  # classes 0..3 in y_true
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(1, 5, 200))  # 4 only predicted
    # class 5 appears nowhere and must not count (sklearn labels=None)
    expected = skm.f1_score(y, pred, average="macro")
    assert metrics.macro_f1(y, pred, num_classes=6) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_metrics(seed: int) -> None:
    y, proba = multiclass_data(seed)
    out = metrics.multiclass_metrics(y, proba)
    assert list(out) == ["accuracy", "macro_f1", "logloss"]
    pred = proba.argmax(axis=1)
    k = proba.shape[1]
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), rel=1e-12)
    assert out["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), rel=1e-12)
    assert out["logloss"] == pytest.approx(skm.log_loss(y, proba, labels=list(range(k))), rel=1e-12)


def test_classification_validation() -> None:
    with pytest.raises(ValueError, match="y_true and y_score must have equal lengths"):
        metrics.roc_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="y_true is empty"):
        metrics.accuracy([], [])
    with pytest.raises(ValueError, match="y_score contains NaN"):
        metrics.roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="y_true must hold binary labels"):
        metrics.log_loss([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"p must hold probabilities in \[0, 1\]"):
        metrics.log_loss([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match=r"y_true must hold class ids in 0\.\.1"):
        metrics.multiclass_log_loss([0, 2], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="proba must be 2-D"):
        metrics.multiclass_log_loss([0, 1], [0.5, 0.5])
    with pytest.raises(ValueError, match="y_pred must hold class ids"):
        metrics.macro_f1([0, 1], [0, 3], num_classes=3)


# --------------------------------------------------------------------------------------------
# ranking


def ranking_data(
    seed: int, n_queries: int = 120, tied: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries of 1..30 rows with graded relevance 0..4 (some all-zero), rows shuffled."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 31, n_queries)
    qids = rng.choice(10**9, n_queries, replace=False)  # arbitrary, unsorted ids
    groups = np.repeat(qids, sizes)
    n = len(groups)
    rel = np.where(rng.random(n) < 0.6, 0, rng.integers(1, 5, n)).astype(np.float64)
    zero_queries = rng.random(n_queries) < 0.15
    rel[np.repeat(zero_queries, sizes)] = 0.0
    raw = 0.15 * rel + rng.random(n)
    scores = np.round(raw, 1) if tied else raw
    perm = rng.permutation(n)  # non-contiguous queries
    return rel[perm], scores[perm], groups[perm]


def per_query(groups: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(groups == g) for g in np.unique(groups)]


def with_relevant_rows(
    rel: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float = 1e-300
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep_groups = np.unique(groups[rel >= threshold])
    keep = np.isin(groups, keep_groups)
    return rel[keep], scores[keep], groups[keep]


def sklearn_ndcg(rel: np.ndarray, scores: np.ndarray, k: int | None) -> float:
    if len(rel) == 1:  # sklearn refuses one-document queries; the only ordering is ideal
        return 1.0
    return float(skm.ndcg_score([2.0**rel - 1.0], [scores], k=k))


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_ndcg_matches_sklearn_per_query_with_ties(seed: int) -> None:
    rel, scores, groups = with_relevant_rows(*ranking_data(seed))
    queries = per_query(groups)
    assert any(len(np.unique(scores[q])) < len(q) for q in queries)  # ties happen
    sizes = [len(q) for q in queries]
    assert min(sizes) <= 3 and max(sizes) >= 20  # small and large queries
    for k in KS:
        expected = np.mean([sklearn_ndcg(rel[q], scores[q], k) for q in queries])
        got = metrics.ndcg_at_k(rel, scores, groups, k=k)
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-14), k


def test_ndcg_single_query_values() -> None:
    rel = np.array([0.0, 2.0, 1.0, 0.0, 3.0])
    scores = np.array([0.3, 0.3, 0.9, 0.1, 0.3])
    groups = np.zeros(5, dtype=np.int64)
    for k in KS:
        expected = sklearn_ndcg(rel, scores, k)
        assert metrics.ndcg_at_k(rel, scores, groups, k) == pytest.approx(expected, rel=1e-12)
    # one tie of a relevant and an irrelevant row: the mean gain at both positions
    got = metrics.ndcg_at_k([1, 0], [0.5, 0.5], [7, 7], k=None)
    assert got == pytest.approx(0.5 * (1 + 1 / math.log2(3)), rel=1e-12)


def test_ndcg_all_zero_query_counts_per_no_relevant() -> None:
    rel = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.1])
    groups = np.array([1, 1, 1, 2, 2])
    assert metrics.ndcg_at_k(rel[:3], scores[:3], groups[:3], k=3) == 1.0
    assert metrics.ndcg_at_k(rel[:3], scores[:3], groups[:3], k=3, no_relevant="zero") == 0.0
    with pytest.raises(ValueError, match=r"ndcg@3 is undefined with no_relevant='skip'.*1 queries"):
        metrics.ndcg_at_k(rel[:3], scores[:3], groups[:3], k=3, no_relevant="skip")
    # query 2 is perfect (1.0); query 1 counts the chosen value, or is skipped
    assert metrics.ndcg_at_k(rel, scores, groups, k=None) == 1.0
    assert metrics.ndcg_at_k(rel, scores, groups, None, no_relevant="zero") == 0.5
    assert metrics.ndcg_at_k(rel, scores, groups, None, no_relevant="skip") == 1.0
    with pytest.raises(ValueError, match="no_relevant must be one of one, zero, skip, got 'none'"):
        metrics.ndcg_at_k(rel, scores, groups, None, no_relevant="none")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_perfect_ranking_is_one_and_reversed_is_less(seed: int) -> None:
    rel, _, groups = with_relevant_rows(*ranking_data(seed))
    for k in KS:
        assert metrics.ndcg_at_k(rel, rel, groups, k) == 1.0
        assert metrics.ndcg_at_k(rel, -rel, groups, k) < 1.0
    assert metrics.map_at_k(rel, rel, groups, k=None) == 1.0
    assert metrics.mrr(rel, rel, groups) == 1.0
    assert metrics.map_at_k(rel, -rel, groups, k=None) < 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_row_order_and_group_labels_do_not_matter(seed: int) -> None:
    rel, scores, groups = ranking_data(seed)
    base = metrics.ranking_metrics(rel, scores, groups)
    perm = np.random.default_rng(seed + 100).permutation(len(rel))
    shuffled = metrics.ranking_metrics(rel[perm], scores[perm], groups[perm])
    as_str = metrics.ranking_metrics(rel, scores, np.array([f"q{g}" for g in groups], dtype=object))
    for other in (shuffled, as_str):
        assert other.keys() == base.keys()
        for key, value in base.items():
            assert other[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", [1.0, 3.0])
def test_map_matches_sklearn_average_precision_without_ties(seed: int, threshold: float) -> None:
    rel, scores, groups = ranking_data(seed, tied=False)
    rel, scores, groups = with_relevant_rows(rel, scores, groups, threshold)
    expected = np.mean(
        [skm.average_precision_score(rel[q] >= threshold, scores[q]) for q in per_query(groups)]
    )
    got = metrics.map_at_k(rel, scores, groups, k=None, threshold=threshold)
    assert got == pytest.approx(expected, rel=1e-12)


def reference_map_mrr(
    rel: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int | None, threshold: float
) -> tuple[float, float]:
    """Slow and obvious: per query, sort by (-score, relevance), then walk the list."""
    aps, rrs = [], []
    for g in sorted(set(groups.tolist())):
        rows = [i for i in range(len(groups)) if groups[i] == g]
        rows.sort(key=lambda i: (-scores[i], rel[i]))
        hits = [1 if rel[i] >= threshold else 0 for i in rows]
        n_rel = sum(hits)
        cut = len(hits) if k is None else k
        total, seen = 0.0, 0
        for rank, h in enumerate(hits[:cut], start=1):
            seen += h
            if h:
                total += seen / rank
        aps.append(total / min(cut, n_rel) if n_rel else 0.0)
        rrs.append(next((1.0 / r for r, h in enumerate(hits, start=1) if h), 0.0))
    return sum(aps) / len(aps), sum(rrs) / len(rrs)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", [1.0, 2.5])
def test_map_and_mrr_with_ties_match_pessimistic_reference(seed: int, threshold: float) -> None:
    rel, scores, groups = ranking_data(seed, n_queries=60)
    for k in KS:
        exp_map, exp_mrr = reference_map_mrr(rel, scores, groups, k, threshold)
        got = metrics.map_at_k(rel, scores, groups, k=k, threshold=threshold)
        assert got == pytest.approx(exp_map, rel=1e-12, abs=1e-15), k
    got_mrr = metrics.mrr(rel, scores, groups, threshold=threshold)
    assert got_mrr == pytest.approx(exp_mrr, rel=1e-12, abs=1e-15)


def test_ties_give_no_credit_to_map_and_mrr() -> None:
    rel = np.array([1.0, 0.0, 0.0])
    constant = np.zeros(3)
    groups = np.zeros(3, dtype=np.int64)
    assert metrics.mrr(rel, constant, groups) == pytest.approx(1 / 3)
    assert metrics.map_at_k(rel, constant, groups, k=None) == pytest.approx(1 / 3)
    assert metrics.map_at_k(rel, constant, groups, k=2) == 0.0
    # a query with no relevant row counts 0 in the mean
    two = np.array([1.0, 0.0, 0.0, 0.0])
    assert metrics.map_at_k(two, [0.9, 0.1, 0.5, 0.4], [1, 1, 2, 2], k=None) == 0.5
    assert metrics.mrr(two, [0.9, 0.1, 0.5, 0.4], [1, 1, 2, 2]) == 0.5


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_ranking_metrics_keys_and_values(seed: int) -> None:
    rel, scores, groups = ranking_data(seed)
    out = metrics.ranking_metrics(rel, scores, groups, ks=(1, 3, 5, 10), threshold=2.0)
    assert list(out) == [
        "ndcg@1",
        "ndcg@3",
        "ndcg@5",
        "ndcg@10",
        "map@10",
        "map",
        "mrr",
        "queries",
        "queries_no_relevant",
    ]
    assert out["queries"] == float(len(np.unique(groups)))
    empty = [g for g in np.unique(groups) if not (rel[groups == g] > 0).any()]
    assert out["queries_no_relevant"] == float(len(empty)) > 0
    for k in (1, 3, 5, 10):
        assert out[f"ndcg@{k}"] == metrics.ndcg_at_k(rel, scores, groups, k)
    assert out["map@10"] == metrics.map_at_k(rel, scores, groups, 10, threshold=2.0)
    assert out["map"] == metrics.map_at_k(rel, scores, groups, None, threshold=2.0)
    assert out["map"] != out["map@10"]  # queries of up to 30 rows: the full list counts
    assert out["mrr"] == metrics.mrr(rel, scores, groups, threshold=2.0)


def test_ranking_validation() -> None:
    rel, scores, groups = [1.0, 0.0], [0.2, 0.1], [1, 1]
    with pytest.raises(ValueError, match="relevance and scores and groups must have equal lengths"):
        metrics.ndcg_at_k(rel, scores, [1], k=3)
    with pytest.raises(ValueError, match="relevance is empty"):
        metrics.mrr([], [], [])
    with pytest.raises(ValueError, match="scores contains NaN or infinite"):
        metrics.map_at_k(rel, [0.2, np.inf], groups, k=3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        metrics.ndcg_at_k(rel, scores, groups, k=0)
    with pytest.raises(ValueError, match="relevance must be >= 0"):
        metrics.ndcg_at_k([-1.0, 0.0], scores, groups, k=3)
    with pytest.raises(ValueError, match="groups"):
        metrics.mrr(rel, scores, np.array(["a", None], dtype=object))
    with pytest.raises(ValueError, match="ks must"):
        metrics.ranking_metrics(rel, scores, groups, ks=())


@pytest.mark.parametrize("seed", range(3))
def test_regression_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = np.exp(rng.normal(2, 1, 500))
    y[:50] = 0.0  # rows without a percentage error
    p = y + rng.normal(0, 3, 500)
    got = metrics.regression_metrics(y, p)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert got["r2"] == pytest.approx(skm.r2_score(y, p))
    pos = y > 0
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y[pos], p[pos]))
    assert "mape" not in metrics.regression_metrics(-y - 1, p)  # no positive label
    assert metrics.regression_metrics(np.ones(3), np.ones(3))["r2"] == 1.0
    assert metrics.regression_metrics(np.ones(3), np.zeros(3))["r2"] == 0.0
    with pytest.raises(ValueError, match="y_pred"):
        metrics.regression_metrics(y, np.full(500, np.nan))


# --------------------------------------------------------------------------------------------
# sample weights (scikit-learn's sample_weight is the reference)


def weights_for(seed: int, n: int) -> np.ndarray:
    """Positive weights of very different sizes, a few rows weightless."""
    rng = np.random.default_rng(seed + 50)
    w = rng.exponential(1.0, n)
    w[rng.random(n) < 0.05] = 0.0
    return w


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_binary_metrics_match_sklearn(seed: int) -> None:
    y, p = binary_data(seed)
    w = weights_for(seed, len(y))
    pred = (p >= 0.5).astype(np.int64)
    assert len(np.unique(p)) < len(p) // 5  # ties, which the weighted AUC must count half
    auc = skm.roc_auc_score(y, p, sample_weight=w)
    assert metrics.roc_auc(y, p, w) == pytest.approx(auc, rel=1e-12)
    assert metrics.roc_auc(y, p, w) != pytest.approx(metrics.roc_auc(y, p), rel=1e-6)
    assert metrics.log_loss(y, p, w) == pytest.approx(skm.log_loss(y, p, sample_weight=w))
    acc = skm.accuracy_score(y, pred, sample_weight=w)
    assert metrics.accuracy(y, pred, w) == pytest.approx(acc, rel=1e-12)
    f1 = skm.f1_score(y, pred, sample_weight=w)
    assert metrics.f1_binary(y, pred, w) == pytest.approx(f1, rel=1e-12)
    out = metrics.binary_metrics(y, p, 0.5, weights=w)
    assert out == {
        "auc": metrics.roc_auc(y, p, w),
        "logloss": metrics.log_loss(y, p, w),
        "accuracy": metrics.accuracy(y, pred, w),
        "f1": metrics.f1_binary(y, pred, w),
    }


def test_weighted_auc_with_every_score_tied_and_integer_weights_as_repeated_rows() -> None:
    y, w = np.array([0, 1, 0, 1, 1]), np.array([1.0, 2.0, 0.5, 0.0, 3.0])
    tied = np.full(5, 0.3)
    assert metrics.roc_auc(y, tied, w) == 0.5 == skm.roc_auc_score(y, tied, sample_weight=w)
    y, p = binary_data(7, n=120)
    counts = np.random.default_rng(7).integers(0, 4, len(y))
    repeated = np.repeat(np.arange(len(y)), counts)
    assert metrics.roc_auc(y, p, counts) == pytest.approx(
        metrics.roc_auc(y[repeated], p[repeated]), rel=1e-12
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_multiclass_metrics_match_sklearn(seed: int) -> None:
    y, proba = multiclass_data(seed)
    w = weights_for(seed, len(y))
    labels = list(range(proba.shape[1]))
    pred = proba.argmax(axis=1)
    expected = skm.log_loss(y, proba, labels=labels, sample_weight=w)
    assert metrics.multiclass_log_loss(y, proba, w) == pytest.approx(expected, rel=1e-12)
    out = metrics.multiclass_metrics(y, proba, weights=w)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred, sample_weight=w))
    macro = skm.f1_score(y, pred, average="macro", sample_weight=w)
    assert out["macro_f1"] == pytest.approx(macro, rel=1e-12)
    assert out["logloss"] == pytest.approx(expected, rel=1e-12)


def test_weighted_macro_f1_counts_a_weightless_class_as_zero() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(1, 5, 200))  # 4 only predicted
    w = rng.exponential(1.0, 200)
    w[(y == 4) | (pred == 4)] = 0.0  # class 4 occurs, with no weight at all
    expected = skm.f1_score(y, pred, average="macro", sample_weight=w, zero_division=0)
    assert metrics.macro_f1(y, pred, num_classes=6, weights=w) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_weighted_regression_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = np.exp(rng.normal(2, 1, 500))
    y[:50] = 0.0
    p = y + rng.normal(0, 3, 500)
    w = weights_for(seed, 500)
    got = metrics.regression_metrics(y, p, w)
    assert list(got) == ["rmse", "mae", "r2", "mape"]
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p, sample_weight=w)))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p, sample_weight=w))
    assert got["r2"] == pytest.approx(skm.r2_score(y, p, sample_weight=w), rel=1e-12)
    pos = y > 0
    mape = skm.mean_absolute_percentage_error(y[pos], p[pos], sample_weight=w[pos])
    assert got["mape"] == pytest.approx(mape, rel=1e-12)
    # the positive rows weigh nothing: no percentage error to report
    w_neg = np.where(pos, 0.0, 1.0)
    assert "mape" not in metrics.regression_metrics(y, p, w_neg)


def test_weights_are_validated() -> None:
    y, p = [0, 1, 1], [0.2, 0.6, 0.9]
    with pytest.raises(ValueError, match="weights must hold one value per row: got 2 for 3"):
        metrics.log_loss(y, p, [1.0, 2.0])
    with pytest.raises(ValueError, match="weights must be >= 0, found -1 at row 1"):
        metrics.accuracy(y, y, [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="weights contains NaN"):
        metrics.roc_auc(y, p, [1.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="weights are all zero"):
        metrics.regression_metrics(p, p, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="positive weight in one class only"):
        metrics.roc_auc(y, p, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="weights must be 1-D"):
        metrics.f1_binary(y, y, [[1.0, 1.0, 1.0]])


# --------------------------------------------------------------------------------------------
# ranking: per-query weights and the no-relevant conventions

# A LETOR-style set: four queries, two of them (20 and 40) without any relevant document.
LETOR_REL = np.array([1, 0, 0, 0, 0, 3, 1, 0, 0, 0], dtype=np.float64)
LETOR_SCORES = np.array([0.2, 0.9, 0.5, 0.4, 0.1, 0.9, 0.5, 0.7, 0.3, 0.8])
LETOR_GROUPS = np.array([10, 10, 20, 20, 20, 30, 30, 30, 40, 40])
# By hand. Query 10 ranks (0, 1): DCG = 1/log2(3), ideal 1; AP = 1/2 (hit at rank 2), RR 1/2.
# Query 30 ranks (3, 0, 1): DCG = 7 + 1/log2(4) = 7.5, ideal 7 + 1/log2(3); AP = (1/1 + 2/3)/2,
# RR 1. NDCG@1: 0 (query 10) and 1 (query 30); AP@1: 0 and 1.
NDCG_10 = 1 / math.log2(3)
NDCG_30 = 7.5 / (7 + 1 / math.log2(3))
AP_10, AP_30 = 0.5, (1 + 2 / 3) / 2


@pytest.mark.parametrize(
    ("no_relevant", "ndcg", "ndcg1", "map_", "map1", "mrr"),
    [
        ("one", (NDCG_10 + NDCG_30 + 2) / 4, 3 / 4, (AP_10 + AP_30) / 4, 1 / 4, 1.5 / 4),
        ("zero", (NDCG_10 + NDCG_30) / 4, 1 / 4, (AP_10 + AP_30) / 4, 1 / 4, 1.5 / 4),
        ("skip", (NDCG_10 + NDCG_30) / 2, 1 / 2, (AP_10 + AP_30) / 2, 1 / 2, 1.5 / 2),
    ],
)
def test_letor_set_by_hand_under_each_convention(
    no_relevant: metrics.NoRelevant,
    ndcg: float,
    ndcg1: float,
    map_: float,
    map1: float,
    mrr: float,
) -> None:
    args = (LETOR_REL, LETOR_SCORES, LETOR_GROUPS)
    assert metrics.ndcg_at_k(*args, None, no_relevant) == pytest.approx(ndcg, rel=1e-12)
    assert metrics.map_at_k(*args, None, no_relevant=no_relevant) == pytest.approx(map_, rel=1e-12)
    assert metrics.mrr(*args, no_relevant=no_relevant) == pytest.approx(mrr, rel=1e-12)
    out = metrics.ranking_metrics(*args, ks=(1, 10), no_relevant=no_relevant)
    expected = {
        "ndcg@1": ndcg1,
        "ndcg@10": ndcg,
        "map@10": map_,
        "map": map_,
        "mrr": mrr,
        "queries": 4.0,
        "queries_no_relevant": 2.0,
    }
    assert out == pytest.approx(expected, rel=1e-12)
    assert metrics.ranking_metrics(*args, ks=(1,), no_relevant=no_relevant)["map@1"] == map1
    # the per-query values the gate resamples average to the same numbers
    per = metrics.per_query(*args, "ndcg@10", no_relevant=no_relevant)
    assert len(per) == (2 if no_relevant == "skip" else 4)
    assert per.mean() == pytest.approx(ndcg, rel=1e-12)


def test_skip_uses_the_relevance_threshold_for_map_and_mrr() -> None:
    # threshold 2: query 10's only relevant row (grade 1) no longer counts for MAP/MRR, though
    # its NDCG (gain > 0) still does
    args = (LETOR_REL, LETOR_SCORES, LETOR_GROUPS)
    out = metrics.ranking_metrics(*args, ks=(10,), threshold=2.0, no_relevant="skip")
    assert out["ndcg@10"] == pytest.approx((NDCG_10 + NDCG_30) / 2, rel=1e-12)
    assert out["map"] == pytest.approx(1.0) and out["mrr"] == 1.0  # query 30 alone: rank 1
    with pytest.raises(ValueError, match=r"map is undefined with no_relevant='skip'.*4 queries"):
        metrics.map_at_k(*args, None, threshold=5.0, no_relevant="skip")


def test_every_convention_is_the_same_when_every_query_has_a_relevant_row() -> None:
    rel, scores, groups = with_relevant_rows(*ranking_data(3))
    base = metrics.ranking_metrics(rel, scores, groups)
    assert base["queries_no_relevant"] == 0.0
    for option in ("zero", "skip"):
        assert metrics.ranking_metrics(rel, scores, groups, no_relevant=option) == base


def test_weighted_ranking_metrics_are_the_query_weighted_mean() -> None:
    args = (LETOR_REL, LETOR_SCORES, LETOR_GROUPS)
    # query weights 10: 2, 20: 1, 30: 0.5, 40: 0 (one value repeated on every row of a query)
    q_w = {10: 2.0, 20: 1.0, 30: 0.5, 40: 0.0}
    w = np.array([q_w[g] for g in LETOR_GROUPS])
    one = metrics.ranking_metrics(*args, ks=(10,), weights=w)
    assert one["ndcg@10"] == pytest.approx((2 * NDCG_10 + 1 * 1 + 0.5 * NDCG_30) / 3.5)
    assert one["map"] == pytest.approx((2 * AP_10 + 0.5 * AP_30) / 3.5)
    assert one["mrr"] == pytest.approx((2 * 0.5 + 0.5 * 1) / 3.5)
    assert one["queries"] == 4.0  # counts stay counts of queries
    skip = metrics.ranking_metrics(*args, ks=(10,), no_relevant="skip", weights=w)
    assert skip["ndcg@10"] == pytest.approx((2 * NDCG_10 + 0.5 * NDCG_30) / 2.5)
    assert metrics.ndcg_at_k(*args, 10, "skip", w) == skip["ndcg@10"]
    # the gate's unit weights line up with its per-query values
    per = metrics.per_query(*args, "map", no_relevant="skip")
    qw = metrics.query_weights(LETOR_REL, LETOR_GROUPS, w, "map", no_relevant="skip")
    assert qw.tolist() == [2.0, 0.5] and np.average(per, weights=qw) == pytest.approx(skip["map"])
    # only the weightless query 40 and the skipped query 20 would count: undefined
    only = np.where(np.isin(LETOR_GROUPS, [20, 40]), 1.0, 0.0)
    with pytest.raises(ValueError, match="every query it counts has weight 0"):
        metrics.ranking_metrics(*args, no_relevant="skip", weights=only)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_integer_query_weights_equal_repeated_queries(seed: int) -> None:
    rel, scores, groups = ranking_data(seed, n_queries=40)
    ids = np.unique(groups)
    counts = dict(
        zip(ids.tolist(), np.random.default_rng(seed).integers(0, 4, len(ids)), strict=True)
    )
    w = np.array([counts[g] for g in groups.tolist()], dtype=np.float64)
    parts = [
        (rel[groups == g], scores[groups == g], np.full((groups == g).sum(), 1000 * g + copy))
        for g in ids.tolist()
        for copy in range(counts[g])
    ]
    rep = [np.concatenate(col) for col in zip(*parts, strict=True)]
    for option in ("one", "zero", "skip"):
        got = metrics.ranking_metrics(rel, scores, groups, no_relevant=option, weights=w)
        want = metrics.ranking_metrics(*rep, no_relevant=option)
        for key in ("ndcg@1", "ndcg@10", "map@10", "map", "mrr"):
            assert got[key] == pytest.approx(want[key], rel=1e-12), (option, key)


def test_query_weights_must_be_constant_within_a_query() -> None:
    w = np.ones(len(LETOR_GROUPS))
    w[[6, 9]] = [2.0, 3.0]  # queries 30 and 40 mix weights; 30 comes first by id
    with pytest.raises(
        ValueError, match=r"constant within a query.*query 30 has rows with weights 1 and 2"
    ):
        metrics.ranking_metrics(LETOR_REL, LETOR_SCORES, LETOR_GROUPS, weights=w)
    named = np.array([f"q{g}" for g in LETOR_GROUPS], dtype=object)
    with pytest.raises(ValueError, match="query 'q30'"):
        metrics.query_weights(LETOR_REL, named, w, "ndcg@10")


# --------------------------------------------------------------------------------------------
# the convention through the spec, evaluation and the report's wording


def _ranking_spec(evaluation: dict[str, Any]) -> Any:
    from pipelines.spec import spec_from_dict

    return spec_from_dict(
        {
            "name": "letor",
            "task": "ranking",
            "data": {
                "source": {"uri": "synthetic:ranking", "params": {"rows": 50}},
                "group": "qid",
            },
            "features": {"numeric": ["f0"]},
            "split": {"method": "group"},
            "models": [{"name": "m"}],
            "evaluation": evaluation,
        }
    )


@pytest.mark.parametrize("option", ["one", "zero", "skip"])
def test_no_relevant_from_the_spec_reaches_evaluate(option: str) -> None:
    from components import evaluation
    from pipelines import translate

    spec = _ranking_spec({"no_relevant": option, "metric": "map", "ks": [1, 10]})
    kwargs = translate.eval_kwargs(spec)
    assert kwargs["no_relevant"] == option
    assert translate.gate_settings(spec)["no_relevant"] == option
    frame = pd.DataFrame({"label": LETOR_REL, "score": LETOR_SCORES, "_group": LETOR_GROUPS})
    got = evaluation.evaluate("ranking", frame, "label", **kwargs)
    want = metrics.ranking_metrics(
        LETOR_REL, LETOR_SCORES, LETOR_GROUPS, ks=(1, 10), no_relevant=option
    )
    assert got == want and got["ndcg@10"] == pytest.approx(
        {"one": (NDCG_10 + NDCG_30 + 2) / 4, "zero": (NDCG_10 + NDCG_30) / 4}.get(
            option, (NDCG_10 + NDCG_30) / 2
        )
    )
    assert evaluation.conventions("ranking", **kwargs) == {
        "ndcg_no_relevant": option,
        "map_no_relevant": "skip" if option == "skip" else "zero",
        "mrr_no_relevant": "skip" if option == "skip" else "zero",
    }


def test_spec_rejects_an_unknown_no_relevant_and_default_is_one() -> None:
    from pipelines.spec import SpecError

    assert _ranking_spec({}).evaluation.no_relevant == "one"
    with pytest.raises(SpecError, match=r"evaluation\.no_relevant.*'one', 'zero' or 'skip'"):
        _ranking_spec({"no_relevant": "letor"})
    assert _ranking_spec({"metric": "map"}).selection_metric() == "map"


def test_evaluate_and_baseline_use_a_weight_column() -> None:
    from components import evaluation

    y, p = binary_data(1)
    w = weights_for(1, len(y))
    frame = pd.DataFrame({"label": y, "score": p, "w": w, "_row_key": np.arange(len(y))})
    got = evaluation.evaluate("binary", frame, "label", weight="w")
    assert got == metrics.binary_metrics(y, p, weights=w)
    assert evaluation.evaluate("binary", frame, "label") == metrics.binary_metrics(y, p)
    base = evaluation.baseline("binary", frame, "label", 0.3, weight="w")
    assert base == metrics.binary_metrics(y, np.full(len(y), 0.3), weights=w)
    assert evaluation.conventions("binary", weight="w") == {"weight": "w"}
    with pytest.raises(ValueError, match="weight column 'wt' is not in the scored frame"):
        evaluation.evaluate("binary", frame, "label", weight="wt")

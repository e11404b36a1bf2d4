"""components.metrics against scikit-learn (ties included) and slow per-query references."""

from __future__ import annotations

import math

import numpy as np
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


def test_ndcg_all_zero_query_counts_empty_query_value() -> None:
    rel = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.1])
    groups = np.array([1, 1, 1, 2, 2])
    assert metrics.ndcg_at_k(rel[:3], scores[:3], groups[:3], k=3) == 1.0
    assert metrics.ndcg_at_k(rel[:3], scores[:3], groups[:3], k=3, empty_query_value=0.0) == 0.0
    # query 2 is perfect (1.0); query 1 counts the chosen value
    assert metrics.ndcg_at_k(rel, scores, groups, k=None) == 1.0
    assert metrics.ndcg_at_k(rel, scores, groups, None, empty_query_value=0.0) == 0.5


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
    assert list(out) == ["ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "map@10", "mrr", "queries"]
    assert out["queries"] == float(len(np.unique(groups)))
    for k in (1, 3, 5, 10):
        assert out[f"ndcg@{k}"] == metrics.ndcg_at_k(rel, scores, groups, k)
    assert out["map@10"] == metrics.map_at_k(rel, scores, groups, 10, threshold=2.0)
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

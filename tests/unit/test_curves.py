"""Report curves against scikit-learn and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from components import curves, metrics


def test_roc_matches_sklearn_and_integrates_to_auc() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(y + rng.normal(0, 1, 500), 1)  # ties on purpose
    fpr, tpr = curves.roc_curve(y, s)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert auc(fpr, tpr) == pytest.approx(metrics.roc_auc(y, s))


def test_pr_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = y + rng.normal(0, 1, 300)
    recall, precision = curves.pr_curve(y, s)
    ref_p, ref_r, _ = precision_recall_curve(y, s, drop_intermediate=False)
    # scikit-learn lists thresholds ascending and appends (recall 0, precision 1)
    np.testing.assert_allclose(recall, ref_r[:-1][::-1])
    np.testing.assert_allclose(precision, ref_p[:-1][::-1])


def test_calibration_bins() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.95, 0.9, 0.55, 0.52])
    pred, obs, n = curves.calibration(y, p, bins=10)
    np.testing.assert_allclose(pred, [0.05, 0.15, 0.535, 0.925])
    np.testing.assert_allclose(obs, [0.0, 0.0, 0.5, 1.0])
    assert n.tolist() == [1, 1, 2, 2]


def test_ndcg_by_k_matches_ranking_metrics() -> None:
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(40), 8)
    rel = rng.integers(0, 5, g.size).astype(float)
    s = rel + rng.normal(0, 2, g.size)
    whole = metrics.ranking_metrics(rel, s, g, ks=(1, 5, 10))
    assert curves.ndcg_by_k(rel, s, g, [1, 5, 10]) == pytest.approx(
        [whole["ndcg@1"], whole["ndcg@5"], whole["ndcg@10"]]
    )

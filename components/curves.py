"""Curves for reports (numpy only): ROC, precision-recall, calibration, NDCG by cut-off."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from components import metrics


def roc_curve(y: npt.ArrayLike, score: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0)."""
    yy, s = np.asarray(y, dtype=np.int64), np.asarray(score, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    yy, s = yy[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each tie block
    tp = np.cumsum(yy)[last]
    fp = (last + 1) - tp
    pos, neg = max(int(yy.sum()), 1), max(int(len(yy) - yy.sum()), 1)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def pr_curve(y: npt.ArrayLike, score: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, highest threshold first."""
    yy, s = np.asarray(y, dtype=np.int64), np.asarray(score, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    yy, s = yy[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(yy)[last]
    predicted = last + 1
    return tp / max(int(yy.sum()), 1), tp / predicted


def calibration(
    y: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width probability bin: (mean predicted, observed rate, rows); empty bins dropped."""
    yy, pp = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    idx = np.minimum((pp * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    pred = np.bincount(idx, weights=pp, minlength=bins)
    obs = np.bincount(idx, weights=yy, minlength=bins)
    keep = count > 0
    return pred[keep] / count[keep], obs[keep] / count[keep], count[keep]


def ndcg_by_k(
    relevance: npt.ArrayLike, scores: npt.ArrayLike, groups: npt.ArrayLike, ks: Sequence[int]
) -> list[float]:
    """Mean NDCG@k for each k (same conventions as components.metrics)."""
    return [float(metrics.per_query(relevance, scores, groups, f"ndcg@{k}").mean()) for k in ks]

"""Champion/challenger gate: a paired bootstrap of the metric difference on the same test rows.

Both models score the same test split. The unit of resampling is what the data is made of:
queries for ranking (a query's rows stay together), rows for classification. Metrics that are
means over units (NDCG@k, MAP@k, MRR per query; logloss and accuracy per row) are bootstrapped
from the per-unit differences, which is exact and fast; the others (AUC, F1, macro-F1) are
recomputed on every resample. The challenger is promoted only when the lower end of the
confidence interval of its improvement exceeds ``min_improvement``.

With row ``weights`` (ranking: one per query), every value is the weighted metric: a mean over
units becomes a weighted mean, and each resample draws units (rows or queries) with their
weights and computes the weighted metric on them. With ``no_relevant="skip"`` the queries
without a relevant row are not units at all (components.metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from components import metrics
from components.tasks import task_info

LOWER_IS_BETTER = metrics.LOWER_IS_BETTER
_CHUNK = 64  # resamples per vectorized chunk: bounds memory at _CHUNK x units


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why; ``improvement`` is positive when the challenger is better."""

    metric: str
    unit: str  # "queries" or "rows"
    units: int
    challenger: float
    champion: float | None
    improvement: float | None
    low: float | None
    high: float | None
    confidence: float
    min_improvement: float
    resamples: int
    promote: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_unit(
    task: str,
    metric: str,
    y: np.ndarray,
    out: np.ndarray,
    groups: np.ndarray | None,
    relevance_threshold: float,
    threshold: float,
    no_relevant: str = "one",
) -> np.ndarray | None:
    """Per-unit values whose (weighted) mean is the metric, or None when the metric does not
    decompose."""
    if task_info(task).grouped:
        if groups is None:
            raise ValueError("ranking needs query ids")
        return metrics.per_query(
            y, out, groups, metric, relevance_threshold, metrics.check_no_relevant(no_relevant)
        )
    eps = 1e-15
    if task == "binary":
        p = np.clip(out, eps, 1 - eps)
        if metric == "logloss":
            return np.asarray(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
        if metric == "accuracy":
            return ((out >= threshold) == (y == 1)).astype(np.float64)
        return None
    if task == "multiclass":
        idx = y.astype(np.int64)
        if metric == "logloss":
            return np.asarray(-np.log(np.clip(out[np.arange(len(y)), idx], eps, 1.0)))
        if metric == "accuracy":
            return (out.argmax(axis=1) == idx).astype(np.float64)
        return None
    # regression
    if metric == "mae":
        return np.abs(out - y)
    if metric == "mape":  # over the rows with a positive label, as metrics.regression_metrics
        pos = y > 0
        return np.abs(out[pos] - y[pos]) / y[pos]
    return None


def _unit_weights(
    task: str,
    metric: str,
    y: np.ndarray,
    groups: np.ndarray | None,
    weights: np.ndarray | None,
    relevance_threshold: float,
    no_relevant: str,
) -> np.ndarray | None:
    """The weight of each unit ``_per_unit`` returns a value for (None: unweighted)."""
    if weights is None:
        return None
    if task_info(task).grouped:
        if groups is None:
            raise ValueError("ranking needs query ids")
        return metrics.query_weights(
            y, groups, weights, metric, relevance_threshold, metrics.check_no_relevant(no_relevant)
        )
    if task == "regression" and metric == "mape":
        return weights[y > 0]
    return weights


def _whole_metric(
    task: str, metric: str, threshold: float
) -> Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]:
    """The (weighted) metric on a resampled set of rows, for metrics that are not means over
    units."""

    def binary(y: np.ndarray, out: np.ndarray, w: np.ndarray | None) -> float:
        return metrics.binary_metrics(y.astype(np.int64), out, threshold, w)[metric]

    def multiclass(y: np.ndarray, out: np.ndarray, w: np.ndarray | None) -> float:
        return metrics.multiclass_metrics(y.astype(np.int64), out, w)[metric]

    def regression(y: np.ndarray, out: np.ndarray, w: np.ndarray | None) -> float:
        return metrics.regression_metrics(y, out, w)[metric]

    if task == "regression" and metric in ("rmse", "r2"):
        return regression
    if task == "binary" and metric in ("auc", "f1"):
        return binary
    if task == "multiclass" and metric == "macro_f1":
        return multiclass
    raise ValueError(f"no bootstrap for metric {metric!r} on task {task!r}")


def _weighted_means(values: np.ndarray, w: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    """The (weighted) mean of ``values`` over each row of resample indices ``idx``; NaN for a
    resample whose units all have weight 0."""
    if w is None:
        return np.asarray(values[idx].mean(axis=1))
    ws = w[idx]
    total = ws.sum(axis=1)
    sums = (ws * values[idx]).sum(axis=1)
    return np.divide(sums, total, out=np.full(len(total), np.nan), where=total > 0)


def _defined(task: str, y: np.ndarray, w: np.ndarray | None) -> bool:
    """Whether a whole metric is defined on resampled labels ``y`` (weights ``w``)."""
    if w is not None and not w.any():
        return False
    if task == "binary":  # AUC needs both classes (with some weight)
        pos = y == 1
        if w is None:
            return bool(pos.any() and (~pos).any())
        return bool(w[pos].sum() > 0 and w[~pos].sum() > 0)
    return True


def paired_bootstrap(
    task: str,
    metric: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    groups: np.ndarray | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    relevance_threshold: float = 1.0,
    threshold: float = 0.5,
    no_relevant: metrics.NoRelevant = "one",
    weights: np.ndarray | None = None,
) -> tuple[float, float, float, str, int]:
    """(improvement, low, high, unit, units): the challenger's improvement over the champion on
    the same rows (positive = better, in the metric's direction) and its percentile interval.
    ``weights`` are row weights (ranking: constant within a query); ``no_relevant`` is the
    ranking convention for queries without a relevant row (components.metrics)."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100, got {resamples}")
    y = np.asarray(y, dtype=np.float64)
    if len(challenger) != len(y) or len(champion) != len(y):
        raise ValueError("challenger, champion and labels must hold the same rows")
    w = metrics.check_weights(weights, len(y))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    rng = np.random.default_rng(seed)
    opts = (relevance_threshold, threshold, no_relevant)
    a = _per_unit(task, metric, y, challenger, groups, *opts)
    if a is not None:
        b = _per_unit(task, metric, y, champion, groups, *opts)
        assert b is not None
        uw = _unit_weights(task, metric, y, groups, w, relevance_threshold, no_relevant)
        if uw is not None and uw.sum() <= 0:
            raise ValueError(f"{metric}: every unit it counts has weight 0")
        diff = sign * (a - b)
        n = len(diff)
        point = float(np.average(diff, weights=uw))
        boots = np.concatenate(
            [
                _weighted_means(diff, uw, rng.integers(0, n, size=(min(_CHUNK, resamples - i), n)))
                for i in range(0, resamples, _CHUNK)
            ]
        )
        boots = boots[~np.isnan(boots)]  # resamples of weightless units only: no metric
        unit = task_info(task).unit
    else:
        fn = _whole_metric(task, metric, threshold)
        n = len(y)
        point = sign * (fn(y, challenger, w) - fn(y, champion, w))
        values = []
        for _ in range(resamples):
            idx = rng.integers(0, n, size=n)
            yy, ww = y[idx], (None if w is None else w[idx])
            if not _defined(task, yy, ww):
                continue  # e.g. one class only: AUC undefined on this resample
            values.append(sign * (fn(yy, challenger[idx], ww) - fn(yy, champion[idx], ww)))
        boots = np.asarray(values)
        unit = "rows"
    if len(boots) == 0:
        raise ValueError(f"{metric}: the metric is undefined on every resample of the {n} {unit}")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return point, float(low), float(high), unit, n


def decide(
    task: str,
    metric: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    groups: np.ndarray | None = None,
    min_improvement: float = 0.0,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    relevance_threshold: float = 1.0,
    threshold: float = 0.5,
    champion_name: str = "production",
    no_relevant: metrics.NoRelevant = "one",
    weights: np.ndarray | None = None,
) -> GateDecision:
    """Promote the challenger if there is no champion, or if the lower bound of the interval of
    its improvement exceeds ``min_improvement``; otherwise keep the champion (called
    ``champion_name`` in the reason) and say why. ``weights`` (row weights; ranking: one per
    query) and ``no_relevant`` are as in ``paired_bootstrap``."""
    kwargs: dict[str, Any] = {
        "relevance_threshold": relevance_threshold,
        "threshold": threshold,
        "no_relevant": no_relevant,
        "weights": weights,
    }
    value = _value(task, metric, y, challenger, groups, **kwargs)
    if champion is None:
        return GateDecision(
            metric=metric,
            unit=task_info(task).unit,
            units=0,
            challenger=value,
            champion=None,
            improvement=None,
            low=None,
            high=None,
            confidence=confidence,
            min_improvement=min_improvement,
            resamples=0,
            promote=True,
            reason="no production version yet: the first model is promoted",
        )
    point, low, high, unit, units = paired_bootstrap(
        task, metric, y, challenger, champion, groups, resamples, confidence, seed, **kwargs
    )
    pct = f"{100 * confidence:g}%"
    interval = f"{point:+.4f} ({pct} interval {low:+.4f} .. {high:+.4f}, {units} {unit})"
    if low > min_improvement:
        promote, reason = (
            True,
            (
                f"better on {metric} by {interval}: the lower bound exceeds min_improvement "
                f"{min_improvement:g}"
            ),
        )
    elif high < 0:
        promote, reason = False, f"worse on {metric} by {interval}: {champion_name} stays"
    else:
        promote, reason = (
            False,
            (
                f"not confidently better on {metric}: {interval}; the lower bound does not exceed "
                f"min_improvement {min_improvement:g}, so {champion_name} stays"
            ),
        )
    return GateDecision(
        metric=metric,
        unit=unit,
        units=units,
        challenger=value,
        champion=_value(task, metric, y, champion, groups, **kwargs),
        improvement=point,
        low=low,
        high=high,
        confidence=confidence,
        min_improvement=min_improvement,
        resamples=resamples,
        promote=promote,
        reason=reason,
    )


def _value(
    task: str,
    metric: str,
    y: np.ndarray,
    out: np.ndarray,
    groups: np.ndarray | None,
    relevance_threshold: float,
    threshold: float,
    no_relevant: str = "one",
    weights: np.ndarray | None = None,
) -> float:
    """The (weighted) metric of one model's outputs, as the bootstrap computes it."""
    yy = np.asarray(y, np.float64)
    w = metrics.check_weights(weights, len(yy))
    per = _per_unit(task, metric, yy, out, groups, relevance_threshold, threshold, no_relevant)
    if per is not None:
        uw = _unit_weights(task, metric, yy, groups, w, relevance_threshold, no_relevant)
        if uw is not None and uw.sum() <= 0:
            raise ValueError(f"{metric}: every unit it counts has weight 0")
        return float(np.average(per, weights=uw))
    return _whole_metric(task, metric, threshold)(yy, out, w)

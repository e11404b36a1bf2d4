"""Champion/challenger gate: a paired bootstrap of the metric difference on the same test rows.

Both models score the same test split. The unit of resampling is what the data is made of:
queries for ranking (a query's rows stay together), rows for classification. Metrics that are
means over units (NDCG@k, MAP@k, MRR per query; logloss and accuracy per row) are bootstrapped
from the per-unit differences, which is exact and fast; the others (AUC, F1, macro-F1) are
recomputed on every resample. The challenger is promoted only when the lower end of the
confidence interval of its improvement exceeds ``min_improvement``.
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
) -> np.ndarray | None:
    """Per-unit values whose mean is the metric, or None when the metric does not decompose."""
    if task_info(task).grouped:
        if groups is None:
            raise ValueError("ranking needs query ids")
        return metrics.per_query(y, out, groups, metric, relevance_threshold)
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


def _whole_metric(
    task: str, metric: str, threshold: float
) -> Callable[[np.ndarray, np.ndarray], float]:
    """The metric on a (resampled) set of rows, for metrics that are not means over units."""

    def binary(y: np.ndarray, out: np.ndarray) -> float:
        return metrics.binary_metrics(y.astype(np.int64), out, threshold=threshold)[metric]

    def multiclass(y: np.ndarray, out: np.ndarray) -> float:
        return metrics.multiclass_metrics(y.astype(np.int64), out)[metric]

    def rmse(y: np.ndarray, out: np.ndarray) -> float:
        return float(np.sqrt(np.mean((out - y) ** 2)))

    def r2(y: np.ndarray, out: np.ndarray) -> float:
        return metrics.regression_metrics(y, out)["r2"]

    if task == "regression" and metric in ("rmse", "r2"):
        return rmse if metric == "rmse" else r2
    if task == "binary" and metric in ("auc", "f1"):
        return binary
    if task == "multiclass" and metric == "macro_f1":
        return multiclass
    raise ValueError(f"no bootstrap for metric {metric!r} on task {task!r}")


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
) -> tuple[float, float, float, str, int]:
    """(improvement, low, high, unit, units): the challenger's improvement over the champion on
    the same rows (positive = better, in the metric's direction) and its percentile interval."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100, got {resamples}")
    y = np.asarray(y, dtype=np.float64)
    if len(challenger) != len(y) or len(champion) != len(y):
        raise ValueError("challenger, champion and labels must hold the same rows")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    rng = np.random.default_rng(seed)
    a = _per_unit(task, metric, y, challenger, groups, relevance_threshold, threshold)
    if a is not None:
        b = _per_unit(task, metric, y, champion, groups, relevance_threshold, threshold)
        assert b is not None
        diff = sign * (a - b)
        n = len(diff)
        point = float(diff.mean())
        boots = np.concatenate(
            [
                diff[rng.integers(0, n, size=(min(_CHUNK, resamples - i), n))].mean(axis=1)
                for i in range(0, resamples, _CHUNK)
            ]
        )
        unit = task_info(task).unit
    else:
        fn = _whole_metric(task, metric, threshold)
        n = len(y)
        point = sign * (fn(y, challenger) - fn(y, champion))
        values = []
        for _ in range(resamples):
            idx = rng.integers(0, n, size=n)
            yy = y[idx]
            if task == "binary" and (yy.min() == yy.max()):
                continue  # one class only: AUC undefined on this resample
            values.append(sign * (fn(yy, challenger[idx]) - fn(yy, champion[idx])))
        boots = np.asarray(values)
        unit = "rows"
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
) -> GateDecision:
    """Promote the challenger if there is no champion, or if the lower bound of the interval of
    its improvement exceeds ``min_improvement``; otherwise keep the champion (called
    ``champion_name`` in the reason) and say why."""
    kwargs = {"relevance_threshold": relevance_threshold, "threshold": threshold}
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
) -> float:
    yy = np.asarray(y, np.float64)
    per = _per_unit(task, metric, yy, out, groups, relevance_threshold, threshold)
    if per is not None:
        return float(per.mean())
    return _whole_metric(task, metric, threshold)(yy, out)

"""Metrics of a scored split, and the trivial baseline a model must clearly beat.

All metrics are computed once over every row of the split (components.metrics); nothing is
averaged per shard or dropped to equalise partitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from components import metrics
from components.hashing import unit_interval
from components.rule_models import filtered_scores
from components.tasks import task_info


def without_guardrails(scored: pd.DataFrame) -> pd.DataFrame | None:
    """The same frame with the model's own outputs (``raw_*``, before guardrails) as its output
    columns, or None when no guardrail ran."""
    raw = [str(c) for c in scored.columns if str(c).startswith("raw_")]
    if not raw:
        return None
    own = [c.removeprefix("raw_") for c in raw]
    frame = scored.drop(columns=[*own, "filtered"], errors="ignore")
    return frame.rename(columns=dict(zip(raw, own, strict=True)))


def model_outputs(scored: pd.DataFrame, task: str) -> np.ndarray:
    """A scored frame's model output as float64: the ``(n, K)`` class probabilities of a task
    with ``proba`` (columns ``proba_0..proba_{K-1}``), else the ``score`` column. For a grouped
    task, rows that a guardrail filter dropped (a ``filtered`` column) score below every kept
    row, as they are never shown."""
    if task_info(task).proba:
        cols = sorted(
            (str(c) for c in scored.columns if str(c).startswith("proba_")),
            key=lambda c: int(c.removeprefix("proba_")),
        )
        return scored[cols].to_numpy(dtype=np.float64)
    scores = scored["score"].to_numpy(dtype=np.float64)
    if task_info(task).grouped and "filtered" in scored:
        scores = filtered_scores(scores, scored["filtered"].to_numpy(dtype=bool))
    return scores


def evaluate(
    task: str,
    scored: pd.DataFrame,
    label: str,
    ks: Sequence[int] = (1, 3, 5, 10),
    relevance_threshold: float = 1.0,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Metrics for a frame holding the label, the model output columns and (ranking) ``_group``.

    The output is read by ``model_outputs``: ranking rows that a guardrail filter dropped rank
    below every kept row of their query. Each task has its own metric function.
    """
    y = scored[label].to_numpy(dtype=np.float64)
    out = model_outputs(scored, task)
    if task == "binary":
        return metrics.binary_metrics(y.astype(np.int64), out, threshold=threshold)
    if task == "multiclass":
        return metrics.multiclass_metrics(y.astype(np.int64), out)
    if task == "regression":
        return metrics.regression_metrics(y, out)
    return metrics.ranking_metrics(
        y,
        out,
        scored["_group"].to_numpy(),
        ks=tuple(ks),
        threshold=relevance_threshold,
    )


def baseline(
    task: str,
    scored: pd.DataFrame,
    label: str,
    train_label_mean: float,
    num_classes: int | None = None,
    **eval_kwargs: Any,
) -> dict[str, float]:
    """The same metrics for a model that knows nothing about the features (``evaluate``'s kwargs).

    The task's ``baseline`` (components.tasks) says which: ``label_mean`` (binary: every row
    gets the training base rate; regression: the training label mean); ``uniform`` (multiclass:
    the training class frequencies are not known here, so uniform probabilities, the accuracy
    of a constant guess); ``random`` (ranking: a random order seeded by row key, the usual
    reference for NDCG).
    """
    n = len(scored)
    frame = scored[[label] + (["_group"] if "_group" in scored else [])].copy()
    kind = task_info(task).baseline
    if kind == "label_mean":
        frame["score"] = np.full(n, train_label_mean)
    elif kind == "uniform":
        k = int(num_classes or 2)
        for c in range(k):
            frame[f"proba_{c}"] = 1.0 / k
    else:
        frame["score"] = unit_interval(scored["_row_key"].to_numpy(), seed=12345)
    return evaluate(task, frame, label, **eval_kwargs)

"""Metrics of a scored split, and the trivial baseline a model must clearly beat.

All metrics are computed once over every row of the split (components.metrics); nothing is
averaged per shard or dropped to equalise partitions. ``evaluate`` takes the whole split as one
frame; ``partial`` / ``merge`` / ``finish`` compute the same metrics block by block
(components.metric_parts: each block of scored rows gives a small part, parts are merged on the
driver), and ``evaluate_blocks`` is that loop over blocks in memory. Ranking blocks must hold
whole queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from components import metric_parts, metrics
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


def weights_of(scored: pd.DataFrame, weight: str | None) -> np.ndarray | None:
    """The row weights in column ``weight`` of a scored frame (None when ``weight`` is None); a
    ValueError names the column when it is missing or not numeric."""
    if weight is None:
        return None
    if weight not in scored:
        raise ValueError(f"weight column {weight!r} is not in the scored frame")
    try:
        return scored[weight].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"weight column {weight!r} is not numeric: {e}") from e


def evaluate(
    task: str,
    scored: pd.DataFrame,
    label: str,
    ks: Sequence[int] = (1, 3, 5, 10),
    relevance_threshold: float = 1.0,
    threshold: float = 0.5,
    no_relevant: metrics.NoRelevant = "one",
    weight: str | None = None,
) -> dict[str, float]:
    """Metrics for a frame holding the label, the model output columns and (ranking) ``_group``.

    The output is read by ``model_outputs``: ranking rows that a guardrail filter dropped rank
    below every kept row of their query. Each task has its own metric function. ``weight``
    names a column of row weights (ranking: constant within a query) that every metric then
    uses; ``no_relevant`` says how ranking metrics count a query without a relevant row.
    """
    y = scored[label].to_numpy(dtype=np.float64)
    out = model_outputs(scored, task)
    w = weights_of(scored, weight)
    if task == "binary":
        return metrics.binary_metrics(y.astype(np.int64), out, threshold=threshold, weights=w)
    if task == "multiclass":
        return metrics.multiclass_metrics(y.astype(np.int64), out, weights=w)
    if task == "regression":
        return metrics.regression_metrics(y, out, weights=w)
    return metrics.ranking_metrics(
        y,
        out,
        scored["_group"].to_numpy(),
        ks=tuple(ks),
        threshold=relevance_threshold,
        no_relevant=no_relevant,
        weights=w,
    )


def partial(
    task: str,
    scored: pd.DataFrame,
    label: str,
    ks: Sequence[int] = (1, 3, 5, 10),
    relevance_threshold: float = 1.0,
    threshold: float = 0.5,
    no_relevant: metrics.NoRelevant = "one",
    weight: str | None = None,
    grid: metric_parts.AucGrid | None = None,
) -> metric_parts.Part:
    """One block's part of ``evaluate`` (the same arguments; ``grid``: the AUC grid, from
    ``metric_parts.refine`` on a later pass). A ranking block must hold whole queries."""
    y = scored[label].to_numpy(dtype=np.float64)
    groups = scored["_group"].to_numpy() if task_info(task).grouped else None
    return metric_parts.partial(
        task,
        y,
        model_outputs(scored, task),
        groups,
        weights_of(scored, weight),
        ks=tuple(ks),
        relevance_threshold=relevance_threshold,
        threshold=threshold,
        no_relevant=no_relevant,
        grid=grid,
    )


def merge(parts: Iterable[metric_parts.Part]) -> metric_parts.Part:
    """One part from the parts of several blocks."""
    return metric_parts.merge(parts)


def finish(part: metric_parts.Part) -> dict[str, float]:
    """The metrics of a merged part: ``evaluate``'s dict (AUC within ``metric_parts.auc_bound``
    of the exact value)."""
    return metric_parts.finish(part)


def evaluate_blocks(
    task: str,
    blocks: Callable[[], Iterable[pd.DataFrame]],
    label: str,
    tolerance: float = metric_parts.AUC_TOLERANCE,
    gather: Callable[[Any], Sequence[Any]] = metric_parts.alone,
    **eval_kwargs: Any,
) -> dict[str, float]:
    """``evaluate`` over the blocks ``blocks()`` yields (called again for each AUC refinement
    pass), part by part: what a distributed evaluation does, on frames in memory. ``gather``:
    see ``metric_parts.metrics_of_blocks`` (processes holding a share of the blocks each)."""

    def rows() -> Iterable[metric_parts.Block]:
        for frame in blocks():
            y = frame[label].to_numpy(dtype=np.float64)
            groups = frame["_group"].to_numpy() if task_info(task).grouped else None
            yield (
                y,
                model_outputs(frame, task),
                groups,
                weights_of(frame, eval_kwargs.get("weight")),
            )

    options = {k: v for k, v in eval_kwargs.items() if k != "weight"}
    if "ks" in options:
        options["ks"] = tuple(options["ks"])
    values, _ = metric_parts.metrics_of_blocks(task, rows, tolerance, gather, **options)
    return values


def conventions(
    task: str, no_relevant: str = "one", weight: str | None = None, **_: Any
) -> dict[str, str]:
    """How ``evaluate`` with these keyword arguments computed its metrics, for a report: for a
    grouped task what a query without a relevant row counts in NDCG and in MAP/MRR (``one``,
    ``zero`` or ``skip``, components.metrics), and the weight column when there is one. Other
    keyword arguments of ``evaluate`` are accepted and ignored, so ``eval_kwargs`` pass as is."""
    out: dict[str, str] = {}
    if task_info(task).grouped:
        nr = metrics.check_no_relevant(no_relevant)
        out["ndcg_no_relevant"] = nr
        out["map_no_relevant"] = "skip" if nr == "skip" else "zero"
        out["mrr_no_relevant"] = "skip" if nr == "skip" else "zero"
    if weight is not None:
        out["weight"] = weight
    return out


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
    frame = baseline_frame(task, scored, label, train_label_mean, num_classes, **eval_kwargs)
    return evaluate(task, frame, label, **eval_kwargs)


def baseline_frame(
    task: str,
    scored: pd.DataFrame,
    label: str,
    train_label_mean: float,
    num_classes: int | None = None,
    **eval_kwargs: Any,
) -> pd.DataFrame:
    """The scored frame of ``baseline``'s featureless model on the same rows; row by row, so
    it can be built per block (``partial`` of it gives the baseline's part)."""
    n = len(scored)
    weight = eval_kwargs.get("weight")
    keep = [label] + (["_group"] if "_group" in scored else []) + ([weight] if weight else [])
    frame = scored[keep].copy()
    kind = task_info(task).baseline
    if kind == "label_mean":
        frame["score"] = np.full(n, train_label_mean)
    elif kind == "uniform":
        k = int(num_classes or 2)
        for c in range(k):
            frame[f"proba_{c}"] = 1.0 / k
    else:
        frame["score"] = unit_interval(scored["_row_key"].to_numpy(), seed=12345)
    return frame

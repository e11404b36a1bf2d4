"""Exact evaluation metrics in plain numpy (no scikit-learn, no Ray).

Every metric is computed exactly over all rows it is given: nothing is sampled, sharded or
approximated. Inputs are validated; a problem raises ``ValueError`` naming the argument.

Conventions
-----------
General

* Inputs are 1-D array-likes of equal, non-zero length (``proba`` is ``(n, K)``). Scores and
  probabilities must be finite; probabilities must lie in ``[0, 1]``.
* Binary labels are 0/1 (or bool); the positive class is 1. Multiclass labels are integer
  class ids ``0..K-1``.
* ``weights`` (optional, every metric): one value per row, finite, >= 0 and not all zero.
  Each mean becomes a weighted mean and each count a sum of weights, as scikit-learn's
  ``sample_weight`` (tested against it). Ranking takes one weight per query: every row of a
  query must carry the same weight (a ValueError names the first query, in ascending id order,
  with two), and each ranking metric is the weighted mean over queries (LightGBM's query
  weights).

Classification

* ``roc_auc``: the Mann-Whitney statistic with average ranks for tied scores, i.e. ties count
  one half (equal to ``sklearn.metrics.roc_auc_score``); weighted, every (positive, negative)
  pair counts the product of their weights, which is the trapezoid area under the weighted ROC
  curve (``roc_auc_score(..., sample_weight=w)``, ties included). Undefined, so a
  ``ValueError``, when ``y_true`` holds only one class (or one class has total weight 0).
* ``log_loss``: natural log, ``p`` = P(class 1) clipped to ``[1e-15, 1 - 1e-15]``.
* ``multiclass_log_loss``: ``proba`` clipped to ``[1e-15, 1 - 1e-15]`` and each row then
  renormalised to sum to 1 (the classic scikit-learn rule; scikit-learn >= 1.5 clips at the
  dtype's machine epsilon and does not renormalise, which agrees whenever rows sum to 1).
* ``f1_binary``: F1 of class 1; 0.0 when there are neither predicted nor true positives.
* ``macro_f1``: unweighted mean of per-class F1 over the classes ``0..K-1`` that occur in
  ``y_true`` or ``y_pred`` (scikit-learn ``f1_score(average="macro")`` with ``labels=None``);
  with weights a class occurs by its rows whatever their weight, and one of total weight 0 has
  F1 0 (scikit-learn's ``zero_division``).
* ``binary_metrics`` predicts class 1 when ``p >= threshold``; ``multiclass_metrics`` predicts
  ``argmax(proba)`` (the lowest class id among equal maxima).

Ranking

* ``groups`` is an integer (or string) array of query ids. The rows of a query need not be
  contiguous or sorted: rows are ordered by a stable sort on (query, -score, relevance).
* Each metric is the mean over queries (every query weighs the same, whatever its size, or
  its query weight). ``k=None`` means all rows of the query.
* NDCG@k: gain ``2**rel - 1``, discount ``1 / log2(rank + 1)`` (rank 1-based), ideal DCG from the
  query's true relevances sorted descending, both cut at k. Tied scores: the gains of each tie
  block are averaged and the mean is given to every position of the block; this is the expected
  DCG over random orderings of the tied rows, equal to ``sklearn.metrics.ndcg_score`` with
  ``ignore_ties=False``. Relevances must be >= 0.
* MAP@k: a row is relevant when ``relevance >= threshold``.
  ``AP@k = sum_{i <= k} precision@i * rel_i / min(k, R)`` with R the number of relevant rows of
  the query. ``map`` (``k=None``) is full MAP: ``AP = sum_i precision@i * rel_i / R`` over all
  rows of the query.
* MRR: ``1 / rank`` of the first relevant row (``relevance >= threshold``).
* A query with no relevant row (``no_relevant``; for NDCG: ideal DCG 0, no row with relevance
  > 0; for MAP and MRR: no row with ``relevance >= threshold``, R = 0):

  ==========  ==========================  ====================================
  option      NDCG of such a query        MAP@k, MAP, MRR of such a query
  ==========  ==========================  ====================================
  ``one``     1 (XGBoost, LightGBM)       0
  ``zero``    0 (the LETOR scripts)       0
  ``skip``    left out of the mean        left out of the mean
  ==========  ==========================  ====================================

  ``one`` is the default. MAP and MRR count such a query 0 under ``one`` too (there is no
  precision to average; XGBoost's and LightGBM's own ``map`` say 1 there). Which queries are
  left out depends on the relevances only, never on the scores, so two models scored on the
  same rows skip the same queries. When ``skip`` leaves out every query the metric is undefined
  and a ``ValueError`` says so (never NaN, which would silently lose every comparison).
  ``ranking_metrics`` reports ``queries`` and ``queries_no_relevant`` (NDCG's definition) so a
  report can say how many queries the convention touched.
* For MAP and MRR, ties in scores are broken pessimistically: among equal scores the less
  relevant rows come first, so a model gets no credit from ties (a constant score gives the
  worst possible MAP and MRR).
* Everything is vectorised with segment operations (one sort, cumulative sums, ``bincount``,
  ``np.add.reduceat``); there is no Python loop over queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, cast

import numpy as np
import numpy.typing as npt

from components import tasks

EPS = 1e-15
"""Probabilities are clipped to ``[EPS, 1 - EPS]`` before taking logs."""

LOWER_IS_BETTER: frozenset[str] = tasks.LOWER_IS_BETTER
"""Metrics where smaller is better (selection, early stopping and the gate read this): the
union of the tasks' ``lower_is_better`` in components.tasks."""

NoRelevant = Literal["one", "zero", "skip"]
NO_RELEVANT: tuple[str, ...] = ("one", "zero", "skip")
"""How a ranking metric counts a query without a relevant row (see the module docstring)."""


# --------------------------------------------------------------------------------------------
# validation helpers


def _vector(name: str, a: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> np.ndarray:
    """``a`` as a non-empty 1-D array (optionally converted to ``dtype``)."""
    try:
        arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot convert to a {dtype or ''} array: {e}") from e
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _finite(name: str, arr: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _floats(name: str, a: npt.ArrayLike) -> np.ndarray:
    """A finite, non-empty 1-D float64 array."""
    return _finite(name, _vector(name, a, np.float64))


def _probabilities(name: str, a: npt.ArrayLike) -> np.ndarray:
    arr = _floats(name, a)
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], got [{arr.min()}, {arr.max()}]"
        )
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"{' and '.join(lengths)} must have equal lengths, got {detail}")
    return next(iter(lengths.values()))


def _binary(name: str, a: npt.ArrayLike) -> np.ndarray:
    """0/1 (or bool) labels as a bool array (True = class 1)."""
    arr = _vector(name, a)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold binary labels 0/1, got dtype {arr.dtype}")
    is_one = arr == 1
    if not (is_one | (arr == 0)).all():
        bad = np.unique(arr[~(is_one | (arr == 0))])[:5]
        raise ValueError(f"{name} must hold binary labels 0/1, found {bad.tolist()}")
    return is_one


def _class_ids(name: str, a: npt.ArrayLike, num_classes: int) -> np.ndarray:
    """Integer class ids in ``0..num_classes-1`` as int64."""
    arr = _vector(name, a)
    if arr.dtype.kind not in "iubf":
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise ValueError(f"{name} must hold integer class ids, found non-integer values")
    ids = arr.astype(np.int64)
    if ids.min() < 0 or ids.max() >= num_classes:
        raise ValueError(
            f"{name} must hold class ids in 0..{num_classes - 1}, got [{ids.min()}, {ids.max()}]"
        )
    return ids


def _num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _proba_matrix(proba: npt.ArrayLike) -> np.ndarray:
    try:
        arr = np.asarray(proba, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"proba: cannot convert to a float array: {e}") from e
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"proba must be 2-D (n, K), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("proba is empty")
    _finite("proba", arr)
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(f"proba must hold probabilities in [0, 1], got [{arr.min()}, {arr.max()}]")
    return arr


def _check_k(name: str, k: int | None) -> int | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"{name} must be a positive int or None, got {k!r}")
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    return int(k)


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return t


def check_weights(weights: npt.ArrayLike | None, n: int) -> np.ndarray | None:
    """Row weights as float64 (1-D, finite, >= 0, not all zero, one per row), or None."""
    if weights is None:
        return None
    w = _floats("weights", weights)
    if len(w) != n:
        raise ValueError(f"weights must hold one value per row: got {len(w)} for {n} rows")
    if w.min() < 0:
        row = int(np.argmin(w))
        raise ValueError(f"weights must be >= 0, found {w[row]:g} at row {row}")
    if not w.any():
        raise ValueError("weights are all zero: no row counts")
    return w


def _total(mask: np.ndarray, w: np.ndarray | None) -> float:
    """How many rows ``mask`` selects, or their total weight."""
    return float(np.count_nonzero(mask)) if w is None else float(w[mask].sum())


def check_no_relevant(no_relevant: str) -> NoRelevant:
    """``no_relevant`` itself when it is one of ``NO_RELEVANT``, else a ValueError."""
    if no_relevant not in NO_RELEVANT:
        raise ValueError(
            f"no_relevant must be one of {', '.join(NO_RELEVANT)}, got {no_relevant!r}"
        )
    return cast(NoRelevant, no_relevant)


# --------------------------------------------------------------------------------------------
# classification


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` ascending; tied values get the mean of their ranks."""
    n = len(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, n))
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(starts + (sizes + 1) / 2.0, sizes)
    return ranks


def _weighted_auc(pos: np.ndarray, score: np.ndarray, w: np.ndarray) -> float:
    """Weighted Mann-Whitney: each (positive, negative) pair counts ``w_pos * w_neg``, a tied
    pair half; over tie blocks of the sorted scores, so it is the ROC curve's trapezoid area."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    new = np.empty(len(s), dtype=bool)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    wp = np.add.reduceat(np.where(pos[order], w[order], 0.0), starts)
    wn = np.add.reduceat(np.where(pos[order], 0.0, w[order]), starts)
    below = np.cumsum(wn) - wn  # negative weight strictly below each block
    return float(np.sum(wp * (below + 0.5 * wn)) / (wp.sum() * wn.sum()))


def roc_auc(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> float:
    """Area under the ROC curve (binary, ties count one half, optional row weights);
    ValueError if one class only (or one class has total weight 0)."""
    pos = _binary("y_true", y_true)
    score = _floats("y_score", y_score)
    n = _same_length(y_true=pos, y_score=score)
    w = check_weights(weights, n)
    w_pos, w_neg = _total(pos, w), _total(~pos, w)
    if w_pos == 0 or w_neg == 0:
        only = 1 if w_pos else 0
        what = "contains only one class" if w is None else "has positive weight in one class only"
        raise ValueError(
            f"roc_auc: y_true {what} ({only}); AUC is undefined without "
            "both positive and negative rows"
        )
    if w is not None:
        return _weighted_auc(pos, score, w)
    rank_sum = float(_average_ranks(score)[pos].sum())
    return (rank_sum - w_pos * (w_pos + 1) / 2.0) / (w_pos * w_neg)


def log_loss(
    y_true: npt.ArrayLike, p: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> float:
    """Mean binary cross-entropy (natural log, weighted mean with ``weights``); ``p`` = P(class
    1), clipped to [EPS, 1-EPS]."""
    pos = _binary("y_true", y_true)
    prob = _probabilities("p", p)
    w = check_weights(weights, _same_length(y_true=pos, p=prob))
    pc = np.clip(prob, EPS, 1.0 - EPS)
    return float(-np.average(np.where(pos, np.log(pc), np.log1p(-pc)), weights=w))


def accuracy(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> float:
    """Fraction (or weight share) of rows where ``y_pred == y_true``."""
    t = _vector("y_true", y_true)
    p = _vector("y_pred", y_pred)
    w = check_weights(weights, _same_length(y_true=t, y_pred=p))
    return float(np.average(t == p, weights=w))


def f1_binary(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> float:
    """F1 of class 1 from 0/1 labels (counts or weights); 0.0 when there are no predicted and
    no true positives."""
    t = _binary("y_true", y_true)
    p = _binary("y_pred", y_pred)
    w = check_weights(weights, _same_length(y_true=t, y_pred=p))
    tp = _total(t & p, w)
    denom = _total(t, w) + _total(p, w)
    return 0.0 if denom == 0 else 2.0 * tp / denom


def multiclass_log_loss(
    y_true: npt.ArrayLike, proba: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> float:
    """Mean (or weighted mean) cross-entropy of class ids ``0..K-1`` under ``proba`` (n, K),
    clipped and renormalised."""
    prob = _proba_matrix(proba)
    y = _class_ids("y_true", y_true, prob.shape[1])
    w = check_weights(weights, _same_length(y_true=y, proba=prob))
    pc = np.clip(prob, EPS, 1.0 - EPS)
    pc /= pc.sum(axis=1, keepdims=True)
    return float(-np.average(np.log(pc[np.arange(len(y)), y]), weights=w))


def macro_f1(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    num_classes: int,
    weights: npt.ArrayLike | None = None,
) -> float:
    """Mean per-class F1 over the classes of ``0..K-1`` present in ``y_true`` or ``y_pred``
    (present by rows, whatever their weight; a present class with total weight 0 has F1 0)."""
    k = _num_classes(num_classes)
    t = _class_ids("y_true", y_true, k)
    p = _class_ids("y_pred", y_pred, k)
    w = check_weights(weights, _same_length(y_true=t, y_pred=p))
    hit = t == p
    tp = np.bincount(t[hit], weights=None if w is None else w[hit], minlength=k)
    support = np.bincount(t, weights=w, minlength=k) + np.bincount(p, weights=w, minlength=k)
    present = (np.bincount(t, minlength=k) + np.bincount(p, minlength=k)) > 0
    sup = support[present]
    f1 = np.divide(2.0 * tp[present], sup, out=np.zeros(len(sup)), where=sup > 0)
    return float(np.mean(f1))


def binary_metrics(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    threshold: float = 0.5,
    weights: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """``auc``, ``logloss``, ``accuracy`` and ``f1`` (class 1 predicted when ``p >= threshold``),
    each weighted by ``weights`` when given."""
    t = _binary("y_true", y_true)
    prob = _probabilities("p", p)
    w = check_weights(weights, _same_length(y_true=t, p=prob))
    pred = prob >= _check_threshold(threshold)
    return {
        "auc": roc_auc(t, prob, w),
        "logloss": log_loss(t, prob, w),
        "accuracy": accuracy(t, pred, w),
        "f1": f1_binary(t, pred, w),
    }


def multiclass_metrics(
    y_true: npt.ArrayLike, proba: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` and ``logloss`` (weighted by ``weights`` when given); the
    prediction is ``argmax(proba)``."""
    prob = _proba_matrix(proba)
    k = prob.shape[1]
    y = _class_ids("y_true", y_true, k)
    w = check_weights(weights, _same_length(y_true=y, proba=prob))
    pred = prob.argmax(axis=1)
    return {
        "accuracy": accuracy(y, pred, w),
        "macro_f1": macro_f1(y, pred, k, w),
        "logloss": multiclass_log_loss(y, prob, w),
    }


# --------------------------------------------------------------------------------------------
# regression


def regression_metrics(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> dict[str, float]:
    """``rmse``, ``mae``, ``r2`` and, when some label is positive, ``mape`` over those rows;
    with ``weights``, every mean is a weighted mean (as scikit-learn's ``sample_weight``).

    ``r2`` is ``1 - SSE / SST`` (``sklearn.metrics.r2_score``; weighted: ``sum w e^2`` over
    ``sum w (y - ybar_w)^2``); for a constant label it is 1.0 when every prediction is exact and
    0.0 otherwise (scikit-learn's ``force_finite``). ``mape`` is the mean of ``|y - p| / y`` over
    rows with ``y > 0`` (equal to ``sklearn.metrics.mean_absolute_percentage_error`` on those
    rows), as a fraction, not a percentage; rows with a zero label have no percentage error, and
    ``mape`` is left out when the positive rows have total weight 0.
    """
    y = _floats("y_true", y_true)
    p = _floats("y_pred", y_pred)
    w = check_weights(weights, _same_length(y_true=y, y_pred=p))
    err = p - y
    sq = err * err
    dev = y - np.average(y, weights=w)
    sse = float(np.sum(sq if w is None else w * sq))
    sst = float(np.sum(dev * dev if w is None else w * dev * dev))
    out = {
        "rmse": float(np.sqrt(np.average(sq, weights=w))),
        "mae": float(np.average(np.abs(err), weights=w)),
        "r2": (1.0 - sse / sst) if sst > 0 else (1.0 if sse == 0 else 0.0),
    }
    positive = y > 0
    if _total(positive, w) > 0:
        wp = None if w is None else w[positive]
        out["mape"] = float(np.average(np.abs(err[positive]) / y[positive], weights=wp))
    return out


# --------------------------------------------------------------------------------------------
# ranking


def _group_codes(groups: np.ndarray) -> np.ndarray:
    """Sortable query keys: integer ids as they are, anything else as codes from ``np.unique``."""
    kind = groups.dtype.kind
    if kind in "iub":
        return groups
    if kind == "f" and not np.isfinite(groups).all():
        raise ValueError("groups contains NaN or infinite query ids")
    if kind == "O" and all(isinstance(x, str) for x in groups):
        groups = groups.astype(str)  # a fixed-width unicode array sorts far faster than objects
    try:
        _, codes = np.unique(groups, return_inverse=True)
    except TypeError as e:
        raise ValueError(
            f"groups: query ids must be mutually comparable (all int or all str, no missing "
            f"values); got dtype {groups.dtype}: {e}"
        ) from e
    return codes.reshape(-1)


class _Ranking:
    """Rows ordered by (query, -score, relevance ascending), with per-query segment indices.

    The relevance-ascending tie-break is the pessimistic rule for MAP and MRR; NDCG averages
    over tie blocks, so the order inside a block does not matter for it.
    """

    def __init__(
        self,
        relevance: npt.ArrayLike,
        scores: npt.ArrayLike,
        groups: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
    ) -> None:
        rel = _floats("relevance", relevance)
        score = _floats("scores", scores)
        grp = _vector("groups", groups)
        n = _same_length(relevance=rel, scores=score, groups=grp)
        w = check_weights(weights, n)
        codes = _group_codes(grp)
        order = np.lexsort((rel, -score, codes))
        codes = codes[order]
        score = score[order]
        self.rel: np.ndarray = rel[order]
        new_query = np.empty(n, dtype=bool)
        new_query[0] = True
        np.not_equal(codes[1:], codes[:-1], out=new_query[1:])
        self.starts: np.ndarray = np.flatnonzero(new_query)
        self.sizes: np.ndarray = np.diff(np.append(self.starts, n))
        self.num_queries: int = len(self.starts)
        self.qid: np.ndarray = np.cumsum(new_query) - 1
        # the query ids in this (ascending) order, for callers that key per-query values
        self.ids: np.ndarray = grp[order[self.starts]]
        self.pos: np.ndarray = np.arange(n) - np.repeat(self.starts, self.sizes)
        new_tie = new_query.copy()
        new_tie[1:] |= score[1:] != score[:-1]
        self.tie_starts: np.ndarray = np.flatnonzero(new_tie)
        # one weight per query: every row of a query must carry it
        self.query_weight: np.ndarray | None = None
        if w is not None:
            w = w[order]
            low = np.minimum.reduceat(w, self.starts)
            high = np.maximum.reduceat(w, self.starts)
            mixed = np.flatnonzero(low != high)
            if len(mixed):
                q = int(mixed[0])
                qid = grp[order[self.starts[q]]]
                qid = qid.item() if isinstance(qid, np.generic) else qid  # 30, not np.int64(30)
                raise ValueError(
                    f"weights must be constant within a query (one weight per query): query "
                    f"{qid!r} has rows with weights {low[q]:g} and {high[q]:g}"
                )
            self.query_weight = low

    def check_counted(self, counted: np.ndarray | None, metric: str) -> None:
        """A ValueError when ``skip`` leaves no query to average over."""
        if counted is not None and not counted.any():
            raise ValueError(
                f"{metric} is undefined with no_relevant='skip': none of the "
                f"{self.num_queries} queries has a relevant row, so every query is skipped "
                "(count them with 'one' or 'zero' instead)"
            )

    def mean(self, values: np.ndarray, counted: np.ndarray | None, metric: str) -> float:
        """The (query-weighted) mean of per-query ``values`` over the ``counted`` queries."""
        w = self.query_weight
        self.check_counted(counted, metric)
        if counted is not None:
            values = values[counted]
            w = None if w is None else w[counted]
        if w is None:
            return float(values.mean())
        total = float(w.sum())
        if total <= 0:
            raise ValueError(f"{metric}: every query it counts has weight 0")
        return float(np.dot(w, values) / total)

    def per_query_sum(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.qid, weights=weights, minlength=self.num_queries)

    @cached_property
    def gain(self) -> np.ndarray:
        if self.rel.min() < 0:
            raise ValueError("relevance must be >= 0 for NDCG (gain 2**rel - 1)")
        gain = np.exp2(self.rel) - 1.0
        if not np.isfinite(gain).all():
            raise ValueError("relevance is too large: 2**rel - 1 overflows float64")
        return gain

    @cached_property
    def tie_averaged_gain(self) -> np.ndarray:
        """Each row's gain replaced by the mean gain of its (query, score) tie block."""
        sizes = np.diff(np.append(self.tie_starts, len(self.rel)))
        means = np.add.reduceat(self.gain, self.tie_starts) / sizes
        return np.repeat(means, sizes)

    @cached_property
    def ideal_gain(self) -> np.ndarray:
        """Gains sorted descending within each query (same segments as the ranked rows)."""
        return self.gain[np.lexsort((-self.rel, self.qid))]

    def discount(self, k: int | None) -> np.ndarray:
        disc = 1.0 / np.log2(self.pos + 2.0)
        if k is not None:
            disc[self.pos >= k] = 0.0
        return disc

    def hits(self, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(relevant row?, relevant rows up to and including this row, relevant rows per query)."""
        hit = (self.rel >= threshold).astype(np.int64)
        cum = np.cumsum(hit)
        before = cum[self.starts] - hit[self.starts]
        upto = cum - np.repeat(before, self.sizes)
        per_query = np.add.reduceat(hit, self.starts)
        return hit, upto, per_query


def _ndcg(r: _Ranking, k: int | None, no_relevant: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-query NDCG@k (queries in ascending group-id order) and which queries count (None:
    all); a query with ideal DCG 0 counts 1 (``one``), 0 (``zero``) or not at all (``skip``)."""
    disc = r.discount(k)
    dcg = r.per_query_sum(r.tie_averaged_gain * disc)
    idcg = r.per_query_sum(r.ideal_gain * disc)
    has_gain = idcg > 0
    ndcg = np.full(r.num_queries, 1.0 if no_relevant == "one" else 0.0)
    # tie averaging can round a hair above the ideal; the exact value never exceeds 1
    ndcg[has_gain] = np.minimum(dcg[has_gain] / idcg[has_gain], 1.0)
    return ndcg, (has_gain if no_relevant == "skip" else None)


def _map(r: _Ranking, k: int | None, hits: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Per-query AP@k (0 for a query without a relevant row)."""
    hit, upto, n_rel = hits
    contrib = hit * upto / (r.pos + 1.0)
    if k is not None:
        contrib[r.pos >= k] = 0.0
    num = r.per_query_sum(contrib)
    denom = n_rel if k is None else np.minimum(n_rel, k)
    return np.asarray(np.where(n_rel > 0, num / np.maximum(denom, 1), 0.0))


def _mrr(r: _Ranking, hits: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Per-query reciprocal rank of the first relevant row (0 when there is none)."""
    hit, upto, _ = hits
    first = (hit == 1) & (upto == 1)
    return r.per_query_sum(first / (r.pos + 1.0))


def _relevant(
    hits: tuple[np.ndarray, np.ndarray, np.ndarray], no_relevant: str
) -> np.ndarray | None:
    """The queries MAP and MRR count: those with a relevant row under ``skip``, else all."""
    return hits[2] > 0 if no_relevant == "skip" else None


def _query_values(
    r: _Ranking, metric: str, threshold: float, no_relevant: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-query values of ``metric`` and which queries count (None: all)."""
    name, _, cut = metric.partition("@")
    k = _check_k("metric cut-off", int(cut)) if cut else None
    nr = check_no_relevant(no_relevant)
    if name == "ndcg":
        return _ndcg(r, k, nr)
    hits = r.hits(_check_threshold(threshold))
    if name == "map":
        return _map(r, k, hits), _relevant(hits, nr)
    if name == "mrr" and not cut:
        return _mrr(r, hits), _relevant(hits, nr)
    raise ValueError(f"not a per-query ranking metric: {metric!r} (ndcg@k, map@k, map, mrr)")


@dataclass(frozen=True)
class QueryTable:
    """Per-query values of several ranking metrics from one sort (``query_table``).

    ``ids`` are the query ids in ascending order; for each metric, ``values[metric]`` holds one
    value per query of ``ids`` and ``counted[metric]`` says which queries its mean counts (all
    but, under ``no_relevant="skip"``, those without a relevant row). ``weight`` is the query
    weight (None without row weights) and ``has_gain`` marks the queries with a row of relevance
    > 0 (NDCG's definition of a query with a relevant row).
    """

    ids: np.ndarray
    values: dict[str, np.ndarray]
    counted: dict[str, np.ndarray]
    weight: np.ndarray | None
    has_gain: np.ndarray


def query_table(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    metric_names: Sequence[str],
    threshold: float = 1.0,
    no_relevant: NoRelevant = "one",
    weights: npt.ArrayLike | None = None,
) -> QueryTable:
    """Every query's value of each of ``metric_names`` (``ndcg@k``, ``map@k``, ``map``, ``mrr``),
    with the queries each metric counts; the weighted mean of ``values[m][counted[m]]`` by
    ``weight[counted[m]]`` is the metric as ``ranking_metrics`` gives it. Validation as there
    (one weight per query; a ValueError names the first query with two)."""
    r = _Ranking(relevance, scores, groups, weights)
    values: dict[str, np.ndarray] = {}
    counted: dict[str, np.ndarray] = {}
    everyone = np.ones(r.num_queries, dtype=bool)
    for name in metric_names:
        v, c = _query_values(r, name, threshold, no_relevant)
        values[name] = v
        counted[name] = everyone if c is None else c
    has_gain = r.per_query_sum((r.rel > 0).astype(np.float64)) > 0  # gain 2**rel - 1 > 0
    return QueryTable(r.ids, values, counted, r.query_weight, has_gain)


def per_query(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    metric: str,
    threshold: float = 1.0,
    no_relevant: NoRelevant = "one",
) -> np.ndarray:
    """One value per counted query of ``ndcg@k``, ``map@k``, ``map`` or ``mrr``, queries in
    ascending id order (with ``no_relevant="skip"``, the queries without a relevant row are left
    out).

    Their mean (weighted by ``query_weights``) is the metric as ``ranking_metrics`` gives it; two
    models scored on the same rows give aligned arrays (which queries count depends on the
    relevances only), which is what a paired comparison over queries needs.
    """
    r = _Ranking(relevance, scores, groups)
    values, counted = _query_values(r, metric, threshold, no_relevant)
    r.check_counted(counted, metric)
    return values if counted is None else values[counted]


def query_weights(
    relevance: npt.ArrayLike,
    groups: npt.ArrayLike,
    weights: npt.ArrayLike,
    metric: str,
    threshold: float = 1.0,
    no_relevant: NoRelevant = "one",
) -> np.ndarray:
    """The weight of each query ``per_query`` returns a value for, in the same order, from row
    ``weights`` that are constant within each query (ValueError naming the first query that has
    two)."""
    rel = _floats("relevance", relevance)
    r = _Ranking(rel, np.zeros(len(rel)), groups, weights)
    assert r.query_weight is not None
    _, counted = _query_values(r, metric, threshold, no_relevant)
    r.check_counted(counted, metric)
    return r.query_weight if counted is None else r.query_weight[counted]


def ndcg_at_k(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    k: int | None,
    no_relevant: NoRelevant = "one",
    weights: npt.ArrayLike | None = None,
) -> float:
    """Mean NDCG@k over queries (gain 2**rel - 1, tie-averaged; queries without a relevant row
    per ``no_relevant``; weighted by per-query ``weights``; see the module docstring)."""
    kk = _check_k("k", k)
    r = _Ranking(relevance, scores, groups, weights)
    values, counted = _ndcg(r, kk, check_no_relevant(no_relevant))
    return r.mean(values, counted, "ndcg" if kk is None else f"ndcg@{kk}")


def map_at_k(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    k: int | None,
    threshold: float = 1.0,
    no_relevant: NoRelevant = "one",
    weights: npt.ArrayLike | None = None,
) -> float:
    """Mean AP@k over queries (relevant: relevance >= threshold; pessimistic ties; ``k=None``
    is full MAP); a query without a relevant row counts 0, or is skipped with
    ``no_relevant="skip"``."""
    kk = _check_k("k", k)
    t = _check_threshold(threshold)
    r = _Ranking(relevance, scores, groups, weights)
    hits = r.hits(t)
    return r.mean(
        _map(r, kk, hits),
        _relevant(hits, check_no_relevant(no_relevant)),
        "map" if kk is None else f"map@{kk}",
    )


def mrr(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    threshold: float = 1.0,
    no_relevant: NoRelevant = "one",
    weights: npt.ArrayLike | None = None,
) -> float:
    """Mean reciprocal rank of the first relevant row (0 when none, or skipped with
    ``no_relevant="skip"``; pessimistic ties)."""
    t = _check_threshold(threshold)
    r = _Ranking(relevance, scores, groups, weights)
    hits = r.hits(t)
    return r.mean(_mrr(r, hits), _relevant(hits, check_no_relevant(no_relevant)), "mrr")


def ranking_metrics(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    ks: Sequence[int] = (1, 3, 5, 10),
    threshold: float = 1.0,
    no_relevant: NoRelevant = "one",
    weights: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """``ndcg@k`` for each k, ``map@max(ks)``, ``map`` (all rows), ``mrr``, from one sort; plus
    the counts ``queries`` and ``queries_no_relevant`` (queries with no row of relevance > 0)."""
    if len(ks) == 0:
        raise ValueError("ks must name at least one cut-off")
    cuts: list[int] = []
    for k in ks:
        kk = _check_k("ks", k)
        if kk is None:
            raise ValueError("ks must hold positive ints, got None")
        cuts.append(kk)
    t = _check_threshold(threshold)
    nr = check_no_relevant(no_relevant)
    r = _Ranking(relevance, scores, groups, weights)
    out: dict[str, float] = {}
    for k in cuts:
        values, counted = _ndcg(r, k, nr)
        out[f"ndcg@{k}"] = r.mean(values, counted, f"ndcg@{k}")
    hits = r.hits(t)
    relevant = _relevant(hits, nr)
    k_max = max(cuts)
    out[f"map@{k_max}"] = r.mean(_map(r, k_max, hits), relevant, f"map@{k_max}")
    out["map"] = r.mean(_map(r, None, hits), relevant, "map")
    out["mrr"] = r.mean(_mrr(r, hits), relevant, "mrr")
    out["queries"] = float(r.num_queries)
    out["queries_no_relevant"] = float(r.num_queries - np.count_nonzero(r.per_query_sum(r.gain)))
    return out

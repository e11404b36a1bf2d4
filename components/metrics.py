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

Classification

* ``roc_auc``: the Mann-Whitney statistic with average ranks for tied scores, i.e. ties count
  one half (equal to ``sklearn.metrics.roc_auc_score``). Undefined, so a ``ValueError``, when
  ``y_true`` holds only one class.
* ``log_loss``: natural log, ``p`` = P(class 1) clipped to ``[1e-15, 1 - 1e-15]``.
* ``multiclass_log_loss``: ``proba`` clipped to ``[1e-15, 1 - 1e-15]`` and each row then
  renormalised to sum to 1 (the classic scikit-learn rule; scikit-learn >= 1.5 clips at the
  dtype's machine epsilon and does not renormalise, which agrees whenever rows sum to 1).
* ``f1_binary``: F1 of class 1; 0.0 when there are neither predicted nor true positives.
* ``macro_f1``: unweighted mean of per-class F1 over the classes ``0..K-1`` that occur in
  ``y_true`` or ``y_pred`` (scikit-learn ``f1_score(average="macro")`` with ``labels=None``).
* ``binary_metrics`` predicts class 1 when ``p >= threshold``; ``multiclass_metrics`` predicts
  ``argmax(proba)`` (the lowest class id among equal maxima).

Ranking

* ``groups`` is an integer (or string) array of query ids. The rows of a query need not be
  contiguous or sorted: rows are ordered by a stable sort on (query, -score, relevance).
* Each metric is the unweighted mean over queries (every query weighs the same, whatever its
  size). ``k=None`` means all rows of the query.
* NDCG@k: gain ``2**rel - 1``, discount ``1 / log2(rank + 1)`` (rank 1-based), ideal DCG from the
  query's true relevances sorted descending, both cut at k. Tied scores: the gains of each tie
  block are averaged and the mean is given to every position of the block; this is the expected
  DCG over random orderings of the tied rows, equal to ``sklearn.metrics.ndcg_score`` with
  ``ignore_ties=False``. A query whose ideal DCG is 0 (no row with relevance > 0) counts
  ``empty_query_value`` (default 1.0, the XGBoost convention). Relevances must be >= 0.
* MAP@k: a row is relevant when ``relevance >= threshold``.
  ``AP@k = sum_{i <= k} precision@i * rel_i / min(k, R)`` with R the number of relevant rows of
  the query; a query with ``R = 0`` counts 0 and is included in the mean.
* MRR: ``1 / rank`` of the first relevant row (``relevance >= threshold``), 0 when there is none.
* For MAP and MRR, ties in scores are broken pessimistically: among equal scores the less
  relevant rows come first, so a model gets no credit from ties (a constant score gives the
  worst possible MAP and MRR).
* Everything is vectorised with segment operations (one sort, cumulative sums, ``bincount``,
  ``np.add.reduceat``); there is no Python loop over queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
import numpy.typing as npt

from components import tasks

EPS = 1e-15
"""Probabilities are clipped to ``[EPS, 1 - EPS]`` before taking logs."""

LOWER_IS_BETTER: frozenset[str] = tasks.LOWER_IS_BETTER
"""Metrics where smaller is better (selection, early stopping and the gate read this): the
union of the tasks' ``lower_is_better`` in components.tasks."""


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


def roc_auc(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """Area under the ROC curve (binary, ties count one half); ValueError if one class only."""
    pos = _binary("y_true", y_true)
    score = _floats("y_score", y_score)
    _same_length(y_true=pos, y_score=score)
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        only = 1 if n_pos else 0
        raise ValueError(
            f"roc_auc: y_true contains only one class ({only}); AUC is undefined without "
            "both positive and negative rows"
        )
    rank_sum = float(_average_ranks(score)[pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (float(n_pos) * float(n_neg))


def log_loss(y_true: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Mean binary cross-entropy (natural log); ``p`` = P(class 1), clipped to [EPS, 1-EPS]."""
    pos = _binary("y_true", y_true)
    prob = _probabilities("p", p)
    _same_length(y_true=pos, p=prob)
    pc = np.clip(prob, EPS, 1.0 - EPS)
    return float(-np.mean(np.where(pos, np.log(pc), np.log1p(-pc))))


def accuracy(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Fraction of rows where ``y_pred == y_true``."""
    t = _vector("y_true", y_true)
    p = _vector("y_pred", y_pred)
    _same_length(y_true=t, y_pred=p)
    return float(np.mean(t == p))


def f1_binary(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """F1 of class 1 from 0/1 labels; 0.0 when there are no predicted and no true positives."""
    t = _binary("y_true", y_true)
    p = _binary("y_pred", y_pred)
    _same_length(y_true=t, y_pred=p)
    tp = int(np.count_nonzero(t & p))
    denom = int(np.count_nonzero(t)) + int(np.count_nonzero(p))
    return 0.0 if denom == 0 else 2.0 * tp / denom


def multiclass_log_loss(y_true: npt.ArrayLike, proba: npt.ArrayLike) -> float:
    """Mean cross-entropy of class ids ``0..K-1`` under ``proba`` (n, K), clipped and renormalised."""
    prob = _proba_matrix(proba)
    y = _class_ids("y_true", y_true, prob.shape[1])
    _same_length(y_true=y, proba=prob)
    pc = np.clip(prob, EPS, 1.0 - EPS)
    pc /= pc.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(pc[np.arange(len(y)), y])))


def macro_f1(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int) -> float:
    """Mean per-class F1 over the classes of ``0..K-1`` present in ``y_true`` or ``y_pred``."""
    k = _num_classes(num_classes)
    t = _class_ids("y_true", y_true, k)
    p = _class_ids("y_pred", y_pred, k)
    _same_length(y_true=t, y_pred=p)
    tp = np.bincount(t[t == p], minlength=k)
    support = np.bincount(t, minlength=k) + np.bincount(p, minlength=k)
    present = support > 0
    return float(np.mean(2.0 * tp[present] / support[present]))


def binary_metrics(
    y_true: npt.ArrayLike, p: npt.ArrayLike, threshold: float = 0.5
) -> dict[str, float]:
    """``auc``, ``logloss``, ``accuracy`` and ``f1`` (class 1 predicted when ``p >= threshold``)."""
    t = _binary("y_true", y_true)
    prob = _probabilities("p", p)
    _same_length(y_true=t, p=prob)
    pred = prob >= _check_threshold(threshold)
    return {
        "auc": roc_auc(t, prob),
        "logloss": log_loss(t, prob),
        "accuracy": accuracy(t, pred),
        "f1": f1_binary(t, pred),
    }


def multiclass_metrics(y_true: npt.ArrayLike, proba: npt.ArrayLike) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` and ``logloss``; the prediction is ``argmax(proba)``."""
    prob = _proba_matrix(proba)
    k = prob.shape[1]
    y = _class_ids("y_true", y_true, k)
    _same_length(y_true=y, proba=prob)
    pred = prob.argmax(axis=1)
    return {
        "accuracy": accuracy(y, pred),
        "macro_f1": macro_f1(y, pred, k),
        "logloss": multiclass_log_loss(y, prob),
    }


# --------------------------------------------------------------------------------------------
# regression


def regression_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, float]:
    """``rmse``, ``mae``, ``r2`` and, when some label is positive, ``mape`` over those rows.

    ``r2`` is ``1 - SSE / SST`` (``sklearn.metrics.r2_score``); for a constant label it is 1.0
    when every prediction is exact and 0.0 otherwise (scikit-learn's ``force_finite``). ``mape`` is the mean of ``|y - p| / y`` over rows with
    ``y > 0`` (equal to ``sklearn.metrics.mean_absolute_percentage_error`` on those rows), as a
    fraction, not a percentage; rows with a zero label have no percentage error.
    """
    y = _floats("y_true", y_true)
    p = _floats("y_pred", y_pred)
    _same_length(y_true=y, y_pred=p)
    err = p - y
    sse = float(np.sum(err * err))
    sst = float(np.sum((y - y.mean()) ** 2))
    out = {
        "rmse": float(np.sqrt(sse / len(y))),
        "mae": float(np.mean(np.abs(err))),
        "r2": (1.0 - sse / sst) if sst > 0 else (1.0 if sse == 0 else 0.0),
    }
    positive = y > 0
    if positive.any():
        out["mape"] = float(np.mean(np.abs(err[positive]) / y[positive]))
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
        self, relevance: npt.ArrayLike, scores: npt.ArrayLike, groups: npt.ArrayLike
    ) -> None:
        rel = _floats("relevance", relevance)
        score = _floats("scores", scores)
        grp = _vector("groups", groups)
        n = _same_length(relevance=rel, scores=score, groups=grp)
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
        self.pos: np.ndarray = np.arange(n) - np.repeat(self.starts, self.sizes)
        new_tie = new_query.copy()
        new_tie[1:] |= score[1:] != score[:-1]
        self.tie_starts: np.ndarray = np.flatnonzero(new_tie)

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


def _ndcg(r: _Ranking, k: int | None, empty_query_value: float) -> np.ndarray:
    """Per-query NDCG@k, queries in ascending group-id order."""
    disc = r.discount(k)
    dcg = r.per_query_sum(r.tie_averaged_gain * disc)
    idcg = r.per_query_sum(r.ideal_gain * disc)
    has_gain = idcg > 0
    ndcg = np.full(r.num_queries, float(empty_query_value))
    # tie averaging can round a hair above the ideal; the exact value never exceeds 1
    ndcg[has_gain] = np.minimum(dcg[has_gain] / idcg[has_gain], 1.0)
    return ndcg


def _map(r: _Ranking, k: int | None, hits: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Per-query AP@k."""
    hit, upto, n_rel = hits
    contrib = hit * upto / (r.pos + 1.0)
    if k is not None:
        contrib[r.pos >= k] = 0.0
    num = r.per_query_sum(contrib)
    denom = n_rel if k is None else np.minimum(n_rel, k)
    return np.asarray(np.where(n_rel > 0, num / np.maximum(denom, 1), 0.0))


def _mrr(r: _Ranking, hits: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Per-query reciprocal rank of the first relevant row."""
    hit, upto, _ = hits
    first = (hit == 1) & (upto == 1)
    return r.per_query_sum(first / (r.pos + 1.0))


def per_query(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    metric: str,
    threshold: float = 1.0,
) -> np.ndarray:
    """One value per query of ``ndcg@k``, ``map@k`` or ``mrr``, queries in ascending id order.

    Their mean is the metric (as ``ranking_metrics`` gives it); two models scored on the same
    rows give aligned arrays, which is what a paired comparison over queries needs.
    """
    r = _Ranking(relevance, scores, groups)
    name, _, cut = metric.partition("@")
    k = _check_k("metric cut-off", int(cut)) if cut else None
    if name == "ndcg":
        return _ndcg(r, k, 1.0)
    t = _check_threshold(threshold)
    if name == "map":
        return _map(r, k, r.hits(t))
    if name == "mrr" and not cut:
        return _mrr(r, r.hits(t))
    raise ValueError(f"not a per-query ranking metric: {metric!r} (ndcg@k, map@k, mrr)")


def ndcg_at_k(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    k: int | None,
    empty_query_value: float = 1.0,
) -> float:
    """Mean NDCG@k over queries (gain 2**rel - 1, tie-averaged; see the module docstring)."""
    kk = _check_k("k", k)
    return float(_ndcg(_Ranking(relevance, scores, groups), kk, empty_query_value).mean())


def map_at_k(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    k: int | None,
    threshold: float = 1.0,
) -> float:
    """Mean AP@k over queries (relevant: relevance >= threshold; pessimistic ties)."""
    kk = _check_k("k", k)
    t = _check_threshold(threshold)
    r = _Ranking(relevance, scores, groups)
    return float(_map(r, kk, r.hits(t)).mean())


def mrr(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    threshold: float = 1.0,
) -> float:
    """Mean reciprocal rank of the first relevant row (0 when none; pessimistic ties)."""
    t = _check_threshold(threshold)
    r = _Ranking(relevance, scores, groups)
    return float(_mrr(r, r.hits(t)).mean())


def ranking_metrics(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    ks: Sequence[int] = (1, 3, 5, 10),
    threshold: float = 1.0,
) -> dict[str, float]:
    """``ndcg@k`` for each k, ``map@max(ks)``, ``mrr`` and ``queries`` (count), from one sort."""
    if len(ks) == 0:
        raise ValueError("ks must name at least one cut-off")
    cuts: list[int] = []
    for k in ks:
        kk = _check_k("ks", k)
        if kk is None:
            raise ValueError("ks must hold positive ints, got None")
        cuts.append(kk)
    t = _check_threshold(threshold)
    r = _Ranking(relevance, scores, groups)
    out = {f"ndcg@{k}": float(_ndcg(r, k, 1.0).mean()) for k in cuts}
    hits = r.hits(t)
    k_max = max(cuts)
    out[f"map@{k_max}"] = float(_map(r, k_max, hits).mean())
    out["mrr"] = float(_mrr(r, hits).mean())
    out["queries"] = float(r.num_queries)
    return out

"""Evaluation metrics as mergeable one-pass computations: ``partial`` -> ``merge`` -> ``finish``.

``partial(task, y, out, ...)`` turns one block of scored rows into a small state (a *part*),
``merge(parts)`` adds parts up in any order and grouping, and ``finish(part)`` gives the same
dict as the single-process function of components.metrics (``binary_metrics``,
``multiclass_metrics``, ``regression_metrics``, ``ranking_metrics``). A part's size does not grow
with the number of rows: it holds sums, per-class sums, per-metric sums over queries, and for
AUC a histogram of at most ``AUC_BINS`` (+ refinement cuts) bins. So blocks can be scored and
reduced where they are (Ray Data tasks) and only parts travel to the driver. The conventions
(ties, weights, ``no_relevant``, clipping) are those of components.metrics, and every value but
AUC equals the single-process one up to floating-point summation order (tested to 1e-9 on
random inputs with ties and weights).

Requirements on blocks

* Rows of one query must all be in the same block (ranking metrics are computed per query, and
  a query's rows must be ranked together): group by the query first. A query found in two parts
  is refused at merge time when its id is among the ``QUERY_SKETCH`` smallest id hashes of both
  (always when both blocks hold at most that many queries).
* Weights: as components.metrics (finite, >= 0; ranking: constant within a query); a block may
  have only zero weights, the whole set may not.

AUC from a histogram, with a bound

Scores (probabilities) are binned on the logit axis: ``AUC_BINS`` equal bins over
``[-AUC_SPAN, AUC_SPAN]`` (values beyond fall in the end bins), optionally subdivided by extra
cut points (``AucGrid.cuts``). Each bin keeps the weight of its positive and negative rows and
the smallest and largest score it holds. Pairs in different bins are ordered exactly; a pair
inside one bin counts one half, which is exact when the bin holds a single distinct score (a
tie). Hence

    |AUC_hist - AUC| <= bound = 0.5 * sum over bins with min < max of P_b * N_b / (P * N)

(P_b, N_b: the bin's positive and negative weight; P, N: the totals), which ``auc_bound``
computes from the merged part. When the bound exceeds ``AUC_TOLERANCE`` (1e-4), ``refine``
returns a grid that splits the bins holding the excess (``REFINE_SPLITS`` equal pieces between
their smallest and largest score, and the largest score on its own); one more pass over the
blocks with that grid brings the bound down (each pass splits every chosen bin, so repeated
passes end with every heavy bin a tie). ``metrics_of_blocks`` runs those passes, so its AUC is
within ``AUC_TOLERANCE`` of the exact value unless ``MAX_CUTS`` refinement cuts did not suffice,
which ``auc_bound`` would then show. With scores that do not share bins (small sets) the
histogram AUC is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from components import metrics
from components.hashing import hash_strings, mix64

AUC_BINS = 2**18
"""Equal bins of the base AUC grid on the logit axis."""
AUC_SPAN = 16.0
"""The base grid covers logits ``[-AUC_SPAN, AUC_SPAN]`` (probabilities ~1e-7 .. 1 - 1e-7)."""
AUC_TOLERANCE = 1e-4
"""``metrics_of_blocks`` refines the AUC grid until the bound is at most this."""
REFINE_SPLITS = 256
"""Pieces each refined bin is cut into."""
REFINE_MAX_BINS = 1024
"""Bins refined per pass, heaviest first."""
MAX_CUTS = 2**20
"""No refinement beyond this many cut points (the bound then says how far off AUC may be)."""
REFINE_PASSES = 8
"""At most this many refinement passes in ``metrics_of_blocks``."""
QUERY_SKETCH = 256
"""Query-id hashes each ranking part keeps to detect a query split across blocks."""

Block = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]
"""One block of scored rows: (labels, model outputs, query ids or None, row weights or None)."""


# --------------------------------------------------------------------------------------------
# validation


def block_weights(weights: npt.ArrayLike | None, n: int) -> np.ndarray | None:
    """A block's row weights as float64 (finite, >= 0, one per row), or None; unlike
    ``metrics.check_weights`` a block may hold only zeros (the total is checked at ``finish``)."""
    if weights is None:
        return None
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"weights: cannot convert to a float array: {e}") from e
    if w.ndim != 1:
        raise ValueError(f"weights must be 1-D, got shape {w.shape}")
    if len(w) != n:
        raise ValueError(f"weights must hold one value per row: got {len(w)} for {n} rows")
    if not np.isfinite(w).all():
        raise ValueError("weights contains NaN or infinite values")
    if len(w) and w.min() < 0:
        row = int(np.argmin(w))
        raise ValueError(f"weights must be >= 0, found {w[row]:g} at row {row}")
    return w


def _check_total(weighted: bool, rows: int, total: float) -> None:
    if rows == 0:
        raise ValueError("no rows: every block was empty")
    if weighted and total <= 0:
        raise ValueError("weights are all zero: no row counts")


def _probabilities(p: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"p must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("p contains NaN or infinite values")
    if len(arr) and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"p must hold probabilities in [0, 1], got [{arr.min()}, {arr.max()}]")
    return arr


def _binary_labels(y: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"y_true must hold binary labels 0/1, got dtype {arr.dtype}")
    one = arr == 1
    if not (one | (arr == 0)).all():
        bad = np.unique(arr[~(one | (arr == 0))])[:5]
        raise ValueError(f"y_true must hold binary labels 0/1, found {bad.tolist()}")
    return one


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"{' and '.join(lengths)} must have equal lengths, got {detail}")
    return next(iter(lengths.values()))


def segments(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    new = np.empty(len(sorted_keys), dtype=bool)
    new[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    return np.flatnonzero(new)


# --------------------------------------------------------------------------------------------
# AUC


@dataclass(frozen=True, eq=False)
class AucGrid:
    """How scores are binned: ``bins`` equal bins of the logit over ``[-span, span]``, each
    further cut at the sorted ``cuts`` that fall inside it. Bin keys are non-decreasing in the
    score, so bins are ordered as their scores are."""

    bins: int = AUC_BINS
    span: float = AUC_SPAN
    cuts: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))

    def keys(self, p: np.ndarray) -> np.ndarray:
        """Each score's bin key (int64; equal scores get equal keys)."""
        with np.errstate(divide="ignore"):
            logit = np.log(p) - np.log1p(-p)  # -inf at 0, +inf at 1: the end bins
        base = np.floor((logit + self.span) * (self.bins / (2.0 * self.span)))
        keys = np.clip(base, 0, self.bins - 1).astype(np.int64)
        if len(self.cuts):
            keys *= len(self.cuts) + 1
            keys += np.searchsorted(self.cuts, p, side="right")
        return keys

    def same(self, other: AucGrid) -> bool:
        return (
            self.bins == other.bins
            and self.span == other.span
            and np.array_equal(self.cuts, other.cuts)
        )


@dataclass(frozen=True)
class AucPart:
    """A score histogram by class: per bin (``key``, ascending) the positive and negative
    weight and the smallest and largest score."""

    grid: AucGrid
    key: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def _reduce_bins(
    grid: AucGrid,
    key: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> AucPart:
    if len(key) == 0:
        empty = np.empty(0, dtype=np.float64)
        return AucPart(grid, np.empty(0, dtype=np.int64), empty, empty, empty, empty)
    order = np.argsort(key, kind="stable")
    k = key[order]
    starts = segments(k)
    return AucPart(
        grid,
        k[starts],
        np.add.reduceat(pos[order], starts),
        np.add.reduceat(neg[order], starts),
        np.minimum.reduceat(lo[order], starts),
        np.maximum.reduceat(hi[order], starts),
    )


def auc_partial(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    grid: AucGrid | None = None,
) -> AucPart:
    """The AUC histogram of one block (0/1 labels, probabilities, optional row weights)."""
    pos = _binary_labels(y_true)
    prob = _probabilities(p)
    n = _same_length(y_true=pos, p=prob)
    w = block_weights(weights, n)
    wt = np.ones(n) if w is None else w
    g = grid or AucGrid()
    return _reduce_bins(g, g.keys(prob), np.where(pos, wt, 0.0), np.where(pos, 0.0, wt), prob, prob)


def merge_auc(parts: Sequence[AucPart]) -> AucPart:
    """One histogram from several on the same grid."""
    grid = parts[0].grid
    if not all(grid.same(p.grid) for p in parts[1:]):
        raise ValueError("AUC parts were binned on different grids; compute them with one grid")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    return _reduce_bins(grid, cat("key"), cat("pos"), cat("neg"), cat("lo"), cat("hi"))


def _auc_totals(part: AucPart) -> tuple[float, float]:
    p_total, n_total = float(part.pos.sum()), float(part.neg.sum())
    if p_total == 0 or n_total == 0:
        only = 1 if p_total else 0
        raise ValueError(
            f"roc_auc: y_true has weight in one class only ({only}); AUC is undefined without "
            "both positive and negative rows"
        )
    return p_total, n_total


def auc_value(part: AucPart) -> float:
    """AUC from a histogram: exact between bins, one half within a bin (see ``auc_bound``)."""
    p_total, n_total = _auc_totals(part)
    below = np.cumsum(part.neg) - part.neg
    return float(np.sum(part.pos * (below + 0.5 * part.neg)) / (p_total * n_total))


def _bin_error(part: AucPart) -> np.ndarray:
    """Each bin's largest possible error in AUC: half its positive-negative pairs unless it
    holds one distinct score."""
    p_total, n_total = _auc_totals(part)
    impure = part.lo < part.hi
    return np.where(impure, 0.5 * part.pos * part.neg, 0.0) / (p_total * n_total)


def auc_bound(part: AucPart | BinaryPart) -> float:
    """How far ``auc_value`` may be from the exact AUC (the module docstring's bound)."""
    auc = part.auc if isinstance(part, BinaryPart) else part
    return float(_bin_error(auc).sum())


def refine(part: AucPart | BinaryPart, tolerance: float = AUC_TOLERANCE) -> AucGrid | None:
    """A finer grid when the bound exceeds ``tolerance``: the heaviest impure bins (those holding
    the excess, at most ``REFINE_MAX_BINS``) cut into ``REFINE_SPLITS`` pieces between their
    smallest and largest score. None when the bound is within ``tolerance``, or when the grid
    would pass ``MAX_CUTS`` cuts."""
    auc = part.auc if isinstance(part, BinaryPart) else part
    err = _bin_error(auc)
    bound = float(err.sum())
    if bound <= tolerance:
        return None
    order = np.argsort(-err, kind="stable")
    # take bins until what is left is well inside the tolerance, so one pass usually suffices
    covered = np.cumsum(err[order])
    take = int(np.searchsorted(covered, bound - tolerance / 4.0)) + 1
    chosen = order[: min(take, REFINE_MAX_BINS)]
    chosen = chosen[err[chosen] > 0]
    lo, hi = auc.lo[chosen], auc.hi[chosen]
    frac = np.arange(1, REFINE_SPLITS) / REFINE_SPLITS
    inner = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
    # the largest score as a cut of its own: every refined bin splits, however its scores cluster
    cuts = np.unique(np.concatenate([auc.grid.cuts, inner.ravel(), hi]))
    if len(cuts) > MAX_CUTS:
        return None
    return AucGrid(auc.grid.bins, auc.grid.span, cuts)


# --------------------------------------------------------------------------------------------
# binary


@dataclass(frozen=True)
class BinaryPart:
    """Sums for ``binary_metrics`` (weight, loss, correct, f1 counts) and the AUC histogram."""

    rows: int
    weighted: bool
    weight: float
    loss: float
    correct: float
    true_pos: float
    true: float
    predicted: float
    threshold: float
    auc: AucPart


def binary_loss(pos: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy as ``metrics.log_loss`` computes it (clipped to [EPS, 1-EPS])."""
    pc = np.clip(p, metrics.EPS, 1.0 - metrics.EPS)
    return np.asarray(-np.where(pos, np.log(pc), np.log1p(-pc)))


def binary_partial(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    threshold: float = 0.5,
    weights: npt.ArrayLike | None = None,
    grid: AucGrid | None = None,
) -> BinaryPart:
    """One block's part of ``binary_metrics`` (class 1 predicted when ``p >= threshold``)."""
    pos = _binary_labels(y_true)
    prob = _probabilities(p)
    n = _same_length(y_true=pos, p=prob)
    w = block_weights(weights, n)
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    wt = np.ones(n) if w is None else w
    pred = prob >= t
    return BinaryPart(
        rows=n,
        weighted=w is not None,
        weight=float(wt.sum()),
        loss=float(np.dot(wt, binary_loss(pos, prob))),
        correct=float(wt[pred == pos].sum()),
        true_pos=float(wt[pred & pos].sum()),
        true=float(wt[pos].sum()),
        predicted=float(wt[pred].sum()),
        threshold=t,
        auc=auc_partial(pos, prob, w, grid),
    )


def _merge_binary(parts: Sequence[BinaryPart]) -> BinaryPart:
    if len({p.threshold for p in parts}) > 1 or len({p.weighted for p in parts}) > 1:
        raise ValueError("binary parts differ in threshold or in having weights")
    return BinaryPart(
        rows=sum(p.rows for p in parts),
        weighted=parts[0].weighted,
        weight=sum(p.weight for p in parts),
        loss=sum(p.loss for p in parts),
        correct=sum(p.correct for p in parts),
        true_pos=sum(p.true_pos for p in parts),
        true=sum(p.true for p in parts),
        predicted=sum(p.predicted for p in parts),
        threshold=parts[0].threshold,
        auc=merge_auc([p.auc for p in parts]),
    )


def _finish_binary(part: BinaryPart) -> dict[str, float]:
    _check_total(part.weighted, part.rows, part.weight)
    denom = part.true + part.predicted
    return {
        "auc": auc_value(part.auc),
        "logloss": part.loss / part.weight,
        "accuracy": part.correct / part.weight,
        "f1": 0.0 if denom == 0 else 2.0 * part.true_pos / denom,
    }


# --------------------------------------------------------------------------------------------
# multiclass


@dataclass(frozen=True)
class MulticlassPart:
    """Sums for ``multiclass_metrics``: weight, loss, correct, and per class the weight of true
    positives, of true and of predicted rows, and the rows where the class occurs."""

    rows: int
    weighted: bool
    weight: float
    loss: float
    correct: float
    true_pos: np.ndarray
    true: np.ndarray
    predicted: np.ndarray
    occurs: np.ndarray


def multiclass_loss(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy as ``metrics.multiclass_log_loss`` (clipped, renormalised)."""
    pc = np.clip(proba, metrics.EPS, 1.0 - metrics.EPS)
    pc /= pc.sum(axis=1, keepdims=True)
    return np.asarray(-np.log(pc[np.arange(len(y)), y]))


def _class_ids(y_true: npt.ArrayLike, k: int) -> np.ndarray:
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iubf":
        raise ValueError(f"y_true must hold integer class ids, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise ValueError("y_true must hold integer class ids, found non-integer values")
    ids = arr.astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= k):
        raise ValueError(
            f"y_true must hold class ids in 0..{k - 1}, got [{ids.min()}, {ids.max()}]"
        )
    return ids


def _proba(proba: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(proba, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"proba must be 2-D (n, K), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("proba contains NaN or infinite values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"proba must hold probabilities in [0, 1], got [{arr.min()}, {arr.max()}]")
    return arr


def multiclass_partial(
    y_true: npt.ArrayLike, proba: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> MulticlassPart:
    """One block's part of ``multiclass_metrics`` (prediction: ``argmax(proba)``)."""
    prob = _proba(proba)
    k = prob.shape[1]
    y = _class_ids(y_true, k)
    n = _same_length(y_true=y, proba=prob)
    w = block_weights(weights, n)
    wt = np.ones(n) if w is None else w
    pred = prob.argmax(axis=1)
    hit = pred == y
    return MulticlassPart(
        rows=n,
        weighted=w is not None,
        weight=float(wt.sum()),
        loss=float(np.dot(wt, multiclass_loss(y, prob))) if n else 0.0,
        correct=float(wt[hit].sum()),
        true_pos=np.bincount(y[hit], weights=wt[hit], minlength=k),
        true=np.bincount(y, weights=wt, minlength=k),
        predicted=np.bincount(pred, weights=wt, minlength=k),
        occurs=np.bincount(y, minlength=k) + np.bincount(pred, minlength=k),
    )


def _merge_multiclass(parts: Sequence[MulticlassPart]) -> MulticlassPart:
    if len({len(p.true) for p in parts}) > 1:
        raise ValueError("multiclass parts hold different numbers of classes")
    if len({p.weighted for p in parts}) > 1:
        raise ValueError("multiclass parts differ in having weights")
    return MulticlassPart(
        rows=sum(p.rows for p in parts),
        weighted=parts[0].weighted,
        weight=sum(p.weight for p in parts),
        loss=sum(p.loss for p in parts),
        correct=sum(p.correct for p in parts),
        true_pos=np.sum([p.true_pos for p in parts], axis=0),
        true=np.sum([p.true for p in parts], axis=0),
        predicted=np.sum([p.predicted for p in parts], axis=0),
        occurs=np.sum([p.occurs for p in parts], axis=0),
    )


def macro_f1_of(
    true_pos: np.ndarray, true: np.ndarray, predicted: np.ndarray, occurs: np.ndarray
) -> np.ndarray:
    """Macro F1 from per-class sums (arrays ``(K, ...)``: any trailing axes, e.g. resamples),
    over the classes that occur, as ``metrics.macro_f1``."""
    present = occurs > 0
    support = true + predicted
    f1 = np.divide(2.0 * true_pos, support, out=np.zeros(support.shape), where=support > 0)
    count = present.sum(axis=0)
    total = (f1 * present).sum(axis=0)
    return np.asarray(np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0))


def _finish_multiclass(part: MulticlassPart) -> dict[str, float]:
    _check_total(part.weighted, part.rows, part.weight)
    return {
        "accuracy": part.correct / part.weight,
        "macro_f1": float(macro_f1_of(part.true_pos, part.true, part.predicted, part.occurs)),
        "logloss": part.loss / part.weight,
    }


# --------------------------------------------------------------------------------------------
# regression


@dataclass(frozen=True)
class RegressionPart:
    """Sums for ``regression_metrics``: weight, squared and absolute error, the label's
    weighted mean and sum of squared deviations (merged by Chan's rule, which stays accurate
    where the one-pass ``sum y^2 - n mean^2`` cancels), and the percentage-error sums over rows
    with a positive label."""

    rows: int
    weighted: bool
    weight: float
    squared: float
    absolute: float
    mean: float
    deviation: float
    positive_weight: float
    percentage: float


def regression_partial(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> RegressionPart:
    """One block's part of ``regression_metrics``."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    for name, a in (("y_true", y), ("y_pred", p)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    n = _same_length(y_true=y, y_pred=p)
    w = block_weights(weights, n)
    wt = np.ones(n) if w is None else w
    err = p - y
    total = float(wt.sum())
    # deviations from the block's first label, so a constant label has exactly zero spread
    shift = float(y[0]) if n else 0.0
    d = y - shift
    md = float(np.dot(wt, d) / total) if total > 0 else 0.0
    positive = y > 0
    wp = wt[positive]
    return RegressionPart(
        rows=n,
        weighted=w is not None,
        weight=total,
        squared=float(np.dot(wt, err * err)),
        absolute=float(np.dot(wt, np.abs(err))),
        mean=shift + md,
        deviation=float(np.dot(wt, (d - md) ** 2)),
        positive_weight=float(wp.sum()),
        percentage=float(np.dot(wp, np.abs(err[positive]) / y[positive])),
    )


def _chan(a: RegressionPart, b: RegressionPart) -> tuple[float, float]:
    """(mean, deviation) of the union of two parts (Chan, Golub and LeVeque)."""
    total = a.weight + b.weight
    if b.weight == 0:
        return a.mean, a.deviation + b.deviation
    if a.weight == 0:
        return b.mean, a.deviation + b.deviation
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.weight / total)
    return mean, a.deviation + b.deviation + delta * delta * (a.weight * b.weight / total)


def _merge_regression(parts: Sequence[RegressionPart]) -> RegressionPart:
    if len({p.weighted for p in parts}) > 1:
        raise ValueError("regression parts differ in having weights")
    out = parts[0]
    for p in parts[1:]:
        mean, deviation = _chan(out, p)
        out = RegressionPart(
            rows=out.rows + p.rows,
            weighted=out.weighted,
            weight=out.weight + p.weight,
            squared=out.squared + p.squared,
            absolute=out.absolute + p.absolute,
            mean=mean,
            deviation=deviation,
            positive_weight=out.positive_weight + p.positive_weight,
            percentage=out.percentage + p.percentage,
        )
    return out


def _finish_regression(part: RegressionPart) -> dict[str, float]:
    _check_total(part.weighted, part.rows, part.weight)
    sse, sst = part.squared, part.deviation
    out = {
        "rmse": float(np.sqrt(part.squared / part.weight)),
        "mae": part.absolute / part.weight,
        "r2": (1.0 - sse / sst) if sst > 0 else (1.0 if sse == 0 else 0.0),
    }
    if part.positive_weight > 0:
        out["mape"] = part.percentage / part.positive_weight
    return out


# --------------------------------------------------------------------------------------------
# ranking


@dataclass(frozen=True)
class RankingPart:
    """Per metric (``names``): the query-weighted sum of per-query values over the queries it
    counts, their weight and their number; the query counts; and a sketch of the smallest
    query-id hashes to catch a query split across blocks."""

    names: tuple[str, ...]
    no_relevant: str
    weighted: bool
    rows: int
    row_weight: float
    sums: np.ndarray
    weights: np.ndarray
    counts: np.ndarray
    queries: int
    queries_no_relevant: int
    sketch: np.ndarray
    sketch_ids: np.ndarray


def ranking_names(ks: Sequence[int]) -> tuple[str, ...]:
    """The metrics ``ranking_metrics`` reports for cut-offs ``ks``, in its order (without the
    query counts)."""
    if len(ks) == 0:
        raise ValueError("ks must name at least one cut-off")
    cuts: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks must hold positive ints, got {k!r}")
        cuts.append(int(k))
    return (*(f"ndcg@{k}" for k in cuts), f"map@{max(cuts)}", "map", "mrr")


def query_keys(ids: np.ndarray) -> np.ndarray:
    """Stable uint64 keys of query (or row) ids: integers as they are, anything else by the
    SipHash of its string form, so every process derives the same key from the same id."""
    arr = np.asarray(ids)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64).astype(np.uint64)
    return hash_strings(arr)


def _sketch(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hashes = mix64(query_keys(ids))
    if len(hashes) > QUERY_SKETCH:
        keep = np.argpartition(hashes, QUERY_SKETCH)[:QUERY_SKETCH]
        return hashes[keep], ids[keep]
    return hashes, ids


def ranking_partial(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: npt.ArrayLike,
    ks: Sequence[int] = (1, 3, 5, 10),
    threshold: float = 1.0,
    no_relevant: metrics.NoRelevant = "one",
    weights: npt.ArrayLike | None = None,
) -> RankingPart:
    """One block's part of ``ranking_metrics``; every query in the block must be whole."""
    names = ranking_names(ks)
    nr = metrics.check_no_relevant(no_relevant)
    rel = np.asarray(relevance, dtype=np.float64)
    w = block_weights(weights, len(rel))
    zeros = np.zeros(len(names))
    if len(rel) == 0:
        return RankingPart(
            names, nr, w is not None, 0, 0.0, zeros, zeros, zeros.astype(np.int64), 0, 0,
            np.empty(0, dtype=np.uint64), np.empty(0),
        )  # fmt: skip
    # a block of weight 0 only has query weights 0; metrics refuses all-zero weights, so the
    # table is computed without them
    table = metrics.query_table(
        rel, scores, groups, names, threshold, nr, w if w is not None and w.any() else None
    )
    q = len(table.ids)
    qw = np.ones(q) if w is None else (table.weight if table.weight is not None else np.zeros(q))
    counted = [table.counted[m] for m in names]
    sketch, sketch_ids = _sketch(table.ids)
    return RankingPart(
        names=names,
        no_relevant=nr,
        weighted=w is not None,
        rows=len(rel),
        row_weight=0.0 if w is None else float(w.sum()),
        sums=np.array(
            [np.dot(qw[c], table.values[m][c]) for m, c in zip(names, counted, strict=True)]
        ),
        weights=np.array([qw[c].sum() for c in counted]),
        counts=np.array([int(c.sum()) for c in counted], dtype=np.int64),
        queries=q,
        queries_no_relevant=int(q - table.has_gain.sum()),
        sketch=sketch,
        sketch_ids=sketch_ids,
    )


def _merge_ranking(parts: Sequence[RankingPart]) -> RankingPart:
    first = parts[0]
    if any(p.names != first.names or p.no_relevant != first.no_relevant for p in parts):
        raise ValueError("ranking parts were computed with different cut-offs or no_relevant")
    if len({p.weighted for p in parts}) > 1:
        raise ValueError("ranking parts differ in having weights")
    hashes = np.concatenate([p.sketch for p in parts])
    ids = np.concatenate([np.asarray(p.sketch_ids, dtype=object) for p in parts])
    order = np.argsort(hashes, kind="stable")
    hashes, ids = hashes[order], ids[order]
    twice = np.flatnonzero(hashes[1:] == hashes[:-1])
    if len(twice):
        raise ValueError(
            f"query {ids[twice[0]]!r} has rows in two blocks: ranking metrics need every query "
            "whole in one block (group the rows by query first)"
        )
    return RankingPart(
        names=first.names,
        no_relevant=first.no_relevant,
        weighted=first.weighted,
        rows=sum(p.rows for p in parts),
        row_weight=sum(p.row_weight for p in parts),
        sums=np.sum([p.sums for p in parts], axis=0),
        weights=np.sum([p.weights for p in parts], axis=0),
        counts=np.sum([p.counts for p in parts], axis=0),
        queries=sum(p.queries for p in parts),
        queries_no_relevant=sum(p.queries_no_relevant for p in parts),
        sketch=hashes[:QUERY_SKETCH],
        sketch_ids=ids[:QUERY_SKETCH],
    )


def _finish_ranking(part: RankingPart) -> dict[str, float]:
    _check_total(part.weighted, part.rows, part.row_weight)
    out: dict[str, float] = {}
    for name, total, weight, count in zip(
        part.names, part.sums, part.weights, part.counts, strict=True
    ):
        if count == 0:
            raise ValueError(
                f"{name} is undefined with no_relevant='skip': none of the {part.queries} "
                "queries has a relevant row, so every query is skipped (count them with 'one' "
                "or 'zero' instead)"
            )
        if part.weighted and weight <= 0:
            raise ValueError(f"{name}: every query it counts has weight 0")
        out[name] = float(total / weight)
    out["queries"] = float(part.queries)
    out["queries_no_relevant"] = float(part.queries_no_relevant)
    return out


# --------------------------------------------------------------------------------------------
# by task

Part = BinaryPart | MulticlassPart | RegressionPart | RankingPart


def partial(
    task: str,
    y: npt.ArrayLike,
    out: npt.ArrayLike,
    groups: npt.ArrayLike | None = None,
    weights: npt.ArrayLike | None = None,
    *,
    ks: Sequence[int] = (1, 3, 5, 10),
    relevance_threshold: float = 1.0,
    threshold: float = 0.5,
    no_relevant: metrics.NoRelevant = "one",
    grid: AucGrid | None = None,
) -> Part:
    """One block's part of the metrics ``task`` reports (``out``: P(class 1), the ``(n, K)``
    class probabilities, the predictions or the scores; ``groups``: query ids, ranking only)."""
    if task == "binary":
        return binary_partial(np.asarray(y).astype(np.int64), out, threshold, weights, grid)
    if task == "multiclass":
        return multiclass_partial(np.asarray(y).astype(np.int64), out, weights)
    if task == "regression":
        return regression_partial(y, out, weights)
    if task == "ranking":
        if groups is None:
            raise ValueError("ranking needs query ids (groups)")
        return ranking_partial(y, out, groups, ks, relevance_threshold, no_relevant, weights)
    raise ValueError(f"unknown task {task!r}")


def merge(parts: Iterable[Part]) -> Part:
    """One part from several of the same kind (any order and grouping gives the same metrics)."""
    items: list[Any] = list(parts)
    if not items:
        raise ValueError("merge needs at least one part")
    kind = type(items[0])
    if any(type(p) is not kind for p in items):
        raise ValueError("cannot merge parts of different tasks")
    if kind is BinaryPart:
        return _merge_binary(items)
    if kind is MulticlassPart:
        return _merge_multiclass(items)
    if kind is RegressionPart:
        return _merge_regression(items)
    return _merge_ranking(items)


def finish(part: Part) -> dict[str, float]:
    """The metrics of a (merged) part, as components.metrics gives them for all its rows."""
    if isinstance(part, BinaryPart):
        return _finish_binary(part)
    if isinstance(part, MulticlassPart):
        return _finish_multiclass(part)
    if isinstance(part, RegressionPart):
        return _finish_regression(part)
    return _finish_ranking(part)


def alone(part: Any) -> list[Any]:
    """``metrics_of_blocks``'s ``gather`` for one process: its own part is all there is."""
    return [part]


def metrics_of_blocks(
    task: str,
    blocks: Callable[[], Iterable[Block]],
    tolerance: float = AUC_TOLERANCE,
    gather: Callable[[Any], Sequence[Any]] = alone,
    **options: Any,
) -> tuple[dict[str, float], Part]:
    """The metrics over every block that ``blocks()`` yields, computed part by part, with the
    AUC grid refined (one more call of ``blocks()`` per pass) until its bound is within
    ``tolerance``; also the final part (``auc_bound`` of it says how close AUC is). ``options``
    are ``partial``'s keyword arguments. This is the driver's loop of a distributed evaluation,
    written for blocks in memory.

    ``gather(part)``: every process's part, for processes that each hold some of the blocks
    (training ranks): called the same number of times in each, and the merged parts, hence
    every decision and the result, are the same in each. ``blocks()`` may yield nothing.
    """

    def merged(local: Callable[[], list[Any]], merge_fn: Callable[[Sequence[Any]], Any]) -> Any:
        # A bad block on one process must fail them all, not leave the others waiting in the
        # gather: the error travels as that process's part and every process raises it.
        mine: Any
        try:
            parts = local()
            mine = merge_fn(parts) if parts else None
        except ValueError as e:
            mine = _Failed(str(e))
        found = [p for p in gather(mine) if p is not None]
        failed = [p.message for p in found if isinstance(p, _Failed)]
        if failed:
            raise ValueError(failed[0])
        if not found:
            raise ValueError("no rows to evaluate")
        return merge_fn(found)

    part = merged(
        lambda: [partial(task, y, out, g, w, **options) for y, out, g, w in blocks()], merge
    )
    if isinstance(part, BinaryPart):
        for _ in range(REFINE_PASSES):
            grid = refine(part, tolerance)
            if grid is None:
                break

            def auc_parts(grid: AucGrid = grid) -> list[Any]:
                return [
                    auc_partial(np.asarray(y).astype(np.int64), out, w, grid)
                    for y, out, _, w in blocks()
                ]

            auc = merged(auc_parts, merge_auc)
            part = replace(part, auc=auc)
    return finish(part), part


@dataclass(frozen=True)
class _Failed:
    """A process's part when its blocks were refused (``metrics_of_blocks``'s gather)."""

    message: str

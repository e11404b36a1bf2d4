"""Champion/challenger gate: a paired bootstrap of the metric difference on the same test rows.

Both models score the same test split. The unit of resampling is what the data is made of:
queries for ranking (a query's rows stay together), rows for classification and regression. The
challenger is promoted only when the lower end of the confidence interval of its improvement
exceeds ``min_improvement``.

The bootstrap costs one pass over the scores, whatever the number of resamples, and can run
block by block (``bootstrap_partial`` in the tasks that hold the scores, ``merge_bootstrap`` and
``decide_from_parts`` on the driver):

* Resampling is the Poisson bootstrap: in resample ``r`` each unit (row or query) counts
  ``W[r, unit]`` times, a Poisson(1) draw that depends only on ``(seed, r, the unit's key)``
  (splitmix64 of the key, four 16-bit uniforms per hash, Poisson(1) by a 65,536-entry inverse
  CDF table), so every block on every worker draws the same weight for the same unit. Keys are
  query ids for ranking and row keys (``keys``; by default the row's position, right for one
  block only) otherwise.
* Each block adds, per resample, the weighted sums the metric is made of: sum and weight for
  metrics that are means over units (logloss, accuracy, MAE, MAPE; NDCG@k, MAP@k, MRR per
  query); true positives, true and predicted weight for F1 and per class for macro-F1; squared
  error and the label's moments (shifted by the label mean) for RMSE and R^2. Those sums give
  each resample's metric exactly as the metric on the resampled rows.
* AUC per resample comes from a histogram of each model's scores in ``BOOTSTRAP_AUC_BINS`` bins
  of equal weight (``resamples x bins x 2`` weighted counts), cut from the fine AUC histogram of
  components.metric_parts (the evaluation pass). Pairs within a bin count one half; the binning
  error is nearly the same in every resample, so the resampled differences are shifted by the
  exact (or fine-histogram) improvement minus the binned one computed with every weight 1.

With row ``weights`` (ranking: one per query), every value is the weighted metric: a unit's
bootstrap weight multiplies its own weight. With ``no_relevant="skip"`` the queries without a
relevant row are not units at all (components.metrics). A resample whose units all have weight
0 (or, for AUC, lack a class) has no metric and is left out of the interval.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from components import metric_parts, metrics
from components.hashing import mix64
from components.tasks import task_info

LOWER_IS_BETTER = metrics.LOWER_IS_BETTER
BOOTSTRAP_AUC_BINS = 1024
"""Equal-weight bins of each model's scores in the AUC bootstrap."""
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment: resample j's offset
_CHUNK_CELLS = 2**18  # units x resamples of weights per chunk: the hashing stays in cache


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
    if task == "binary":
        if metric == "logloss":  # as components.metrics computes it, row by row
            return metric_parts.binary_loss(y == 1, out)
        if metric == "accuracy":
            return ((out >= threshold) == (y == 1)).astype(np.float64)
        return None
    if task == "multiclass":
        idx = y.astype(np.int64)
        if metric == "logloss":
            return metric_parts.multiclass_loss(idx, np.asarray(out, dtype=np.float64))
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


# --------------------------------------------------------------------------------------------
# Poisson bootstrap weights


@functools.cache
def _poisson_table() -> np.ndarray:
    """Poisson(1) counts by the inverse CDF at the midpoints of 65,536 equal steps (uint8): the
    probability of each count is within 2**-16 of Poisson(1)'s."""
    pmf = np.array([math.exp(-1.0) / math.factorial(k) for k in range(20)])
    u = (np.arange(2**16) + 0.5) / 2**16
    return np.searchsorted(np.cumsum(pmf), u, side="right").astype(np.uint8)


def _unit_hashes(keys: np.ndarray, seed: int) -> np.ndarray:
    salt = mix64(np.array([seed % 2**64], dtype=np.uint64))[0]
    return mix64(np.asarray(keys, dtype=np.uint64) ^ salt)


def _weights_of(hashes: np.ndarray, resamples: int) -> np.ndarray:
    """``(units, resamples)`` Poisson(1) counts from per-unit hashes: four 16-bit uniforms per
    splitmix64 output of ``hash + (j + 1) * golden``, read in little-endian order on every
    machine."""
    lanes = (resamples + 3) // 4
    with np.errstate(over="ignore"):
        steps = np.arange(1, lanes + 1, dtype=np.uint64) * _GOLDEN
        z = mix64(hashes[:, None] + steps[None, :])
    u = z.astype("<u8", copy=False).view("<u2")
    return np.take(_poisson_table(), u)[:, :resamples]


def poisson_weights(keys: np.ndarray, seed: int, resamples: int) -> np.ndarray:
    """The bootstrap weights ``(len(keys), resamples)`` (uint8) of units with uint64 ``keys``
    (``metric_parts.query_keys``): row ``i`` depends only on ``(seed, keys[i])``."""
    return _weights_of(_unit_hashes(keys, seed), resamples)


# --------------------------------------------------------------------------------------------
# the bootstrap as parts: plan -> partial per block -> merge -> interval


def _kind(task: str, metric: str) -> str:
    """How a resample's metric is computed from sums: ``mean`` (a mean over units), ``auc``,
    ``f1``, ``macro_f1``, ``rmse`` or ``r2``."""
    if task_info(task).grouped:
        return "mean"
    kinds = {
        "binary": {"logloss": "mean", "accuracy": "mean", "auc": "auc", "f1": "f1"},
        "multiclass": {"logloss": "mean", "accuracy": "mean", "macro_f1": "macro_f1"},
        "regression": {"mae": "mean", "mape": "mean", "rmse": "rmse", "r2": "r2"},
    }
    kind = kinds.get(task, {}).get(metric)
    if kind is None:
        raise ValueError(f"no bootstrap for metric {metric!r} on task {task!r}")
    return kind


@dataclass(frozen=True)
class BootstrapPlan:
    """What every block of a bootstrap needs to know (``bootstrap_plan``)."""

    task: str
    metric: str
    kind: str
    resamples: int
    seed: int
    relevance_threshold: float
    threshold: float
    no_relevant: metrics.NoRelevant
    auc_cuts: tuple[np.ndarray, np.ndarray] | None
    label_shift: float
    # mean-kind metrics: also each model's own weighted sums (``model_values``), which the
    # improvement alone does not need; the gate leaves them out
    per_model: bool = False

    @property
    def sign(self) -> float:
        """+1 when larger is better, -1 when smaller is."""
        return -1.0 if self.metric in LOWER_IS_BETTER else 1.0

    @property
    def unit(self) -> str:
        return task_info(self.task).unit


def auc_cuts(part: metric_parts.AucPart, bins: int = BOOTSTRAP_AUC_BINS) -> np.ndarray:
    """Score thresholds that cut a fine AUC histogram into ``bins`` bins of about equal weight
    (a bin starts at the smallest score of a fine bin, so no fine bin is split)."""
    mass = np.cumsum(part.pos + part.neg)
    if len(mass) == 0 or mass[-1] <= 0:
        return np.empty(0, dtype=np.float64)
    starts = np.searchsorted(mass, mass[-1] * np.arange(1, bins) / bins, side="right")
    starts = np.unique(starts[(starts > 0) & (starts < len(mass))])
    return np.asarray(part.lo[starts], dtype=np.float64)


def bootstrap_plan(
    task: str,
    metric: str,
    resamples: int = 1000,
    seed: int = 0,
    relevance_threshold: float = 1.0,
    threshold: float = 0.5,
    no_relevant: metrics.NoRelevant = "one",
    auc_parts: tuple[metric_parts.AucPart, metric_parts.AucPart] | None = None,
    label_mean: float = 0.0,
) -> BootstrapPlan:
    """The plan of a paired bootstrap of ``metric``. AUC needs both models' fine histograms
    (``auc_parts``: challenger, champion; ``metric_parts.auc_partial`` merged over the blocks);
    R^2 takes the label mean (``label_mean``) to centre the label's moments."""
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100, got {resamples}")
    kind = _kind(task, metric)
    cuts = None
    if kind == "auc":
        if auc_parts is None:
            raise ValueError("the AUC bootstrap needs both models' AUC histograms (auc_parts)")
        cuts = (auc_cuts(auc_parts[0]), auc_cuts(auc_parts[1]))
    return BootstrapPlan(
        task=task,
        metric=metric,
        kind=kind,
        resamples=int(resamples),
        seed=int(seed),
        relevance_threshold=float(relevance_threshold),
        threshold=float(threshold),
        no_relevant=metrics.check_no_relevant(no_relevant),
        auc_cuts=cuts,
        label_shift=float(label_mean),
    )


@dataclass(frozen=True)
class BootstrapPart:
    """Per-resample sums ``(m, R)`` of the columns a metric is made of: ``own`` per model
    (challenger, champion), ``shared`` by both (for metrics that are means over units:
    the weighted difference and the weight); the same with every bootstrap weight 1
    (``own_full``, ``shared_full``); for AUC the per-resample class histograms of each model
    (``hist``: ``(2 * bins, R)``, negatives then positives) and the same with weight 1."""

    units: int
    own: tuple[np.ndarray, np.ndarray]
    shared: np.ndarray
    own_full: tuple[np.ndarray, np.ndarray]
    shared_full: np.ndarray
    hist: tuple[np.ndarray, np.ndarray] | None = None
    hist_full: tuple[np.ndarray, np.ndarray] | None = None


Columns = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Per-unit columns ``(own challenger, own champion, shared)``, each ``(units, m)``."""


def _query_columns(
    plan: BootstrapPlan,
    y: np.ndarray,
    outs: tuple[np.ndarray, np.ndarray],
    groups: np.ndarray,
    w: np.ndarray | None,
) -> tuple[np.ndarray, Columns]:
    """Query keys and the columns ``[weight * (challenger - champion), weight]`` of the
    queries the metric counts."""
    # a block whose weights are all 0 has query weights 0 (metrics refuses all-zero weights)
    tw = w if w is not None and w.any() else None
    tables = [
        metrics.query_table(
            y, out, groups, [plan.metric], plan.relevance_threshold, plan.no_relevant, tw
        )
        for out in outs
    ]
    counted = tables[0].counted[plan.metric]
    if tables[0].weight is not None:
        uw = tables[0].weight[counted]
    else:
        uw = np.full(int(counted.sum()), 0.0 if w is not None else 1.0)
    va, vb = (t.values[plan.metric][counted] for t in tables)
    keys = metric_parts.query_keys(tables[0].ids[counted])
    return keys, _mean_columns(plan, uw, va, vb)


def _mean_columns(plan: BootstrapPlan, uw: np.ndarray, a: np.ndarray, b: np.ndarray) -> Columns:
    """Per-unit columns of a mean-kind metric: ``[w * (a - b), w]`` shared, and with
    ``per_model`` each model's own ``w * value`` (its metric per resample)."""
    shared = np.stack([uw * (a - b), uw], axis=1)
    if not plan.per_model:
        none = np.empty((len(uw), 0))
        return none, none, shared
    return (uw * a)[:, None], (uw * b)[:, None], shared


def _row_columns(
    plan: BootstrapPlan, y: np.ndarray, outs: tuple[np.ndarray, np.ndarray], sw: np.ndarray
) -> Columns:
    """The per-row columns whose per-resample sums make the metric of each model."""
    n = len(y)
    none = np.empty((n, 0))
    if plan.kind == "mean":
        a, b = (
            _per_unit(plan.task, plan.metric, y, out, None, 1.0, plan.threshold) for out in outs
        )
        assert a is not None and b is not None
        uw = sw[y > 0] if plan.metric == "mape" else sw
        return _mean_columns(plan, uw, a, b)
    if plan.kind == "auc":
        return none, none, none  # the histograms are all it needs
    if plan.kind == "f1":
        pos = y == 1
        own = [
            np.stack([sw * (out >= plan.threshold) * pos, sw * (out >= plan.threshold)], 1)
            for out in outs
        ]
        return own[0], own[1], np.stack([sw * pos, sw], axis=1)
    if plan.kind == "macro_f1":
        k = outs[0].shape[1]
        true = y.astype(np.int64)[:, None] == np.arange(k)[None, :]
        own = []
        for out in outs:
            predicted = out.argmax(axis=1)[:, None] == np.arange(k)[None, :]
            hit = (true & predicted) * sw[:, None]
            occurs = (true | predicted).astype(np.float64)
            own.append(np.hstack([hit, predicted * sw[:, None], occurs]))
        return own[0], own[1], np.hstack([true * sw[:, None], sw[:, None]])
    own = [(sw * (out - y) ** 2)[:, None] for out in outs]
    if plan.kind == "rmse":
        return own[0], own[1], sw[:, None]
    yc = y - plan.label_shift  # r2: centred moments keep sum w y^2 - (sum w y)^2 / W accurate
    return own[0], own[1], np.stack([sw, sw * yc, sw * yc * yc], axis=1)


def _add_product(total: np.ndarray, x: np.ndarray, weights: np.ndarray) -> None:
    """``total += x.T @ weights`` in slices of rows small enough that OpenBLAS computes each on
    one thread (below m*n*k = 2**18): for a product this thin its threads cost far more than
    they save (tens of times on a busy machine)."""
    m = x.shape[1]
    if m == 0:
        return
    step = max(1, (2**18 - 1) // (m * weights.shape[1]))
    xt = np.ascontiguousarray(x.T)
    for s in range(0, len(x), step):
        total += xt[:, s : s + step] @ weights[s : s + step]


def _accumulate(
    plan: BootstrapPlan,
    keys: np.ndarray,
    cols: Columns,
    hist: list[np.ndarray] | None = None,
    sw: np.ndarray | None = None,
) -> BootstrapPart:
    """Per-resample sums of the columns (or, with ``hist``, class histograms by each model's
    bin keys, weighted by ``sw``) under the Poisson weights of ``keys``, chunk by chunk."""
    r = plan.resamples
    hashes = _unit_hashes(keys, plan.seed)
    chunk = max(1, _CHUNK_CELLS // r)
    n = len(keys)
    own = [np.zeros((c.shape[1], r)) for c in cols[:2]]
    shared = np.zeros((cols[2].shape[1], r))
    kwargs: dict[str, Any] = {
        "own_full": (cols[0].sum(axis=0), cols[1].sum(axis=0)),
        "shared_full": cols[2].sum(axis=0),
    }
    if hist is None:
        for s in range(0, n, chunk):
            weights = _weights_of(hashes[s : s + chunk], r).astype(np.float64)
            for c, total in zip((*cols[:2], cols[2]), (*own, shared), strict=True):
                _add_product(total, c[s : s + chunk], weights)
        return BootstrapPart(n, (own[0], own[1]), shared, **kwargs)
    assert plan.auc_cuts is not None
    hists, hists_full = [], []
    for m in range(2):
        size = 2 * (len(plan.auc_cuts[m]) + 1)
        # rows in bin order, so each chunk adds a few long runs of one bin
        order = np.argsort(hist[m], kind="stable")
        hk, hs = hist[m][order], hashes[order]
        ws = None if sw is None else sw[order]
        h = np.zeros((size, r))
        for s in range(0, n, chunk):
            weights = _weights_of(hs[s : s + chunk], r).astype(np.float64)
            if ws is not None:
                weights *= ws[s : s + chunk, None]
            k = hk[s : s + chunk]
            starts = metric_parts.segments(k)
            h[k[starts]] += np.add.reduceat(weights, starts, axis=0)
        hists.append(h)
        hists_full.append(np.bincount(hist[m], weights=sw, minlength=size))
    return BootstrapPart(
        n, (own[0], own[1]), shared, **kwargs, hist=(hists[0], hists[1]),
        hist_full=(hists_full[0], hists_full[1]),
    )  # fmt: skip


def bootstrap_partial(
    plan: BootstrapPlan,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    groups: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    keys: np.ndarray | None = None,
) -> BootstrapPart:
    """One block's per-resample sums for both models on the same rows. ``keys``: the rows'
    stable keys (``_row_key``; default their positions, which is right for one block only);
    ranking draws per query id instead. Every query must be whole in the block."""
    yy = np.asarray(y, dtype=np.float64)
    n = len(yy)
    outs = (np.asarray(challenger, dtype=np.float64), np.asarray(champion, dtype=np.float64))
    if len(outs[0]) != n or len(outs[1]) != n:
        raise ValueError("challenger, champion and labels must hold the same rows")
    w = metric_parts.block_weights(weights, n)
    if task_info(plan.task).grouped:
        if groups is None:
            raise ValueError("ranking needs query ids")
        if n == 0:
            none = np.empty(0)
            cols = _mean_columns(plan, none, none, none)  # _query_columns' columns, no query
            return _accumulate(plan, np.empty(0, np.uint64), cols)
        qkeys, qcols = _query_columns(plan, yy, outs, np.asarray(groups), w)
        return _accumulate(plan, qkeys, qcols)
    if keys is None:
        row_keys = np.arange(n, dtype=np.uint64)
    else:
        row_keys = metric_parts.query_keys(np.asarray(keys))
        if len(row_keys) != n:
            raise ValueError(f"keys must hold one value per row: got {len(row_keys)} for {n} rows")
    cols = _row_columns(plan, yy, outs, np.ones(n) if w is None else w)
    if plan.metric == "mape" and plan.task == "regression":
        row_keys = row_keys[yy > 0]  # MAPE's units: the rows with a positive label
    if plan.kind != "auc":
        return _accumulate(plan, row_keys, cols)
    assert plan.auc_cuts is not None
    pos = (yy == 1).astype(np.int64)
    hist = [
        pos * (len(cuts) + 1) + np.searchsorted(cuts, out, side="right")
        for cuts, out in zip(plan.auc_cuts, outs, strict=True)
    ]
    return _accumulate(plan, row_keys, cols, hist, w)


def merge_bootstrap(parts: Sequence[BootstrapPart]) -> BootstrapPart:
    """One bootstrap part from several (of one plan)."""
    if not parts:
        raise ValueError("merge_bootstrap needs at least one part")
    if len({p.hist is None for p in parts}) > 1:
        raise ValueError("bootstrap parts of different plans (some with AUC histograms)")

    def add(get: Callable[[BootstrapPart], Any]) -> Any:
        items = [get(p) for p in parts]
        if isinstance(items[0], tuple):
            return tuple(np.sum([it[m] for it in items], axis=0) for m in range(2))
        return np.sum(items, axis=0)

    with_hist = parts[0].hist is not None
    return BootstrapPart(
        units=sum(p.units for p in parts),
        own=add(lambda p: p.own),
        shared=add(lambda p: p.shared),
        own_full=add(lambda p: p.own_full),
        shared_full=add(lambda p: p.shared_full),
        hist=add(lambda p: p.hist) if with_hist else None,
        hist_full=add(lambda p: p.hist_full) if with_hist else None,
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, NaN where ``den`` is 0 (a resample with no weight has no metric)."""
    return np.divide(num, den, out=np.full(np.shape(num), np.nan), where=den != 0)


def _metric_of_sums(
    plan: BootstrapPlan, own: np.ndarray, shared: np.ndarray, h: np.ndarray | None
) -> np.ndarray:
    """One model's metric per resample from its sums (``own``, ``shared``: ``(m, ...)``;
    ``h``: ``(2 * bins, ...)``)."""
    kind = plan.kind
    if kind == "mean":
        return _ratio(own[0], shared[1])
    if kind == "auc":
        assert h is not None
        bins = h.shape[0] // 2
        neg, pos = h[:bins], h[bins:]
        below = np.cumsum(neg, axis=0) - neg
        return _ratio((pos * (below + 0.5 * neg)).sum(axis=0), pos.sum(axis=0) * neg.sum(axis=0))
    if kind == "f1":
        denom = shared[0] + own[1]
        f1 = np.divide(2.0 * own[0], denom, out=np.zeros(np.shape(denom)), where=denom > 0)
        return np.where(shared[1] > 0, f1, np.nan)
    if kind == "macro_f1":
        k = own.shape[0] // 3
        f1 = metric_parts.macro_f1_of(own[:k], shared[:k], own[k : 2 * k], own[2 * k :])
        return np.where(shared[k] > 0, f1, np.nan)
    if kind == "rmse":
        return np.sqrt(_ratio(own[0], shared[0]))
    # r2: SST of the resample from the centred moments; a constant label gives R^2 0 or 1
    weight, first, second = shared[0], shared[1], shared[2]
    sst = second - _ratio(first * first, weight)
    constant = sst <= 1e-12 * np.abs(second)
    r2 = 1.0 - _ratio(own[0], np.where(constant, 1.0, sst))
    r2 = np.where(constant, np.where(own[0] == 0, 1.0, 0.0), r2)
    return np.where(weight > 0, r2, np.nan)


def bootstrap_values(plan: BootstrapPlan, part: BootstrapPart, point: float) -> np.ndarray:
    """The resampled improvements (positive = the challenger is better), undefined resamples
    left out. ``point`` is the improvement on all units; AUC's resamples are shifted by it minus
    the binned improvement (see the module docstring)."""
    if plan.kind == "mean":
        diff = plan.sign * _ratio(part.shared[0], part.shared[1])
    else:
        hist, hist_full = part.hist or (None, None), part.hist_full or (None, None)
        values = [_metric_of_sums(plan, part.own[m], part.shared, hist[m]) for m in range(2)]
        diff = plan.sign * (values[0] - values[1])
        if plan.kind == "auc":
            binned = [
                _metric_of_sums(plan, part.own_full[m], part.shared_full, hist_full[m])
                for m in range(2)
            ]
            diff = diff + (point - plan.sign * (float(binned[0]) - float(binned[1])))
    return np.asarray(diff[~np.isnan(diff)])


def model_values(plan: BootstrapPlan, part: BootstrapPart, which: int, point: float) -> np.ndarray:
    """One model's resampled metric (``which``: 0 the challenger, 1 the champion), undefined
    resamples left out; ``point`` its metric on all units (AUC's resamples are shifted by it
    minus the binned AUC, as ``bootstrap_values`` shifts the improvement)."""
    if plan.kind == "mean" and not plan.per_model:
        raise ValueError(f"{plan.metric}: the plan keeps no per-model sums (per_model=False)")
    hist = part.hist[which] if part.hist is not None else None
    values = _metric_of_sums(plan, part.own[which], part.shared, hist)
    if plan.kind == "auc":
        assert part.hist_full is not None
        binned = _metric_of_sums(
            plan, part.own_full[which], part.shared_full, part.hist_full[which]
        )
        values = values + (point - float(binned))
    return np.asarray(values[~np.isnan(values)])


def model_interval(
    plan: BootstrapPlan, part: BootstrapPart, which: int, point: float, confidence: float = 0.95
) -> tuple[float, float]:
    """The percentile interval of one model's metric at ``confidence`` (see ``model_values``)."""
    return _percentiles(model_values(plan, part, which, point), plan, part, confidence)


def _percentiles(
    boots: np.ndarray, plan: BootstrapPlan, part: BootstrapPart, confidence: float
) -> tuple[float, float]:
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if len(boots) == 0:
        raise ValueError(
            f"{plan.metric}: the metric is undefined on every resample of the {part.units} "
            f"{plan.unit}"
        )
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return float(low), float(high)


def interval(
    plan: BootstrapPlan, part: BootstrapPart, point: float, confidence: float = 0.95
) -> tuple[float, float]:
    """The percentile interval of the improvement at ``confidence``."""
    return _percentiles(bootstrap_values(plan, part, point), plan, part, confidence)


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
    keys: np.ndarray | None = None,
) -> tuple[float, float, float, str, int]:
    """(improvement, low, high, unit, units): the challenger's improvement over the champion on
    the same rows (positive = better, in the metric's direction) and its percentile interval.
    ``weights`` are row weights (ranking: constant within a query); ``no_relevant`` is the
    ranking convention for queries without a relevant row (components.metrics); ``keys`` the
    rows' stable keys that seed their bootstrap weights (default: positions)."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100, got {resamples}")
    y = np.asarray(y, dtype=np.float64)
    if len(challenger) != len(y) or len(champion) != len(y):
        raise ValueError("challenger, champion and labels must hold the same rows")
    w = metrics.check_weights(weights, len(y))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    opts = (relevance_threshold, threshold, no_relevant)
    a = _per_unit(task, metric, y, challenger, groups, *opts)
    if a is not None:
        b = _per_unit(task, metric, y, champion, groups, *opts)
        assert b is not None
        uw = _unit_weights(task, metric, y, groups, w, relevance_threshold, no_relevant)
        if uw is not None and uw.sum() <= 0:
            raise ValueError(f"{metric}: every unit it counts has weight 0")
        point = float(np.average(sign * (a - b), weights=uw))
    else:
        fn = _whole_metric(task, metric, threshold)
        point = sign * (fn(y, challenger, w) - fn(y, champion, w))
    auc_parts = None
    if task == "binary" and metric == "auc":
        auc_parts = (
            metric_parts.auc_partial(y, challenger, w),
            metric_parts.auc_partial(y, champion, w),
        )
    plan = bootstrap_plan(
        task,
        metric,
        resamples,
        seed,
        *opts,
        auc_parts=auc_parts,
        label_mean=float(np.average(y, weights=w)),
    )
    part = bootstrap_partial(plan, y, challenger, champion, groups, w, keys)
    low, high = interval(plan, part, point, confidence)
    return point, low, high, plan.unit, part.units


def first_model(
    task: str, metric: str, value: float, confidence: float = 0.95, min_improvement: float = 0.0
) -> GateDecision:
    """The decision when there is no production version: the first model is promoted."""
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


def _rule(
    metric: str,
    unit: str,
    units: int,
    values: tuple[float, float],
    bounds: tuple[float, float, float],
    confidence: float,
    min_improvement: float,
    resamples: int,
    champion_name: str,
) -> GateDecision:
    """The decision from the improvement and its interval (``bounds``: point, low, high)."""
    point, low, high = bounds
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
        challenger=values[0],
        champion=values[1],
        improvement=point,
        low=low,
        high=high,
        confidence=confidence,
        min_improvement=min_improvement,
        resamples=resamples,
        promote=promote,
        reason=reason,
    )


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
    keys: np.ndarray | None = None,
) -> GateDecision:
    """Promote the challenger if there is no champion, or if the lower bound of the interval of
    its improvement exceeds ``min_improvement``; otherwise keep the champion (called
    ``champion_name`` in the reason) and say why. ``weights`` (row weights; ranking: one per
    query), ``no_relevant`` and ``keys`` are as in ``paired_bootstrap``."""
    kwargs: dict[str, Any] = {
        "relevance_threshold": relevance_threshold,
        "threshold": threshold,
        "no_relevant": no_relevant,
        "weights": weights,
    }
    value = _value(task, metric, y, challenger, groups, **kwargs)
    if champion is None:
        return first_model(task, metric, value, confidence, min_improvement)
    point, low, high, unit, units = paired_bootstrap(
        task, metric, y, challenger, champion, groups, resamples, confidence, seed, **kwargs,
        keys=keys,
    )  # fmt: skip
    theirs = _value(task, metric, y, champion, groups, **kwargs)
    return _rule(
        metric, unit, units, (value, theirs), (point, low, high), confidence, min_improvement,
        resamples, champion_name,
    )  # fmt: skip


def decide_from_parts(
    plan: BootstrapPlan,
    part: BootstrapPart | None,
    challenger: float,
    champion: float | None,
    min_improvement: float = 0.0,
    confidence: float = 0.95,
    champion_name: str = "production",
) -> GateDecision:
    """``decide`` from the merged parts of a blockwise bootstrap (``part``, None when there is
    no champion) and both models' metric values on all units (``metric_parts.finish``): the same
    rule, with the improvement ``sign * (challenger - champion)``."""
    if champion is None or part is None:
        return first_model(plan.task, plan.metric, challenger, confidence, min_improvement)
    point = plan.sign * (challenger - champion)
    low, high = interval(plan, part, point, confidence)
    return _rule(
        plan.metric, plan.unit, part.units, (challenger, champion), (point, low, high),
        confidence, min_improvement, plan.resamples, champion_name,
    )  # fmt: skip


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

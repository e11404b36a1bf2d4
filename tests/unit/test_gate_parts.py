"""The gate's one-pass Poisson bootstrap: deterministic weights, exact per-resample metrics,
blocks that merge to the whole, and the same decision from parts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from components import gate, metric_parts, metrics

R = 100


def _binary(seed: int = 0, n: int = 3000) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float64)
    z = y + rng.normal(0, 1.0, n)
    a = 1 / (1 + np.exp(-z))
    b = np.round(1 / (1 + np.exp(-(z + rng.normal(0, 0.7, n)))), 2)  # ties
    return y, a, b, rng.exponential(1.0, n)


def test_poisson_weights_depend_only_on_seed_and_key() -> None:
    keys = np.arange(10_000, dtype=np.uint64) * 7919
    w = gate.poisson_weights(keys, seed=5, resamples=R)
    assert w.shape == (10_000, R) and w.dtype == np.uint8
    perm = np.random.default_rng(0).permutation(len(keys))
    assert np.array_equal(gate.poisson_weights(keys[perm], 5, R), w[perm])  # any block, any order
    assert np.array_equal(gate.poisson_weights(keys[:10], 5, 37), w[:10, :37])
    assert not np.array_equal(gate.poisson_weights(keys, 6, R), w)
    assert w.mean() == pytest.approx(1.0, abs=0.005) and w.var() == pytest.approx(1.0, abs=0.01)
    # Poisson(1): P(0) = P(1) = 1/e
    assert (w == 0).mean() == pytest.approx(np.exp(-1), abs=0.003)
    assert (w == 1).mean() == pytest.approx(np.exp(-1), abs=0.003)


def _reweighted(w: np.ndarray | None, n: int, seed: int) -> np.ndarray:
    """Each resample's row weights: the Poisson count times the row's own weight."""
    boot = gate.poisson_weights(np.arange(n, dtype=np.uint64), seed, R).astype(np.float64)
    return boot if w is None else boot * w[:, None]


def _values(
    task: str, metric: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, **kw: Any
) -> np.ndarray:
    point = gate.paired_bootstrap(task, metric, y, a, b, resamples=R, seed=4, **kw)[0]
    w = kw.get("weights")
    auc = None
    if metric == "auc":
        auc = (metric_parts.auc_partial(y, a, w), metric_parts.auc_partial(y, b, w))
    plan = gate.bootstrap_plan(
        task,
        metric,
        R,
        4,
        no_relevant=kw.get("no_relevant", "one"),
        auc_parts=auc,
        label_mean=float(np.average(y, weights=w)),
    )
    part = gate.bootstrap_partial(plan, y, a, b, kw.get("groups"), w)
    values = gate.bootstrap_values(plan, part, point)
    assert len(values) == R  # no resample undefined at this size
    return values


CASES = [
    ("binary", "logloss", metrics.binary_metrics),
    ("binary", "accuracy", metrics.binary_metrics),
    ("binary", "f1", metrics.binary_metrics),
    ("regression", "rmse", metrics.regression_metrics),
    ("regression", "mae", metrics.regression_metrics),
    ("regression", "r2", metrics.regression_metrics),
    ("regression", "mape", metrics.regression_metrics),
]


@pytest.mark.parametrize(("task", "metric", "fn"), CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_each_resample_is_the_metric_on_the_reweighted_rows(
    task: str, metric: str, fn: Any, weighted: bool
) -> None:
    y, a, b, w = _binary()
    if task == "regression":
        rng = np.random.default_rng(1)
        y = np.where(rng.random(len(y)) < 0.1, 0.0, 5.0 + 100 * y + rng.normal(0, 1, len(y)))
        a, b = y + rng.normal(0, 1.0, len(y)), y + rng.normal(0, 1.2, len(y))
    weights = w if weighted else None
    got = _values(task, metric, y, a, b, weights=weights)
    sign = -1.0 if metric in metrics.LOWER_IS_BETTER else 1.0
    rw = _reweighted(weights, len(y), seed=4)
    expected = [
        sign * (fn(y, a, weights=rw[:, r])[metric] - fn(y, b, weights=rw[:, r])[metric])
        for r in range(R)
    ]
    assert got == pytest.approx(np.array(expected), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("task", "metric", "fn"), [*CASES, ("binary", "auc", None)])
def test_each_models_own_resamples_are_its_metric_on_the_reweighted_rows(
    task: str, metric: str, fn: Any
) -> None:
    """``model_values``: one model's metric per resample (a monitored version's interval)."""
    y, a, b, w = _binary(n=5000)
    if task == "regression":
        rng = np.random.default_rng(1)
        y = np.where(rng.random(len(y)) < 0.1, 0.0, 5.0 + 100 * y + rng.normal(0, 1, len(y)))
        a, b = y + rng.normal(0, 1.0, len(y)), y + rng.normal(0, 1.2, len(y))
    auc = None
    if metric == "auc":
        auc = (metric_parts.auc_partial(y, a, w), metric_parts.auc_partial(y, b, w))
        fn = lambda yy, out, weights: {"auc": metrics.roc_auc(yy, out, weights)}  # noqa: E731
    gate_plan = gate.bootstrap_plan(
        task, metric, R, 4, auc_parts=auc, label_mean=float(np.average(y, weights=w))
    )
    plan = replace(gate_plan, per_model=True)
    part = gate.bootstrap_partial(plan, y, a, b, None, w)
    if gate_plan.kind == "mean":  # the gate's own plan keeps only the improvement's sums
        lean = gate.bootstrap_partial(gate_plan, y, a, b, None, w)
        assert lean.own[0].shape == (0, R) and np.array_equal(lean.shared, part.shared)
        with pytest.raises(ValueError, match="per_model"):
            gate.model_values(gate_plan, lean, 0, 0.0)
    rw = _reweighted(w, len(y), seed=4)
    for which, out in enumerate((a, b)):
        point = fn(y, out, weights=w)[metric]
        got = gate.model_values(plan, part, which, point)
        expected = np.array([fn(y, out, weights=rw[:, r])[metric] for r in range(R)])
        if metric == "auc":  # binned, shifted to the exact point: close, not equal
            assert np.abs(got - expected).max() < 0.03 * expected.std()
        else:
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
        low, high = gate.model_interval(plan, part, which, point, 0.9)
        assert low == pytest.approx(np.quantile(got, 0.05)) and low < point < high


def test_each_rankers_own_resamples_weigh_whole_queries() -> None:
    rng = np.random.default_rng(3)
    queries, size = 200, 6
    groups = np.repeat(np.arange(queries), size)
    rel = rng.integers(0, 3, queries * size).astype(np.float64)
    a, b = rel + rng.normal(0, 1, len(rel)), rel + rng.normal(0, 1.3, len(rel))
    plan = replace(gate.bootstrap_plan("ranking", "ndcg@5", R, 4), per_model=True)
    part = gate.bootstrap_partial(plan, rel, a, b, groups)
    empty = gate.bootstrap_partial(plan, rel[:0], a[:0], b[:0], groups[:0])  # a block, no query
    part = gate.merge_bootstrap([part, empty])
    boot = gate.poisson_weights(np.arange(queries, dtype=np.uint64), 4, R).astype(np.float64)
    for which, out in enumerate((a, b)):
        got = gate.model_values(plan, part, which, 0.0)
        expected = [
            metrics.ndcg_at_k(rel, out, groups, 5, "one", boot[groups, r]) for r in range(R)
        ]
        assert got == pytest.approx(np.array(expected), rel=1e-9, abs=1e-12)


def test_each_multiclass_resample_is_exact() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    y = rng.integers(0, 3, n)
    a, b = rng.dirichlet(np.ones(3), n), rng.dirichlet(np.ones(3), n)
    a[np.arange(n), y] += 0.3
    a /= a.sum(axis=1, keepdims=True)
    rw = _reweighted(None, n, seed=4)
    for metric in ("macro_f1", "accuracy", "logloss"):
        got = _values("multiclass", metric, y.astype(np.float64), a, b)
        sign = -1.0 if metric in metrics.LOWER_IS_BETTER else 1.0
        expected = [
            sign
            * (
                metrics.multiclass_metrics(y, a, rw[:, r])[metric]
                - metrics.multiclass_metrics(y, b, rw[:, r])[metric]
            )
            for r in range(R)
        ]
        assert got == pytest.approx(np.array(expected), rel=1e-9, abs=1e-12), metric


@pytest.mark.parametrize("option", ["one", "skip"])
def test_each_ranking_resample_weighs_whole_queries(option: str) -> None:
    rng = np.random.default_rng(3)
    queries, size = 300, 8
    groups = np.repeat(np.arange(queries) * 3 + 1, size)
    rel = rng.integers(0, 3, queries * size).astype(np.float64)
    rel[groups < 60] = 0.0  # queries without a relevant row
    a, b = rel + rng.normal(0, 1, len(rel)), rel + rng.normal(0, 1.3, len(rel))
    qw = np.repeat(rng.exponential(1.0, queries), size)
    got = _values("ranking", "ndcg@5", rel, a, b, groups=groups, weights=qw, no_relevant=option)
    has_gain = np.unique(groups[rel > 0])
    counted = np.unique(groups) if option == "one" else has_gain
    boot = gate.poisson_weights(counted.astype(np.uint64), 4, R).astype(np.float64)
    keep = np.isin(groups, counted)
    row_boot = boot[np.searchsorted(counted, groups[keep])]
    expected = []
    for r in range(R):
        rw = qw[keep] * row_boot[:, r]
        ma = metrics.ndcg_at_k(rel[keep], a[keep], groups[keep], 5, option, rw)  # type: ignore[arg-type]
        mb = metrics.ndcg_at_k(rel[keep], b[keep], groups[keep], 5, option, rw)  # type: ignore[arg-type]
        expected.append(ma - mb)
    assert got == pytest.approx(np.array(expected), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_auc_resamples_from_histograms_are_close_to_exact(weighted: bool) -> None:
    y, a, b, w = _binary(n=5000)
    weights = w if weighted else None
    got = _values("binary", "auc", y, a, b, weights=weights)
    rw = _reweighted(weights, len(y), seed=4)
    expected = np.array(
        [metrics.roc_auc(y, a, rw[:, r]) - metrics.roc_auc(y, b, rw[:, r]) for r in range(R)]
    )
    # the binning error of 1,024 equal-weight bins: about 1% of the resamples' spread
    assert np.abs(got - expected).max() < 0.03 * expected.std()


@pytest.mark.parametrize(
    ("task", "metric"), [("binary", "auc"), ("binary", "f1"), ("regression", "r2")]
)
def test_blocks_merge_to_the_whole_and_decide_from_parts_agrees(task: str, metric: str) -> None:
    y, a, b, w = _binary(n=4000)
    if task == "regression":
        a, b = y + a, y + b
    keys = np.random.default_rng(0).permutation(len(y)) * 13 + 5  # row keys, not positions
    kw: dict[str, Any] = {"resamples": 200, "seed": 1, "weights": w, "keys": keys}
    whole = gate.decide(task, metric, y, a, b, min_improvement=0.001, **kw)
    auc = None
    if metric == "auc":
        auc = (
            metric_parts.merge_auc([metric_parts.auc_partial(y[s], a[s], w[s]) for s in _blocks()]),
            metric_parts.merge_auc([metric_parts.auc_partial(y[s], b[s], w[s]) for s in _blocks()]),
        )
    plan = gate.bootstrap_plan(
        task, metric, 200, 1, auc_parts=auc, label_mean=np.average(y, weights=w)
    )
    part = gate.merge_bootstrap(
        [gate.bootstrap_partial(plan, y[s], a[s], b[s], None, w[s], keys[s]) for s in _blocks()]
    )
    ours = gate.decide_from_parts(
        plan, part, whole.challenger, whole.champion, min_improvement=0.001
    )
    mine, theirs = ours.to_dict(), whole.to_dict()
    for name, value in theirs.items():
        if isinstance(value, float):
            assert mine[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
        else:
            assert mine[name] == value, name


def _blocks() -> list[slice]:
    return [slice(0, 700), slice(700, 2500), slice(2500, 2501), slice(2501, 4000)]


@pytest.mark.parametrize(
    ("task", "metric"),
    [
        ("binary", "auc"),
        ("binary", "f1"),
        ("binary", "logloss"),
        ("regression", "r2"),
        ("regression", "rmse"),
    ],
)
def test_the_same_model_gives_an_interval_of_exactly_zero(task: str, metric: str) -> None:
    y, a, _, w = _binary()
    if task == "regression":
        a = y + a
    d = gate.decide(task, metric, y, a, a.copy(), weights=w, resamples=200)
    assert d.improvement == d.low == d.high == 0.0 and not d.promote


def test_no_champion_from_parts_promotes_and_bad_plans_are_refused() -> None:
    plan = gate.bootstrap_plan("binary", "logloss")
    d = gate.decide_from_parts(plan, None, 0.3, None)
    assert d.promote and d.champion is None and "no production version" in d.reason
    with pytest.raises(ValueError, match="needs both models' AUC histograms"):
        gate.bootstrap_plan("binary", "auc")
    with pytest.raises(ValueError, match="no bootstrap for metric 'ndcg@5' on task 'binary'"):
        gate.bootstrap_plan("binary", "ndcg@5")
    with pytest.raises(ValueError, match="resamples must be >= 100"):
        gate.bootstrap_plan("binary", "logloss", resamples=50)
    y, a, b, _ = _binary(n=100)
    with pytest.raises(ValueError, match="keys must hold one value per row"):
        gate.bootstrap_partial(plan, y, a, b, keys=np.arange(99))

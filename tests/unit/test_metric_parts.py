"""components.metric_parts: metrics merged from per-block parts equal components.metrics."""

from __future__ import annotations

import itertools
import pickle
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components import evaluation, metric_parts, metrics
from components.metric_parts import AucGrid

SEEDS = [0, 1, 2]


def _cuts(n: int, rng: np.random.Generator, blocks: int = 5) -> list[slice]:
    """Random block boundaries (some blocks may be tiny)."""
    edges = np.sort(rng.choice(np.arange(1, n), size=blocks - 1, replace=False))
    bounds = [0, *edges.tolist(), n]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _merged(parts: list[metric_parts.Part], rng: np.random.Generator) -> metric_parts.Part:
    """Parts merged in a random order and grouping (a tree, as a distributed reduce would)."""
    items = [parts[i] for i in rng.permutation(len(parts))]
    while len(items) > 1:
        k = int(rng.integers(2, len(items) + 1))
        items = [metric_parts.merge(items[:k]), *items[k:]]
    return items[0]


def _close(got: dict[str, float], expected: dict[str, float], skip: Iterable[str] = ()) -> None:
    assert set(got) == set(expected)
    for name in set(expected) - set(skip):
        assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-9), name


def _binary(seed: int, n: int = 4000, ties: bool = False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1.5, n) + y)))
    if ties:  # a few distinct scores, shared across and within the classes
        p = np.round(p, 1)
    return y, p, rng.exponential(1.0, n)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ties", [False, True])
def test_binary_parts_equal_the_single_process_metrics(
    seed: int, weighted: bool, ties: bool
) -> None:
    y, p, w = _binary(seed, ties=ties)
    weights = w if weighted else None
    rng = np.random.default_rng(seed + 10)
    parts = [
        metric_parts.partial("binary", y[s], p[s], None, None if weights is None else w[s])
        for s in _cuts(len(y), rng)
    ]
    part = _merged(parts, rng)
    expected = metrics.binary_metrics(y, p, weights=weights)
    got = metric_parts.finish(part)
    _close(got, expected, skip=["auc"])
    bound = metric_parts.auc_bound(part)
    assert abs(got["auc"] - expected["auc"]) <= bound + 1e-12 and bound <= 1e-4
    if ties:  # every bin holds one distinct score: the histogram AUC is exact
        assert bound == 0.0 and got["auc"] == pytest.approx(expected["auc"], rel=1e-12)


def test_auc_bound_holds_and_is_reached_on_a_coarse_grid() -> None:
    # inside each of 4 bins every positive scores above every negative: the half credit the
    # histogram gives such pairs is the whole error, so the bound is attained
    rng = np.random.default_rng(0)
    centres = np.repeat([0.1, 0.3, 0.7, 0.9], 500)
    y = np.tile(np.repeat([0, 1], 250), 4)
    p = centres + np.where(y == 1, 0.01, -0.01) + rng.uniform(-0.001, 0.001, len(y))
    part = metric_parts.auc_partial(y, p, grid=AucGrid(bins=4, span=4.0))
    exact = metrics.roc_auc(y, p)
    bound = metric_parts.auc_bound(part)
    assert bound > 0.05
    assert abs(metric_parts.auc_value(part) - exact) == pytest.approx(bound, rel=1e-9)


def test_refinement_brings_concentrated_scores_within_the_tolerance() -> None:
    # every score within 1e-9 of 0.5: one bin of the base grid holds them all
    rng = np.random.default_rng(3)
    n = 20_000
    y = (rng.random(n) < 0.4).astype(np.int64)
    p = 0.5 + 1e-9 * (rng.random(n) + 0.3 * y)
    one_pass = metric_parts.partial("binary", y, p)
    assert metric_parts.auc_bound(one_pass) > 0.1
    blocks = [(y[s], p[s], None, None) for s in _cuts(n, rng)]
    got, part = metric_parts.metrics_of_blocks("binary", lambda: blocks)
    assert isinstance(part, metric_parts.BinaryPart) and len(part.auc.grid.cuts) > 0
    bound = metric_parts.auc_bound(part)
    assert bound <= metric_parts.AUC_TOLERANCE
    assert abs(got["auc"] - metrics.roc_auc(y, p)) <= bound
    assert metric_parts.refine(part) is None  # nothing left to refine


def test_parts_on_different_grids_are_refused() -> None:
    y, p, _ = _binary(0, n=100)
    a = metric_parts.auc_partial(y, p)
    b = metric_parts.auc_partial(y, p, grid=AucGrid(bins=16))
    with pytest.raises(ValueError, match="different grids"):
        metric_parts.merge_auc([a, b])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_parts_equal_the_single_process_metrics(seed: int, weighted: bool) -> None:
    rng = np.random.default_rng(seed)
    n, k = 3000, 4
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), size=n)
    proba[np.arange(n), y] += 0.2
    proba /= proba.sum(axis=1, keepdims=True)
    proba[:5] = np.round(proba[:5], 1)  # some rows that do not sum to 1 (renormalised)
    w = rng.exponential(1.0, n) if weighted else None
    parts = [
        metric_parts.partial("multiclass", y[s], proba[s], None, None if w is None else w[s])
        for s in _cuts(n, rng)
    ]
    _close(
        metric_parts.finish(_merged(parts, rng)), metrics.multiclass_metrics(y, proba, weights=w)
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_regression_parts_equal_the_single_process_metrics(seed: int, weighted: bool) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    # a large offset: a one-pass sum of squares would cancel; Chan's merge keeps R^2 exact
    y = 1e6 + rng.normal(0, 1.0, n)
    y[:300] = np.where(rng.random(300) < 0.5, 0.0, -3.0)  # some rows without a percentage error
    pred = y + rng.normal(0, 0.5, n)
    w = rng.exponential(1.0, n) if weighted else None
    parts = [
        metric_parts.partial("regression", y[s], pred[s], None, None if w is None else w[s])
        for s in _cuts(n, rng)
    ]
    _close(metric_parts.finish(_merged(parts, rng)), metrics.regression_metrics(y, pred, w))


def _ranking(seed: int, queries: int = 200) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, queries)
    groups = np.repeat(np.arange(queries) * 7 + 3, sizes)
    rel = rng.integers(0, 4, len(groups)).astype(np.float64)
    rel[np.isin(groups, groups[: sizes[:20].sum()])] = 0.0  # queries without a relevant row
    scores = np.round(rel + rng.normal(0, 1.0, len(groups)), 1)  # ties within queries
    qw = rng.exponential(1.0, queries)
    return rel, scores, groups, np.repeat(qw, sizes), sizes


def _query_blocks(sizes: np.ndarray, rng: np.random.Generator) -> list[slice]:
    """Block boundaries that never cut a query."""
    ends = np.cumsum(sizes)
    cut = np.sort(rng.choice(ends[:-1], size=4, replace=False))
    bounds = [0, *cut.tolist(), int(ends[-1])]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("option", ["one", "zero", "skip"])
@pytest.mark.parametrize("weighted", [False, True])
def test_ranking_parts_equal_the_single_process_metrics(
    seed: int, option: str, weighted: bool
) -> None:
    rel, scores, groups, w, sizes = _ranking(seed)
    rng = np.random.default_rng(seed)
    ids = np.array([f"q{g}" for g in groups])  # string ids: hashed for the sketch
    weights = w if weighted else None
    kw: dict = {"ks": (1, 5, 10), "relevance_threshold": 2.0, "no_relevant": option}
    parts = [
        metric_parts.partial(
            "ranking", rel[s], scores[s], ids[s], None if weights is None else w[s], **kw
        )
        for s in _query_blocks(sizes, rng)
    ]
    expected = metrics.ranking_metrics(
        rel,
        scores,
        ids,
        ks=(1, 5, 10),
        threshold=2.0,
        no_relevant=option,
        weights=weights,  # type: ignore[arg-type]
    )
    _close(metric_parts.finish(_merged(parts, rng)), expected)


def test_a_query_split_across_blocks_is_refused() -> None:
    rel, scores, groups, _, _ = _ranking(0)
    mid = int(np.flatnonzero(groups == groups[len(groups) // 2])[0]) + 1  # inside a query
    a = metric_parts.partial("ranking", rel[:mid], scores[:mid], groups[:mid])
    b = metric_parts.partial("ranking", rel[mid:], scores[mid:], groups[mid:])
    with pytest.raises(ValueError, match=r"query \d+ has rows in two blocks.*group the rows"):
        metric_parts.merge([a, b])


def test_errors_name_the_problem() -> None:
    rel, scores, groups, _, _ = _ranking(0)
    none = metric_parts.partial("ranking", np.zeros(len(rel)), scores, groups, no_relevant="skip")
    with pytest.raises(ValueError, match="ndcg@1 is undefined with no_relevant='skip'"):
        metric_parts.finish(none)
    y, p, w = _binary(0, n=200)
    # a block of weight 0 is fine; all blocks of weight 0 are not
    zero = metric_parts.partial("binary", y[:50], p[:50], None, np.zeros(50))
    rest = metric_parts.partial("binary", y[50:], p[50:], None, w[50:])
    merged = metric_parts.finish(metric_parts.merge([zero, rest]))
    assert merged["logloss"] == pytest.approx(metrics.log_loss(y[50:], p[50:], w[50:]), rel=1e-12)
    with pytest.raises(ValueError, match="weights are all zero"):
        metric_parts.finish(zero)
    with pytest.raises(ValueError, match="one class only"):
        metric_parts.finish(metric_parts.partial("binary", np.ones(10), p[:10]))
    with pytest.raises(ValueError, match="weights must be >= 0, found -1 at row 3"):
        metric_parts.partial("binary", y[:5], p[:5], None, [1, 1, 1, -1, 1])
    with pytest.raises(ValueError, match="p must hold probabilities"):
        metric_parts.partial("binary", y[:2], [0.5, 1.5])
    with pytest.raises(ValueError, match="different tasks"):
        metric_parts.merge([rest, metric_parts.partial("regression", y, p)])
    with pytest.raises(ValueError, match="ranking needs query ids"):
        metric_parts.partial("ranking", rel, scores)


def test_parts_survive_pickling() -> None:
    # parts travel between processes (Ray's object store pickles them)
    y, p, w = _binary(1)
    part = metric_parts.partial("binary", y, p, None, w)
    again = pickle.loads(pickle.dumps(part))
    assert metric_parts.finish(metric_parts.merge([again])) == metric_parts.finish(part)


def test_evaluate_blocks_equals_evaluate_on_the_whole_frame() -> None:
    rel, scores, groups, w, sizes = _ranking(2)
    frame = pd.DataFrame({"label": rel, "score": scores, "_group": groups, "w": w})
    blocks = [frame.iloc[s] for s in _query_blocks(sizes, np.random.default_rng(0))]
    kwargs = {"ks": [1, 3], "relevance_threshold": 1.0, "no_relevant": "zero", "weight": "w"}
    got = evaluation.evaluate_blocks("ranking", lambda: blocks, "label", **kwargs)
    _close(got, evaluation.evaluate("ranking", frame, "label", **kwargs))
    y, p, _ = _binary(3, ties=True)
    binary = pd.DataFrame({"label": y, "score": p})
    parts = [
        evaluation.partial("binary", binary.iloc[s], "label")
        for s in _cuts(len(y), np.random.default_rng(1))
    ]
    assert evaluation.finish(evaluation.merge(parts)) == pytest.approx(
        evaluation.evaluate("binary", binary, "label"), rel=1e-12
    )


def _ranks_gather(world: int) -> list[Any]:
    """``gather`` functions for ``world`` threads standing in for training ranks: each call
    returns every rank's object, once all have called (as ``all_gather_object`` does)."""
    barrier = threading.Barrier(world)
    slots: list[Any] = [None] * world
    calls = [0] * world

    def for_rank(r: int) -> Any:
        def gather(obj: Any) -> list[Any]:
            slots[r] = obj
            calls[r] += 1
            barrier.wait()
            out = list(slots)
            barrier.wait()  # nobody overwrites a slot before all have read
            return out

        return gather

    return [for_rank(r) for r in range(world)]


@pytest.mark.parametrize("task", ["binary", "ranking", "regression"])
def test_ranks_merging_their_parts_get_the_whole_sets_metrics(task: str) -> None:
    """Three ranks each holding a share of the rows (one holds none) all get the metrics of
    every row, the same in each: what training ranks compute for early stopping."""
    rng = np.random.default_rng(3)
    n = 3000
    groups = np.repeat(np.arange(300), 10)
    y = rng.integers(0, 2 if task == "binary" else 4, n).astype(np.float64)
    out = np.clip(y / 4 + rng.normal(0, 0.3, n), 1e-6, 1 - 1e-6)
    owner = np.where(groups % 3 == 2, 1, 0)  # rank 2 holds nothing
    blocks = [
        [(y[owner == r], out[owner == r], groups[owner == r], None)] if r < 2 else []
        for r in range(3)
    ]
    gathers = _ranks_gather(3)
    results: list[dict[str, float]] = [{}] * 3

    def rank(r: int) -> None:
        results[r] = metric_parts.metrics_of_blocks(task, lambda: blocks[r], gather=gathers[r])[0]

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    expected = metric_parts.metrics_of_blocks(task, lambda: [(y, out, groups, None)])[0]
    assert results[0] == results[1] == results[2]
    _close(results[0], expected)
    if task == "binary":
        assert abs(results[0]["auc"] - metrics.binary_metrics(y, out)["auc"]) < 1e-4


def test_merging_nothing_from_every_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="no rows to evaluate"):
        metric_parts.metrics_of_blocks("regression", lambda: [])


def test_a_rank_with_bad_rows_fails_every_rank_instead_of_leaving_them_waiting() -> None:
    gathers = _ranks_gather(2)
    errors: list[str] = ["", ""]
    good = (np.array([0.0, 1.0]), np.array([0.2, 0.9]), None, None)
    bad = (np.array([0.0, 3.0]), np.array([0.2, 0.9]), None, None)  # 3 is no binary label

    def rank(r: int) -> None:
        try:
            metric_parts.metrics_of_blocks(
                "binary", lambda: [good if r == 0 else bad], gather=gathers[r]
            )
        except ValueError as e:
            errors[r] = str(e)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors[0] == errors[1] != ""

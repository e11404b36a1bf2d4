"""Label moments per block, merged: equal to numpy over all the rows at once."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from components.label_stats import LabelMoments, merge_all


def test_merged_blocks_equal_the_whole_including_empty_and_missing() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(1e6, 3.0, 10_001)  # a large mean: a sum of squares would lose the std
    y[::97] = np.nan
    w = rng.uniform(0.0, 2.0, y.size)
    cuts = [0, 0, 1, 500, 500, 7_000, y.size]  # empty blocks and a one-row block
    parts = [LabelMoments.of(y[a:b], w[a:b]) for a, b in itertools.pairwise(cuts)]
    got = merge_all(parts)
    ok = y[~np.isnan(y)]
    assert got.count == ok.size
    assert got.mean == pytest.approx(ok.mean(), rel=1e-14)
    assert got.std == pytest.approx(ok.std(ddof=1), rel=1e-9)
    assert got.lowest == ok.min()
    assert got.weight_sum == pytest.approx(w.sum(), rel=1e-12)
    assert np.isnan(got.weighted_label_sum)  # a missing label has no weighted value


def test_weighted_mean_std_and_no_rows() -> None:
    m = merge_all([LabelMoments.of(np.array([1.0, 3.0]), np.array([3.0, 1.0]))])
    assert m.weighted_mean == pytest.approx(1.5) and m.mean == 2.0
    assert m.std == pytest.approx(np.sqrt(2.0))
    assert LabelMoments.of(np.array([5.0])).std is None
    none = merge_all([LabelMoments.of(np.array([np.nan]), np.array([0.0]))])
    assert none.count == 0 and none.std is None and none.weighted_mean is None
    assert none.lowest == float("inf")

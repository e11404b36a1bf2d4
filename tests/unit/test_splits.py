"""Splits: seeded and reproducible, stratified exactly, no query crosses splits, time cut-offs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.splits import (
    TEST,
    TRAIN,
    VALID,
    SplitPlan,
    assign_splits,
    carve_plan,
    split_unit,
    stratified_cuts,
)
from components.validation import row_keys


def rows(n: int = 20_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "_row_key": row_keys(pd.Series(["f.parquet"] * n), pd.Series(np.arange(n))),
            "_group": rng.integers(0, 2000, n),
            "label": (rng.random(n) < 0.07).astype(float),
            "_ts": np.arange(n, dtype=float),
        }
    )


def test_random_split_is_reproducible_and_seeded() -> None:
    df = rows()
    plan = SplitPlan("random", seed=1, train=0.8, valid=0.1)
    a, b = (
        assign_splits(df, plan),
        assign_splits(df.sample(frac=1, random_state=3).sort_index(), plan),
    )
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(
        a, assign_splits(df, SplitPlan("random", seed=2, train=0.8, valid=0.1))
    )
    frac = np.bincount(a, minlength=3) / len(a)
    np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.015)


def test_stratified_split_is_exact_per_class() -> None:
    df = rows()
    plan = SplitPlan("random", seed=0, train=0.8, valid=0.1)
    cuts = stratified_cuts(split_unit(df, plan), df["label"].to_numpy(), 0.8, 0.1)
    s = assign_splits(df, SplitPlan("random", seed=0, train=0.8, valid=0.1, class_cuts=cuts))
    for cls in (0.0, 1.0):
        m = df["label"].to_numpy() == cls
        n = int(m.sum())
        assert (s[m] == TRAIN).sum() == int(n * 0.8)
        assert (s[m] == VALID).sum() == int(n * 0.9) - int(n * 0.8)
    # Blocks assigned separately give the same answer as the whole frame.
    parts = np.concatenate(
        [
            assign_splits(df.iloc[i : i + 5000], SplitPlan("random", 0, 0.8, 0.1, cuts))
            for i in range(0, len(df), 5000)
        ]
    )
    np.testing.assert_array_equal(parts, s)


def test_group_split_keeps_queries_whole() -> None:
    df = rows()
    s = assign_splits(df, SplitPlan("group", seed=0, train=0.8, valid=0.1))
    per_group = pd.Series(s).groupby(df["_group"]).nunique()
    assert (per_group == 1).all()
    assert set(np.unique(s)) == {TRAIN, VALID, TEST}


def test_time_split_by_cutoffs() -> None:
    df = rows(100)
    s = assign_splits(df, SplitPlan("time", valid_from=60, test_from=80))
    assert (s[:60] == TRAIN).all() and (s[60:80] == VALID).all() and (s[80:] == TEST).all()


@pytest.mark.parametrize("valid", [0.1, 0.2, 0.3, 0.15, 1 / 3, 0.7])
def test_carving_valid_out_of_train_leaves_no_test_rows(valid: float) -> None:
    df = rows()
    plan = carve_plan("random", 3, valid)
    s = assign_splits(df, plan)
    assert set(np.unique(s)) == {TRAIN, VALID}
    assert abs((s == VALID).mean() - valid) < 0.015
    np.testing.assert_array_equal(s, assign_splits(df.iloc[::-1], plan)[::-1])  # row by row
    # stratified: exactly floor(n * train) rows of each class stay in train, the rest is valid,
    # including the row with the largest u (float rounding must not send it to test)
    cuts = stratified_cuts(split_unit(df, plan), df["label"].to_numpy(), plan.train, plan.valid)
    st = assign_splits(df, SplitPlan("random", 3, plan.train, plan.valid, cuts))
    for cls in (0.0, 1.0):
        m = df["label"].to_numpy() == cls
        n = int(m.sum())
        assert (st[m] == TRAIN).sum() == int(n * plan.train)
        assert (st[m] == VALID).sum() == n - int(n * plan.train)
    assert not (st == TEST).any()


def test_carving_by_group_keeps_queries_whole() -> None:
    df = rows()
    s = assign_splits(df, carve_plan("group", 0, 0.25))
    assert set(np.unique(s)) == {TRAIN, VALID}
    per_group = pd.Series(s).groupby(df["_group"]).nunique()
    assert (per_group == 1).all()
    held = pd.Series(s == VALID).groupby(df["_group"]).first().mean()
    assert abs(held - 0.25) < 0.04  # of the 2,000 queries


def test_carve_plan_refuses_bad_methods_and_fractions() -> None:
    with pytest.raises(ValueError, match="not by 'time'"):
        carve_plan("time", 0, 0.1)
    for bad in (0, 1, -0.1):
        with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
            carve_plan("random", 0, bad)
    assert carve_plan("group", 5, 0.2, label="rel") == SplitPlan(
        "group", seed=5, train=0.8, valid=0.2, label="rel"
    )

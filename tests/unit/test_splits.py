"""Splits: seeded and reproducible, stratified exactly, no query crosses splits, time cut-offs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from components.splits import (
    COLLECT_MAX,
    FIRST_PASS,
    SUMMARY_COLUMNS,
    TEST,
    TRAIN,
    VALID,
    SplitPlan,
    StratifiedCutFinder,
    assign_splits,
    carve_plan,
    split_unit,
    stratified_cuts,
    stratify_summary,
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


def _find_cuts(
    df: pd.DataFrame, plan: SplitPlan, blocks: list[np.ndarray], collect_max: int = COLLECT_MAX
) -> StratifiedCutFinder:
    """The cut search as the Ray step runs it, one summary per block (blocks given as row
    positions, in the order given)."""
    finder = StratifiedCutFinder(plan.train, plan.valid, collect_max=collect_max)
    return finder.run(lambda ws: (stratify_summary(df.iloc[b], plan, ws) for b in blocks))


def _per_class(df: pd.DataFrame, s: np.ndarray) -> dict[float, tuple[int, int, int]]:
    labels = df["label"].to_numpy()
    out = {}
    for c in np.unique(labels):
        train, valid, test = (int(x) for x in np.bincount(s[labels == c], minlength=3))
        out[float(c)] = (train, valid, test)
    return out


@pytest.mark.parametrize(("collect_max", "passes"), [(COLLECT_MAX, 2), (4, 3), (0, 5)])
def test_cut_finder_equals_a_full_sort(collect_max: int, passes: int) -> None:
    """Radix selection over per-block summaries finds the very cut points a sort of each class
    does, however deep it has to go (collect_max 0 narrows 12 bits at a time to one value)."""
    df = rows(30_000, seed=4).assign(label=lambda f: (f["_group"] % 3).astype(float))
    plan = SplitPlan("random", seed=7, train=0.7, valid=0.2)
    blocks = np.array_split(np.arange(len(df)), 7)
    finder = _find_cuts(df, plan, blocks, collect_max)
    assert finder.passes == passes
    cuts = finder.cuts()
    assert cuts == stratified_cuts(split_unit(df, plan), df["label"].to_numpy(), 0.7, 0.2)
    s = assign_splits(df, SplitPlan("random", 7, 0.7, 0.2, class_cuts=cuts))
    realised = _per_class(df, s)
    assert finder.planned() == realised
    for cls, n in finder.rows.items():  # exact: floor(n * train), floor(n * 0.9) - floor(n * 0.7)
        assert realised[cls] == (int(n * 0.7), int(n * 0.9) - int(n * 0.7), n - int(n * 0.9))


def test_cut_finder_is_independent_of_block_order_and_partitioning() -> None:
    df = rows(20_000, seed=1)
    plan = SplitPlan("random", seed=3, train=0.8, valid=0.1)
    one = _find_cuts(df, plan, [np.arange(len(df))]).cuts()
    order = np.random.default_rng(0).permutation(len(df))
    cuts = np.sort(np.random.default_rng(1).choice(np.arange(1, len(df)), 40, replace=False))
    shuffled = np.split(order, cuts)[::-1]  # uneven blocks of shuffled rows, in reverse
    assert _find_cuts(df, plan, shuffled, collect_max=8).cuts() == one
    assert _find_cuts(df, plan, [*shuffled, np.array([], int)]).cuts() == one  # an empty block


def test_cut_finder_with_tied_keys_and_a_one_row_class() -> None:
    """Equal keys give equal u: the cut is still the sort's, and ``planned`` says how many rows
    the ties leave below it. A class of one row goes to test, as floor(1 * 0.8) = 0 says."""
    rng = np.random.default_rng(2)
    n = 5000
    df = pd.DataFrame(
        {
            "_row_key": rng.integers(0, 300, n),  # ~17 rows per key
            "label": (rng.random(n) < 0.3).astype(float),
        }
    )
    df.loc[17, "label"] = 2.0
    plan = SplitPlan("random", seed=0, train=0.8, valid=0.1)
    blocks = np.array_split(np.arange(n), 3)
    for collect_max in (COLLECT_MAX, 0):
        finder = _find_cuts(df, plan, blocks, collect_max)
        cuts = finder.cuts()
        assert cuts == stratified_cuts(split_unit(df, plan), df["label"].to_numpy(), 0.8, 0.1)
        realised = _per_class(df, assign_splits(df, replace(plan, class_cuts=cuts)))
        assert finder.planned() == realised
        assert realised[2.0] == (0, 0, 1)
        k0 = int((df["label"] == 0.0).sum())
        assert realised[0.0][0] <= int(k0 * 0.8)  # ties on the cut stay above it, together
        assert sum(realised[0.0]) == k0


def test_cut_finder_carving_keeps_the_last_row_out_of_test() -> None:
    df = rows(10_000)
    plan = carve_plan("random", 3, 0.3)
    finder = _find_cuts(df, plan, np.array_split(np.arange(len(df)), 4))
    cuts = finder.cuts()
    assert all(c2 == 1.0 for _, c2 in cuts.values())
    s = assign_splits(df, replace(plan, class_cuts=cuts))
    assert not (s == TEST).any()
    assert finder.planned() == _per_class(df, s)


def test_block_summaries_are_bounded_by_bins_not_rows() -> None:
    """What one block sends is at most classes x 4,096 rows on the first pass, whatever its size,
    and the driver side keeps one histogram per class, never a row."""
    df = rows(100_000, seed=5).assign(label=lambda f: (f["_group"] % 4).astype(float))
    plan = SplitPlan("random", seed=0, train=0.8, valid=0.1)
    first = stratify_summary(df, plan, [FIRST_PASS])
    assert list(first.columns) == list(SUMMARY_COLUMNS)
    assert len(first) <= 4 * 4096 and first["n"].sum() == len(df)
    finder = StratifiedCutFinder(0.8, 0.1)
    finder.add(first)
    finder.advance()
    exact = finder.windows
    assert len(exact) == 8 and all(w.exact for w in exact)  # 2 cuts x 4 classes, one bin each
    # each exact window is one bin of one class: at most its rows, far under COLLECT_MAX
    assert len(stratify_summary(df, plan, exact)) <= len(exact) * first["n"].max() < COLLECT_MAX


def test_stratified_summary_refuses_a_missing_label_and_changed_data() -> None:
    df = rows(1000)
    df.loc[5, "label"] = np.nan
    with pytest.raises(ValueError, match="column 'label' is missing at row 5"):
        stratify_summary(df, SplitPlan("random"), [FIRST_PASS])
    df = rows(1000)
    plan = SplitPlan("random")
    finder = StratifiedCutFinder(0.8, 0.1)
    finder.add(stratify_summary(df, plan, finder.windows))
    finder.advance()
    finder.add(stratify_summary(df.iloc[:500], plan, finder.windows))  # half the rows are gone
    with pytest.raises(RuntimeError, match="the data changed between the passes"):
        finder.advance()
    with pytest.raises(RuntimeError, match="not found yet"):
        StratifiedCutFinder(0.8, 0.1).cuts()

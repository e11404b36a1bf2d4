"""Splits through Ray Data: the assignment is the in-process one, decided in the tasks, and the
counts (rows, rows per class, queries) come from tasks, never from columns pulled to the driver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components.splits import (
    SPLIT_NAMES,
    SplitPlan,
    assign_splits,
    carve_plan,
    split_unit,
    stratified_cuts,
)
from components.steps import prepare
from components.validation import row_keys

pytestmark = pytest.mark.usefixtures("ray_session")

# The Dataset calls that bring rows to the driver.
TO_DRIVER = ("to_pandas", "take_all", "take", "take_batch", "unique", "iter_rows")


@contextmanager
def rows_stay_in_tasks() -> Iterator[None]:
    """Every Dataset call that brings rows to the driver fails inside the block. (The step hands
    block references to a counting task, which is allowed: it is that task that reads them.)"""
    import ray.data

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the split step collected rows to the driver")

    with pytest.MonkeyPatch.context() as mp:
        for name in TO_DRIVER:
            mp.setattr(ray.data.Dataset, name, refuse)
        yield


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "_row_key": row_keys(pd.Series(["s.parquet"] * n), pd.Series(np.arange(n))),
            # queries of ~3 rows drawn at random: a query's rows sit in several blocks
            "_group": rng.integers(0, n // 3, n),
            "label": rng.choice([0.0, 1.0, 2.0], n, p=[0.6, 0.3, 0.1]),
            "x": rng.random(n),
        }
    )


def _dataset(df: pd.DataFrame, blocks: int, seed: int) -> Any:
    """A Ray dataset of ``df``'s rows, shuffled, in ``blocks`` uneven blocks."""
    import ray.data

    order = np.random.default_rng(seed).permutation(len(df))
    cuts = np.sort(np.random.default_rng(seed + 1).choice(np.arange(1, len(df)), blocks - 1, False))
    return ray.data.from_pandas([df.iloc[p] for p in np.split(order, cuts)]).materialize()


def _classes(labels: pd.Series) -> dict[float, int]:
    counts = labels.value_counts().sort_index()
    return dict(zip(counts.index.to_numpy(float).tolist(), counts.tolist(), strict=True))


def _keys(sp: prepare.Splits) -> dict[str, set[int]]:
    return {n: set(getattr(sp, n).to_pandas()["_row_key"]) for n in SPLIT_NAMES}


def test_stratified_split_equals_the_in_process_assignment() -> None:
    df = _frame(6_000, seed=0)
    plan = SplitPlan("random", seed=5, train=0.7, valid=0.2)
    first, second = _dataset(df, 9, seed=1), _dataset(df, 4, seed=2)
    with rows_stay_in_tasks():
        sp = prepare.split_dataset(first, plan, has_group=False, stratify=True)
        again = prepare.split_dataset(second, plan, has_group=False, stratify=True)

    cuts = stratified_cuts(split_unit(df, plan), df["label"].to_numpy(), 0.7, 0.2)
    want = assign_splits(df, replace(plan, class_cuts=cuts))
    expected = {n: set(df["_row_key"][want == i]) for i, n in enumerate(SPLIT_NAMES)}
    assert _keys(sp) == expected == _keys(again)  # any blocks, in any order: the same rows
    assert sp.rows == {n: len(expected[n]) for n in SPLIT_NAMES}
    for i, name in enumerate(SPLIT_NAMES):
        assert sp.classes[name] == _classes(df["label"][want == i])
    for cls, n in _classes(df["label"]).items():  # exact per class
        assert sp.classes["train"][cls] == int(n * 0.7)
        assert sp.classes["valid"][cls] == int(n * 0.9) - int(n * 0.7)
    assert sp.warnings == [] and sp.groups == dict.fromkeys(SPLIT_NAMES, 0)
    assert set(sp.train.columns()) == {*df.columns, "_bucket"}


def test_group_counts_come_from_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queries whose rows lie in several blocks are counted once per split, here (4 blocks per
    reducer, 9 blocks) by two hash partitions of the ids; the one-task count of a few blocks is
    the one every other group split runs."""
    monkeypatch.setattr(prepare, "BLOCKS_PER_REDUCER", 4)
    df = _frame(3_000, seed=3)
    plan = SplitPlan("group", seed=1, train=0.6, valid=0.2)
    ds = _dataset(df, 9, seed=4)
    with rows_stay_in_tasks():
        sp = prepare.split_dataset(ds, plan, has_group=True, stratify=True)
        explicit = prepare.explicit_splits({"train": ds, "valid": ds, "test": ds}, has_group=True)

    want = assign_splits(df, plan)
    for i, name in enumerate(SPLIT_NAMES):
        assert sp.groups[name] == df["_group"][want == i].nunique()
        assert sp.rows[name] == int((want == i).sum())
    parts = {n: getattr(sp, n).to_pandas() for n in SPLIT_NAMES}
    assert not set(parts["train"]["_group"]) & set(parts["valid"]["_group"])
    assert sp.classes == {} and sp.warnings == []  # a group split is not stratified
    assert explicit.groups == dict.fromkeys(SPLIT_NAMES, df["_group"].nunique())
    assert explicit.rows == dict.fromkeys(SPLIT_NAMES, len(df))


def test_a_class_too_small_to_stratify_is_warned_about() -> None:
    df = _frame(3_000, seed=5)
    df.loc[10, "label"] = 3.0  # one row: floor(1 * 0.75) = 0 in train, and it is carved to valid
    train = _dataset(df, 3, seed=6)
    test = _dataset(df.iloc[:200], 1, seed=7)
    with rows_stay_in_tasks():
        sp = prepare.carve_valid(
            {"train": train, "test": test}, carve_plan("random", 0, 0.25), False, True
        )
    assert sp.warnings == [
        "class 3 has 1 row(s), none in train (train 0, valid 1): too few to stratify across "
        "every split"
    ]
    assert sp.classes["valid"][3.0] == 1 and 3.0 not in sp.classes["train"]
    assert sp.rows == {n: sum(sp.classes[n].values()) for n in SPLIT_NAMES}
    assert sp.rows["train"] + sp.rows["valid"] == 3000 and sp.rows["test"] == 200
    assert sp.classes["test"] == _classes(df["label"].iloc[:200])
    line = str(sp.class_line())  # what the split step prints
    assert line.startswith("rows per class: train 0: ") and "; valid 0: " in line
    assert line.endswith(
        f"; test 0: {sp.classes['test'][0.0]:,}, 1: {sp.classes['test'][1.0]:,}, "
        f"2: {sp.classes['test'][2.0]:,}, 3: 1"
    )

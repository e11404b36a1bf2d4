"""Seeded, reproducible train/valid/test assignment, computed row by row from stable keys.

- random: each row's key (file + row number) hashed with the seed to a uniform number u;
  u < train -> train, u < train + valid -> valid, else test. With ``stratify`` the cut points are
  per class quantiles of u, so every class is split in exactly the spec's proportions (up to
  one row per class).
- group: the same on the query id, so all rows of a query land in one split.
- time: the timestamp against ``valid_from`` and ``test_from``.
- carve (``carve_plan``): explicit train and test sources without a valid one; the random or
  group assignment with ``train + valid = 1`` holds ``valid`` of the train source out.
Each row's split depends only on its own key, the seed and (for stratified splits) the class
cut points, so the assignment runs on any block, in any order, on any worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from components.hashing import unit_interval

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")
# train + valid within this of 1 leaves no test split: the sum of two rounded fractions need
# not be exactly 1, and the row with the largest u must still go to valid, not to test.
_WHOLE = 1 - 1e-9


@dataclass(frozen=True)
class SplitPlan:
    method: str
    seed: int = 0
    train: float = 0.8
    valid: float = 0.1
    # Per-class cut points (class label -> (train cut, valid cut)) for stratified splits.
    class_cuts: dict[float, tuple[float, float]] = field(default_factory=dict)
    label: str = "label"
    valid_from: float | None = None
    test_from: float | None = None


def carve_plan(method: str, seed: int, valid: float, label: str = "label") -> SplitPlan:
    """Hold ``valid`` of one source out (train/valid only): ``method`` random, or group for
    whole queries; with stratified cuts every class keeps the proportions."""
    if method not in ("random", "group"):
        raise ValueError(f"a valid split is carved at random or by group, not by {method!r}")
    if not 0 < valid < 1:
        raise ValueError(f"the fraction held out for validation must be in (0, 1), got {valid}")
    return SplitPlan(method=method, seed=seed, train=1.0 - valid, valid=valid, label=label)


def _upper(train: float, valid: float) -> float:
    """The valid split's upper cut: above every u (in [0, 1)) when there is no test split."""
    return np.inf if train + valid >= _WHOLE else train + valid


def stratified_cuts(
    u: np.ndarray, labels: np.ndarray, train: float, valid: float
) -> dict[float, tuple[float, float]]:
    """Per class, the u values below which exactly floor(n*train) and floor(n*(train+valid)) rows fall."""
    cuts: dict[float, tuple[float, float]] = {}
    for cls in np.unique(labels):
        vals = np.sort(u[labels == cls])
        n = len(vals)
        k1 = int(n * train)
        k2 = n if train + valid >= _WHOLE else int(n * (train + valid))

        def cut(k: int, vals: np.ndarray = vals, n: int = n) -> float:
            return float(vals[k]) if k < n else 1.0

        cuts[float(cls)] = (cut(k1), cut(k2))
    return cuts


def split_unit(frame: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """The uniform number a row is split by (row key for random, query key for group)."""
    key = "_group" if plan.method == "group" else "_row_key"
    return unit_interval(frame[key].to_numpy(), plan.seed)


def assign_splits(frame: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """Split id per row: 0 train, 1 valid, 2 test."""
    n = len(frame)
    if plan.method == "time":
        ts = frame["_ts"].to_numpy()
        assert plan.valid_from is not None and plan.test_from is not None
        return np.where(
            ts < plan.valid_from, TRAIN, np.where(ts < plan.test_from, VALID, TEST)
        ).astype(np.int8)
    if plan.method not in ("random", "group"):
        raise ValueError(f"split method {plan.method!r} is not assigned row by row")
    u = split_unit(frame, plan)
    cut1 = np.full(n, plan.train)
    cut2 = np.full(n, _upper(plan.train, plan.valid))
    if plan.class_cuts:
        labels = frame[plan.label].to_numpy(dtype=np.float64)
        for cls, (c1, c2) in plan.class_cuts.items():
            m = labels == cls
            cut1[m], cut2[m] = c1, c2
    return np.where(u < cut1, TRAIN, np.where(u < cut2, VALID, TEST)).astype(np.int8)

"""Seeded, reproducible train/valid/test assignment, computed row by row from stable keys.

- random: each row's key (file + row number) hashed with the seed to a uniform number u;
  u < train -> train, u < train + valid -> valid, else test. With ``stratify`` the cut points are
  per class order statistics of u: a class of n rows puts exactly floor(n * train) rows in
  train, floor(n * (train + valid)) - floor(n * train) in valid and the rest in test (no
  tolerance: the rounding of floor is the only deviation from the spec's fractions, under one
  row per class and split).
- group: the same on the query id, so all rows of a query land in one split.
- time: the timestamp against ``valid_from`` and ``test_from``.
- carve (``carve_plan``): explicit train and test sources without a valid one; the random or
  group assignment with ``train + valid = 1`` holds ``valid`` of the train source out.
Each row's split depends only on its own key, the seed and (for stratified splits) the class
cut points, so the assignment runs on any block, in any order, on any worker.

Stratified cut points without the rows (``StratifiedCutFinder``): u is a 53-bit integer over
2**53, so the k-th smallest u of a class is found by radix selection over bounded, mergeable
per-block summaries. The first pass counts each class's rows in 4,096 bins of u's top 12 bits;
the bin holding rank k is then narrowed 12 bits at a time, or, once it holds at most
``COLLECT_MAX`` rows of the class, its exact values are gathered and sorted. Every pass merges
per-block counts (a sum, so block order and partitioning cannot change the result), the cut is
the same u value a full sort gives (``stratified_cuts``, the in-process reference), and the
merging side holds O(classes x (4,096 + 2 x COLLECT_MAX)) numbers whatever the row count: two
passes up to 67M rows per class (4,096 x COLLECT_MAX), one more per factor of 4,096 beyond.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


def class_ranks(n: int, train: float, valid: float) -> tuple[int, int]:
    """A class of ``n`` rows: how many rows fall below its train cut and below its valid cut."""
    return int(n * train), n if train + valid >= _WHOLE else int(n * (train + valid))


def stratified_cuts(
    u: np.ndarray, labels: np.ndarray, train: float, valid: float
) -> dict[float, tuple[float, float]]:
    """Per class, the u values below which exactly floor(n*train) and floor(n*(train+valid)) rows
    fall, by a full sort: the in-process reference for ``StratifiedCutFinder``."""
    cuts: dict[float, tuple[float, float]] = {}
    for cls in np.unique(labels):
        vals = np.sort(u[labels == cls])
        n = len(vals)
        k1, k2 = class_ranks(n, train, valid)

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


# Exact stratified cut points from bounded, mergeable per-block summaries (see the module
# docstring). u = bits / 2**53 exactly (components.hashing.unit_interval), so selecting on the
# integer bits finds the very u value a sort of the class would.
U_BITS = 53
HIST_BITS = 12  # 4,096 bins per pass
COLLECT_MAX = 16_384  # a bin with at most this many rows of a class is gathered value by value
SUMMARY_COLUMNS = ("window", "cls", "key", "n")


def split_bits(frame: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """Each row's u as the 53-bit integer it is made of (u * 2**53, exact), int64."""
    return np.ldexp(split_unit(frame, plan), U_BITS).astype(np.int64)


@dataclass(frozen=True)
class Window:
    """The rows of class ``cls`` (every class, each on its own, when None) whose bits >> shift
    equal ``prefix``, summarised by key = bits >> sub_shift: a histogram of
    2**(shift - sub_shift) bins, or with sub_shift 0 the exact values and their counts."""

    cls: float | None
    shift: int
    prefix: int
    sub_shift: int

    @property
    def exact(self) -> bool:
        return self.sub_shift == 0

    @property
    def base(self) -> int:
        """The window's first key."""
        return self.prefix << (self.shift - self.sub_shift)

    @property
    def bins(self) -> int:
        return 1 << (self.shift - self.sub_shift)


FIRST_PASS = Window(None, U_BITS, 0, U_BITS - HIST_BITS)


def _empty_summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "window": np.array([], np.int64),
            "cls": np.array([], np.float64),
            "key": np.array([], np.int64),
            "n": np.array([], np.int64),
        }
    )


def summarize_bits(labels: np.ndarray, bits: np.ndarray, windows: list[Window]) -> pd.DataFrame:
    """One block's share of a pass: per window and class, the rows at each key (zeros left out).
    At most windows x classes x min(bins, rows in the window) rows, whatever the block's size."""
    parts = []
    for i, w in enumerate(windows):
        inside = (bits >> w.shift) == w.prefix
        if w.cls is not None:
            inside &= labels == w.cls
        lab, key = labels[inside], bits[inside] >> w.sub_shift
        for cls in np.unique(lab) if w.cls is None else np.array([w.cls]):
            k = key[lab == cls] if w.cls is None else key
            if w.exact:
                vals, n = np.unique(k, return_counts=True)
            else:
                counts = np.bincount(k - w.base, minlength=w.bins)
                vals = np.flatnonzero(counts)
                n = counts[vals]
                vals = vals + w.base
            if len(vals):
                parts.append(
                    pd.DataFrame(
                        {
                            "window": np.full(len(vals), i, np.int64),
                            "cls": np.full(len(vals), float(cls)),
                            "key": vals.astype(np.int64),
                            "n": n.astype(np.int64),
                        }
                    )
                )
    return pd.concat(parts, ignore_index=True) if parts else _empty_summary()


def stratify_summary(frame: pd.DataFrame, plan: SplitPlan, windows: list[Window]) -> pd.DataFrame:
    """``summarize_bits`` of a block of rows (needs the plan's key column and its label)."""
    labels = frame[plan.label].to_numpy(dtype=np.float64)
    if np.isnan(labels).any():
        row = int(np.flatnonzero(np.isnan(labels))[0])
        raise ValueError(
            f"column {plan.label!r} is missing at row {row} of a block: a stratified split needs "
            "a label on every row"
        )
    return summarize_bits(labels, split_bits(frame, plan), windows)


class StratifiedCutFinder:
    """Per-class cut points of a stratified split, found from passes of per-block summaries.

    Call ``windows`` for what the next pass summarises (``stratify_summary`` on every block),
    ``add`` each block's summary in any order, then ``advance``; repeat until ``windows`` is
    empty, then read ``cuts`` (equal to ``stratified_cuts`` on all rows) and ``planned``. Holds
    O(classes x (4,096 + 2 x collect_max)) numbers, never a row.
    """

    def __init__(self, train: float, valid: float, collect_max: int = COLLECT_MAX) -> None:
        self.train, self.valid, self.collect_max = train, valid, collect_max
        self.rows: dict[float, int] = {}  # rows per class, from the first pass
        self.passes = 0
        self._windows: list[Window] = [FIRST_PASS]
        self._hist: dict[tuple[int, float], np.ndarray] = {}
        self._exact: dict[tuple[int, float], dict[int, int]] = {}
        # an open cut (class, rank k) -> (index of its window in this pass, rank in the window)
        self._open: dict[tuple[float, int], tuple[int, int]] = {}
        # a found cut -> (the k-th smallest bits of the class, rows of the class strictly below)
        self._found: dict[tuple[float, int], tuple[int, int]] = {}

    @property
    def windows(self) -> list[Window]:
        """What the next pass summarises; empty once every cut is found."""
        return list(self._windows)

    def add(self, summary: pd.DataFrame) -> None:
        """Merge one block's summary (a sum: blocks may come in any order, cut in any way)."""
        win, lab = summary["window"].to_numpy(), summary["cls"].to_numpy(dtype=np.float64)
        keys, counts = summary["key"].to_numpy(), summary["n"].to_numpy()
        for i, cls in sorted(set(zip(win.tolist(), lab.tolist(), strict=True))):
            m = (win == i) & (lab == cls)
            w = self._windows[i]
            if w.exact:
                acc = self._exact.setdefault((i, cls), {})
                for v, n in zip(keys[m].tolist(), counts[m].tolist(), strict=True):
                    acc[v] = acc.get(v, 0) + n
            else:
                hist = self._hist.setdefault((i, cls), np.zeros(w.bins, np.int64))
                np.add.at(hist, keys[m] - w.base, counts[m])

    def advance(self) -> None:
        """Use the merged pass: fix each open cut's value, or narrow it to one bin's window."""
        if self.passes == 0:
            self.rows = {cls: int(h.sum()) for (_, cls), h in sorted(self._hist.items())}
            for cls, n in self.rows.items():
                for k in class_ranks(n, self.train, self.valid):
                    if k < n:
                        self._open[(cls, k)] = (0, k)
        self.passes += 1
        following: dict[Window, int] = {}
        still: dict[tuple[float, int], tuple[int, int]] = {}
        for (cls, k), (i, r) in self._open.items():
            w = self._windows[i]
            if w.exact:
                counts = self._exact.get((i, cls), {})
                vals = sorted(counts)
                cum = np.cumsum([counts[v] for v in vals], dtype=np.int64)
                j = self._locate(cum, r, cls)
                before = int(cum[j - 1]) if j else 0
                self._found[(cls, k)] = (vals[j], k - (r - before))
                continue
            hist = self._hist.get((i, cls), np.zeros(w.bins, np.int64))
            cum = np.cumsum(hist)
            b = self._locate(cum, r, cls)
            r -= int(cum[b - 1]) if b else 0
            # the bin's own window: gathered exactly when small, else its next HIST_BITS bits
            sub = 0 if hist[b] <= self.collect_max else max(w.sub_shift - HIST_BITS, 0)
            nxt = Window(cls, w.sub_shift, w.base + b, sub)
            still[(cls, k)] = (following.setdefault(nxt, len(following)), r)
        self._windows, self._open = list(following), still
        self._hist, self._exact = {}, {}

    @staticmethod
    def _locate(cum: np.ndarray, r: int, cls: float) -> int:
        """The bin (or value) holding rank r of a window, by its cumulative counts."""
        if not len(cum) or r >= int(cum[-1]):
            raise RuntimeError(
                f"class {cls:g}: the data changed between the passes of the stratified split "
                "(a dataset that is read again must give the same rows)"
            )
        return int(np.searchsorted(cum, r, side="right"))

    def run(
        self, summaries: Callable[[list[Window]], Iterable[pd.DataFrame]]
    ) -> StratifiedCutFinder:
        """Make passes until every cut is found: ``summaries(windows)`` yields each block's."""
        while self._windows:
            for summary in summaries(self.windows):
                self.add(summary)
            self.advance()
        return self

    def _bits(self, cls: float, k: int) -> tuple[float, int]:
        """Cut k of a class as (u value, rows strictly below it); past the last row: (1.0, n)."""
        n = self.rows[cls]
        if k >= n:
            return 1.0, n
        bits, below = self._found[(cls, k)]
        return float(np.ldexp(float(bits), -U_BITS)), below

    def cuts(self) -> dict[float, tuple[float, float]]:
        """Class label -> (train cut, valid cut) on u, for ``SplitPlan.class_cuts``."""
        if self._windows:
            raise RuntimeError("the stratified cut points are not found yet: make every pass")
        out = {}
        for cls, n in self.rows.items():
            k1, k2 = class_ranks(n, self.train, self.valid)
            out[cls] = (self._bits(cls, k1)[0], self._bits(cls, k2)[0])
        return out

    def planned(self) -> dict[float, tuple[int, int, int]]:
        """Class label -> the (train, valid, test) rows the cuts give: floor(n * train), ...;
        fewer in train or valid only where equal u values (equal keys) sit on a cut."""
        out = {}
        for cls, n in self.rows.items():
            k1, k2 = class_ranks(n, self.train, self.valid)
            b1, b2 = self._bits(cls, k1)[1], self._bits(cls, k2)[1]
            out[cls] = (b1, b2 - b1, n - b2)
        return out

"""Feature fitting in Ray Data (components.steps.prepare.fit_features): the same transform as the
in-process fit, whatever the blocks' order, with statistics merged in tasks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray.data

from components import drift
from components.features import (
    CategoricalConfig,
    FeatureConfig,
    FeatureTransform,
    fit_transform,
    numeric_values,
    partial_stats,
)
from components.steps import prepare

pytestmark = pytest.mark.usefixtures("ray_session")

CONFIG = FeatureConfig(
    numeric=("a", "b"),
    categorical=(
        CategoricalConfig("c", min_frequency=2),
        CategoricalConfig("d", max_vocab_size=5),  # a cut through tied counts
        CategoricalConfig("h", encoding="hash", hash_buckets=32),
        CategoricalConfig("e"),  # never seen: an empty vocabulary
    ),
    log1p=("b",),
    standardize=True,
)


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(3.0, 2.0, n)
    a[::9] = np.nan
    a[5::50] = np.inf
    c = rng.choice(["x", "y", "z", "w", "rare"], n, p=[0.4, 0.3, 0.2, 0.0999, 0.0001]).astype(
        object
    )
    c[::13] = None
    return pd.DataFrame(
        {
            "a": a,
            "b": rng.exponential(10.0, n),
            "c": c,
            "d": rng.integers(0, 40, n).astype(np.float64),  # ids read as floats: "3", not "3.0"
            "h": [f"id{v}" for v in rng.integers(0, 1000, n)],
            "e": pd.Series([None] * n, dtype=object),
        }
    )


def blocks(df: pd.DataFrame, n: int, order: np.ndarray | None = None) -> ray.data.Dataset:
    parts = np.array_split(np.arange(len(df)), n)
    if order is not None:
        parts = [parts[i] for i in order]
    return ray.data.from_pandas([df.iloc[p].reset_index(drop=True) for p in parts])


def assert_same_fit(via_ray: FeatureTransform, in_process: FeatureTransform) -> None:
    assert via_ray.categorical == in_process.categorical
    assert via_ray.rows_fitted == in_process.rows_fitted
    for r, p in zip(via_ray.numeric, in_process.numeric, strict=True):
        assert (r.name, r.log1p) == (p.name, p.log1p)
        assert r.mean == pytest.approx(p.mean, rel=1e-12)
        assert r.std == pytest.approx(p.std, rel=1e-12)


def test_fit_equals_the_in_process_fit_exactly_on_small_data() -> None:
    df = frame(3000, seed=1)  # < 4,096 values a column: the sketches are exact
    via_ray = prepare.fit_features(blocks(df, 6), CONFIG)
    in_process = fit_transform([partial_stats(df, CONFIG)], CONFIG)
    assert_same_fit(via_ray, in_process)
    assert [r.median for r in via_ray.numeric] == [p.median for p in in_process.numeric]
    assert via_ray.numeric[0].median == float(np.median(df["a"][np.isfinite(df["a"])]))
    vocab = dict((c.name, c.vocabulary) for c in via_ray.categorical)
    assert vocab["c"] == ("w", "x", "y", "z") and vocab["e"] == () and len(vocab["d"]) == 5
    assert all("." not in v for v in vocab["d"])


def test_many_blocks_merge_in_two_levels_and_do_not_depend_on_block_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    df = frame(20_000, seed=2)
    monkeypatch.setattr(prepare, "MERGE_FAN_IN", 4)  # the two-level merge without 65 blocks
    n = 11  # more blocks than one task merges: 4 groups, then one
    first = prepare.fit_features(blocks(df, n), CONFIG)
    shuffled = prepare.fit_features(blocks(df, n, np.random.default_rng(0).permutation(n)), CONFIG)
    assert first.to_json() == shuffled.to_json()  # merged in key order, not arrival order
    # the vocabularies counted in 5 hash partitions of the values (one reducer per 2 blocks)
    # keep exactly what one task counting every block keeps
    monkeypatch.setattr(prepare, "BLOCKS_PER_REDUCER", 2)
    partitioned = prepare.fit_features(blocks(df, n), CONFIG)
    assert partitioned.to_json() == first.to_json()
    in_process = fit_transform([partial_stats(df, CONFIG)], CONFIG)
    assert_same_fit(first, in_process)
    for p, name in zip(first.numeric, CONFIG.numeric, strict=True):  # compacted: within 2e-3
        x = df[name].to_numpy()
        x = np.sort((np.log1p(x) if name == "b" else x)[np.isfinite(x)])
        rank = np.searchsorted(x, p.median, side="right") / x.size
        assert abs(rank - 0.5) <= 2e-3


def test_an_empty_training_split_is_refused() -> None:
    empty = ray.data.from_pandas(frame(10, seed=3).iloc[:0])
    with pytest.raises(ValueError, match="empty training split"):
        prepare.fit_features(empty, CONFIG)


def test_the_fit_brings_the_training_profiles_without_another_pass() -> None:
    """Numeric profiles from the merged sketches (exact below 4,096 values), vocabulary columns'
    from the distributed counts: both equal the profiles of the whole split's values."""
    df = frame(3000, 4)
    transform, profiles = prepare.fit_features_and_profiles(blocks(df, 6), CONFIG)
    by = {p.name: p for p in profiles}
    assert list(by) == ["a", "b", "c", "d", "e"]  # h is hashed: its codes are never counted
    for name in ("a", "b"):
        exact = drift.profile(name, numeric_values(df, name, CONFIG), "numeric")
        assert (by[name].edges, by[name].rows) == (exact.edges, exact.rows)
        assert by[name].shares == pytest.approx(exact.shares, abs=1e-12)
    for p in transform.categorical:
        if p.encoding == "vocab":
            codes = transform.codes(p, df[p.name])
            assert by[p.name] == drift.profile(p.name, codes, "categorical"), p.name
    assert by["e"].shares == (0.0, 1.0)  # all missing: code 0 only

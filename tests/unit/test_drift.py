"""Feature drift on encoded features: profiles, PSI and the chi-square test."""

from __future__ import annotations

import numpy as np
import pytest

from components import drift
from components.drift import FeatureProfile, compare, profile, psi


def test_the_same_distribution_does_not_drift_and_a_shift_does() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, 50_000).astype(np.float32)
    train[::20] = np.nan
    p = profile("x", train, "numeric")
    assert len(p.edges) == 9 and sum(p.shares) == pytest.approx(1.0)
    assert p.shares[-1] == pytest.approx(0.05, abs=1e-3)  # the missing bin
    live = rng.normal(0, 1, 20_000).astype(np.float32)
    live[::20] = np.nan
    same = compare(p, live)
    assert same.psi < 0.01 and same.chi2_pvalue > 1e-4
    shifted = compare(p, live + np.float32(0.5))
    assert shifted.psi > 0.1 and shifted.chi2_pvalue < 1e-6
    assert same.missing_live == pytest.approx(0.05) and same.missing_train == pytest.approx(0.05)
    # no missing values live where training had 5%: that alone is drift
    assert compare(p, np.nan_to_num(live)).psi > 0.2


def test_categorical_codes_pool_the_tail_and_count_unseen_as_code_zero() -> None:
    rng = np.random.default_rng(1)
    codes = rng.choice(np.arange(1, 60), 30_000, p=np.r_[np.full(10, 0.08), np.full(49, 0.2 / 49)])
    codes[:300] = 0
    p = profile("c", codes.astype(np.int32), "categorical")
    assert len(p.edges) == 20 and p.shares[-1] == pytest.approx(0.01)
    live = codes.copy()
    live[:6000] = 0  # a fifth of live values never seen in training
    d = compare(p, live)
    assert d.missing_live == pytest.approx(0.2) and d.psi > 0.2
    assert compare(p, codes).psi < 1e-9


def test_psi_and_profiles_round_trip() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    assert psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])) > 10  # floored, not infinite
    p = profile("x", np.arange(100, dtype=np.float32), "numeric")
    assert FeatureProfile.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="'x': no live values"):
        compare(p, np.array([], np.float32))
    with pytest.raises(ValueError, match="'y': no training values"):
        profile("y", np.array([]), "numeric")


def test_profiles_from_block_counts_equal_the_profile_of_all_values() -> None:
    rng = np.random.default_rng(3)
    num = rng.normal(size=5000).astype(np.float32)
    num[::13] = np.nan
    cat = rng.zipf(1.5, 5000).clip(0, 60).astype(np.int32)
    cat[::7] = 0
    whole_n, whole_c = drift.profile("x", num, "numeric"), drift.profile("c", cat, "categorical")
    edges = drift.numeric_edges(np.nanquantile(num, drift.QUANTILES))
    blocks = np.array_split(np.arange(5000), 7)
    n_counts = sum(drift.counts(num[b], "numeric", edges) for b in blocks)
    assert drift.numeric_profile("x", edges, n_counts) == whole_n
    merged: dict[int, int] = {}
    for b in blocks:  # per-block code counts merged, as the Ray pass does
        codes, k = np.unique(cat[b], return_counts=True)
        for c, m in zip(codes.tolist(), k.tolist(), strict=True):
            merged[c] = merged.get(c, 0) + m
    got = drift.categorical_profile("c", np.array(list(merged)), np.array(list(merged.values())))
    assert got == whole_c
    live = cat[:1000]
    assert drift.compare_counts(whole_c, drift.counts(live, "categorical", whole_c.edges)) == (
        drift.compare(whole_c, live)
    )
    with pytest.raises(ValueError, match="3 live counts for"):
        drift.compare_counts(whole_c, np.ones(3))
    with pytest.raises(ValueError, match="no training values"):
        drift.numeric_profile("x", edges, np.zeros(len(edges) + 2))


def test_a_profile_from_the_fitting_sketch_matches_the_exact_one() -> None:
    from components.sketches import KLLSketch

    rng = np.random.default_rng(5)
    values = rng.lognormal(size=200_000)
    values[::9] = np.nan
    exact = drift.profile("x", values, "numeric")
    sketch = KLLSketch()
    for part in np.array_split(values, 20):  # merged from blocks, as feature fitting does
        sketch.merge(KLLSketch.of(part))
    got = drift.sketch_profile("x", sketch, len(values))
    assert got.rows == exact.rows and len(got.shares) == len(exact.shares)
    assert got.shares[-1] == pytest.approx(exact.shares[-1], abs=1e-12)  # missing: exact
    assert np.asarray(got.edges) == pytest.approx(np.asarray(exact.edges), rel=0.02)
    assert np.abs(np.subtract(got.shares, exact.shares)).max() < 2 * sketch.rank_error()
    small = KLLSketch.of(np.array([1.0, 2.0, 3.0]))  # exact while small
    assert drift.sketch_profile("s", small, 4) == drift.profile(
        "s", np.array([1.0, 2.0, 3.0, np.nan]), "numeric"
    )
    with pytest.raises(ValueError, match="a sketch of 3 values for 2 rows"):
        drift.sketch_profile("s", small, 2)

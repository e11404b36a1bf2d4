"""Feature drift on encoded features: profiles, PSI and the chi-square test."""

from __future__ import annotations

import numpy as np
import pytest

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

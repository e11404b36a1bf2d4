"""Categorical codes for XGBoost: sorted vocabularies, missing and unseen values as NaN."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xgboost

from components import xgboost_model
from components.features import (
    CategoricalConfig,
    FeatureConfig,
    FeatureTransform,
    fit_transform,
    partial_stats,
)

CONFIG = FeatureConfig(
    numeric=("x",), categorical=(CategoricalConfig("c", max_vocab_size=3),), impute="none"
)


def _frame(values: Sequence[object], x: Sequence[float] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"x": x or [0.0] * len(values), "c": pd.Series(list(values), dtype=object)})


def test_vocabulary_keeps_the_most_frequent_and_codes_them_in_sorted_order() -> None:
    frame = _frame(["b"] * 5 + ["d"] * 4 + ["a"] * 4 + ["c"] * 1)
    t = fit_transform([partial_stats(frame, CONFIG)], CONFIG)
    # the cut keeps b, d and a (c is rarest); the codes follow the values' order
    assert t.categorical[0].vocabulary == ("a", "b", "d")
    codes = t.codes(t.categorical[0], pd.Series(["a", "b", "d", "c", None], dtype=object))
    assert codes.tolist() == [1, 2, 3, 0, 0]
    # the same vocabulary whatever the order of the training rows and of the parts
    parts = [partial_stats(frame.iloc[7:], CONFIG), partial_stats(frame.iloc[:7], CONFIG)]
    assert fit_transform(parts, CONFIG).categorical == t.categorical


def test_missing_and_unseen_codes_become_nan_for_xgboost_only() -> None:
    t = fit_transform([partial_stats(_frame(["a", "b"]), CONFIG)], CONFIG)
    x = t.transform(_frame(["a", "zzz", None], x=[1.0, 2.0, 3.0]))
    assert x[:, 1].tolist() == [1.0, 0.0, 0.0]  # code 0: torch's out-of-vocabulary row
    out = xgboost_model.mark_missing_categories(x, t)
    assert out is x
    assert x[0].tolist() == [1.0, 1.0]
    assert np.isnan(x[1:, 1]).all() and x[1:, 0].tolist() == [2.0, 3.0]


def _trained(rows: int = 600) -> tuple[xgboost.Booster, FeatureTransform]:
    rng = np.random.default_rng(0)
    c = np.array(["a", "b", None], dtype=object)[rng.choice(3, rows, p=[0.45, 0.45, 0.1])]
    # a -> 1, b -> 0, missing -> 1: an unseen value must follow the missing rows, not a category
    label = np.where(c == "b", 0, 1).astype(np.float32)
    frame = _frame(list(c), x=list(rng.normal(size=rows)))
    frame["label"] = label
    t = fit_transform([partial_stats(frame, CONFIG)], CONFIG)
    params = xgboost_model.build_params("binary", {}, "auc", None, False, nthread=1)
    booster = xgboost_model.train(
        params, xgboost_model.dmatrix(frame, t, "binary", "label"), None, 20, None
    )
    return booster, t


def test_an_unseen_value_scores_like_a_missing_one() -> None:
    booster, t = _trained()
    assert booster.attr(xgboost_model.MISSING_CATEGORY_ATTR) == "nan"
    # the attribute survives the bundle's file format
    booster = xgboost_model.load_booster(xgboost_model.to_bytes(booster))
    probe = _frame(["a", "b", None, "never-seen"])
    p = xgboost_model.predict(booster, t.transform(probe), t)
    assert p[0] > 0.8 and p[1] < 0.2
    assert p[2] == p[3] and p[3] > 0.8


def test_a_booster_without_the_attribute_is_fed_code_zero_as_before() -> None:
    booster, t = _trained()
    legacy = xgboost_model.load_booster(xgboost_model.to_bytes(booster))
    legacy.set_attr(**{xgboost_model.MISSING_CATEGORY_ATTR: None})  # deletes it
    x = t.transform(_frame(["never-seen"]))
    xgboost_model.predict(legacy, x, t)
    assert x[0, 1] == 0.0  # not rewritten to NaN


def test_rayline_sets_only_xgboost_defaults() -> None:
    params = xgboost_model.build_params("binary", {}, "auc", None, False, nthread=None)
    assert "max_cat_to_onehot" not in params and "eta" not in params
    assert params["tree_method"] == "hist" and params["max_depth"] == 6
    assert (
        xgboost_model.build_params("binary", {"eta": 0.05}, "auc", None, False, None)["eta"] == 0.05
    )

"""XGBoost fed in batches (components.xgboost_model.FrameBatches): the same trees as one
DMatrix of the whole frame, whole queries per batch, external-memory pages, empty shards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost

from components import shard_stream, xgboost_model
from components.features import (
    CategoricalConfig,
    FeatureConfig,
    FeatureTransform,
    fit_transform,
    partial_stats,
)
from components.validation import WEIGHT

PARAMS = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 4, "nthread": 1}


def _frame(n: int, seed: int = 0, queries: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    cat = rng.choice(["a", "b", "c", "d", None], size=n)
    frame = pd.DataFrame(
        {
            "x": x,
            "z": rng.normal(size=n),
            "c": cat,
            "label": ((x + (cat == "b") + rng.normal(scale=0.5, size=n)) > 0.5).astype(int),
        }
    )
    if queries:
        frame["_group"] = np.sort(rng.integers(0, queries, size=n)).astype(np.int64)
    return frame


def _transform(frame: pd.DataFrame) -> FeatureTransform:
    config = FeatureConfig(numeric=("x", "z"), categorical=(CategoricalConfig("c"),), impute="none")
    return fit_transform([partial_stats(frame, config)], config)


def _chunks(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for i in range(0, len(frame), rows):
        yield frame.iloc[i : i + rows].reset_index(drop=True)


def _predict(params: dict[str, object], d: xgboost.DMatrix, probe: xgboost.DMatrix) -> np.ndarray:
    return xgboost.train(params, d, num_boost_round=20).predict(probe)


@pytest.mark.parametrize("rows", [100_000, 700, 64])
def test_batches_give_the_trees_of_one_whole_frame_dmatrix(rows: int) -> None:
    frame = _frame(3_000)
    t = _transform(frame)
    whole = xgboost_model.dmatrix(frame, t, "binary", "label")
    it = xgboost_model.FrameBatches(lambda: _chunks(frame, rows), t, "binary", "label")
    streamed, _ = xgboost_model.quantile_dmatrix(it, None, PARAMS)
    assert (streamed.num_row(), it.rows) == (3_000, 3_000)
    np.testing.assert_array_equal(streamed.get_label(), whole.get_label())
    np.testing.assert_array_equal(_predict(PARAMS, streamed, whole), _predict(PARAMS, whole, whole))


def test_missing_and_unseen_categories_reach_xgboost_as_nan() -> None:
    frame = _frame(200)
    t = _transform(frame)
    inputs = xgboost_model.matrix_inputs(frame, t, "binary", "label")
    codes = inputs["data"][:, 2]
    assert np.isnan(codes[frame["c"].isna().to_numpy()]).all()
    assert not np.isnan(codes[frame["c"].notna().to_numpy()]).any()
    assert inputs["feature_types"] == ["q", "q", "c"]


def test_queries_are_never_cut_between_batches_and_ids_run_on() -> None:
    frame = _frame(2_000, queries=150)
    cut = list(shard_stream.whole_queries(_chunks(frame, 37)))
    assert sum(len(b) for b in cut) == 2_000
    firsts = [b["_group"].iloc[0] for b in cut]
    lasts = [b["_group"].iloc[-1] for b in cut]
    assert all(prev < nxt for prev, nxt in zip(lasts, firsts[1:], strict=False))
    t = _transform(frame)
    params = {**PARAMS, "objective": "rank:ndcg"}
    it = xgboost_model.FrameBatches(lambda: _chunks(frame, 37), t, "ranking", "label")
    streamed, _ = xgboost_model.quantile_dmatrix(it, None, params)
    whole = xgboost_model.dmatrix(frame, t, "ranking", "label")
    assert it.queries == frame["_group"].nunique()
    np.testing.assert_array_equal(streamed.get_group(), whole.get_group())
    np.testing.assert_array_equal(_predict(params, streamed, whole), _predict(params, whole, whole))


def test_an_unsorted_ranking_stream_is_refused_by_name() -> None:
    frame = _frame(100, queries=10).iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match=r"not sorted by query \(_group\)"):
        list(shard_stream.whole_queries(_chunks(frame, 30)))


def test_ranking_weights_per_query_survive_batching() -> None:
    frame = _frame(400, queries=20)
    frame[WEIGHT] = (frame["_group"] % 3 + 1).astype(float)
    t = _transform(frame)
    it = xgboost_model.FrameBatches(lambda: _chunks(frame, 50), t, "ranking", "label")
    streamed, _ = xgboost_model.quantile_dmatrix(it, None, {"objective": "rank:ndcg"})
    expected = frame.groupby("_group")[WEIGHT].first().to_numpy()
    np.testing.assert_array_equal(streamed.get_weight(), expected)


def test_validation_is_binned_with_the_training_cuts_and_may_be_empty() -> None:
    frame, held = _frame(1_000), _frame(300, seed=1)
    t = _transform(frame)
    train = xgboost_model.FrameBatches(lambda: _chunks(frame, 256), t, "binary", "label")
    valid = xgboost_model.FrameBatches(lambda: _chunks(held, 256), t, "binary", "label")
    dtrain, dvalid = xgboost_model.quantile_dmatrix(train, valid, PARAMS)
    assert dvalid is not None and dvalid.num_row() == 300
    log: dict[str, dict[str, list[float]]] = {}
    xgboost.train(
        {**PARAMS, "eval_metric": "auc"},
        dtrain,
        10,
        evals=[(dvalid, "valid")],
        evals_result=log,
        verbose_eval=False,
    )
    assert 0.5 < log["valid"]["auc"][-1] <= 1.0
    nothing = xgboost_model.FrameBatches(lambda: iter(()), t, "binary", "label")
    _, empty = xgboost_model.quantile_dmatrix(train, nothing, PARAMS)
    assert empty is not None and (empty.num_row(), empty.num_col()) == (0, 3)


def test_external_memory_pages_go_to_the_cache_folder_and_train_the_same(tmp_path: Path) -> None:
    frame = _frame(3_000)
    t = _transform(frame)
    it = xgboost_model.FrameBatches(
        lambda: _chunks(frame, 1_000), t, "binary", "label", cache_prefix=str(tmp_path / "p")
    )
    ext, _ = xgboost_model.quantile_dmatrix(it, None, PARAMS, external_memory=True)
    assert any(p.name.startswith("p") for p in tmp_path.iterdir())
    it2 = xgboost_model.FrameBatches(lambda: _chunks(frame, 1_000), t, "binary", "label")
    inmem, _ = xgboost_model.quantile_dmatrix(it2, None, PARAMS)
    whole = xgboost_model.dmatrix(frame, t, "binary", "label")
    np.testing.assert_allclose(
        _predict(PARAMS, ext, whole), _predict(PARAMS, inmem, whole), rtol=1e-6
    )

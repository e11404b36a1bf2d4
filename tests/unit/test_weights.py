"""Sample weights (data.weight): checked at ingest, used by XGBoost and the torch losses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xgboost

from components import losses, xgboost_model
from components.features import FeatureConfig, fit_transform, partial_stats
from components.validation import WEIGHT, DataSchema, coerce_frame
from pipelines.spec import SpecError, spec_from_dict


def _raw(**cols: list[object]) -> pd.DataFrame:
    df = pd.DataFrame(cols)
    df["_source_file"] = "data/w.csv"
    df["_source_row"] = np.arange(2, len(df) + 2)
    return df


def test_weights_are_coerced_and_bad_ones_named_by_column_and_value() -> None:
    schema = DataSchema(task="binary", numeric=("x",), categorical=(), label="y", weight="w")
    out = coerce_frame(
        _raw(x=[1, 2, 3, 4, 5], y=[0, 1, 0, 1, 0], w=["2.5", "oops", None, -1, 0]), schema, "f"
    )
    assert out[WEIGHT].tolist() == [2.5, 0.0, 0.0, 0.0, 0.0]
    rules = [None if pd.isna(r) else r for r in out["_rule"]]
    assert rules == [None, "bad_weight", "bad_weight", "bad_weight", None]
    reasons = out["_reason"].tolist()
    assert "column 'w'" in reasons[1] and "'oops'" in reasons[1]
    assert reasons[2] == "column 'w': weight is missing"
    assert reasons[3] == "column 'w': weight -1 is negative"


def test_the_weight_column_is_required_for_training_not_for_scoring() -> None:
    schema = DataSchema(task="binary", numeric=("x",), categorical=(), label="y", weight="w")
    assert "w" in schema.required_columns()
    assert "w" not in schema.unlabeled().required_columns()


def test_ranking_weights_differing_within_a_query_are_named() -> None:
    schema = DataSchema(
        task="ranking", numeric=("x",), categorical=(), label="y", group="q", weight="w"
    )
    out = coerce_frame(
        _raw(x=[1, 2, 3, 4], y=[0, 1, 1, 0], q=["a", "a", "b", "b"], w=[1, 1, 2, 3]), schema, "f"
    )
    rules = [None if pd.isna(r) else r for r in out["_rule"]]
    assert rules == [None, None, "bad_weight", "bad_weight"]
    assert out["_reason"].iloc[2] == (
        "column 'w': query 'b' (q) has rows weighted 2 and 3; ranking weights are per query"
    )


def _spec(**data: object) -> dict[str, object]:
    return {
        "name": "w",
        "task": "binary",
        "data": {"source": {"uri": "synthetic:binary", "params": {"rows": 100}}, **data},
        "features": {"numeric": ["num_0", "num_1"]},
        "models": [{"name": "x"}],
    }


def test_spec_weight_cannot_be_a_feature_or_the_label() -> None:
    assert spec_from_dict(_spec(weight="wt")).data.weight == "wt"
    with pytest.raises(SpecError, match=r"weight column 'num_0' \(data.weight\) cannot also"):
        spec_from_dict(_spec(weight="num_0"))
    with pytest.raises(SpecError, match=r"data\.weight"):
        spec_from_dict(_spec(weight="label"))


def _frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 8, n).astype(float)  # few distinct values: every one is a histogram bin
    y = (x + rng.normal(0, 2, n) > 4).astype(float)
    return pd.DataFrame({"x": x, "label": y, "_group": np.repeat(np.arange(n // 4), 4)})


def _booster(frame: pd.DataFrame, task: str) -> xgboost.Booster:
    config = FeatureConfig(numeric=("x",), categorical=(), impute="none")
    t = fit_transform([partial_stats(frame, config)], config)
    params = xgboost_model.build_params(task, {"seed": 0}, "auc", None, False, nthread=1)
    return xgboost_model.train(
        params, xgboost_model.dmatrix(frame, t, task, "label"), None, 10, None
    )


def test_an_xgboost_weight_of_two_trains_like_a_duplicated_row() -> None:
    frame = _frame()
    w = np.where(np.arange(len(frame)) % 3 == 0, 2.0, 1.0)
    weighted = _booster(frame.assign(**{WEIGHT: w}), "binary")
    repeated = _booster(frame.loc[frame.index.repeat(w.astype(int))], "binary")
    probe = xgboost.DMatrix(np.arange(8, dtype=np.float32)[:, None], feature_names=["x"])
    np.testing.assert_allclose(weighted.predict(probe), repeated.predict(probe), rtol=1e-5)
    plain = _booster(frame, "binary")
    assert not np.allclose(weighted.predict(probe), plain.predict(probe))


def test_xgboost_ranking_takes_one_weight_per_query() -> None:
    config = FeatureConfig(numeric=("x",), categorical=(), impute="none")
    frame = _frame(16).assign(**{WEIGHT: np.repeat([1.0, 2.0, 3.0, 4.0], 4)})
    t = fit_transform([partial_stats(frame, config)], config)
    # rows of the queries interleaved: dmatrix sorts them by query, the weights follow
    shuffled = frame.iloc[np.random.default_rng(0).permutation(16)].reset_index(drop=True)
    d = xgboost_model.dmatrix(shuffled, t, "ranking", "label")
    assert d.get_weight().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert d.get_group().tolist() == [4, 4, 4, 4]
    frame.loc[5, WEIGHT] = 9.0
    with pytest.raises(ValueError, match=r"query #1 \(in row order\) has rows weighted 2 and 9"):
        xgboost_model.dmatrix(frame, t, "ranking", "label")


def test_weighted_pointwise_losses_equal_the_loss_on_duplicated_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    out, y = torch.randn(6, generator=gen), torch.tensor([0, 1, 1, 0, 1, 0.0])
    w = torch.tensor([1, 2, 1, 3, 1, 1.0])
    rows = torch.repeat_interleave(torch.arange(6), w.long())
    for fn in (losses.bce_loss, losses.mse_loss, losses.huber_loss):
        torch.testing.assert_close(fn(out, y, None, w), fn(out[rows], y[rows], None, None))
    logits, cls = torch.randn(6, 3, generator=gen), torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(
        losses.cross_entropy_loss(logits, cls, None, w),
        losses.cross_entropy_loss(logits[rows], cls[rows], None, None),
    )
    zero = losses.bce_loss(out.requires_grad_(), y, None, torch.zeros(6))
    assert float(zero.detach()) == 0.0
    zero.backward()  # still back-propagates (zero gradients)


@pytest.mark.parametrize("name", ["pairwise", "lambdarank", "listwise"])
def test_a_query_weight_of_two_counts_like_the_query_twice(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    s, r = torch.randn(7, generator=gen), torch.tensor([0, 2, 1, 0, 1, 0, 3.0])
    g = torch.tensor([5, 5, 5, 9, 9, 9, 9])
    w = torch.tensor([2, 2, 2, 1, 1, 1, 1.0])
    fn = losses.LOSSES[name]
    twice = fn(
        torch.cat([s, s[:3]]), torch.cat([r, r[:3]]), torch.cat([g, torch.tensor([7, 7, 7])]), None
    )
    torch.testing.assert_close(fn(s, r, g, w), twice)
    torch.testing.assert_close(fn(s, r, g, torch.ones(7)), fn(s, r, g, None))


def _ranking(**evaluation: object) -> dict[str, object]:
    return {
        "name": "r",
        "task": "ranking",
        "data": {"source": {"uri": "synthetic:ranking", "params": {"rows": 100}}, "group": "qid"},
        "features": {"numeric": ["f0"]},
        "split": {"method": "group"},
        "models": [{"name": "x"}],
        "evaluation": evaluation,
    }


def test_a_ranking_metric_cut_off_must_be_one_the_evaluation_computes() -> None:
    assert spec_from_dict(_ranking(metric="ndcg@3")).selection_metric() == "ndcg@3"
    assert spec_from_dict(_ranking(metric="map@10")).selection_metric() == "map@10"
    with pytest.raises(SpecError, match=r"ndcg@7 needs 7 in evaluation.ks \(now \[1, 3, 5, 10\]\)"):
        spec_from_dict(_ranking(metric="ndcg@7"))
    with pytest.raises(SpecError, match=r"map@5: MAP is computed at the largest of evaluation.ks"):
        spec_from_dict(_ranking(metric="map@5"))
    assert spec_from_dict(_ranking(metric="map@5", ks=[1, 5])).selection_metric() == "map@5"

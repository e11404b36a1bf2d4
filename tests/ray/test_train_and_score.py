"""Split, feature fitting, the XGBoost Train adapter (0 and 2 workers) and Ray Data scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import evaluation, xgboost_model
from components.encoded import encoded_matrix
from components.features import FeatureConfig, FeatureTransform, fit_transform, partial_stats
from components.model_bundle import BundleContents, write_model_bundle
from components.predictor import Predictor
from components.splits import SplitPlan
from components.steps import prepare, score, train_common, train_xgboost
from components.steps.ingest import SourceConfig, ingest
from components.validation import DataSchema

pytestmark = pytest.mark.usefixtures("ray_session")

FEATS = tuple(f"f{i}" for i in range(10))
RANK = DataSchema(
    task="ranking", numeric=FEATS, categorical=(), label="label", group="qid", keys=("row_id",)
)
POLICIES: dict[str, str] = {}


@pytest.fixture(scope="module")
def ranking_splits(tmp_path_factory: pytest.TempPathFactory) -> prepare.Splits:
    src = SourceConfig(
        "synthetic:ranking", params={"rows": 6000, "n_features": 10, "block_rows": 2000, "seed": 5}
    )
    res = ingest(src, RANK, POLICIES, str(tmp_path_factory.mktemp("ingest")))
    sp = prepare.split_dataset(
        res.dataset, SplitPlan("group", seed=0, train=0.7, valid=0.15), True, False
    )
    sp.rows["ingested"] = res.rows_used
    return sp


def test_group_split_through_ray(ranking_splits: prepare.Splits) -> None:
    sp = ranking_splits
    assert sp.rows["train"] + sp.rows["valid"] + sp.rows["test"] == sp.rows["ingested"]
    groups = {n: set(getattr(sp, n).to_pandas()["_group"]) for n in ("train", "valid", "test")}
    assert not (groups["train"] & groups["valid"]) and not (groups["train"] & groups["test"])
    assert not (groups["valid"] & groups["test"])
    assert {n: len(g) for n, g in groups.items()} == sp.groups
    assert sp.rows["train"] > sp.rows["valid"] > 0 and sp.rows["test"] > 0


def test_fit_features_through_ray_equals_pandas(ranking_splits: prepare.Splits) -> None:
    config = FeatureConfig(numeric=FEATS, categorical=())
    via_ray = prepare.fit_features(ranking_splits.train, config)
    via_pandas = fit_transform([partial_stats(ranking_splits.train.to_pandas(), config)], config)
    for a, b in zip(via_ray.numeric, via_pandas.numeric, strict=True):
        assert a.median == b.median  # 3 exact block sketches merge into the one-pass sketch
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.std == pytest.approx(
            b.std, rel=1e-12
        )


@pytest.mark.parametrize("sorted_by", ["one task", "Ray Data"])
def test_shards_keep_queries_whole_sorted_and_drop_nothing(
    ranking_splits: prepare.Splits, sorted_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sorted_by == "Ray Data":  # as a shard over the one-task limit is
        monkeypatch.setattr(train_common, "SORT_IN_ONE_TASK_BYTES", 0)
    shards = train_common.shard_datasets(
        ranking_splits.train, ranking_splits.valid, 2, grouped=True
    )
    for split in ("train", "valid"):
        a, b = shards[f"{split}_r0"].to_pandas(), shards[f"{split}_r1"].to_pandas()
        assert len(a) + len(b) == ranking_splits.rows[split]
        assert not set(a["_group"]) & set(b["_group"])
        for part in (a, b):  # streamable in whole queries, the input's order within each
            keys = list(zip(part["_group"], part["_source_file"], part["_source_row"], strict=True))
            assert keys == sorted(keys)
    assert sorted(shards) == ["train_r0", "train_r1", "valid_r0", "valid_r1"]


def test_workers_read_the_splits_encoded_once(ranking_splits: prepare.Splits) -> None:
    """What the workers read: the features as the transform encodes the raw rows, the
    columns training needs, none of the raw ones."""
    job = _job(ranking_splits, 2)
    transform = FeatureTransform.from_json(job.features_json)
    train, _ = train_common.encode_splits(ranking_splits.train, ranking_splits.valid, job)
    got = train.to_pandas().sort_values(["_group", "_source_file", "_source_row"])
    raw = ranking_splits.train.to_pandas().sort_values(["_group", "_source_file", "_source_row"])
    assert set(got.columns) == set(transform.feature_names) | {
        "label",
        "_group",
        "_bucket",
        "_row_key",
        "_source_file",
        "_source_row",
    }
    np.testing.assert_array_equal(encoded_matrix(got, transform), transform.transform(raw))


def _job(sp: prepare.Splits, workers: int) -> train_xgboost.XGBoostJob:
    transform = prepare.fit_features(sp.train, FeatureConfig(numeric=FEATS, categorical=()))
    params = xgboost_model.build_params("ranking", {"eta": 0.2}, "ndcg@10", None, False, nthread=1)
    return train_xgboost.XGBoostJob(
        task="ranking",
        label="label",
        params=params,
        num_boost_round=20,
        early_stopping_rounds=5,
        report_every=5,
        features_json=transform.to_json(),
        num_workers=workers,
        resources_per_worker={"CPU": 0.5} if workers else None,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_xgboost_adapter_trains_and_scores(
    ranking_splits: prepare.Splits, tmp_path: Path, workers: int
) -> None:
    sp = ranking_splits
    job = _job(sp, workers)
    out = train_xgboost.fit(
        job, sp.train, sp.valid, str(tmp_path / "train"), run_name=f"t{workers}"
    )
    assert 1 <= out.rounds <= 20 and out.history and "valid-ndcg@10" in out.history[-1]
    if workers:  # local mode keeps no checkpoint on storage
        assert out.checkpoint_path and Path(out.checkpoint_path, "model.ubj").exists()
    else:  # streamed into a QuantileDMatrix: the trees of one DMatrix of the whole split
        t = FeatureTransform.from_json(job.features_json)
        train, valid = (
            xgboost_model.dmatrix(d.to_pandas(), t, "ranking", "label")
            for d in (sp.train, sp.valid)
        )
        plain = xgboost_model.train(job.params, train, valid, 20, 5)
        ours = xgboost_model.load_booster(out.model)
        assert ours.num_boosted_rounds() == plain.num_boosted_rounds()
        np.testing.assert_array_equal(ours.predict(valid), plain.predict(valid))
    # Bundle it and score the test split through Ray Data; compare with the pandas Predictor.
    bdir = tmp_path / "bundle"
    write_model_bundle(
        bdir,
        BundleContents(
            kind="xgboost",
            name="xgboost",
            task="ranking",
            label="label",
            transform=FeatureTransform.from_json(job.features_json),
            schema=RANK,
            model=out.model,
            params={"kind": "xgboost", "params": {"eta": 0.2}},
            best_iteration=out.best_iteration,
            rounds=out.rounds,
        ),
    )
    scored = score.score_dataset(
        sp.test, str(bdir), ["label", "_group", "row_id"], actors=2, batch_size=500
    )
    got = scored.to_pandas().sort_values("row_id").reset_index(drop=True)
    assert len(got) == sp.rows["test"]
    test_rows = sp.test.to_pandas().sort_values("row_id").reset_index(drop=True)
    want = Predictor.load(bdir).predict(test_rows)
    np.testing.assert_allclose(got["score"].to_numpy(), want, rtol=0, atol=1e-6)
    m = evaluation.evaluate("ranking", got, "label")
    base = evaluation.baseline(
        "ranking", pd.concat([got, test_rows[["_row_key"]]], axis=1), "label", 0.0
    )
    assert m["ndcg@10"] > base["ndcg@10"] + 0.05

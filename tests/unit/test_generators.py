"""Synthetic generators: deterministic blocks, exact shapes and dtypes, params, learnable signal."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import accuracy_score, ndcg_score, roc_auc_score

from components import generators as g

GROUPED = {"ranking": "qid", "ctr": "request_id"}
LEARN_ROWS, LEARN_BLOCK, LEARN_TRAIN = 20_000, 5_000, 15_000  # train/test cut on a block boundary


def frame(kind: str, **params: object) -> pd.DataFrame:
    return pd.concat([g.generate_block(t) for t in g.plan_blocks(kind, params)], ignore_index=True)


@pytest.fixture(scope="module")
def learn_frames() -> dict[str, pd.DataFrame]:
    """20k rows of each kind, shared by the statistical and learnability tests."""
    return {k: frame(k, rows=LEARN_ROWS, seed=11, block_rows=LEARN_BLOCK) for k in g.GENERATORS}


# --------------------------------------------------------------------------- plan and determinism


def test_plan_blocks_covers_rows_with_resolved_json_params() -> None:
    tasks = g.plan_blocks("binary", {"rows": 2500, "seed": 3, "block_rows": 1000})
    assert [t.index for t in tasks] == [0, 1, 2]
    assert [t.rows for t in tasks] == [1000, 1000, 500]
    assert all(t.seed == 3 and t.kind == "binary" for t in tasks)
    assert tasks[0].params == {
        "rows": 2500, "seed": 3, "block_rows": 1000,
        "n_numeric": 8, "n_categorical": 3, "cardinality": 20, "missing_rate": 0.02,
    }  # fmt: skip
    for t in tasks:  # what the ingest step ships to each Ray task and rebuilds there
        assert g.BlockTask(**json.loads(json.dumps(dataclasses.asdict(t)))) == t
    assert len(g.plan_blocks("ctr", {"rows": 10})) == 1
    assert g.plan_blocks("ranking", {"rows": 1000.0})[0].params["rows"] == 1000  # YAML 1e3 etc.


@pytest.mark.parametrize("kind", g.GENERATORS)
def test_same_task_same_frame_other_seed_or_block_differs(kind: str) -> None:
    task = g.plan_blocks(kind, {"rows": 3000, "seed": 5, "block_rows": 1500})[1]
    a = g.generate_block(task)
    pd.testing.assert_frame_equal(a, g.generate_block(task))
    rebuilt = g.BlockTask(**json.loads(json.dumps(dataclasses.asdict(task))))
    pd.testing.assert_frame_equal(a, g.generate_block(rebuilt))
    other_seed = g.plan_blocks(kind, {"rows": 3000, "seed": 6, "block_rows": 1500})[1]
    b = g.generate_block(other_seed)
    assert not a.drop(columns=["row_id"]).equals(b.drop(columns=["row_id"]))
    c = g.generate_block(g.plan_blocks(kind, {"rows": 3000, "seed": 5, "block_rows": 1500})[0])
    feature = g.columns(kind, task.params)["numeric"][0]
    assert not np.array_equal(a[feature].to_numpy(), c[feature].to_numpy(), equal_nan=True)


@pytest.mark.parametrize("kind", g.GENERATORS)
def test_block_content_does_not_depend_on_total_rows(kind: str) -> None:
    """The hidden model depends on the seed only: block 0 of a small and a large dataset agree."""
    small = g.generate_block(g.plan_blocks(kind, {"rows": 800, "block_rows": 800, "seed": 2})[0])
    large = g.generate_block(g.plan_blocks(kind, {"rows": 8000, "block_rows": 800, "seed": 2})[0])
    pd.testing.assert_frame_equal(small.drop(columns=["ts"]), large.drop(columns=["ts"]))


# --------------------------------------------------------------------------- shape and schema


@pytest.mark.parametrize("kind", g.GENERATORS)
def test_blocks_concatenate_to_rows_with_unique_ids_and_whole_groups(kind: str) -> None:
    tasks = g.plan_blocks(kind, {"rows": 2500, "seed": 1, "block_rows": 1000})
    blocks = [g.generate_block(t) for t in tasks]
    assert [len(b) for b in blocks] == [t.rows for t in tasks] == [1000, 1000, 500]
    df = pd.concat(blocks, ignore_index=True)
    np.testing.assert_array_equal(df["row_id"].to_numpy(), np.arange(2500))
    assert df["ts"].between(g.TS_START, g.TS_START + g.TS_SPAN - 1).all()
    first, last = blocks[0]["ts"].median(), blocks[-1]["ts"].median()
    assert last - first > 0.5 * g.TS_SPAN  # time follows the global row position
    if kind in GROUPED:
        gid = df[GROUPED[kind]].to_numpy()
        runs = 1 + int((np.diff(gid) != 0).sum())
        assert runs == len(np.unique(gid))  # each group is one contiguous run
        owners = df.assign(block=np.repeat(np.arange(3), [len(b) for b in blocks]))
        assert owners.groupby(GROUPED[kind])["block"].nunique().max() == 1  # never straddles
        assert owners.groupby(GROUPED[kind])["ts"].nunique().max() == 1  # one time per group
        sizes = df.groupby(GROUPED[kind]).size()
        assert sizes.min() >= 1 and sizes.max() <= g.MAX_GROUP_SIZE


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("binary", {}),
        ("binary", {"n_numeric": 2, "n_categorical": 0}),
        ("binary", {"n_numeric": 0, "n_categorical": 2, "cardinality": 3}),
        ("multiclass", {"n_classes": 3, "n_numeric": 5, "n_categorical": 1}),
        ("ranking", {"n_features": 3, "mean_query_size": 1}),
        ("ranking", {}),
        ("ctr", {"cardinality": 50, "mean_request_size": 3.5}),
    ],
)
def test_columns_and_dtypes_match_columns(kind: str, params: dict[str, object]) -> None:
    df = frame(kind, rows=1200, block_rows=500, **params)
    cols = g.columns(kind, params)
    assert set(cols) == {"numeric", "categorical", "label", "group", "timestamp", "key"}
    assert cols["label"] == ["label"] and cols["timestamp"] == ["ts"] and cols["key"] == ["row_id"]
    assert cols["group"] == ([GROUPED[kind]] if kind in GROUPED else [])
    assert list(df.columns) == (
        cols["key"]
        + cols["group"]
        + cols["timestamp"]
        + cols["numeric"]
        + cols["categorical"]
        + ["label"]
    )
    for c in cols["numeric"]:
        assert df[c].dtype == np.float64, c
    for c in cols["categorical"]:
        assert df[c].dtype == object, c
        assert df[c].map(lambda v: v is None or isinstance(v, str)).all(), c
    for c in cols["label"] + cols["group"] + cols["timestamp"] + cols["key"]:
        assert df[c].dtype == np.int64, c


def test_generator_specific_column_names() -> None:
    assert g.columns("binary", {"n_numeric": 2, "n_categorical": 1})["numeric"] == [
        "num_0",
        "num_1",
    ]
    assert g.columns("binary", {"n_numeric": 2, "n_categorical": 1})["categorical"] == ["cat_0"]
    assert g.columns("ranking", {"n_features": 3})["numeric"] == ["f0", "f1", "f2"]
    ctr = g.columns("ctr", {})
    assert ctr["numeric"] == [f"I{i}" for i in range(1, 14)]
    assert ctr["categorical"] == [f"C{i}" for i in range(1, 27)]


# --------------------------------------------------------------------------- labels and values


def test_label_ranges_and_rates(learn_frames: dict[str, pd.DataFrame]) -> None:
    binary = learn_frames["binary"]["label"]
    assert set(binary.unique()) == {0, 1} and 0.25 <= binary.mean() <= 0.45
    multi = learn_frames["multiclass"]["label"]
    shares = np.bincount(multi, minlength=4) / len(multi)
    assert multi.between(0, 3).all() and shares.min() > 0.1
    assert set(frame("multiclass", rows=3000, n_classes=6)["label"].unique()) == set(range(6))
    rel = learn_frames["ranking"]["label"]
    assert set(rel.unique()) == {0, 1, 2, 3, 4} and 0.3 < (rel == 0).mean() < 0.55
    click = learn_frames["ctr"]["label"]
    assert set(click.unique()) == {0, 1} and 0.03 <= click.mean() <= 0.05


def test_group_sizes_follow_the_mean(learn_frames: dict[str, pd.DataFrame]) -> None:
    q = learn_frames["ranking"].groupby("qid").size()
    r = learn_frames["ctr"].groupby("request_id").size()
    assert 17 <= q.mean() <= 23 and q.std() > 5  # sizes vary
    assert 8.5 <= r.mean() <= 11.5
    assert (frame("ranking", rows=500, mean_query_size=1).groupby("qid").size() == 1).all()


def test_missing_values_present_and_controlled(learn_frames: dict[str, pd.DataFrame]) -> None:
    b = learn_frames["binary"]
    cols = g.columns("binary", {})
    num_missing = b[cols["numeric"]].isna().to_numpy().mean()
    cat_missing = b[cols["categorical"]].isna().to_numpy().mean()
    assert 0.01 < num_missing < 0.03 and 0.01 < cat_missing < 0.03
    for j, c in enumerate(cols["categorical"]):
        assert b[c].dropna().str.fullmatch(rf"c{j}_\d+").all(), c
    none = frame("binary", rows=2000, missing_rate=0.0)
    assert not none.isna().to_numpy().any()
    ctr = learn_frames["ctr"]
    ccols = g.columns("ctr", {})
    dense_missing = ctr[ccols["numeric"]].isna().mean()
    assert dense_missing.between(0.03, 0.23).all()
    dense = ctr[ccols["numeric"]].to_numpy()
    assert (
        np.nanmin(dense) == 0
        and (dense[~np.isnan(dense)] == np.floor(dense[~np.isnan(dense)])).all()
    )
    median, top = np.nanmedian(dense, axis=0), np.nanmax(dense, axis=0)
    assert (top > 20 * (median + 1)).all() and (
        np.nanmean(dense, axis=0) > median
    ).all()  # heavy tails
    assert ctr[ccols["categorical"]].isna().any().sum() >= 3  # some columns have None
    assert not ctr[ccols["label"] + ccols["group"] + ["ts", "row_id"]].isna().any().any()


def test_ctr_categoricals_are_hex_high_cardinality_and_zipf_like(
    learn_frames: dict[str, pd.DataFrame],
) -> None:
    c1 = learn_frames["ctr"]["C1"].dropna()
    assert c1.str.fullmatch(r"[0-9a-f]{8}").all()
    counts = c1.value_counts()
    assert counts.iloc[0] > 0.01 * len(c1)  # a frequent head ...
    assert len(counts) > 1000 and (counts == 1).sum() > 500  # ... and a long tail of rare values
    small = frame("ctr", rows=5000, cardinality=30)
    assert small["C5"].nunique() <= 30


# --------------------------------------------------------------------------- invalid input


def test_unknown_kind_is_named_with_the_valid_ones() -> None:
    for call in (
        lambda: g.plan_blocks("survival", {"rows": 10}),
        lambda: g.columns("survival", {}),
    ):
        with pytest.raises(
            ValueError, match=r"'survival'.*binary, multiclass, regression, ranking, ctr"
        ):
            call()


def test_unknown_param_is_named_with_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"'n_feature'.*valid parameters: rows, seed, block_rows, n_features"
    ):
        g.plan_blocks("ranking", {"rows": 10, "n_feature": 5})
    with pytest.raises(ValueError, match=r"'n_classes'"):
        g.columns("binary", {"n_classes": 3})


@pytest.mark.parametrize(
    ("kind", "params", "name"),
    [
        ("binary", {}, "rows"),
        ("binary", {"rows": 0}, "rows"),
        ("binary", {"rows": "100"}, "rows"),
        ("binary", {"rows": True}, "rows"),
        ("binary", {"rows": 10.5}, "rows"),
        ("binary", {"rows": 10, "seed": -1}, "seed"),
        ("binary", {"rows": 10, "block_rows": 0}, "block_rows"),
        ("binary", {"rows": 10, "missing_rate": 1.0}, "missing_rate"),
        ("binary", {"rows": 10, "missing_rate": float("nan")}, "missing_rate"),
        ("binary", {"rows": 10, "n_numeric": 0, "n_categorical": 0}, "n_numeric"),
        ("multiclass", {"rows": 10, "n_classes": 1}, "n_classes"),
        ("ranking", {"rows": 10, "mean_query_size": 500}, "mean_query_size"),
        ("ranking", {"rows": 10, "n_features": 0}, "n_features"),
        ("ctr", {"rows": 10, "cardinality": 0}, "cardinality"),
        ("ctr", {"rows": 10, "mean_request_size": 0.5}, "mean_request_size"),
    ],
)
def test_invalid_param_is_named(kind: str, params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=rf"'{name}'"):
        g.plan_blocks(kind, params)


# --------------------------------------------------------------------------- learnability


def _features(df: pd.DataFrame, kind: str, categorical: list[str] | None = None) -> pd.DataFrame:
    cols = g.columns(kind, {})
    x = df[cols["numeric"]].copy()
    for c in cols["categorical"] if categorical is None else categorical:
        x[c] = df[c].astype("category")
    return x


def _train(
    x: pd.DataFrame, y: np.ndarray, params: dict[str, object], qid: np.ndarray | None = None
) -> xgb.Booster:
    data = xgb.DMatrix(x, y, qid=qid, enable_categorical=True, nthread=1)
    base = {"tree_method": "hist", "eta": 0.1, "max_depth": 6, "nthread": 1, "seed": 0}
    return xgb.train({**base, **params}, data, num_boost_round=50)


def _predict(model: xgb.Booster, x: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(xgb.DMatrix(x, enable_categorical=True, nthread=1)))


def _split(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    train = df["row_id"].to_numpy() < LEARN_TRAIN  # a block boundary: no group is cut
    return train, ~train


def test_binary_is_learnable(learn_frames: dict[str, pd.DataFrame]) -> None:
    df = learn_frames["binary"]
    x, y = _features(df, "binary"), df["label"].to_numpy()
    tr, te = _split(df)
    model = _train(x[tr], y[tr], {"objective": "binary:logistic"})
    auc = roc_auc_score(y[te], _predict(model, x[te]))
    print(f"binary held-out AUC {auc:.3f}")
    assert auc >= 0.75


def test_multiclass_is_learnable(learn_frames: dict[str, pd.DataFrame]) -> None:
    df = learn_frames["multiclass"]
    x, y = _features(df, "multiclass"), df["label"].to_numpy()
    tr, te = _split(df)
    model = _train(x[tr], y[tr], {"objective": "multi:softprob", "num_class": 4, "max_depth": 4})
    acc = accuracy_score(y[te], _predict(model, x[te]).argmax(axis=1))
    print(f"multiclass held-out accuracy {acc:.3f}")
    assert acc >= 0.5


def test_ctr_is_learnable(learn_frames: dict[str, pd.DataFrame]) -> None:
    df = learn_frames["ctr"]
    x, y = _features(df, "ctr", categorical=["C1", "C2", "C3", "C4"]), df["label"].to_numpy()
    tr, te = _split(df)
    model = _train(x[tr], y[tr], {"objective": "binary:logistic"})
    auc = roc_auc_score(y[te], _predict(model, x[te]))
    print(f"ctr held-out AUC {auc:.3f}")
    assert auc >= 0.75


def _mean_ndcg10(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Mean NDCG@10 over queries, gains 2**rel - 1 (one-row and no-gain queries skipped)."""
    values = []
    for idx in pd.Series(np.arange(len(groups))).groupby(groups).indices.values():
        rel = labels[idx]
        if len(idx) < 2 or rel.max() == 0:
            continue
        values.append(ndcg_score([2.0**rel - 1.0], [scores[idx]], k=10))
    return float(np.mean(values))


def test_ranking_is_learnable(learn_frames: dict[str, pd.DataFrame]) -> None:
    df = learn_frames["ranking"]
    x, y, qid = _features(df, "ranking"), df["label"].to_numpy(), df["qid"].to_numpy()
    tr, te = _split(df)
    model = _train(x[tr], y[tr], {"objective": "rank:ndcg"}, qid=qid[tr])
    ndcg = _mean_ndcg10(y[te], _predict(model, x[te]), qid[te])
    random = _mean_ndcg10(y[te], np.random.default_rng(0).random(int(te.sum())), qid[te])
    print(f"ranking held-out NDCG@10 {ndcg:.3f} vs random order {random:.3f}")
    assert ndcg >= 0.75 and ndcg - random >= 0.2


def test_regression_label_is_a_positive_skewed_quantity_with_zero_rate() -> None:
    df = frame("regression", rows=20000, block_rows=5000)
    y = df["label"]
    assert df["label"].dtype == np.float64 and (y > 0).all()
    assert y.mean() > y.median() * 1.2  # right-skewed
    zeros = frame("regression", rows=20000, block_rows=5000, zero_rate=0.2)["label"]
    assert 0.17 < (zeros == 0).mean() < 0.23
    # the features carry the signal: a linear fit on log(label) explains a good part of it
    x = df[[f"num_{j}" for j in range(8)]].fillna(0).to_numpy()
    x = np.c_[x, np.ones(len(x))]
    logy = np.log(y.to_numpy())
    coef, *_ = np.linalg.lstsq(x, logy, rcond=None)
    r2 = 1 - np.var(logy - x @ coef) / np.var(logy)
    assert r2 > 0.2

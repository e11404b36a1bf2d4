"""Prediction logs as rows: exploded per scored row, joined with delayed labels, evaluated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components import metrics
from components.online import join_labels, logged_rows, metrics_by
from components.prediction_log import Record, to_table

T0 = 1_764_633_600.0


def _predict(i: int, version: int, scores: list[float]) -> Record:
    rows = [{"age": 20 + i + j, "country": "fr"} for j in range(len(scores))]
    return Record(
        request_id=f"p{i}",
        ts=T0 + i,
        model="ctr",
        version=version,
        route="predict",
        rows=len(rows),
        features={"rows": rows},
        outputs={
            "model": "ctr",
            "version": version,
            "predictions": [{"score": s, "label": int(s > 0.5)} for s in scores],
        },
        latency_ms=2.0,
    )


def _rank(i: int, scores: list[float], filtered: list[int]) -> Record:
    candidates = [{"item": k} for k in range(len(scores))]
    ranked = sorted(
        ({"index": k, "score": s} for k, s in enumerate(scores) if k not in filtered),
        key=lambda r: -r["score"],
    )
    return Record(
        request_id=f"q{i}",
        ts=T0 + i,
        model="rank",
        version=1,
        route="rank",
        rows=len(scores),
        features={"query": {"user": "u1"}, "candidates": candidates},
        outputs={
            "model": "rank",
            "version": 1,
            "ranked": ranked,
            "filtered": [{"index": k, "guardrails": ["stock"]} for k in filtered] or None,
        },
        latency_ms=3.0,
    )


def test_predict_records_explode_to_rows_and_join_their_labels() -> None:
    rng = np.random.default_rng(0)
    records = [_predict(i, 1 + i % 2, rng.uniform(0, 1, 3).round(4).tolist()) for i in range(40)]
    rows = logged_rows(to_table(records), "binary")
    assert len(rows) == 120 and list(rows["row"][:3]) == [0, 1, 2]
    assert rows.loc[4, "age"] == 20 + 1 + 1 and rows.loc[4, "request_id"] == "p1"
    labels = rows[["request_id", "row"]].copy()
    labels["clicked"] = rng.integers(0, 2, len(labels))
    labels = pd.concat(
        [labels.iloc[10:], pd.DataFrame({"request_id": ["nope"], "row": [0], "clicked": [1]})]
    )
    joined, counts = join_labels(rows, labels, "clicked")
    assert (counts.logged, counts.labelled, counts.labels, counts.labels_unmatched) == (
        120,
        110,
        111,
        1,
    )
    per_version = metrics_by(joined, "binary", "clicked")
    for v in (1, 2):
        part = joined[joined["version"] == v]
        expected = metrics.binary_metrics(part["clicked"].to_numpy(), part["score"].to_numpy())
        assert per_version[(v,)] == pytest.approx(expected, abs=1e-12)


def test_rank_records_are_queries_and_filtered_candidates_rank_last() -> None:
    rows = logged_rows(to_table([_rank(0, [0.2, 0.9, 0.5], filtered=[1])]), "ranking")
    assert rows["_group"].tolist() == ["q0"] * 3
    assert rows["filtered"].tolist() == [False, True, False]
    assert rows.loc[1, "score"] < rows[["score"]].drop(index=1)["score"].min()
    assert (rows["user"] == "u1").all() and rows["item"].tolist() == [0, 1, 2]
    labels = pd.DataFrame({"request_id": ["q0"] * 3, "row": [0, 1, 2], "rel": [0, 3, 1]})
    joined, _ = join_labels(rows, labels, "rel")
    ndcg = metrics_by(joined, "ranking", "rel", ks=(3,))[(1,)]["ndcg@3"]
    # shown order: candidate 2 (rel 1), candidate 0 (rel 0), then filtered 1 (rel 3); gain 2^rel - 1
    ideal = 7 + 1 / np.log2(3)
    assert ndcg == pytest.approx((1 + 7 / np.log2(4)) / ideal)


def test_a_label_given_twice_and_an_unreadable_record_are_named() -> None:
    rows = logged_rows(to_table([_predict(0, 1, [0.3])]), "binary")
    twice = pd.DataFrame({"request_id": ["p0", "p0"], "row": [0, 0], "y": [1, 0]})
    with pytest.raises(ValueError, match="labelled more than once"):
        join_labels(rows, twice, "y")
    with pytest.raises(ValueError, match=r"no column\(s\) \['y'\]"):
        join_labels(rows, twice.drop(columns=["y"]), "y")
    bad = to_table([_predict(1, 1, [0.3])]).to_pandas()
    bad.loc[0, "outputs"] = '{"predictions": []}'  # one row sent, none answered
    with pytest.raises(ValueError, match="record 'p1'"):
        logged_rows(bad, "binary")


def test_multiclass_and_regression_outputs_are_read_from_their_fields() -> None:
    rec = _predict(0, 1, [0.0])
    rec.outputs = {"predictions": [{"probabilities": [0.2, 0.8], "label": 1}]}
    rows = logged_rows(to_table([rec]), "multiclass", features=False)
    assert rows[["proba_0", "proba_1"]].iloc[0].tolist() == [0.2, 0.8] and "age" not in rows
    rec.outputs = {"predictions": [{"value": 12.5}]}
    assert logged_rows(to_table([rec]), "regression")["score"].tolist() == [12.5]

"""/predict and /rank bodies are built as plain dicts: they must match the documented schemas
(serve.schemas) field for field, for every task, with and without rules and guardrails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.predictor import Predictor, Scored
from serve.schemas import PredictResponse, RankResponse
from serve.scoring import Limits, ModelScorer, body_json
from tests import bundles

FRAME = pd.DataFrame(
    {
        "age": [30.0, 12.0, np.nan, 45.0],
        "clicks": [3.0, 0.0, 7.0, 1.0],
        "country": ["us", "de", "us", None],
    }
)
OUTPUTS = {
    "binary": ({"score": 0.9}, {"score": 0.2}),
    "multiclass": ({"label": 2}, {"label": 0}),
    "regression": ({"value": "clicks * 2"}, {"value": 1.5}),
    "ranking": ({"score": "clicks + 1"}, {"score": 0.5}),
}


def _bundle(path: Path, task: str, guardrails: list[dict] | None) -> str:
    rule_out, default = OUTPUTS[task]
    doc = {
        "name": "r",
        "rules": [{"name": "us", "when": "country == 'us'", **rule_out}],
        "default": default,
    }
    transform = bundles.features(FRAME, numeric=("age", "clicks"), categorical=("country",))
    k = 3 if task == "multiclass" else None
    contents = bundles.rules_contents(task, doc, transform, guardrails=guardrails, num_classes=k)
    return bundles.write(path, contents)


def _scored(tmp_path: Path, task: str, guardrails: list[dict] | None) -> tuple[ModelScorer, Scored]:
    scorer = ModelScorer(
        Predictor.load(_bundle(tmp_path / task, task, guardrails)), "m", 4, Limits()
    )
    return scorer, scorer.predictor.score(FRAME)


def _same_as_schema(body: dict, model: type) -> dict:
    """The body's JSON equals the schema's own serialisation of it (absent fields left out)."""
    raw = body_json(body)
    parsed = model.model_validate_json(raw)
    assert json.loads(raw) == json.loads(parsed.model_dump_json(exclude_none=True))
    return json.loads(raw)


@pytest.mark.parametrize("task", sorted(OUTPUTS))
def test_predict_bodies_follow_the_schema(tmp_path: Path, task: str) -> None:
    scorer, scored = _scored(tmp_path, task, None)
    body = _same_as_schema(scorer.predict_response(scored), PredictResponse)
    assert body["model"] == "m" and body["version"] == 4
    rows = body["predictions"]
    assert [r["rule"] for r in rows] == ["us", "default", "us", "default"]
    if task == "binary":
        assert [r["score"] for r in rows] == [0.9, 0.2, 0.9, 0.2]
        assert [r["label"] for r in rows] == [1, 0, 1, 0]
    elif task == "multiclass":
        assert [r["label"] for r in rows] == [2, 0, 2, 0]
        assert rows[0]["probabilities"] == [0.0, 0.0, 1.0]
    elif task == "regression":
        assert [r["value"] for r in rows] == [6.0, 1.5, 14.0, 1.5]
    else:
        assert [r["score"] for r in rows] == [4.0, 0.5, 8.0, 0.5]
    assert all("guardrails" not in r and "filtered" not in r for r in rows)


def test_rank_body_with_filters_and_top_k(tmp_path: Path) -> None:
    guard = [
        {"name": "kids", "when": "age < 18", "filter": True},
        {"name": "cap", "when": "clicks > 5", "clamp": {"max": 5}},
    ]
    scorer, scored = _scored(tmp_path, "ranking", guard)
    body = _same_as_schema(scorer.rank_response(scored, top_k=None), RankResponse)
    # scores 4, 0.5 (filtered), min(8, 5) = 5, 0.5 -> order 2, 0, 3; row 1 filtered by "kids"
    assert [c["index"] for c in body["ranked"]] == [2, 0, 3]
    assert [c["score"] for c in body["ranked"]] == [5.0, 4.0, 0.5]
    assert body["ranked"][0]["guardrails"] == ["cap"] and body["ranked"][1]["guardrails"] == []
    assert [c["rule"] for c in body["ranked"]] == ["us", "us", "default"]
    assert body["filtered"] == [{"index": 1, "guardrails": ["kids"]}]
    assert list(body) == ["model", "version", "ranked", "filtered"]  # RankResponse's order
    top = _same_as_schema(scorer.rank_response(scored, top_k=1), RankResponse)
    assert [c["index"] for c in top["ranked"]] == [2] and top["filtered"] == body["filtered"]
    predicted = _same_as_schema(scorer.predict_response(scored), PredictResponse)
    assert [r["filtered"] for r in predicted["predictions"]] == [False, True, False, False]


def test_rank_ties_keep_request_order_and_nan_is_null(tmp_path: Path) -> None:
    scorer, _ = _scored(tmp_path, "ranking", None)
    scores = np.array([0.5, np.nan, 0.5, 0.9])
    body = scorer.rank_response(Scored(scores, scores), top_k=None)
    raw = json.loads(body_json(body))
    assert [c["index"] for c in raw["ranked"]][:3] == [3, 0, 2]
    assert raw["ranked"][3] == {"index": 1, "score": None}  # JSON has no NaN
    assert "filtered" not in raw and "rule" not in raw["ranked"][0]
    assert not math.isnan(raw["ranked"][0]["score"])

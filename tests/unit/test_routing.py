"""Canary routing and companion scoring (serve/routing.py), without Ray."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from serve.config import ServeArgs
from serve.routing import companion_body, in_canary
from serve.scoring import Limits, ModelScorer, RequestError
from tests import bundles


def test_canary_share_is_realised_and_sticky_per_key() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    chosen = [in_canary(k, 0.05) for k in keys]
    assert abs(sum(chosen) / len(keys) - 0.05) < 0.005
    assert chosen == [in_canary(k, 0.05) for k in keys]  # the same answer every time
    assert not any(in_canary(k, 0.0) for k in keys[:100])
    assert all(in_canary(k, 1.0) for k in keys[:100])
    # a larger share keeps every key of a smaller one: raising the share moves no one back
    assert all(in_canary(k, 0.2) for k, c in zip(keys, chosen, strict=True) if c)


def test_companion_body_scores_like_the_predictor_and_raises_for_other_features(
    tmp_path: Path,
) -> None:
    frame = bundles.tiny_frame()
    path = bundles.write(tmp_path / "b", bundles.xgboost_contents(frame))
    scorer = ModelScorer.load(path, "m", 3, Limits())
    rows = [
        {"age": 30.0, "clicks": 2.0, "country": "us"},
        {"age": None, "clicks": 0.0, "country": "zz"},
    ]
    body = companion_body(scorer, "predict", {"rows": rows})
    expected = scorer.predictor.predict_frame(pd.DataFrame(rows))["score"].tolist()
    assert [p["score"] for p in body["predictions"]] == pytest.approx(expected, abs=1e-6)
    assert body["version"] == 3
    with pytest.raises(RequestError, match="missing feature"):
        companion_body(scorer, "predict", {"rows": [{"num_0": 1.0}]})


def test_shadow_and_canary_cannot_be_the_served_version() -> None:
    with pytest.raises(ValueError, match="the canary version v2 is the version being served"):
        ServeArgs(storage="s", model="m", version=2, canary_version=2, auth="none")
    args = ServeArgs(storage="s", model="m", shadow="3", canary="candidate", auth="none")
    assert (args.shadow, args.canary) == (3, "candidate")
    assert {"shadow_version", "canary_version", "canary_share"} <= set(args.user_config())

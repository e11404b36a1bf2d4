"""Regression end to end to an endpoint, a rule baseline selected by the gate, and guardrails that
change served results exactly as they change offline evaluation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from components import generators
from components.predictor import Predictor
from components.registry import Registry
from pipelines.cli import main
from pipelines.deploy import deploy
from serve.config import ServeArgs
from tests.conftest import CONFIGS

pytestmark = pytest.mark.usefixtures("ray_session")

PORT = 8011
TINY = CONFIGS / "tiny"
REGRESSION_DATA = {"rows": 4000, "seed": 3, "block_rows": 1000, "zero_rate": 0.05}
RANKING_DATA = {"rows": 3000, "n_features": 8, "mean_query_size": 15, "seed": 7, "block_rows": 1000}


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    yield str(tmp_path_factory.mktemp("rules-storage"))
    serve.shutdown()


def _deploy(storage: str, model: str) -> str:
    args = ServeArgs.model_validate(
        {
            "storage": storage,
            "model": model,
            "port": PORT,
            "min_replicas": 1,
            "max_replicas": 1,
            "num_cpus": 0.25,
            "max_rows": 500,
            "max_candidates": 200,
            "auth": "none",
            "api_key_env": None,
        }
    )
    return str(deploy(args)["url"])


def _report(storage: str, pipeline: str) -> dict:
    run = sorted((Path(storage) / "runs" / pipeline).iterdir())[-1]
    return json.loads((run / "report.json").read_text())


def _raw(kind: str, params: dict, row_ids: np.ndarray) -> pd.DataFrame:
    frame = pd.concat(
        [generators.generate_block(t) for t in generators.plan_blocks(kind, params)]
    ).set_index("row_id")
    return frame.loc[row_ids].reset_index()


def _rows(frame: pd.DataFrame, features: list[str]) -> list[dict]:
    clean = frame[features].astype(object).where(frame[features].notna(), None)
    return clean.to_dict("records")


def _fired(text: object) -> list[str]:
    return [n for n in str(text or "").split(",") if n]


def test_regression_runs_to_a_served_endpoint(storage: str) -> None:
    assert main(["run", str(TINY / "regression.yaml"), "--storage", storage]) == 0
    report = _report(storage, "tiny-regression")
    assert report["status"] == "succeeded" and report["task"] == "regression"
    assert set(report["test"]) == {"rmse", "mae", "r2", "mape"}
    assert report["test"]["r2"] > 0.2 and report["test"]["rmse"] < report["baseline"]["rmse"]
    # the trained model had to beat the rule baseline on validation, and did
    b = report["baseline_gate"]
    assert report["winner"] == "gbdt" and b["promote"] and b["baseline"] == "rules"
    assert b["split"] == "valid" and b["low"] > 0
    # the clamp guardrail: metrics with and without it, and how often it fired
    assert set(report["test_without_guardrails"]) == set(report["test"])
    assert report["guardrails"][0]["name"] == "non_negative"
    run_dir = Path(report["run_dir"])
    page = (run_dir / "report.html").read_text()
    assert "alt='predicted_vs_actual'" in page and "alt='residuals'" in page
    assert "<h2>Rule baseline</h2>" in page and "<h2>Guardrails</h2>" in page
    assert (run_dir / "plots" / "residuals.png").stat().st_size > 1000

    scored = pd.read_parquet(report["predictions"]).head(300)
    raw = _raw("regression", REGRESSION_DATA, scored["row_id"].to_numpy())
    bundle = Registry(storage).resolve("tiny-regression").path
    features = Predictor.load(bundle).feature_columns
    url = _deploy(storage, "tiny-regression")
    r = httpx.post(f"{url}/predict", json={"rows": _rows(raw, features)}, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert all(set(p) == {"value", "guardrails"} for p in preds), preds[0]
    np.testing.assert_allclose(
        [p["value"] for p in preds], scored["score"].to_numpy(), rtol=0, atol=1e-6
    )
    assert [p["guardrails"] for p in preds] == [_fired(t) for t in scored["guardrails"]]
    assert min(p["value"] for p in preds) >= 0.0
    info = httpx.get(f"{url}/model").json()
    assert info["task"] == "regression" and "rmse" in info["metrics"]["test"]


def test_a_rule_baseline_stays_when_the_model_is_not_better(storage: str, tmp_path: Path) -> None:
    """A trained model that predicts ~0 everywhere loses to the rules: the gate keeps them."""
    own = str(tmp_path / "storage")
    overrides = [
        "models.1.num_boost_round=1",
        "models.1.params.eta=0.0001",
        "models.1.params.base_score=0.0",
        "registry.model_name=tiny-regression-rules",
    ]
    assert main(["run", str(TINY / "regression.yaml"), "--storage", own, *overrides]) == 0
    report = _report(own, "tiny-regression")
    b = report["baseline_gate"]
    assert report["winner"] == "rules" and not b["promote"]
    assert "the rule baseline 'rules' stays" in b["reason"] and b["challenger_name"] == "gbdt"
    assert report["final_model"].startswith("the rule model rules")
    bundle = Registry(own).resolve("tiny-regression-rules").path
    assert Path(bundle, "rules.json").exists() and not Path(bundle, "model.ubj").exists()

    scored = pd.read_parquet(report["predictions"]).head(200)
    raw = _raw("regression", REGRESSION_DATA, scored["row_id"].to_numpy())
    offline = Predictor.load(bundle).predict_frame(raw)
    assert offline["rule"].tolist() == scored["rule"].tolist()
    assert set(offline["rule"]) <= {"missing_num_0", "high_num_1", "default"}
    assert offline["score"].tolist() == scored["score"].tolist()
    url = _deploy(own, "tiny-regression-rules")
    features = Predictor.load(bundle).feature_columns
    r = httpx.post(f"{url}/predict", json={"rows": _rows(raw, features)}, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["rule"] for p in preds] == offline["rule"].tolist()
    assert [p["value"] for p in preds] == offline["score"].tolist()


def test_guardrails_change_served_rankings_exactly_as_offline(storage: str) -> None:
    assert main(["run", str(TINY / "ranking_guardrails.yaml"), "--storage", storage]) == 0
    report = _report(storage, "tiny-ranking-guardrails")
    fired = {g["name"]: g["fired"] for g in report["guardrails"]}
    assert fired["blocked"] > 0 and fired["promoted"] > 0
    assert report["test"]["ndcg@10"] != report["test_without_guardrails"]["ndcg@10"]

    scored = pd.read_parquet(report["predictions"])
    assert scored["filtered"].any() and not scored["filtered"].all()
    bundle = Registry(storage).resolve("tiny-ranking-guardrails").path
    features = Predictor.load(bundle).feature_columns
    url = _deploy(storage, "tiny-ranking-guardrails")
    queries = scored.groupby("_group")["filtered"].any()
    chosen = list(queries[queries].index[:4]) + list(queries[~queries].index[:2])
    for q in chosen:
        rows = scored[scored["_group"] == q].reset_index(drop=True)
        raw = _raw("ranking", RANKING_DATA, rows["row_id"].to_numpy())
        r = httpx.post(f"{url}/rank", json={"candidates": _rows(raw, features)}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        kept = rows.index[~rows["filtered"]].to_numpy()
        order = kept[np.argsort(-rows.loc[kept, "score"].to_numpy(), kind="stable")]
        assert [c["index"] for c in body["ranked"]] == order.tolist()
        np.testing.assert_allclose(
            [c["score"] for c in body["ranked"]], rows.loc[order, "score"], rtol=0, atol=1e-6
        )
        assert [c["guardrails"] for c in body["ranked"]] == [
            _fired(rows.loc[i, "guardrails"]) for i in order
        ]
        dropped = rows.index[rows["filtered"]].tolist()
        assert [c["index"] for c in body.get("filtered") or []] == dropped
        assert all("blocked" in c["guardrails"] for c in body.get("filtered") or [])
        # /predict flags the same rows and gives the same scores
        p = httpx.post(f"{url}/predict", json={"rows": _rows(raw, features)}, timeout=60).json()
        assert [x["filtered"] for x in p["predictions"]] == rows["filtered"].tolist()
        np.testing.assert_allclose(
            [x["score"] for x in p["predictions"]], rows["score"], rtol=0, atol=1e-6
        )


def test_a_torch_regression_head_learns_the_quantity(tmp_path: Path) -> None:
    """The MLP with a Huber head on the standardised label, against the same rule baseline."""
    own = str(tmp_path / "storage")
    mlp = (
        "models.1={kind: torch.mlp, name: mlp, loss: huber, epochs: 8, batch_size: 64, "
        "learning_rate: 0.003, hidden: [32], embedding_dim: 4, early_stopping_epochs: 3, "
        "scaling: {num_workers: 0}}"
    )
    over = [mlp, "features.standardize=true", "registry.model_name=tiny-regression-mlp"]
    assert main(["run", str(TINY / "regression.yaml"), "--storage", own, *over]) == 0
    report = _report(own, "tiny-regression")
    entry = next(m for m in report["models"] if m["name"] == "mlp")
    assert entry["kind"] == "torch.mlp" and entry["valid"]["r2"] > 0.2
    assert report["baseline_gate"]["challenger_name"] == "mlp"
    bundle = Registry(own).resolve("tiny-regression-mlp").path
    if report["winner"] == "mlp":
        arch = json.loads(Path(bundle, "architecture.json").read_text())
        assert arch["target_scale"] > 1.0 and 5.0 < arch["target_mean"] < 30.0

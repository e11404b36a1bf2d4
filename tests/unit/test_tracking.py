"""MLflow tracking into a local file store (offline): params, metrics, artifacts, registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import tracking

mlflow = pytest.importorskip("mlflow")


def test_a_run_is_logged_and_its_bundle_registered(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    (run_dir / "plots").mkdir(parents=True)
    (run_dir / "report.md").write_text("# report\n")
    (run_dir / "report.html").write_text("<html></html>")
    (run_dir / "plots" / "roc.png").write_bytes(b"\x89PNG fake")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.ubj").write_bytes(b"model")
    (bundle / "MANIFEST.json").write_text("{}")
    report = {
        "pipeline": "demo",
        "run_id": "20260101-000000.000-abcd",
        "run_dir": str(run_dir),
        "winner": "gbdt",
        "test": {"auc": 0.91, "ndcg@10": 0.8},
        "baseline": {"auc": 0.5},
        "models": [
            {
                "name": "gbdt",
                "history": [{"round": 1, "valid-auc": 0.8}, {"round": 2, "valid-auc": 0.85}],
            }
        ],
        "gate": {"reason": "no production version yet"},
    }
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = tracking.log_run(
        uri, "demo", report, {"model": {"params": {"eta": 0.1}}}, str(bundle), "demo", 1, True
    )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(info["run_id"])
    assert run.data.metrics["test_auc"] == pytest.approx(0.91)
    assert run.data.metrics["test_ndcg_at_10"] == pytest.approx(0.8)
    assert run.data.params["model.params.eta"] == "0.1"
    assert run.data.tags["rayline.gate"] == "promoted"
    curve = client.get_metric_history(info["run_id"], "gbdt.valid-auc")
    assert [(m.step, m.value) for m in curve] == [(1, 0.8), (2, 0.85)]
    artifacts = {a.path for a in client.list_artifacts(info["run_id"])}
    assert {"report.html", "report.md", "plots", "bundle"} <= artifacts
    bundle_files = {a.path for a in client.list_artifacts(info["run_id"], "bundle")}
    assert bundle_files == {"bundle/model.ubj", "bundle/MANIFEST.json"}
    assert info["model_version"] == "1"
    assert str(client.get_model_version_by_alias("demo", "production").version) == "1"
    assert (tmp_path / "mlartifacts").is_dir()  # beside the database, not in the cwd
    # a second, not promoted run adds a version without moving the alias
    info2 = tracking.log_run(uri, "demo", report, {}, str(bundle), "demo", 2, False)
    assert info2["model_version"] == "2"
    assert str(client.get_model_version_by_alias("demo", "production").version) == "1"

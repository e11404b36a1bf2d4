"""Ray Tune through the CLI: trials built by the job factory, ASHA on a small cluster, the best
finished trial registered."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from components import bundle
from components.registry import Registry
from pipelines.cli import main
from tests.conftest import CONFIGS

pytestmark = pytest.mark.usefixtures("ray_session")


def _report(storage: Path, pipeline: str) -> dict:
    runs = sorted((storage / "runs" / pipeline).iterdir())
    return json.loads((runs[-1] / "report.json").read_text())


def test_tuned_spec_runs_asha_trials_and_registers_the_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    storage = tmp_path / "storage"
    spec = CONFIGS / "tiny" / "classification_tuned.yaml"
    assert main(["run", str(spec), "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    report = _report(storage, "tiny-classification-tuned")
    tuning = report["tuning"]["gbdt"]
    trials = tuning["trials"]
    # 4 trials, 2 at a time (1 CPU each): every one ended with a result or an early stop
    assert len(trials) == 4
    assert {t["status"] for t in trials} <= {"completed", "stopped early"}
    assert all(t["value"] is not None and t["reached"] for t in trials)
    for t in trials:
        if t["status"] == "stopped early":
            assert t["reached"] < 40
        assert 0.01 <= t["config"]["params.eta"] <= 0.5
        assert 2 <= t["config"]["params.max_depth"] <= 6
    best = tuning["best"]
    finished = [t for t in trials if t["status"] == "completed"]
    assert best["value"] == max(t["value"] for t in finished)
    assert tuning["metric"] == "valid-auc" and tuning["mode"] == "max"
    assert out.count("      trial ") == 4 and "best valid-auc" in out
    # the registered model is the best trial's configuration
    mv = Registry(str(storage)).resolve("tiny-classification-tuned")
    params = bundle.read_json(mv.path, "model.json")["params"]["params"]
    assert params["eta"] == pytest.approx(best["config"]["params.eta"])
    assert params["max_depth"] == best["config"]["params.max_depth"]
    assert report["test"]["auc"] > 0.75
    # nothing leaked: every trial's Train workers gave their CPUs back
    deadline = time.time() + 30
    while time.time() < deadline:
        if ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]:
            break
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]

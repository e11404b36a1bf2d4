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


def _tune_state_has_finished(tune_dir: Path, trial_id: str) -> bool:
    for state in tune_dir.glob("experiment_state-*.json"):
        text = state.read_text(errors="replace")
        if trial_id in text and "TERMINATED" in text:
            return True
    return False


def _cpus_all_free() -> bool:
    import ray

    deadline = time.time() + 30
    while time.time() < deadline:
        if ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]:
            return True
        time.sleep(0.5)
    return False


def test_an_asha_search_killed_mid_way_resumes_and_registers_the_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """4 ASHA trials, 2 at a time; the driver is killed (SIGKILL) once the first trial has
    ended (finished or stopped early), another still running; `run --resume` reuses the prepared
    data and features, restores the Tune run without repeating the ended trial (the running one
    continues from its last checkpoint), and registers the best finished trial of all four."""
    import os
    import subprocess
    import sys

    import ray

    from tests.conftest import ROOT

    storage = tmp_path / "storage"
    spec = str(CONFIGS / "tiny" / "classification_tuned.yaml")
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "PYTHONUNBUFFERED": "1"}
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", spec, "--storage", str(storage),
         "--address", address],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    first = None
    before: list[str] = []
    assert proc.stdout is not None
    deadline = time.time() + 240
    for line in proc.stdout:
        before.append(line)
        if line.strip().startswith("trial 1 "):  # finished, or stopped early by ASHA
            first = line.split()[2].rstrip(":")
            break
        assert time.time() < deadline, "no trial ended in time"
    assert first, "the driver ended before a trial did:\n" + "".join(before)
    run_dir = next((storage / "runs" / "tiny-classification-tuned").iterdir())
    tune_dir = run_dir / "tune" / "gbdt"
    while not _tune_state_has_finished(tune_dir, first):
        assert time.time() < deadline, "Tune never saved the ended trial"
        time.sleep(0.2)
    proc.kill()  # the driver dies mid-search, without any chance to clean up
    proc.wait(timeout=30)
    assert not (run_dir / "report.json").exists()
    capsys.readouterr()
    assert main(["run", spec, "--storage", str(storage), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming this unfinished run" in out
    assert "continued the interrupted Tune run" in out
    assert f" {first}: " not in out  # the ended trial was not run again
    report = _report(storage, "tiny-classification-tuned")
    assert report["run_dir"] == str(run_dir) and report["status"] == "succeeded"
    assert report["reused"][:3] == ["ingest", "split", "features"]
    assert "resumed: reused from the interrupted run" in (run_dir / "report.md").read_text()
    tuning = report["tuning"]["gbdt"]
    trials = tuning["trials"]
    ended = {t["trial_id"]: t["status"] for t in trials}[first]
    assert tuning["restored"] and ended in {"completed", "stopped early"}
    # 4 trials, 2 at a time (1 CPU each): every one ended with a result or an early stop
    assert len(trials) == 4
    assert {t["status"] for t in trials} <= {"completed", "stopped early"}
    assert all(t["value"] is not None and t["reached"] for t in trials)
    for t in trials:
        if t["status"] == "stopped early":  # by ASHA at a rung: 40 is the last one
            assert t["reached"] <= 40
        assert 0.01 <= t["config"]["params.eta"] <= 0.5
        assert 2 <= t["config"]["params.max_depth"] <= 6
    best = tuning["best"]
    finished = [t for t in trials if t["status"] == "completed"]
    assert best["value"] == max(t["value"] for t in finished)
    assert tuning["metric"] == "valid-auc" and tuning["mode"] == "max"
    assert "best valid-auc" in out
    # the registered model is the best trial's configuration
    mv = Registry(str(storage)).resolve("tiny-classification-tuned")
    params = bundle.read_json(mv.path, "model.json")["params"]["params"]
    assert params["eta"] == pytest.approx(best["config"]["params.eta"])
    assert params["max_depth"] == best["config"]["params.max_depth"]
    assert report["test"]["auc"] > 0.75
    # nothing leaked: every trial's Train workers gave their CPUs back
    assert _cpus_all_free()


def test_refit_trains_the_winner_again_on_train_and_valid(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    spec = str(CONFIGS / "tiny" / "classification.yaml")
    assert main(["run", spec, "--storage", str(storage), "tune.winner=refit"]) == 0
    report = _report(storage, "tiny-classification")
    trained = report["models"][0]
    n = trained["best_iteration"] + 1
    assert (
        report["final_model"] == f"gbdt refit on train + valid for {n} rounds (tune.winner: refit)"
    )
    mv = Registry(str(storage)).resolve("tiny-classification")
    meta = bundle.read_json(mv.path, "model.json")
    assert (
        meta["params"]["num_boost_round"] == n and meta["params"]["early_stopping_rounds"] is None
    )
    assert meta["rounds"] == n
    assert "Final model: gbdt refit" in Path(report["run_dir"], "report.md").read_text()

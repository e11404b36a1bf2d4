"""The torch Train adapter on 2 workers: a worker killed mid-training resumes from its checkpoint."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from ray.util.state import list_actors

from components.features import CategoricalConfig, FeatureConfig
from components.splits import SplitPlan
from components.steps import prepare, train_torch
from components.steps.ingest import SourceConfig, ingest
from components.steps.train_common import TrainOutcome
from components.torch_models import ArchitectureSpec
from components.validation import DataSchema

pytestmark = pytest.mark.usefixtures("ray_session")

NUMERIC = tuple(f"num_{i}" for i in range(8))
SCHEMA = DataSchema(
    task="binary",
    numeric=NUMERIC,
    categorical=("cat_0", "cat_1"),
    label="label",
    keys=("row_id",),
)
EPOCHS = 6


def _job(sp: prepare.Splits, max_failures: int) -> train_torch.TorchJob:
    transform = prepare.fit_features(
        sp.train,
        FeatureConfig(
            numeric=NUMERIC, categorical=(CategoricalConfig("cat_0"), CategoricalConfig("cat_1"))
        ),
    )
    arch = ArchitectureSpec(
        kind="torch.mlp",
        num_numeric=len(transform.numeric),
        cardinalities=tuple(c.cardinality for c in transform.categorical),
        embedding_dim=4,
        hidden=(32,),
    )
    return train_torch.TorchJob(
        task="binary",
        label="label",
        loss="bce",
        arch_json=arch.to_json(),
        features_json=transform.to_json(),
        metric="auc",
        maximize=True,
        epochs=EPOCHS,
        batch_size=16,  # small batches: epochs long enough (~1 s) to kill a worker in the middle
        learning_rate=0.003,
        early_stopping_epochs=None,
        num_workers=2,
        resources_per_worker={"CPU": 0.5},
        max_failures=max_failures,
    )


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> prepare.Splits:
    src = SourceConfig("synthetic:binary", params={"rows": 6000, "seed": 4, "block_rows": 2000})
    res = ingest(src, SCHEMA, {}, str(tmp_path_factory.mktemp("ingest")))
    return prepare.split_dataset(
        res.dataset, SplitPlan("random", seed=0, train=0.7, valid=0.15), False, False
    )


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob(f"checkpoint_*/{train_torch.STATE_FILE}"))


def _registered(run_dir: Path) -> bool:
    """True once Ray Train has recorded a checkpoint (a restart would get it back).

    A checkpoint directory on disk is not enough: the controller registers it (and writes this
    snapshot) only when it processes the report, so a kill in between restarts from scratch.
    """
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    return snapshot.exists() and "checkpoint_" in snapshot.read_text()


def _train_worker_pids() -> list[int]:
    actors = list_actors(
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], detail=True
    )
    return [int(a.pid) for a in actors if a.pid]


def test_killed_worker_resumes_from_last_checkpoint(splits: prepare.Splits, tmp_path: Path) -> None:
    job = _job(splits, max_failures=2)
    run_dir = tmp_path / "kill-run"
    result: dict[str, TrainOutcome | BaseException] = {}

    def fit() -> None:
        try:
            result["outcome"] = train_torch.fit(
                job, splits.train, splits.valid, str(tmp_path), run_name="kill-run"
            )
        except BaseException as e:  # surfaced by the assertion below
            result["error"] = e

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    deadline = time.time() + 240
    while not _registered(run_dir) and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert _registered(run_dir), f"no checkpoint appeared: {result.get('error')!r}"
    pids = _train_worker_pids()
    assert len(pids) == 2, pids
    os.kill(pids[1], signal.SIGKILL)  # one worker process, once: the first attempt only
    killed_at = len(_checkpoints(run_dir))
    thread.join(timeout=300)
    assert not thread.is_alive(), "training did not finish after the worker was killed"
    assert "error" not in result, result.get("error")
    outcome = result["outcome"]
    assert isinstance(outcome, TrainOutcome)
    # The new worker group started from a checkpoint (not epoch 0) and finished every epoch.
    assert outcome.resumed_from >= 1
    assert outcome.resumed_from <= killed_at + 1
    assert outcome.rounds == EPOCHS
    assert [row["epoch"] for row in outcome.history] == list(range(1, EPOCHS + 1))
    assert outcome.valid_metrics["auc"] > 0.7
    assert pids[1] not in _train_worker_pids()


def test_no_restarts_allowed_fails_with_the_worker_error(
    splits: prepare.Splits, tmp_path: Path
) -> None:
    """max_failures 0: the kill ends the run with an error instead of a silent partial model."""
    job = _job(splits, max_failures=0)
    run_dir = tmp_path / "fail-run"
    errors: list[BaseException] = []

    def fit() -> None:
        try:
            train_torch.fit(job, splits.train, splits.valid, str(tmp_path), run_name="fail-run")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    deadline = time.time() + 240
    while not _checkpoints(run_dir) and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    pids = _train_worker_pids()
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert errors, "a run with max_failures 0 survived a dead worker"

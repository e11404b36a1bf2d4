"""XGBoost on Ray Train V2: our own per-worker function around components.xgboost_model.

Sharding: worker r reads the rows whose ``_bucket % num_workers == r``. Buckets come from the
query id for ranking, so each query lands whole on one worker (Ray's default split can cut a
query in two), and no row is dropped to equalise shards. Every worker gets the whole validation
split, so validation metrics are computed on whole queries. ``num_workers: 0`` runs in-process.

Reporting: every ``report_every`` rounds (a Ray Train report costs a controller round trip),
with a checkpoint from rank 0 so a restarted worker group resumes from the last one.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray.data
import ray.train
import xgboost
from ray.train import Checkpoint, DataConfig
from ray.train.xgboost import XGBoostTrainer

from components import xgboost_model
from components.features import FeatureTransform
from components.steps.train_common import (
    TrainOutcome,
    WorkerScaling,
    run_trainer,
    shard_datasets,
    where,
)

MODEL_FILE = "model.ubj"


@dataclass(kw_only=True)
class XGBoostJob(WorkerScaling):
    """Everything one training run needs; JSON-able so it travels to the workers as config."""

    task: str
    label: str
    params: dict[str, Any]
    num_boost_round: int
    early_stopping_rounds: int | None
    report_every: int
    features_json: str


def _metrics_at(history: dict[str, dict[str, list[float]]], i: int) -> dict[str, float]:
    return {
        f"{d}-{m}": float(v[i]) for d, ms in history.items() for m, v in ms.items() if i < len(v)
    }


class ReportEvery(xgboost.callback.TrainingCallback):
    """Report metrics (and a rank-0 checkpoint) to Ray Train every ``k`` rounds."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.history: list[dict[str, float]] = []

    def after_iteration(self, model: xgboost.Booster, epoch: int, evals_log: Any) -> bool:
        metrics = _metrics_at(evals_log, epoch)
        self.history.append({"round": float(epoch + 1), **metrics})
        if (epoch + 1) % self.k == 0:
            _report({"round": epoch + 1, **metrics}, model)
        return False


def _report(metrics: dict[str, Any], model: xgboost.Booster) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            model.save_model(os.path.join(tmp, MODEL_FILE))
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def train_fn_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Runs on every Ray Train worker (or in the driver when num_workers is 0)."""
    job = XGBoostJob(**config["job"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    transform = FeatureTransform.from_json(job.features_json)
    shard_name = f"train_r{rank}" if job.num_workers > 0 else "train_r0"
    train_df = ray.train.get_dataset_shard(shard_name).materialize().to_pandas()
    valid_df = ray.train.get_dataset_shard("valid").materialize().to_pandas()
    dtrain = xgboost_model.dmatrix(train_df, transform, job.task, job.label)
    dvalid = xgboost_model.dmatrix(valid_df, transform, job.task, job.label)
    params = dict(job.params)
    if job.resources_per_worker and "nthread" not in params:
        params["nthread"] = max(1, int(job.resources_per_worker.get("CPU", 1)))
    init = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted worker group continues from the last checkpoint
        with checkpoint.as_directory() as d:
            init = xgboost.Booster(model_file=os.path.join(d, MODEL_FILE))
    reporter = ReportEvery(job.report_every)
    start = time.time()
    booster = xgboost_model.train(
        params, dtrain, dvalid, job.num_boost_round, job.early_stopping_rounds, [reporter], init
    )
    best = (
        int(booster.best_iteration)
        if "best_iteration" in booster.attributes()
        else booster.num_boosted_rounds() - 1
    )
    rounds = len(reporter.history) or booster.num_boosted_rounds()
    final = {
        "round": rounds,
        "best_iteration": best,
        "world_size": world,
        "train_rows": len(train_df),
        **(reporter.history[best] if best < len(reporter.history) else {}),
    }
    _report(final, booster)
    # The model travels back as the return value (rank 0's): in local mode (num_workers 0)
    # the reported checkpoint is not persisted to storage.
    return {
        "history": reporter.history,
        "best_iteration": best,
        "seconds": time.time() - start,
        "rounds": rounds,
        "model": xgboost_model.to_bytes(booster),
        "node": where(),
        "resumed_from": init.num_boosted_rounds() if init is not None else 0,
    }


def fit(
    job: XGBoostJob,
    train: ray.data.Dataset,
    valid: ray.data.Dataset,
    storage_path: str,
    run_name: str,
    callbacks: Sequence[Any] = (),
) -> TrainOutcome:
    """Run the XGBoostTrainer and return the final model and its metric history."""
    trainer = XGBoostTrainer(
        train_fn_per_worker,
        train_loop_config={"job": job.__dict__},
        datasets=shard_datasets(train, valid, job.num_workers),
        dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=job.scaling_config(),
        run_config=job.run_config(run_name, storage_path, callbacks),
    )
    return run_trainer(trainer, run_name, job.num_workers)

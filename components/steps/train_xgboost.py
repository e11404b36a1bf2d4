"""XGBoost on Ray Train V2: our own per-worker function around components.xgboost_model.

Sharding: worker r reads the rows whose ``_bucket % num_workers == r``, of the training and of
the validation split. Buckets come from the query id for ranking, so each query lands whole on
one worker (Ray's default split can cut a query in two), and no row is dropped to equalise
shards. ``num_workers: 0`` runs in-process.

Data: the splits are encoded once in Ray Data (``components.encoded``: float32 features, int32
categorical codes, nothing else of the raw rows); each worker streams its shards in batches into a ``QuantileDMatrix`` (binned features,
about a byte per feature per row; no frame of the shard is ever built), or an
``ExtMemQuantileDMatrix`` whose pages are cached on the worker's local disk
(``scaling.external_memory``). Validation metrics per round are XGBoost's own, all-reduced over
the workers' validation shards (they steer early stopping; the reported validation metrics are
rayline's exact ones, computed after training).

Reporting: every ``report_every`` rounds (a Ray Train report costs a controller round trip),
with a checkpoint from rank 0 so a restarted worker group resumes from the last one.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import xgboost
from ray.train.xgboost import XGBoostTrainer

from components import xgboost_model
from components.steps.train_common import (
    Fit,
    WorkerJob,
    WorkerStart,
    batches,
    where,
    worker_start,
)

MODEL_FILE = "model.ubj"


@dataclass(kw_only=True)
class XGBoostJob(WorkerJob):
    """Everything one training run needs; JSON-able so it travels to the workers as config."""

    params: dict[str, Any]
    num_boost_round: int
    early_stopping_rounds: int | None
    report_every: int
    external_memory: bool = False  # ExtMemQuantileDMatrix, pages under the worker's temp folder


def _metrics_at(history: dict[str, dict[str, list[float]]], i: int) -> dict[str, float]:
    return {
        f"{d}-{m}": float(v[i]) for d, ms in history.items() for m, v in ms.items() if i < len(v)
    }


class ReportEvery(xgboost.callback.TrainingCallback):
    """Report metrics (and a rank-0 checkpoint) to Ray Train every ``k`` rounds."""

    def __init__(self, k: int, setup: WorkerStart[Any]) -> None:
        self.k = k
        self.setup = setup
        self.history: list[dict[str, float]] = []

    def after_iteration(self, model: xgboost.Booster, epoch: int, evals_log: Any) -> bool:
        metrics = _metrics_at(evals_log, epoch)
        self.history.append({"round": float(epoch + 1), **metrics})
        if (epoch + 1) % self.k == 0:
            _report(self.setup, {"round": epoch + 1, **metrics}, model)
        return False


def _report(setup: WorkerStart[Any], metrics: dict[str, Any], model: xgboost.Booster) -> None:
    """Every rank reports; rank 0 with the booster as its checkpoint (``MODEL_FILE``)."""
    setup.report(metrics, lambda d: model.save_model(os.path.join(d, MODEL_FILE)))


def _load(directory: str) -> xgboost.Booster:
    return xgboost.Booster(model_file=os.path.join(directory, MODEL_FILE))


def train_fn_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Runs on every Ray Train worker (or in the driver when num_workers is 0)."""
    job = XGBoostJob(**config["job"])
    setup = worker_start(job, _load)
    params = dict(job.params)
    if job.resources_per_worker and "nthread" not in params:
        params["nthread"] = max(1, int(job.resources_per_worker.get("CPU", 1)))
    with tempfile.TemporaryDirectory(prefix="rayline-xgb-pages-") as pages:
        cache = os.path.join(pages, "train") if job.external_memory else None
        t, task, label = setup.transform, job.task, job.label
        train = xgboost_model.FrameBatches(
            batches(setup.train), t, task, label, cache_prefix=cache, encoded=True
        )
        valid = xgboost_model.FrameBatches(batches(setup.valid), t, task, label, encoded=True)
        dtrain, dvalid = xgboost_model.quantile_dmatrix(train, valid, params, job.external_memory)
        return _train(job, setup, params, dtrain, dvalid, train.rows)


def _train(
    job: XGBoostJob,
    setup: WorkerStart[xgboost.Booster],
    params: dict[str, Any],
    dtrain: xgboost.DMatrix,
    dvalid: xgboost.DMatrix | None,
    train_rows: int,
) -> dict[str, Any]:
    init = setup.restored  # a restarted worker group continues from the last checkpoint
    reporter = ReportEvery(job.report_every, setup)
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
        "world_size": setup.world_size,
        "train_rows": train_rows,
        **(reporter.history[best] if best < len(reporter.history) else {}),
    }
    _report(setup, final, booster)
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


# Run the XGBoostTrainer and return the final model and its metric history.
fit = Fit[XGBoostJob](XGBoostTrainer, train_fn_per_worker)

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


def _latest_metrics(history: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """The round just trained's metrics. XGBoost's log holds this attempt's rounds only: after a
    restart from a checkpoint its lists start at the restored round, not at round 0."""
    return {f"{d}-{m}": float(v[-1]) for d, ms in history.items() for m, v in ms.items() if v}


def evaluated(
    booster: xgboost.Booster, evals: list[tuple[xgboost.DMatrix, str]]
) -> dict[str, float]:
    """The whole booster's metrics on ``evals`` (``name-metric`` keys, as the training log)."""
    text = booster.eval_set(evals)
    return {k: float(v) for k, _, v in (f.partition(":") for f in text.split("\t")[1:])}


class ReportEvery(xgboost.callback.TrainingCallback):
    """Report metrics (and a rank-0 checkpoint) to Ray Train every ``k`` rounds."""

    def __init__(self, k: int, setup: WorkerStart[Any]) -> None:
        self.k = k
        self.setup = setup
        self.history: list[dict[str, float]] = []
        self.start = 0

    def before_training(self, model: xgboost.Booster) -> xgboost.Booster:
        # XGBoost numbers a continued model's rounds from 0 (its early stopping adds the
        # model's rounds itself): reports count from the first round, whatever was restored
        self.start = model.num_boosted_rounds()
        return model

    def after_iteration(self, model: xgboost.Booster, epoch: int, evals_log: Any) -> bool:
        done = self.start + epoch + 1
        metrics = _latest_metrics(evals_log)
        self.history.append({"round": float(done), **metrics})
        if done % self.k == 0:
            _report(self.setup, {"round": done, **metrics}, model)
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
    # rounds are counted from round 0: an attempt restarted from a checkpoint trained only the
    # rounds after it (its history starts there)
    rounds = (
        int(reporter.history[-1]["round"]) if reporter.history else booster.num_boosted_rounds()
    )
    best_row = {int(h["round"]) - 1: h for h in reporter.history}.get(best)
    if best_row is None:  # trained before the restart: measured on the booster as returned
        evals = [(dtrain, "train")] + ([(dvalid, "valid")] if dvalid is not None else [])
        best_row = {"round": float(best + 1), **evaluated(booster, evals)}
    final = {
        "round": rounds,
        "best_iteration": best,
        "world_size": setup.world_size,
        "train_rows": train_rows,
        **best_row,
    }
    _report(setup, final, booster)
    # The model travels back as the return value (rank 0's): in local mode (num_workers 0)
    # the reported checkpoint is not persisted to storage.
    return {
        "history": reporter.history,
        "best_row": best_row,  # the history may start after the best round (a restart)
        "best_iteration": best,
        "seconds": time.time() - start,
        "rounds": rounds,
        "model": xgboost_model.to_bytes(booster),
        "node": where(),
        "resumed_from": init.num_boosted_rounds() if init is not None else 0,
    }


# Run the XGBoostTrainer and return the final model and its metric history.
fit = Fit[XGBoostJob](XGBoostTrainer, train_fn_per_worker)

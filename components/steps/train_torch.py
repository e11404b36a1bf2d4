"""PyTorch models (MLP, DLRM) on Ray Train V2: TorchTrainer around components.torch_training.

Sharding and each worker's start are shared with the XGBoost adapter (train_common: whole
buckets, so whole queries, per rank; nothing dropped); every rank evaluates the whole validation
split after each epoch, so all ranks agree on early stopping. Ranks may hold different numbers of batches: DDP's ``Join`` lets the ranks that run out
early shadow the others' all-reduces instead of hanging. A checkpoint every epoch (model,
optimizer, epoch, best weights so far, RNG states) lets a restarted worker group resume.
Sparse columns become one CSR matrix per column for the rank's shard (and the validation split);
each batch cuts its rows' entries from it as EmbeddingBag inputs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import ray.train
import ray.train.torch
import torch
from ray.train.torch import TorchConfig, TorchTrainer
from torch.distributed.algorithms.join import Join

from components import evaluation, torch_training
from components.encoded import encoded_matrix
from components.features import FeatureTransform
from components.losses import RANKING_LOSSES
from components.steps.train_common import (
    Fit,
    WorkerJob,
    frame,
    where,
    worker_start,
)
from components.tasks import task_info
from components.torch_models import ArchitectureSpec, build_model
from components.validation import WEIGHT

STATE_FILE = "state.pt"


@dataclass(kw_only=True)
class TorchJob(WorkerJob):
    """One training run; JSON-able so it travels to the workers as config."""

    loss: str
    arch_json: str
    metric: str
    maximize: bool
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.0
    early_stopping_epochs: int | None = 3
    bf16: bool = False
    seed: int = 0
    eval_kwargs: dict[str, Any] = field(default_factory=dict)


def _arrays(
    frame: pd.DataFrame, transform: FeatureTransform, job: TorchJob
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Features, labels, query ids (zeros without groups) and sample weights (or None)."""
    x = encoded_matrix(frame, transform)  # the shards hold the encoded columns
    y = frame[job.label].to_numpy(dtype=np.float32)
    g = (
        frame["_group"].to_numpy(dtype=np.int64)
        if "_group" in frame
        else np.zeros(len(frame), np.int64)
    )
    w = frame[WEIGHT].to_numpy(dtype=np.float32) if WEIGHT in frame else None
    return x, y, g, w


def _load(directory: str) -> dict[str, Any]:
    return torch.load(os.path.join(directory, STATE_FILE), weights_only=True)


def _save(state: dict[str, Any], directory: str) -> None:
    torch.save(state, os.path.join(directory, STATE_FILE))


def train_fn_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Runs on every Ray Train worker (or in the driver when num_workers is 0)."""
    job = TorchJob(**config["job"])
    setup = worker_start(job, _load, shard_valid=False)  # every rank evaluates the whole split
    world, transform = setup.world_size, setup.transform
    tr, va = frame(setup.train), frame(setup.whole_valid)
    x, y, g, w = _arrays(tr, transform, job)
    arch = ArchitectureSpec.from_json(job.arch_json)
    if task_info(job.task).standardized_label:  # see ArchitectureSpec
        y = ((y - arch.target_mean) / arch.target_scale).astype(np.float32)
    xv = encoded_matrix(va, transform)
    # sparse columns: one CSR matrix per column for the shard (batches cut their rows from it)
    xs = torch_training.sparse_matrices(tr, arch)
    xvs = torch_training.sparse_matrices(va, arch)
    device = torch.device("cuda" if job.use_gpu and torch.cuda.is_available() else "cpu")
    if world > 1:
        device = ray.train.torch.get_device()
    torch.manual_seed(job.seed)
    model = build_model(ArchitectureSpec.from_json(job.arch_json))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=job.learning_rate, weight_decay=job.weight_decay
    )
    start, history = 0, []
    best: dict[str, Any] = {"value": None, "epoch": -1, "model": None, "stale": 0}
    state = setup.restored
    if state is not None:  # resume where the last attempt's checkpoint left off
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history, best = state["epoch"] + 1, state["history"], state["best"]
        torch.set_rng_state(state["torch_rng"])
    plain: Any = model.to(device)
    if world > 1:
        model = ray.train.torch.prepare_model(plain)  # DDP (gloo on CPU, nccl on GPU)
        plain = model.module
    autocast = torch.bfloat16 if job.bf16 and device.type == "cuda" else None
    started = time.time()
    for epoch in range(start, job.epochs):
        if job.loss in RANKING_LOSSES:
            batches = torch_training.group_batches(
                x, y, g, job.batch_size, seed=job.seed + epoch, weights=w, sparse=xs
            )
        else:
            batches = torch_training.row_batches(
                x, y, job.batch_size, seed=job.seed + epoch, weights=w, sparse=xs
            )
        timings: dict[str, float] = {}
        epoch_started = time.perf_counter()
        if world > 1:
            with Join([model]):  # type: ignore[list-item]
                loss = torch_training.train_epoch(
                    model, batches, job.loss, optimizer, device, autocast, timings
                )
        else:
            loss = torch_training.train_epoch(
                model, batches, job.loss, optimizer, device, autocast, timings
            )
        train_seconds = time.perf_counter() - epoch_started
        scored = va[[job.label] + [c for c in ("_group", "_row_key", WEIGHT) if c in va]].copy()
        out = torch_training.predict(plain, xv, job.task, device=device, sparse=xvs)
        if task_info(job.task).proba:
            for k in range(out.shape[1]):
                scored[f"proba_{k}"] = out[:, k]
        else:
            scored["score"] = out
        metrics = evaluation.evaluate(job.task, scored, job.label, **job.eval_kwargs)
        value = metrics[job.metric]
        improved = best["value"] is None or (
            value > best["value"] if job.maximize else value < best["value"]
        )
        if improved:
            weights = {k: v.detach().cpu().clone() for k, v in plain.state_dict().items()}
            best = {"value": value, "epoch": epoch, "model": weights, "stale": 0}
        else:
            best["stale"] += 1
        row = {
            "epoch": epoch + 1,
            "train_loss": loss,
            # this rank's training pass: its rows and where the time went (backward includes
            # the DDP all-reduce)
            "train_seconds": train_seconds,
            "train_rows": float(len(x)),
            **{f"time_{k}": v for k, v in timings.items()},
            **{f"valid-{k}": v for k, v in metrics.items()},
        }
        history.append(row)
        # Tensors, numbers and lists only, so it loads with weights_only=True. Batches are seeded
        # per epoch, so the torch RNG (dropout) is the only global state to carry.
        state = {
            "model": plain.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "history": history,
            "best": best,
            "torch_rng": torch.get_rng_state(),
        }
        setup.report(row, partial(_save, state))  # rank 0 checkpoints the state
        if job.early_stopping_epochs and best["stale"] >= job.early_stopping_epochs:
            break
    final = build_model(ArchitectureSpec.from_json(job.arch_json))
    final.load_state_dict(best["model"] if best["model"] is not None else plain.state_dict())
    return {
        "model": torch_training.save_state(final),
        "history": history,
        "best_iteration": best["epoch"],
        "rounds": len(history),
        "seconds": time.time() - started,
        "node": where(),
        "resumed_from": start,
    }


def _options(job: TorchJob) -> dict[str, Any]:
    return {"torch_config": TorchConfig(backend="nccl" if job.use_gpu else "gloo")}


# Run the TorchTrainer and return the best epoch's weights and the metric history.
fit = Fit[TorchJob](TorchTrainer, train_fn_per_worker, _options, shard_valid=False)

"""PyTorch models (MLP, DLRM) on Ray Train V2: TorchTrainer around components.torch_training.

Sharding is the XGBoost adapter's (whole buckets, so whole queries, per rank; nothing dropped);
every rank evaluates the whole validation split after each epoch, so all ranks agree on early
stopping. Ranks may hold different numbers of batches: DDP's ``Join`` lets the ranks that run out
early shadow the others' all-reduces instead of hanging. A checkpoint every epoch (model,
optimizer, epoch, best weights so far, RNG states) lets a restarted worker group resume.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, DataConfig
from ray.train.torch import TorchConfig, TorchTrainer
from torch.distributed.algorithms.join import Join

from components import evaluation, torch_training
from components.features import FeatureTransform
from components.losses import RANKING_LOSSES
from components.steps.train_common import (
    TrainOutcome,
    WorkerScaling,
    run_trainer,
    shard_datasets,
    where,
)
from components.torch_models import ArchitectureSpec, build_model

STATE_FILE = "state.pt"


@dataclass(kw_only=True)
class TorchJob(WorkerScaling):
    """One training run; JSON-able so it travels to the workers as config."""

    task: str
    label: str
    loss: str
    arch_json: str
    features_json: str
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
) -> tuple[np.ndarray, ...]:
    x = transform.transform(frame)
    y = frame[job.label].to_numpy(dtype=np.float32)
    g = (
        frame["_group"].to_numpy(dtype=np.int64)
        if "_group" in frame
        else np.zeros(len(frame), np.int64)
    )
    return x, y, g


def _checkpoint(state: dict[str, Any]) -> Checkpoint | None:
    """Rank 0 writes the state; other ranks report without a checkpoint."""
    if ray.train.get_context().get_world_rank() != 0:
        return None
    tmp = tempfile.mkdtemp(prefix="rayline-torch-ckpt-")
    torch.save(state, os.path.join(tmp, STATE_FILE))
    return Checkpoint.from_directory(tmp)


def train_fn_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Runs on every Ray Train worker (or in the driver when num_workers is 0)."""
    job = TorchJob(**config["job"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    transform = FeatureTransform.from_json(job.features_json)
    train_df = ray.train.get_dataset_shard(f"train_r{rank}" if job.num_workers > 1 else "train_r0")
    valid_ds = ray.train.get_dataset_shard("valid")
    tr = train_df.materialize().to_pandas()
    va = valid_ds.materialize().to_pandas()
    x, y, g = _arrays(tr, transform, job)
    arch = ArchitectureSpec.from_json(job.arch_json)
    if job.task == "regression":  # learn the standardised label (see ArchitectureSpec)
        y = ((y - arch.target_mean) / arch.target_scale).astype(np.float32)
    xv = transform.transform(va)
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
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # resume where the last attempt's checkpoint left off
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), weights_only=True)
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
            batches = torch_training.group_batches(x, y, g, job.batch_size, seed=job.seed + epoch)
        else:
            batches = torch_training.row_batches(x, y, job.batch_size, seed=job.seed + epoch)
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
        scored = va[[job.label] + [c for c in ("_group", "_row_key") if c in va]].copy()
        out = torch_training.predict(plain, xv, job.task, device=device)
        if job.task == "multiclass":
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
        ray.train.report(row, checkpoint=_checkpoint(state))
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


def fit(
    job: TorchJob,
    train: Any,
    valid: Any,
    storage_path: str,
    run_name: str,
    callbacks: Sequence[Any] = (),
) -> TrainOutcome:
    """Run the TorchTrainer and return the best epoch's weights and the metric history."""
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"job": asdict(job)},
        torch_config=TorchConfig(backend="nccl" if job.use_gpu else "gloo"),
        datasets=shard_datasets(train, valid, job.num_workers),
        dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=job.scaling_config(),
        run_config=job.run_config(run_name, storage_path, callbacks),
    )
    return run_trainer(trainer, run_name, job.num_workers)

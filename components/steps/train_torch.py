"""PyTorch models (MLP, DLRM) on Ray Train V2: TorchTrainer around components.torch_training.

Sharding and each worker's start are shared with the XGBoost adapter (train_common: the splits
encoded once, whole buckets, so whole queries, per rank; nothing dropped).

Data: each epoch a rank streams its training shard (65,536-row batches, whole queries for a
grouped task) into windows of ``shuffle_rows`` rows, and shuffles rows (or whole queries, for
ranking losses) within each window: a local shuffle, not a global permutation, with memory
bounded by the window, not the shard. Ranks may hold different numbers of batches: DDP's
``Join`` lets the ranks that run out early shadow the others' all-reduces instead of hanging.
Sparse columns become one CSR matrix per column for each window; each batch cuts its rows'
entries from it as EmbeddingBag inputs.

Validation: each rank scores its own share of the validation split after each epoch; the
metrics' mergeable parts (components.metric_parts) are gathered from every rank and merged, so
every rank computes the same metrics of the whole split and they agree on early stopping.

A checkpoint every epoch (model, optimizer, epoch, best weights so far, RNG states) lets a
restarted worker group resume; it starts the interrupted epoch again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
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

from components import evaluation, metric_parts, shard_stream, torch_training
from components.encoded import encoded_matrix
from components.features import FeatureTransform
from components.losses import RANKING_LOSSES
from components.shard_stream import whole_queries
from components.steps.train_common import (
    Fit,
    WorkerJob,
    WorkerStart,
    batches,
    frame,
    where,
    worker_start,
)
from components.tasks import task_info
from components.torch_models import ArchitectureSpec, build_model
from components.validation import WEIGHT

STATE_FILE = "state.pt"
# Rows per local-shuffle window (``TorchJob.shuffle_rows``): ~40 MB of float32 features at 40
# columns, and enough rows that a batch of 4,096 mixes rows from all over the window.
SHUFFLE_ROWS = 262_144


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
    shuffle_rows: int = SHUFFLE_ROWS  # the local shuffle's window


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


def _windows(
    setup: WorkerStart[Any], job: TorchJob, arch: ArchitectureSpec, seen: list[int]
) -> Iterator[torch_training.Window]:
    """This rank's training shard, streamed as ``job.shuffle_rows``-row windows of arrays
    (whole queries for a grouped task); ``seen[0]`` counts the rows."""
    frames: Iterator[pd.DataFrame] = (f for f in batches(setup.train)() if len(f))
    if task_info(job.task).grouped:
        frames = whole_queries(frames)
    for window in shard_stream.windows(frames, job.shuffle_rows):
        x, y, g, w = _arrays(window, setup.transform, job)
        if task_info(job.task).standardized_label:  # see ArchitectureSpec
            y = ((y - arch.target_mean) / arch.target_scale).astype(np.float32)
        seen[0] += len(x)
        yield x, y, g, w, torch_training.sparse_matrices(window, arch)


def _gather(world: int) -> Callable[[Any], Sequence[Any]]:
    """Every rank's object, in rank order (what merging metrics parts across ranks needs)."""
    if world == 1:
        return metric_parts.alone

    def gather(obj: Any) -> list[Any]:
        out: list[Any] = [None] * world
        torch.distributed.all_gather_object(out, obj)
        return out

    return gather


def _scored(
    model: torch.nn.Module,
    va: pd.DataFrame,
    xv: np.ndarray | None,
    xvs: Sequence[Any],
    job: TorchJob,
    device: torch.device,
) -> list[pd.DataFrame]:
    """This rank's validation rows with the model's outputs (none when it holds no rows)."""
    if xv is None:
        return []
    scored = va[[job.label] + [c for c in ("_group", "_row_key", WEIGHT) if c in va]].copy()
    out = torch_training.predict(model, xv, job.task, device=device, sparse=xvs)
    if task_info(job.task).proba:
        for k in range(out.shape[1]):
            scored[f"proba_{k}"] = out[:, k]
    else:
        scored["score"] = out
    return [scored]


def train_fn_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Runs on every Ray Train worker (or in the driver when num_workers is 0)."""
    job = TorchJob(**config["job"])
    setup = worker_start(job, _load)
    world, transform = setup.world_size, setup.transform
    arch = ArchitectureSpec.from_json(job.arch_json)
    # this rank's share of the validation split, held (encoded) for every epoch's scoring; a
    # rank may hold none of it (fewer queries than ranks): it still joins every gather
    va = frame(setup.valid)
    xv = encoded_matrix(va, transform) if len(va) else None
    xvs = torch_training.sparse_matrices(va, arch) if len(va) else []
    gather = _gather(world)
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
        seen = [0]
        stream = torch_training.window_batches(
            _windows(setup, job, arch, seen),
            job.batch_size,
            seed=job.seed + epoch,
            by_query=job.loss in RANKING_LOSSES,
        )
        timings: dict[str, float] = {}
        epoch_started = time.perf_counter()
        if world > 1:
            with Join([model]):  # type: ignore[list-item]
                loss = torch_training.train_epoch(
                    model, stream, job.loss, optimizer, device, autocast, timings
                )
        else:
            loss = torch_training.train_epoch(
                model, stream, job.loss, optimizer, device, autocast, timings
            )
        train_seconds = time.perf_counter() - epoch_started
        scored = _scored(plain, va, xv, xvs, job, device)
        # this rank's part merged with every other rank's: the whole split's metrics, on each
        metrics = evaluation.evaluate_blocks(
            job.task, partial(list, scored), job.label, gather=gather, **job.eval_kwargs
        )
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
            "train_rows": float(seen[0]),
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
fit = Fit[TorchJob](TorchTrainer, train_fn_per_worker, _options)

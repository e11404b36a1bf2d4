"""A plain PyTorch training loop over iterables of batches (no Ray), batching and weights I/O.

A batch is ``{"x": float32 (n, d), "y": float32 (n,), "group": int64 (n,)}``. Ranking losses
need whole queries in a batch: ``group_batches`` packs whole queries, ``row_batches`` is for
pointwise losses. Weights travel as ``torch.save(state_dict)`` bytes and are read back with
``torch.load(weights_only=True)`` into a model rebuilt from its ``ArchitectureSpec``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from components.losses import LOSSES
from components.tasks import task_info
from components.torch_models import ArchitectureSpec, build_model

Task = Literal["binary", "multiclass", "ranking", "regression"]
Batch = dict[str, Tensor]


def _outputs(out: Tensor) -> Tensor:
    """``(n, 1)`` model outputs as ``(n,)`` scores; ``(n, K)`` logits unchanged."""
    return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_name: str,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    timings: dict[str, float] | None = None,
) -> float:
    """One pass over ``batches``; returns the row-weighted mean batch loss.

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward pass under autocast; the loss
    is computed in float32. float16 on CUDA uses a gradient scaler. ``timings``, when given,
    accumulates seconds spent in ``data`` (making the batch and moving it to the device),
    ``forward`` (model and loss), ``backward`` (under DDP this includes the gradient all-reduce)
    and ``step`` (optimizer); on CUDA it synchronizes so the split is real, which costs a little.
    """
    loss_fn = LOSSES[loss_name]
    device = torch.device(device)
    model.train()
    scaler = torch.amp.GradScaler(
        device.type, enabled=autocast_dtype == torch.float16 and device.type == "cuda"
    )
    clock = _Clock(timings, device)
    total, rows = 0.0, 0
    for batch in batches:
        x = batch["x"].to(device, non_blocking=True)
        y = batch["y"].to(device, non_blocking=True)
        g = batch["group"].to(device, non_blocking=True)
        clock.lap("data")
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            out = model(x)
        loss = loss_fn(_outputs(out).float(), y, g)
        clock.lap("forward")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        clock.lap("backward")
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(x)
        rows += len(x)
        clock.lap("step")
    return total / rows if rows else float("nan")


class _Clock:
    """Adds the time since the previous lap to ``timings[name]``; does nothing without timings."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device) -> None:
        self.timings = timings
        self.cuda = device.type == "cuda"
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.timings is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


@torch.inference_mode()
def predict(
    model: nn.Module,
    x: np.ndarray,
    task: Task,
    batch_size: int = 8192,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """float64 predictions: binary ``sigmoid`` probability ``(n,)``, multiclass ``softmax``
    ``(n, K)``, ranking raw score ``(n,)``, regression the value ``(n,)`` (the output mapped back
    from the standardised label). Moves ``model`` to ``device`` and sets eval mode."""
    info = task_info(task)
    device = torch.device(device)
    spec = getattr(model, "spec", None)
    mean, scale = getattr(spec, "target_mean", 0.0), getattr(spec, "target_scale", 1.0)
    model.to(device).eval()
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts: list[np.ndarray] = []
    for start in range(0, len(x), batch_size):
        out = _outputs(model(torch.from_numpy(x[start : start + batch_size]).to(device)))
        out = out.double()
        if info.output == "probability":
            out = torch.sigmoid(out)
        elif info.proba:
            out = torch.softmax(out, dim=1)
        elif info.standardized_label:
            out = out * scale + mean
        parts.append(out.cpu().numpy())
    if parts:
        return np.concatenate(parts)
    width = getattr(getattr(model, "spec", None), "num_outputs", 1)
    return np.empty((0, width) if info.proba else (0,), dtype=np.float64)


def _batch(x: np.ndarray, y: np.ndarray, groups: np.ndarray, rows: np.ndarray) -> Batch:
    return {
        "x": torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32)),
        "y": torch.from_numpy(np.ascontiguousarray(y[rows], dtype=np.float32)),
        "group": torch.from_numpy(np.ascontiguousarray(groups[rows], dtype=np.int64)),
    }


def group_batches(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, max_rows: int, seed: int = 0
) -> Iterator[Batch]:
    """Batches of whole queries, queries in a seeded random order, at most ``max_rows`` rows
    each; a query larger than ``max_rows`` is a batch of its own. Rows of a query need not be
    contiguous in the input; every row appears exactly once."""
    groups = np.asarray(groups)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    by_query = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    pending: list[np.ndarray] = []
    size = 0
    for q in np.random.default_rng(seed).permutation(len(counts)):
        rows = by_query[starts[q] : starts[q + 1]]
        if pending and size + len(rows) > max_rows:
            yield _batch(x, y, groups, np.concatenate(pending))
            pending, size = [], 0
        pending.append(rows)
        size += len(rows)
    if pending:
        yield _batch(x, y, groups, np.concatenate(pending))


def row_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0) -> Iterator[Batch]:
    """Shuffled row batches for pointwise losses (``group`` is all zeros)."""
    order = np.random.default_rng(seed).permutation(len(x))
    zeros = np.zeros(len(x), dtype=np.int64)
    for start in range(0, len(x), batch_size):
        yield _batch(x, y, zeros, order[start : start + batch_size])


def save_state(model: nn.Module) -> bytes:
    """The model's ``state_dict`` (moved to CPU) as ``torch.save`` bytes."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def load_state(spec: ArchitectureSpec, data: bytes) -> nn.Module:
    """Rebuild the model from ``spec`` and load weights with ``weights_only=True``; eval mode."""
    model = build_model(spec)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()

"""A plain PyTorch training loop over iterables of batches (no Ray), batching and weights I/O.

A batch is ``{"x": float32 (n, d), "y": float32 (n,), "group": int64 (n,)}``, plus ``weight``
(float32 (n,)) with sample weights and, per sparse column ``j``, the batch rows' entries in CSR
form: ``sparse<j>.indices`` (nnz,), ``sparse<j>.offsets`` (n,) and ``sparse<j>.weights`` (nnz,),
cut from the column's CSR matrix per batch (never a dense ``(n, dim)`` array; see
``sparse_input``). Ranking losses need whole queries in a batch: ``group_batches`` packs whole
queries, ``row_batches`` is for pointwise losses. Weights travel as ``torch.save(state_dict)``
bytes and are read back with ``torch.load(weights_only=True)`` into a model rebuilt from its
``ArchitectureSpec``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import scipy.sparse
import torch
from torch import Tensor, nn

from components import sparse as sparse_columns
from components.losses import LOSSES
from components.tasks import task_info
from components.torch_models import ArchitectureSpec, SparseInput, build_model

Task = Literal["binary", "multiclass", "ranking", "regression"]
Batch = dict[str, Tensor]
CSR: TypeAlias = scipy.sparse.csr_matrix
_PARTS = ("indices", "offsets", "weights")


def sparse_matrices(frame: Any, spec: ArchitectureSpec) -> list[CSR]:
    """The model's sparse columns of ``frame`` (a DataFrame or a mapping of column -> values,
    see components.sparse.to_arrow) as ``n x dim`` CSR matrices, in ``spec.sparse`` order;
    indices at or above a column's ``dim`` are dropped (the model has no row for them)."""
    return [sparse_columns.to_csr(frame[name], dim, name) for name, dim in spec.sparse]


def sparse_input(m: CSR) -> SparseInput:
    """A CSR matrix's rows as ``nn.EmbeddingBag`` inputs (indices, offsets, per-entry weights).
    A NaN value is a missing entry and weighs 0, as an absent one would."""
    indices = torch.from_numpy(m.indices.astype(np.int64))
    offsets = torch.from_numpy(m.indptr[:-1].astype(np.int64))
    values = np.nan_to_num(m.data.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return indices, offsets, torch.from_numpy(values)


def _to(bag: SparseInput, device: torch.device) -> SparseInput:
    indices, offsets, weights = bag
    return (
        indices.to(device, non_blocking=True),
        offsets.to(device, non_blocking=True),
        weights.to(device, non_blocking=True),
    )


def batch_sparse(batch: Batch) -> list[SparseInput]:
    """The sparse columns' tensors of a batch, in column order (empty without sparse columns)."""
    out: list[SparseInput] = []
    while f"sparse{len(out)}.indices" in batch:
        j = len(out)
        indices, offsets, weights = (batch[f"sparse{j}.{part}"] for part in _PARTS)
        out.append((indices, offsets, weights))
    return out


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
        w = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None
        bags = [_to(bag, device) for bag in batch_sparse(batch)]
        clock.lap("data")
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            out = model(x, bags) if bags else model(x)
        loss = loss_fn(_outputs(out).float(), y, g, w)
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
    sparse: Sequence[CSR] = (),
) -> np.ndarray:
    """float64 predictions: binary ``sigmoid`` probability ``(n,)``, multiclass ``softmax``
    ``(n, K)``, ranking raw score ``(n,)``, regression the value ``(n,)`` (the output mapped back
    from the standardised label). ``sparse``: the rows' sparse columns as CSR matrices (see
    ``sparse_matrices``), cut into the same batches. Moves ``model`` to ``device`` and sets eval
    mode."""
    info = task_info(task)
    device = torch.device(device)
    spec = getattr(model, "spec", None)
    mean, scale = getattr(spec, "target_mean", 0.0), getattr(spec, "target_scale", 1.0)
    model.to(device).eval()
    x = np.ascontiguousarray(x, dtype=np.float32)
    _check_sparse(sparse, len(x))
    parts: list[np.ndarray] = []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size]).to(device)
        if sparse:
            bags = [_to(sparse_input(m[start : start + batch_size]), device) for m in sparse]
            out = _outputs(model(xb, bags))
        else:
            out = _outputs(model(xb))
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


def _batch(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    rows: np.ndarray,
    w: np.ndarray | None,
    sparse: Sequence[CSR] = (),
) -> Batch:
    batch = {
        "x": torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32)),
        "y": torch.from_numpy(np.ascontiguousarray(y[rows], dtype=np.float32)),
        "group": torch.from_numpy(np.ascontiguousarray(groups[rows], dtype=np.int64)),
    }
    if w is not None:
        batch["weight"] = torch.from_numpy(np.ascontiguousarray(w[rows], dtype=np.float32))
    for j, m in enumerate(sparse):  # the batch's rows of the CSR matrix: O(its entries)
        for part, t in zip(_PARTS, sparse_input(m[rows]), strict=True):
            batch[f"sparse{j}.{part}"] = t
    return batch


def _check_sparse(sparse: Sequence[CSR], n: int) -> None:
    for j, m in enumerate(sparse):
        if m.shape[0] != n:
            raise ValueError(f"sparse input {j} has {m.shape[0]} rows, the features {n}")


def group_batches(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    max_rows: int,
    seed: int = 0,
    weights: np.ndarray | None = None,
    sparse: Sequence[CSR] = (),
) -> Iterator[Batch]:
    """Batches of whole queries, queries in a seeded random order, at most ``max_rows`` rows
    each; a query larger than ``max_rows`` is a batch of its own. Rows of a query need not be
    contiguous in the input; every row appears exactly once. ``weights`` (sample weights, one
    per row) travel in each batch as ``weight``; ``sparse`` (CSR matrices, one row per row of
    ``x``) as each batch's ``sparse<j>.*`` tensors."""
    _check_sparse(sparse, len(x))
    groups = np.asarray(groups)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    by_query = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    pending: list[np.ndarray] = []
    size = 0
    for q in np.random.default_rng(seed).permutation(len(counts)):
        rows = by_query[starts[q] : starts[q + 1]]
        if pending and size + len(rows) > max_rows:
            yield _batch(x, y, groups, np.concatenate(pending), weights, sparse)
            pending, size = [], 0
        pending.append(rows)
        size += len(rows)
    if pending:
        yield _batch(x, y, groups, np.concatenate(pending), weights, sparse)


def row_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int = 0,
    weights: np.ndarray | None = None,
    sparse: Sequence[CSR] = (),
) -> Iterator[Batch]:
    """Shuffled row batches for pointwise losses (``group`` is all zeros; ``weights`` and
    ``sparse`` as in ``group_batches``)."""
    _check_sparse(sparse, len(x))
    order = np.random.default_rng(seed).permutation(len(x))
    zeros = np.zeros(len(x), dtype=np.int64)
    for start in range(0, len(x), batch_size):
        yield _batch(x, y, zeros, order[start : start + batch_size], weights, sparse)


Window: TypeAlias = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, Sequence[CSR]]
"""One window of a shard: features, labels, query ids, weights (or None), sparse CSR matrices."""


def window_batches(
    windows: Iterable[Window], batch_size: int, seed: int, by_query: bool
) -> Iterator[Batch]:
    """The batches of each window in turn: a local shuffle, not a global permutation. Rows
    (whole queries when ``by_query``, as ``group_batches`` cuts them) are shuffled within each
    window, seeded by ``seed`` and the window's position, so an epoch is reproducible."""
    for i, (x, y, g, w, sparse) in enumerate(windows):
        s = int(np.random.default_rng([seed, i]).integers(2**31))
        if by_query:
            yield from group_batches(x, y, g, batch_size, seed=s, weights=w, sparse=sparse)
        else:
            yield from row_batches(x, y, batch_size, seed=s, weights=w, sparse=sparse)


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

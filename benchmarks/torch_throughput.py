"""DLRM training throughput: rayline on Ray Train (1 and 2 workers) vs a plain torch loop.

    python benchmarks/torch_throughput.py [--rows 200000] [--epochs 2] [--out DIR]

Same model (DLRM, 13 dense + 26 hashed categorical features), same data (``synthetic:ctr``),
same batch size and loss (BCE). Measured:

- plain: one process, ``components.torch_training.train_epoch`` over numpy batches, with 1 and
  with 2 torch threads (no Ray, no DDP): the baseline.
- rayline: ``components.steps.train_torch.fit`` (TorchTrainer, DDP over gloo) with 1 and 2
  workers of 1 CPU each, data from Ray Data shards. Samples/s counts the training passes only
  (each epoch's ``train_seconds`` from rank 0); "end to end" adds worker-group start-up, shard
  materialization and per-epoch validation.

Where the time goes comes from the loop's own timers (data = batch assembly and copies,
forward, backward incl. DDP all-reduce, optimizer step); the all-reduce share is backward with
2 workers minus backward with 1. Writes torch_throughput.json/.md under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ctr_data import ctr_features, ctr_frame

from components import torch_training
from components.features import fit_transform, partial_stats
from components.torch_models import ArchitectureSpec, build_model

BATCH = 2048
PARTS = ("data", "forward", "backward", "step")


def frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    df = ctr_frame(rows, seed=5)
    config = ctr_features()
    df["_bucket"] = (df["row_id"] % 1024).astype("int64")
    df["_group"] = df["request_id"].astype("int64")
    valid = df.iloc[-10_000:].reset_index(drop=True)
    train = df.iloc[:-10_000].reset_index(drop=True)
    transform = fit_transform([partial_stats(train, config)], config)
    return train, valid, transform


def arch(transform: Any) -> ArchitectureSpec:
    return ArchitectureSpec(
        kind="torch.dlrm",
        num_numeric=len(transform.numeric),
        cardinalities=tuple(c.cardinality for c in transform.categorical),
        embedding_dim=16,
    )


def plain(train: pd.DataFrame, transform: Any, epochs: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    x = transform.transform(train)
    y = train["label"].to_numpy(np.float32)
    torch.manual_seed(0)
    model = build_model(arch(transform))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for epoch in range(epochs):
        batches = torch_training.row_batches(x, y, BATCH, seed=epoch)
        torch_training.train_epoch(model, batches, "bce", opt, "cpu", timings=timings)
    seconds = time.perf_counter() - start
    return {
        "samples_per_s": len(x) * epochs / seconds,
        "train_seconds": seconds,
        "share": {k: timings.get(k, 0.0) / seconds for k in PARTS},
    }


def rayline(
    train: pd.DataFrame, valid: pd.DataFrame, transform: Any, epochs: int, workers: int
) -> dict[str, Any]:
    import ray.data

    from components.steps import train_torch

    job = train_torch.TorchJob(
        task="binary",
        label="label",
        loss="bce",
        arch_json=arch(transform).to_json(),
        features_json=transform.to_json(),
        metric="auc",
        maximize=True,
        epochs=epochs,
        batch_size=BATCH,
        learning_rate=2e-3,
        early_stopping_epochs=None,
        num_workers=workers,
        resources_per_worker={"CPU": 1.0},
    )
    start = time.perf_counter()
    outcome = train_torch.fit(
        job,
        ray.data.from_pandas(train),
        ray.data.from_pandas(valid),
        tempfile.mkdtemp(prefix="rayline-bench-"),
        run_name=f"throughput-{workers}w-{int(start)}",
    )
    wall = time.perf_counter() - start
    seconds = sum(h["train_seconds"] for h in outcome.history)
    return {
        "samples_per_s": len(train) * epochs / seconds,
        "train_seconds": seconds,
        "end_to_end_seconds": wall,
        "share": {
            k: sum(h.get(f"time_{k}", 0.0) for h in outcome.history) / seconds for k in PARTS
        },
        "backward_seconds": sum(h.get("time_backward", 0.0) for h in outcome.history),
    }


def markdown(r: dict[str, Any]) -> str:
    base = r["plain_1thread"]["samples_per_s"]
    lines = [
        f"# DLRM training throughput ({r['rows_train']:,} rows x {r['epochs']} epochs, "
        f"batch {BATCH}, {r['cpus']} CPUs)",
        "",
        "| run | samples/s | vs plain 1 thread | data | forward | backward | step |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("plain_1thread", "plain_2threads", "rayline_1worker", "rayline_2workers"):
        m = r[name]
        sh = m["share"]
        lines.append(
            f"| {name} | {m['samples_per_s']:,.0f} | {m['samples_per_s'] / base:.2f}x | "
            + " | ".join(f"{100 * sh[k]:.0f}%" for k in PARTS)
            + " |"
        )
    lines += [
        "",
        f"End to end (start-up, shards, validation each epoch): 1 worker "
        f"{r['rayline_1worker']['end_to_end_seconds']:.1f} s, 2 workers "
        f"{r['rayline_2workers']['end_to_end_seconds']:.1f} s.",
        f"All-reduce estimate (backward with 2 workers - with 1, per epoch): "
        f"{r['allreduce_seconds_per_epoch']:.2f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train, valid, transform = frames(args.rows)
    result: dict[str, Any] = {
        "rows_train": len(train),
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }
    for threads in (1, 2):
        key = f"plain_{threads}thread{'s' if threads > 1 else ''}"
        result[key] = plain(train, transform, args.epochs, threads)
        print(key, f"{result[key]['samples_per_s']:,.0f} samples/s", flush=True)
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        for workers in (1, 2):
            key = f"rayline_{workers}worker{'s' if workers > 1 else ''}"
            result[key] = rayline(train, valid, transform, args.epochs, workers)
            print(key, f"{result[key]['samples_per_s']:,.0f} samples/s", flush=True)
    finally:
        ray.shutdown()
    result["allreduce_seconds_per_epoch"] = (
        result["rayline_2workers"]["backward_seconds"]
        - result["rayline_1worker"]["backward_seconds"] / 2
    ) / args.epochs
    (args.out / "torch_throughput.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (args.out / "torch_throughput.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

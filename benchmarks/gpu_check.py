"""GPU check for the torch models: DLRM training throughput on CUDA vs. CPU, same data and model.

Runs without Ray (rayline's torch components only), so it works on a bare CUDA machine:

    python benchmarks/gpu_check.py [--rows 200000] [--epochs 1] [--out benchmarks/results]

Generates Criteo-like click data with the built-in generator, fits rayline's feature transform,
then trains the DLRM with BCE for the given epochs on the CPU (a slice of the rows, to keep it
short) and on the GPU (float32, then bf16 autocast), reporting samples/s, the speed-up and the
test AUC of each run. Writes gpu_check.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ctr_data import ctr_features, ctr_frame

from components import metrics, torch_training
from components.features import fit_transform, partial_stats
from components.torch_models import ArchitectureSpec, build_model


def data(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]:
    df = ctr_frame(rows, seed=5)
    config = ctr_features(hash_buckets=1 << 14, log_counts=False)
    cut = int(len(df) * 0.8)
    transform = fit_transform([partial_stats(df.iloc[:cut], config)], config)
    x = transform.transform(df)
    y = df["label"].to_numpy(dtype=np.float32)
    return x[:cut], y[:cut], x[cut:], y[cut:], [c.cardinality for c in transform.categorical]


def run(
    device: str,
    x: np.ndarray,
    y: np.ndarray,
    xt: np.ndarray,
    yt: np.ndarray,
    cards: list[int],
    epochs: int,
    autocast: torch.dtype | None,
) -> dict[str, float]:
    torch.manual_seed(0)
    spec = ArchitectureSpec(
        kind="torch.dlrm", num_numeric=13, cardinalities=tuple(cards), embedding_dim=16
    )
    model = build_model(spec).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    torch_training.train_epoch(
        model, torch_training.row_batches(x[:4096], y[:4096], 2048), "bce", opt, device, autocast
    )
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for epoch in range(epochs):
        batches = torch_training.row_batches(x, y, 2048, seed=epoch)
        torch_training.train_epoch(model, batches, "bce", opt, device, autocast)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    p = torch_training.predict(model, xt, "binary", device=device)
    return {
        "samples_per_s": len(x) * epochs / seconds,
        "seconds": seconds,
        "rows": len(x),
        "test_auc": metrics.roc_auc(yt.astype(int), p),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--cpu-rows", type=int, default=50_000, help="training rows for the CPU run")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    x, y, xt, yt, cards = data(args.rows)
    result: dict[str, object] = {
        "rows_train": len(x),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }
    result["cpu"] = run(
        "cpu", x[: args.cpu_rows], y[: args.cpu_rows], xt, yt, cards, args.epochs, None
    )
    print("cpu", result["cpu"], flush=True)
    if torch.cuda.is_available():
        result["gpu_name"] = torch.cuda.get_device_name(0)
        result["cuda_fp32"] = run("cuda", x, y, xt, yt, cards, args.epochs, None)
        print("cuda fp32", result["cuda_fp32"], flush=True)
        result["cuda_bf16"] = run("cuda", x, y, xt, yt, cards, args.epochs, torch.bfloat16)
        print("cuda bf16", result["cuda_bf16"], flush=True)
        for k in ("cuda_fp32", "cuda_bf16"):
            result[f"{k}_speedup_vs_cpu"] = (
                result[k]["samples_per_s"] / result["cpu"]["samples_per_s"]
            )  # type: ignore[index]
    else:
        result["gpu_name"] = None
        print("no CUDA device: CPU numbers only", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Model quality of rayline's torch models against XGBoost, on the built-in generators.

    python benchmarks/torch_quality.py [--ctr-rows 1000000] [--ltr-rows 60000] [--out DIR]

Two questions, answered with rayline's own components (no Ray, so the numbers are about the
models, not the cluster):

1. CTR: on Criteo-like click data (``synthetic:ctr``, 13 dense + 26 hashed categorical
   features), is the DLRM's test AUC within 0.01 of XGBoost's? Both see the same transformed
   features; both early-stop on validation AUC.
2. LTR: on graded-relevance ranking data (``synthetic:ranking``), does a pairwise or listwise
   loss beat the pointwise one (MSE on the relevance grade) on NDCG@10? Same MLP, same epochs;
   XGBoost LambdaMART as a reference.

Rows are split by query/request (hash of the id): 80% train, 10% valid, 10% test. Writes
torch_quality.json and torch_quality.md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ctr_data import ctr_features, ctr_frame

from components import generators, metrics, torch_training, xgboost_model
from components.features import (
    FeatureConfig,
    FeatureTransform,
    fit_transform,
    partial_stats,
)
from components.torch_models import ArchitectureSpec, build_model


def _frame(kind: str, params: dict[str, Any]) -> pd.DataFrame:
    blocks = [generators.generate_block(t) for t in generators.plan_blocks(kind, params)]
    return pd.concat(blocks, ignore_index=True)


def _split(df: pd.DataFrame, group: str) -> dict[str, pd.DataFrame]:
    """80/10/10 by group id, so no query is cut across splits."""
    h = pd.util.hash_array(df[group].to_numpy()) % 10
    parts = {"train": df[h < 8], "valid": df[h == 8], "test": df[h == 9]}
    out = {}
    for name, part in parts.items():
        part = part.sort_values(group, kind="stable").reset_index(drop=True)
        part["_group"] = pd.factorize(part[group])[0]
        out[name] = part
    return out


def _xgboost(
    splits: dict[str, pd.DataFrame], t: FeatureTransform, task: str, params: dict[str, Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    metric = "auc" if task == "binary" else "ndcg@10"
    full = xgboost_model.build_params(task, params, metric, None, False, nthread=None)
    dtrain = xgboost_model.dmatrix(splits["train"], t, task, "label")
    dvalid = xgboost_model.dmatrix(splits["valid"], t, task, "label")
    start = time.perf_counter()
    booster = xgboost_model.train(full, dtrain, dvalid, 500, 20)
    seconds = time.perf_counter() - start
    scores = xgboost_model.predict(booster, t.transform(splits["test"]), t)
    return scores, {"seconds": round(seconds, 1), "rounds": booster.num_boosted_rounds()}


def _torch(
    splits: dict[str, pd.DataFrame],
    t: FeatureTransform,
    arch: ArchitectureSpec,
    loss: str,
    task: str,
    epochs: int,
    batch_size: int,
    lr: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train with early stopping on the validation metric; test scores of the best epoch."""
    x, y = t.transform(splits["train"]), splits["train"]["label"].to_numpy(np.float32)
    g = splits["train"]["_group"].to_numpy(np.int64)
    xv, va = t.transform(splits["valid"]), splits["valid"]
    torch.manual_seed(0)
    model = build_model(arch)
    # A little L2: hashed embeddings of rare values overfit within 2-3 epochs without it.
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    best: tuple[float, dict[str, torch.Tensor], int] = (-np.inf, {}, -1)
    start = time.perf_counter()
    for epoch in range(epochs):
        if loss in ("pairwise", "listwise", "lambdarank"):
            batches = torch_training.group_batches(x, y, g, batch_size, seed=epoch)
        else:
            batches = torch_training.row_batches(x, y, batch_size, seed=epoch)
        torch_training.train_epoch(model, batches, loss, opt, "cpu")
        pv = torch_training.predict(model, xv, task)
        value = _metric(task, va, pv)
        print(f"    {arch.kind} {loss} epoch {epoch + 1}: valid {value:.4f}", flush=True)
        if value > best[0]:
            best = (value, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
        elif epoch - best[2] >= 2:
            break
    seconds = time.perf_counter() - start
    model.load_state_dict(best[1])
    scores = torch_training.predict(model, t.transform(splits["test"]), task)
    return scores, {"seconds": round(seconds, 1), "epochs": epoch + 1, "best_epoch": best[2] + 1}


def _metric(task: str, frame: pd.DataFrame, scores: np.ndarray) -> float:
    if task == "binary":
        return metrics.roc_auc(frame["label"].to_numpy().astype(int), scores)
    return metrics.ranking_metrics(
        frame["label"].to_numpy(np.float64), scores, frame["_group"].to_numpy(), ks=(10,)
    )["ndcg@10"]


def ctr(rows: int, epochs: int) -> dict[str, Any]:
    splits = _split(ctr_frame(rows, seed=11), "request_id")
    config = ctr_features()
    t = fit_transform([partial_stats(splits["train"], config)], config)
    out: dict[str, Any] = {"rows": {k: len(v) for k, v in splits.items()}}
    test = splits["test"]
    print("ctr: xgboost", flush=True)
    s, info = _xgboost(splits, t, "binary", {"eta": 0.1, "max_depth": 8})
    out["xgboost"] = {"test_auc": _metric("binary", test, s), **info}
    print(f"  {out['xgboost']}", flush=True)
    arch = ArchitectureSpec(
        kind="torch.dlrm",
        num_numeric=len(t.numeric),
        cardinalities=tuple(c.cardinality for c in t.categorical),
        embedding_dim=16,
        bottom_mlp=(64, 16),
        top_mlp=(128, 64),
        first_order=True,
    )
    print("ctr: dlrm", flush=True)
    s, info = _torch(splits, t, arch, "bce", "binary", epochs, 2048, 2e-3)
    out["dlrm"] = {"test_auc": _metric("binary", test, s), **info}
    print(f"  {out['dlrm']}", flush=True)
    out["auc_gap"] = out["xgboost"]["test_auc"] - out["dlrm"]["test_auc"]
    return out


def ltr(rows: int, epochs: int) -> dict[str, Any]:
    params = {"rows": rows, "seed": 7, "block_rows": 20_000, "n_features": 20}
    cols = generators.columns("ranking", params)
    splits = _split(_frame("ranking", params), "qid")
    config = FeatureConfig(numeric=tuple(cols["numeric"]), categorical=(), standardize=True)
    t = fit_transform([partial_stats(splits["train"], config)], config)
    test = splits["test"]
    out: dict[str, Any] = {"rows": {k: len(v) for k, v in splits.items()}}
    print("ltr: xgboost lambdarank", flush=True)
    s, info = _xgboost(splits, t, "ranking", {"eta": 0.1})
    out["xgboost"] = {"test_ndcg@10": _metric("ranking", test, s), **info}
    arch = ArchitectureSpec(
        kind="torch.mlp", num_numeric=len(t.numeric), cardinalities=(), hidden=(128, 64)
    )
    for loss in ("mse", "pairwise", "lambdarank", "listwise"):
        print(f"ltr: mlp {loss}", flush=True)
        s, info = _torch(splits, t, arch, loss, "ranking", epochs, 1024, 2e-3)
        out[f"mlp_{loss}"] = {"test_ndcg@10": _metric("ranking", test, s), **info}
        print(f"  {out[f'mlp_{loss}']}", flush=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["# torch model quality vs XGBoost", ""]
    if "ctr" in result:
        c = result["ctr"]
        lines += [
            f"CTR (synthetic:ctr, {sum(c['rows'].values()):,} rows; test {c['rows']['test']:,}):",
            "",
            "| model | test AUC | epochs/rounds | train s |",
            "|---|---|---|---|",
            f"| XGBoost hist | {c['xgboost']['test_auc']:.4f} | {c['xgboost']['rounds']} | "
            f"{c['xgboost']['seconds']} |",
            f"| DLRM (BCE) | {c['dlrm']['test_auc']:.4f} | {c['dlrm']['epochs']} | "
            f"{c['dlrm']['seconds']} |",
            "",
            f"AUC gap (XGBoost - DLRM): {c['auc_gap']:+.4f}",
            "",
        ]
    if "ltr" in result:
        r = result["ltr"]
        lines += [
            f"LTR (synthetic:ranking, {sum(r['rows'].values()):,} rows, relevance 0-4):",
            "",
            "| model | loss | test NDCG@10 | epochs/rounds | train s |",
            "|---|---|---|---|---|",
            f"| XGBoost | rank:ndcg | {r['xgboost']['test_ndcg@10']:.4f} | "
            f"{r['xgboost']['rounds']} | {r['xgboost']['seconds']} |",
        ]
        for loss in ("mse", "pairwise", "lambdarank", "listwise"):
            m = r[f"mlp_{loss}"]
            kind = "pointwise" if loss == "mse" else loss
            lines.append(
                f"| MLP | {kind} ({loss}) | {m['test_ndcg@10']:.4f} | {m['epochs']} | "
                f"{m['seconds']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ctr-rows", type=int, default=1_000_000, help="0 skips the CTR part")
    ap.add_argument("--ltr-rows", type=int, default=60_000, help="0 skips the LTR part")
    ap.add_argument("--epochs", type=int, default=8, help="at most; early stopping after 2 bad")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.ltr_rows:
        result["ltr"] = ltr(args.ltr_rows, args.epochs)
    if args.ctr_rows:
        result["ctr"] = ctr(args.ctr_rows, args.epochs)
    (args.out / "torch_quality.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (args.out / "torch_quality.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

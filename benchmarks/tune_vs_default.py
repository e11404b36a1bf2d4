"""Tuned winner vs. default XGBoost on the shared datasets, through the whole rayline pipeline.

    python benchmarks/tune_vs_default.py [--data DIR] [--samples 8] [--out benchmarks/results]

For UCI adult (binary) and LightGBM's lambdarank example (LTR), from ../shared/data (or the
generated stand-ins of compare_xgboost.py):

- default: rayline with the default parameters of compare_xgboost.py (eta 0.1, depth 6, 200
  rounds) trained on the whole given training file, as in the foundation benchmark;
- tuned: the training file is cut into fit (85%) and validation (15%, by query for LTR) parts;
  Ray Tune (Optuna TPE by default) searches XGBoost (eta, depth, min_child_weight,
  subsample, colsample_bytree, lambda; early stopping) and a
  PyTorch MLP (learning rate, layers, dropout or loss) with ASHA; the best family on validation
  is refit on fit + validation (all the given training rows, like the default) for its best
  number of rounds/epochs (``--winner checkpoint`` keeps the trial's own model instead) and
  evaluated on the given test file.

Both are scored on the same test file. Writes tune_vs_default.json and .md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_xgboost import ROOT, datasets, spec_for


def fit_valid(ds: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """The given training file cut into fit and validation parts (whole queries for LTR)."""
    df = pd.read_parquet(ds["dir"] / "train.parquet")
    key = df[ds["group"]].to_numpy() if ds["group"] else np.arange(len(df))
    valid = pd.util.hash_array(key) % 100 < 15
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "fit.parquet", folder / "valid.parquet"
    df[~valid].to_parquet(paths[0])
    df[valid].to_parquet(paths[1])
    return paths


def tuned_spec(
    ds: dict[str, Any],
    storage: str,
    fit: Path,
    valid: Path,
    samples: int,
    winner: str,
    searcher: str = "optuna",
) -> dict:
    spec = spec_for(ds, 1, storage)
    spec["name"] = f"tuned-{ds['name']}"
    spec["data"]["sources"] = {
        "train": {"uri": str(fit)},
        "valid": {"uri": str(valid)},
        "test": {"uri": str(ds["dir"] / "test.parquet")},
    }
    spec["features"].update(impute="median", standardize=True)  # the MLP needs both
    ranking = ds["task"] == "ranking"
    spec["models"] = [
        {
            "name": "xgb",
            "kind": "xgboost",
            "params": {"objective": "rank:ndcg" if ranking else "binary:logistic"},
            "num_boost_round": 2000,
            "early_stopping_rounds": 50,
            "report_every": 25,
            "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
            "search": {
                "params.eta": {"loguniform": [0.02, 0.3]},
                "params.max_depth": {"randint": [3, 10]},
                "params.min_child_weight": {"loguniform": [0.5, 20.0]},
                "params.subsample": {"uniform": [0.6, 1.0]},
                "params.colsample_bytree": {"uniform": [0.4, 1.0]},
                "params.lambda": {"loguniform": [0.1, 10.0]},
            },
        },
        {
            "name": "mlp",
            "kind": "torch.mlp",
            "loss": "lambdarank" if ranking else "bce",
            "epochs": 12,
            "batch_size": 512,
            "embedding_dim": 8,
            "early_stopping_epochs": 3,
            "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
            "search": {
                "learning_rate": {"loguniform": [0.0003, 0.005]},
                "hidden": {"choice": [[128, 64], [256, 128], [64]]},
                **(
                    {"loss": {"choice": ["pairwise", "lambdarank", "listwise"]}}
                    if ranking
                    else {"dropout": {"uniform": [0.0, 0.3]}}
                ),
            },
        },
    ]
    spec["tune"] = {
        "num_samples": samples,
        "max_concurrent_trials": 2,
        "scheduler": "asha",
        "searcher": searcher,
        "winner": winner,
    }
    return spec


def run(spec: dict, storage: str) -> tuple[dict[str, Any], float]:
    from pipelines.cli import main

    path = Path(storage) / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    start = time.time()
    if main(["run", str(path)]) != 0:
        raise SystemExit(f"rayline run failed for {spec['name']}")
    runs = sorted((Path(storage) / "runs" / spec["name"]).iterdir())
    return json.loads((runs[-1] / "report.json").read_text()), time.time() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, help="folder with adult/ and lightgbm_lambdarank/")
    ap.add_argument("--samples", type=int, default=8, help="trials per model family")
    ap.add_argument("--winner", choices=["refit", "checkpoint"], default="refit")
    ap.add_argument("--searcher", choices=["optuna", "random"], default="optuna")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rayline-tune-bench-") as storage:
        for ds in datasets(args.data):
            print(f"== {ds['name']} ({ds['task']}, {ds['source']} data)", flush=True)
            default, t_default = run(spec_for(ds, 1, storage), storage)
            fit, valid = fit_valid(ds, Path(storage) / "splits" / ds["name"])
            tuned, t_tuned = run(
                tuned_spec(ds, storage, fit, valid, args.samples, args.winner, args.searcher),
                storage,
            )
            winner = tuned["winner"]
            best = (tuned["tuning"].get(winner) or {}).get("best") or {}
            for k, v in default["test"].items():
                if k in ("queries", "queries_no_relevant"):  # counts, not metrics
                    continue
                rows.append(
                    {
                        "dataset": ds["name"],
                        "metric": k,
                        "default": v,
                        "tuned": tuned["test"][k],
                        "diff": tuned["test"][k] - v,
                    }
                )
            rows.append(
                {
                    "dataset": ds["name"],
                    "metric": "wall_seconds",
                    "default": t_default,
                    "tuned": t_tuned,
                    "diff": t_tuned / t_default,
                    "winner": winner,
                    "winner_config": best.get("config"),
                }
            )
    md = [
        "| dataset | metric | default XGBoost | tuned winner | tuned - default (time: ratio) |",
        "| --- | --- | --- | --- | --- |",
    ]
    md += [
        f"| {r['dataset']} | {r['metric']} | {r['default']:.4f} | {r['tuned']:.4f} | "
        f"{r['diff']:+.4f} |"
        for r in rows
    ]
    md += [""] + [
        f"{r['dataset']}: winner {r['winner']} with {r['winner_config']}"
        for r in rows
        if r["metric"] == "wall_seconds"
    ]
    (args.out / "tune_vs_default.json").write_text(json.dumps(rows, indent=1, default=str))
    (args.out / "tune_vs_default.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Whether rayline should set XGBoost parameters other than XGBoost's own defaults
(components.xgboost_model.DEFAULT_PARAMS): it keeps them unless this shows a consistent gain.

Plain XGBoost only (no rayline, no Ray): for each dataset, eta 0.3 (XGBoost's default) against
eta 0.1, both trained up to rayline's default num_boost_round (200) with its default
early stopping (20 rounds on a validation cut of the training file), and scored on the test file.
Also max_cat_to_onehot 1 against XGBoost's default 4 where the data has categorical columns.
Datasets: ../shared/data/adult and ../shared/data/lightgbm_lambdarank.

    python benchmarks/xgboost_defaults.py [--data DIR] [--out benchmarks/results]

Writes xgboost_defaults.json and xgboost_defaults.md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_xgboost import ADULT_CATEGORICAL

from components import metrics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ROUNDS, EARLY = 200, 20


def _valid_cut(frame: pd.DataFrame, group: str | None, seed: int = 0) -> np.ndarray:
    """A boolean mask of ~10% of the rows (whole queries when grouped) for early stopping."""
    rng = np.random.default_rng(seed)
    if group is None:
        return rng.random(len(frame)) < 0.1
    ids = frame[group].unique()
    chosen = set(rng.choice(ids, size=max(1, len(ids) // 10), replace=False).tolist())
    return frame[group].isin(chosen).to_numpy()


def _matrix(frame: pd.DataFrame, feats: list[str], group: str | None) -> xgboost.DMatrix:
    kwargs: dict[str, Any] = {"qid": frame[group]} if group else {}
    return xgboost.DMatrix(frame[feats], label=frame["label"], enable_categorical=True, **kwargs)


def run(name: str, folder: Path, params: dict[str, Any]) -> float:
    tr = pd.read_parquet(folder / "train.parquet")
    te = pd.read_parquet(folder / "test.parquet")
    group = "qid" if "qid" in tr else None
    cats = [c for c in ADULT_CATEGORICAL if c in tr]
    for c in cats:
        dtype = pd.CategoricalDtype(sorted(tr[c].dropna().astype(str).unique()))
        tr[c] = tr[c].astype("string").astype(dtype)
        te[c] = te[c].astype("string").astype(dtype)
    if group:
        tr = tr.sort_values(group, kind="stable")
        te = te.sort_values(group, kind="stable")
    feats = [c for c in tr.columns if c not in ("label", "qid")]
    cut = _valid_cut(tr, group)
    dtr, dva = _matrix(tr[~cut], feats, group), _matrix(tr[cut], feats, group)
    metric = "ndcg@10" if group else "auc"
    full = {
        "tree_method": "hist",
        "max_depth": 6,
        "objective": "rank:ndcg" if group else "binary:logistic",
        "eval_metric": metric,
        **params,
    }
    booster = xgboost.train(
        full, dtr, ROUNDS, evals=[(dva, "valid")], early_stopping_rounds=EARLY, verbose_eval=False
    )
    pred = booster.predict(
        _matrix(te, feats, group), iteration_range=(0, booster.best_iteration + 1)
    )
    y = te["label"].to_numpy()
    if group:
        return metrics.ranking_metrics(y, pred, te[group].to_numpy())["ndcg@10"]
    return metrics.roc_auc(y, pred)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    cases = [
        ("eta 0.3 (XGBoost's default, kept by rayline)", {"eta": 0.3}),
        ("eta 0.1", {"eta": 0.1}),
        ("eta 0.1, max_cat_to_onehot 1", {"eta": 0.1, "max_cat_to_onehot": 1}),
    ]
    rows = []
    for name in ("adult", "lightgbm_lambdarank"):
        folder = args.data / name
        if not (folder / "train.parquet").exists():
            print(f"skipping {name}: no {folder}")
            continue
        for label, params in cases:
            if name != "adult" and "max_cat_to_onehot" in params:
                continue  # no categorical columns
            value = run(name, folder, params)
            rows.append({"dataset": name, "params": label, "metric": value})
            print(f"{name:22s} {label:46s} {value:.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "xgboost_defaults.json").write_text(json.dumps(rows, indent=1))
    md = ["| dataset | params | test metric (auc / ndcg@10) |", "| --- | --- | --- |"]
    md += [f"| {r['dataset']} | {r['params']} | {r['metric']:.4f} |" for r in rows]
    (args.out / "xgboost_defaults.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

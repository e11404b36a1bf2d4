"""rayline vs. plain XGBoost on the same data, same splits, same parameters.

For each dataset it runs the rayline pipeline (Ray Data ingest, features, Ray Train, exact
evaluation) and a bare ``xgboost.train`` on pandas frames, and prints their test metrics and wall
times side by side. Datasets: UCI adult (binary), adult with a third of the test rows carrying an
occupation never seen in training (``adult_unseen``), and LightGBM's lambdarank example (LTR) from
../shared/data when present; otherwise generated stand-ins written to a temp folder.

    python benchmarks/compare_xgboost.py [--data DIR] [--workers N] [--out benchmarks/results]

Writes compare_xgboost.json and compare_xgboost.md under --out.
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
import xgboost
import yaml

from components import generators, metrics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ROUNDS = 200
PARAMS = {"tree_method": "hist", "eta": 0.1, "max_depth": 6}
ADULT_NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
ADULT_CATEGORICAL = [
    "workclass",
    "education",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native_country",
]


def generated_stand_ins(folder: Path) -> dict[str, dict[str, Any]]:
    """Binary and LTR parquet files from the built-in generators, shaped like the shared sets."""
    out = {}
    for kind, rows in (("binary", 30_000), ("ranking", 20_000)):
        tasks = generators.plan_blocks(kind, {"rows": rows, "seed": 11})
        df = pd.concat([generators.generate_block(t) for t in tasks], ignore_index=True)
        cut = int(len(df) * 0.75)
        if kind == "ranking":  # cut on a query boundary
            starts = np.flatnonzero(df["qid"].ne(df["qid"].shift()).to_numpy())
            cut = int(starts[starts >= cut][0])
        d = folder / kind
        d.mkdir(parents=True, exist_ok=True)
        df.iloc[:cut].to_parquet(d / "train.parquet")
        df.iloc[cut:].to_parquet(d / "test.parquet")
        cols = generators.columns(kind, {"rows": rows})
        out[kind] = {"dir": d, "numeric": cols["numeric"], "categorical": cols["categorical"]}
    return out


# adult with values the training file never has: these test rows' occupation is renamed to a new
# value (a third of the test rows), as when new ids reach a model trained on older logs.
UNSEEN_OCCUPATIONS = ("Prof-specialty", "Sales", "Other-service")


def unseen_categories(adult: Path, folder: Path) -> Path:
    """adult's train file as it is, its test file with UNSEEN_OCCUPATIONS renamed to new values."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.read_parquet(adult / "train.parquet").to_parquet(folder / "train.parquet")
    te = pd.read_parquet(adult / "test.parquet")
    hit = te["occupation"].isin(UNSEEN_OCCUPATIONS)
    te.loc[hit, "occupation"] = te.loc[hit, "occupation"] + "-new"
    te.to_parquet(folder / "test.parquet")
    print(f"adult_unseen: {hit.mean():.1%} of the test rows carry an unseen occupation", flush=True)
    return folder


def datasets(data_dir: Path | None) -> list[dict[str, Any]]:
    root = data_dir or SHARED
    if (root / "adult" / "train.parquet").exists() and (
        root / "lightgbm_lambdarank" / "train.parquet"
    ).exists():
        adult = {
            "name": "adult",
            "task": "binary",
            "dir": root / "adult",
            "numeric": ADULT_NUMERIC,
            "categorical": ADULT_CATEGORICAL,
            "group": None,
            "source": "shared",
        }
        tmp = Path(tempfile.mkdtemp(prefix="rayline-bench-"))
        return [
            adult,
            {
                **adult,
                "name": "adult_unseen",
                "dir": unseen_categories(root / "adult", tmp / "adult_unseen"),
                "source": "shared, test occupations renamed",
            },
            {
                "name": "lightgbm_lambdarank",
                "task": "ranking",
                "dir": root / "lightgbm_lambdarank",
                "numeric": [f"f{i}" for i in range(300)],
                "categorical": [],
                "group": "qid",
                "source": "shared",
            },
        ]
    tmp = Path(tempfile.mkdtemp(prefix="rayline-bench-"))
    gen = generated_stand_ins(tmp)
    return [
        {
            "name": "generated_binary",
            "task": "binary",
            "dir": gen["binary"]["dir"],
            "numeric": gen["binary"]["numeric"],
            "categorical": gen["binary"]["categorical"],
            "group": None,
            "source": "generated",
        },
        {
            "name": "generated_ranking",
            "task": "ranking",
            "dir": gen["ranking"]["dir"],
            "numeric": gen["ranking"]["numeric"],
            "categorical": [],
            "group": "qid",
            "source": "generated",
        },
    ]


def plain_xgboost(ds: dict[str, Any]) -> tuple[dict[str, float], float]:
    """The baseline: pandas + xgboost.train with native categoricals, nothing else."""
    start = time.time()
    tr = pd.read_parquet(ds["dir"] / "train.parquet")
    te = pd.read_parquet(ds["dir"] / "test.parquet")
    feats = ds["numeric"] + ds["categorical"]
    for c in ds["categorical"]:
        cats = pd.CategoricalDtype(sorted(tr[c].dropna().astype(str).unique()))
        tr[c] = tr[c].astype("string").astype(cats)
        te[c] = te[c].astype("string").astype(cats)
    if ds["task"] == "ranking":
        tr = tr.sort_values("qid", kind="stable")
        te = te.sort_values("qid", kind="stable")
        params = {**PARAMS, "objective": "rank:ndcg"}
        dtr = xgboost.DMatrix(tr[feats], label=tr["label"], qid=tr["qid"])
        dte = xgboost.DMatrix(te[feats], label=te["label"], qid=te["qid"])
    else:
        params = {**PARAMS, "objective": "binary:logistic"}
        dtr = xgboost.DMatrix(tr[feats], label=tr["label"], enable_categorical=True)
        dte = xgboost.DMatrix(te[feats], label=te["label"], enable_categorical=True)
    booster = xgboost.train(params, dtr, num_boost_round=ROUNDS)
    pred = booster.predict(dte)
    elapsed = time.time() - start
    y = te["label"].to_numpy()
    if ds["task"] == "ranking":
        return metrics.ranking_metrics(y, pred, te["qid"].to_numpy()), elapsed
    return metrics.binary_metrics(y.astype(int), pred), elapsed


def spec_for(ds: dict[str, Any], workers: int, storage: str) -> dict[str, Any]:
    src = {
        name: {"uri": str(ds["dir"] / f"{part}.parquet")}
        for name, part in (("train", "train"), ("valid", "train"), ("test", "test"))
    }
    return {
        "name": f"bench-{ds['name']}",
        "task": ds["task"],
        "storage": storage,
        "data": {
            "sources": src,
            "label": "label",
            "group": ds["group"],
            # The shared files are the given splits as they are: nothing may be dropped.
            "validation": {"unexpected_columns": "ignore"},
        },
        "features": {"numeric": ds["numeric"], "categorical": ds["categorical"], "impute": "none"},
        "split": {"method": "explicit"},
        "models": [
            {
                "name": "xgb",
                "kind": "xgboost",
                "params": {
                    "eta": PARAMS["eta"],
                    "max_depth": PARAMS["max_depth"],
                    "objective": "rank:ndcg" if ds["task"] == "ranking" else "binary:logistic",
                },
                "num_boost_round": ROUNDS,
                "early_stopping_rounds": None,
                "report_every": 50,
                "scaling": {"num_workers": workers, "resources_per_worker": {"CPU": 1}},
            }
        ],
        "evaluation": {"metric": "ndcg@10" if ds["task"] == "ranking" else "auc"},
        "serve": {"enabled": False},
    }


def rayline_run(ds: dict[str, Any], workers: int, storage: str) -> tuple[dict[str, float], float]:
    from pipelines.cli import main

    spec_path = Path(storage) / f"{ds['name']}.yaml"
    spec_path.write_text(yaml.safe_dump(spec_for(ds, workers, storage)))
    start = time.time()
    code = main(["run", str(spec_path)])
    elapsed = time.time() - start
    if code != 0:
        raise SystemExit(f"rayline run failed for {ds['name']} (exit {code})")
    runs = sorted((Path(storage) / "runs" / f"bench-{ds['name']}").iterdir())
    report = json.loads((runs[-1] / "report.json").read_text())
    return report["test"], elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data",
        type=Path,
        help="folder with adult/ and lightgbm_lambdarank/ (default ../shared/data)",
    )
    ap.add_argument(
        "--workers", type=int, default=1, help="Ray Train workers for rayline (default 1)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rayline-bench-storage-") as storage:
        for ds in datasets(args.data):
            print(f"== {ds['name']} ({ds['task']}, {ds['source']} data)", flush=True)
            base, t_base = plain_xgboost(ds)
            ours, t_ours = rayline_run(ds, args.workers, storage)
            for k in sorted(base):
                if k in ("queries", "queries_no_relevant"):  # counts, not metrics
                    continue
                rows.append(
                    {
                        "dataset": ds["name"],
                        "metric": k,
                        "xgboost": base[k],
                        "rayline": ours[k],
                        "diff": ours[k] - base[k],
                    }
                )
            rows.append(
                {
                    "dataset": ds["name"],
                    "metric": "wall_seconds",
                    "xgboost": t_base,
                    "rayline": t_ours,
                    "diff": t_ours / t_base,
                }
            )
    md = [
        "| dataset | metric | plain xgboost | rayline | rayline - xgboost (time: ratio) |",
        "| --- | --- | --- | --- | --- |",
    ]
    md += [
        f"| {r['dataset']} | {r['metric']} | {r['xgboost']:.4f} | {r['rayline']:.4f} | {r['diff']:+.4f} |"
        for r in rows
    ]
    (args.out / "compare_xgboost.json").write_text(
        json.dumps(
            {
                "workers": args.workers,
                "rounds": ROUNDS,
                "params": PARAMS,
                "rows": rows,
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
            },
            indent=1,
        )
    )
    (args.out / "compare_xgboost.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    worst = max(abs(r["diff"]) for r in rows if r["metric"] != "wall_seconds")
    print(
        f"\nlargest metric difference: {worst:.4f} ({'within' if worst <= 0.005 else 'OUTSIDE'} 0.005)"
    )
    return 0 if worst <= 0.005 else 1


if __name__ == "__main__":
    raise SystemExit(main())

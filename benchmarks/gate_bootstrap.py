"""The gate's paired bootstrap: the one-pass Poisson bootstrap against the previous algorithm.

Data: ``--rows`` test rows (100,000 and 1,000,000) of a binary task with random scores: labels
Bernoulli(0.3), a challenger ``sigmoid(y + N(0, 1))`` and a champion with extra noise
``N(0, 0.7)`` on the logit (so the challenger is better by a few AUC points); for ranking the
same scores in queries of 10 rows with relevance = the label.

- one-pass: ``components.gate.decide`` as the register stage calls it, in this process: exact
  point values, then ``--resamples`` (1,000) Poisson-bootstrap resamples accumulated as
  per-resample sums (AUC: per-resample histograms of 1,024 bins per model) in one pass.
- previous: the algorithm the gate used before: multinomial resampling of row (query) indices;
  AUC recomputed with a full sort per resample (``metrics.binary_metrics`` of both models), means
  over units averaged from the resampled indices in chunks of 64 resamples. It is timed on
  ``--previous-resamples`` (20) resamples and its time scaled to ``--resamples``, since at 1M
  rows the full run would take many minutes.

Each case runs once, one after the other; the table gives wall seconds, the
speed-up, and the one-pass interval and decision.

    python benchmarks/gate_bootstrap.py [--rows 100000,1000000] [--resamples 1000]
        [--previous-resamples 20] [--out DIR]

Writes gate_bootstrap.json and gate_bootstrap.md under --out (benchmarks/results). Starts no Ray.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from components import gate, metrics

ROOT = Path(__file__).resolve().parents[1]
CASES = [("binary", "auc"), ("binary", "logloss"), ("ranking", "ndcg@10")]


def data(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.3).astype(np.float64)
    z = y + rng.normal(0, 1.0, rows)
    return {
        "y": y,
        "challenger": 1 / (1 + np.exp(-z)),
        "champion": 1 / (1 + np.exp(-(z + rng.normal(0, 0.7, rows)))),
        "groups": np.arange(rows) // 10,
    }


def previous(task: str, metric: str, d: dict[str, np.ndarray], resamples: int) -> float:
    """Seconds the previous bootstrap takes for ``resamples`` resamples (its point and per-unit
    values included)."""
    rng = np.random.default_rng(0)
    y, a, b = d["y"], d["challenger"], d["champion"]
    start = time.perf_counter()
    if task == "ranking":
        diff = metrics.per_query(y, a, d["groups"], metric) - metrics.per_query(
            y, b, d["groups"], metric
        )
    elif metric == "logloss":
        pa, pb = np.clip(a, 1e-15, 1 - 1e-15), np.clip(b, 1e-15, 1 - 1e-15)
        diff = (y * np.log(pa) + (1 - y) * np.log(1 - pa)) - (
            y * np.log(pb) + (1 - y) * np.log(1 - pb)
        )
    else:
        n = len(y)
        yi = y.astype(np.int64)
        for _ in range(resamples):
            idx = rng.integers(0, n, size=n)
            (
                metrics.binary_metrics(yi[idx], a[idx])[metric]
                - metrics.binary_metrics(yi[idx], b[idx])[metric]
            )
        return time.perf_counter() - start
    n = len(diff)
    for i in range(0, resamples, 64):
        diff[rng.integers(0, n, size=(min(64, resamples - i), n))].mean(axis=1)
    return time.perf_counter() - start


def one_pass(task: str, metric: str, d: dict[str, np.ndarray], resamples: int) -> tuple[float, Any]:
    start = time.perf_counter()
    groups = d["groups"] if task == "ranking" else None
    decision = gate.decide(
        task, metric, d["y"], d["challenger"], d["champion"], groups, resamples=resamples
    )
    return time.perf_counter() - start, decision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--previous-resamples", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        d = data(rows)
        for task, metric in CASES:
            seconds, decision = one_pass(task, metric, d, args.resamples)
            k = args.previous_resamples
            scaled = previous(task, metric, d, k) * args.resamples / k
            results.append(
                {
                    "task": task,
                    "metric": metric,
                    "rows": rows,
                    "units": decision.units,
                    "resamples": args.resamples,
                    "one_pass_s": round(seconds, 2),
                    "previous_s": round(scaled, 1),
                    "previous_timed_resamples": k,
                    "speedup": round(scaled / seconds, 1),
                    "improvement": decision.improvement,
                    "low": decision.low,
                    "high": decision.high,
                    "promote": decision.promote,
                }
            )
            print(json.dumps(results[-1]), flush=True)
    lines = [
        f"| task / metric | rows | units | previous (s, {args.resamples} resamples) | one-pass (s) "
        "| speed-up | one-pass interval | promote |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['task']} {r['metric']} | {r['rows']:,} | {r['units']:,} | {r['previous_s']:,} "
            f"| {r['one_pass_s']} | {r['speedup']}x | {r['improvement']:+.4f} "
            f"({r['low']:+.4f} .. {r['high']:+.4f}) | {r['promote']} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate_bootstrap.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gate_bootstrap.md").write_text(table + "\n")


if __name__ == "__main__":
    main()

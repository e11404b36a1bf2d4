"""`rayline monitor` on a growing prediction log against plain pyarrow + pandas in one process.

Set-up (once per scratch folder): `rayline run pipelines/configs/tiny/classification.yaml` into a
scratch storage, so a registered model carries its training profile; then, per size, a log of
``--records`` one-row /predict records as the endpoint writes them (rows from synthetic:binary,
the training data's generator and seed, scored by that model, components.prediction_log.to_table, files of ``--file-records`` records
under ``<storage>/logs/tiny-classification/date=2026-12-03/``) and a Parquet file of their
labels.

- rayline: ``rayline monitor tiny-classification --labels L`` as a child process (a local Ray): wall time, the driver's peak RSS (VmHWM) and the machine's memory in use at the peak
  (MemTotal - MemAvailable, minus before; Ray's fixed cost included).
- plain: the same numbers in one process without Ray: pyarrow reads every log file, each
  record's JSON bodies are parsed, pandas merges the labels, scikit-learn's AUC and log loss;
  no drift, no re-scoring, no per-window split (less work than rayline does).

    python benchmarks/monitor_scale.py [--records 100000,1000000] [--file-records 20000]
        [--scratch DIR] [--out DIR]

Writes monitor_scale.json and monitor_scale.md under --out (benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import GIB, Watch, check_no_ray

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-classification"
DAY = "2026-12-03"

WRITE = r"""
import sys, time
import numpy as np, pandas as pd, pyarrow.parquet as pq
from components import generators
from components.prediction_log import Record, to_table
from components.predictor import Predictor
from components.registry import Registry

storage, folder, labels, records, per_file = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
p = Predictor.load(Registry(storage).resolve("tiny-classification").path)
cols = p.feature_columns
t0 = 1_796_256_000.0  # 2026-12-03 00:00 UTC
tasks = generators.plan_blocks("binary", {"rows": records, "seed": 1, "block_rows": per_file})
out = []
for t in tasks:
    frame = generators.generate_block(t).reset_index(drop=True)
    scores = p.predict(frame[cols])
    feats = frame[cols].astype(object).where(frame[cols].notna(), None).to_dict("records")
    recs = [
        Record(request_id=f"r{t.index}-{i}", ts=t0 + (t.index * per_file + i) * 0.01,
               model="tiny-classification", version=1, route="predict", rows=1,
               features={"rows": [f]}, outputs={"predictions": [{"score": float(s)}]},
               latency_ms=2.0)
        for i, (f, s) in enumerate(zip(feats, scores))
    ]
    pq.write_table(to_table(recs), f"{folder}/bench-{t.index:05d}.parquet")
    out.append(pd.DataFrame({"request_id": [r.request_id for r in recs], "row": 0,
                             "label": frame["label"].to_numpy()}))
pd.concat(out).to_parquet(labels)
"""

PLAIN = r"""
import json, resource, sys, time
import numpy as np, pandas as pd, pyarrow.dataset as pds
from sklearn.metrics import log_loss, roc_auc_score

folder, labels = sys.argv[1], sys.argv[2]
start = time.time()
log = pds.dataset(folder, format="parquet").to_table(columns=["request_id", "features", "outputs"]).to_pandas()
rows = pd.DataFrame([json.loads(f)["rows"][0] for f in log["features"]])
rows["score"] = [json.loads(o)["predictions"][0]["score"] for o in log["outputs"]]
rows["request_id"] = log["request_id"].to_numpy()
rows["row"] = 0
joined = rows.merge(pd.read_parquet(labels), on=["request_id", "row"])
y, p = joined["label"].to_numpy(), joined["score"].to_numpy()
print(json.dumps({"seconds": time.time() - start, "auc": roc_auc_score(y, p),
                  "logloss": log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), "rows": len(joined),
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"}


def ensure_model(storage: Path) -> None:
    if (storage / "registry").exists():
        return
    cmd = [sys.executable, "-m", "pipelines", "run",
           str(ROOT / "pipelines/configs/tiny/classification.yaml"), "--storage", str(storage),
           "serve.enabled=false"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL)


def ensure_log(storage: Path, records: int, per_file: int) -> tuple[Path, Path]:
    folder = storage / "logs" / MODEL / f"date={DAY}"
    labels = storage / f"labels-{records}.parquet"
    marker = storage / f"log-{records}.done"
    if not marker.exists():
        for f in folder.glob("bench-*.parquet") if folder.exists() else []:
            f.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-c", WRITE, str(storage), str(folder), str(labels), str(records),
               str(per_file)]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT, env=env())
        for other in storage.glob("log-*.done"):
            other.unlink()
        marker.write_text("ok")
    return folder, labels


def rayline_monitor(storage: Path, labels: Path, out: Path) -> dict[str, Any]:
    check_no_ray("before rayline monitor")
    cmd = [sys.executable, "-m", "pipelines", "monitor", MODEL, "--storage", str(storage),
           "--labels", str(labels), "--out", str(out)]  # fmt: skip
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
    with Watch(proc.pid, min_available=2 * GIB) as w:
        said, _ = proc.communicate()
    seconds = time.time() - start
    report = json.loads((out / "monitor.json").read_text())
    whole = report["metrics"]["1"]["all"]
    return {
        "seconds": seconds,
        "exit": proc.returncode,
        "driver_peak_rss": w.peak_rss,
        "machine_increase": w.machine_increase,
        "auc": whole["auc"],
        "logloss": whole["logloss"],
        "rows": report["labels"]["matched"],
        "output": said.splitlines()[-3:],
    }


def plain(folder: Path, labels: Path) -> dict[str, Any]:
    with Watch(None, min_available=2 * GIB) as w:
        done = subprocess.run(
            [sys.executable, "-c", PLAIN, str(folder), str(labels)],
            check=True, cwd=ROOT, env=env(), capture_output=True, text=True,
        )  # fmt: skip
    return {
        **json.loads(done.stdout.strip().splitlines()[-1]),
        "machine_increase": w.machine_increase,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", default="100000,1000000")
    ap.add_argument("--file-records", type=int, default=20000)
    ap.add_argument("--scratch", default=str(ROOT / "benchmarks/results/monitor_scratch"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    a = ap.parse_args()
    storage, out = Path(a.scratch), Path(a.out)
    storage.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    ensure_model(storage)
    results = []
    for n in (int(x) for x in a.records.split(",")):
        folder, labels = ensure_log(storage, n, a.file_records)
        print(f"{n:,} records: rayline monitor ...", flush=True)
        ours = rayline_monitor(storage, labels, out / f"monitor_scale_report_{n}")
        print(
            f"  {ours['seconds']:.1f} s, driver peak {ours['driver_peak_rss'] / 2**20:.0f} MB",
            flush=True,
        )
        base = plain(folder, labels)
        print(
            f"  plain {base['seconds']:.1f} s, peak {base['peak_rss'] / 2**20:.0f} MB", flush=True
        )
        results.append({"records": n, "rayline": ours, "plain": base})
    (out / "monitor_scale.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| records | rayline s | plain s | time ratio | rayline driver peak RSS | rayline machine increase | plain peak RSS | AUC rayline / plain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        o, b = r["rayline"], r["plain"]
        lines.append(
            f"| {r['records']:,} | {o['seconds']:.1f} | {b['seconds']:.1f} | "
            f"{o['seconds'] / b['seconds']:.2f} | {o['driver_peak_rss'] / 2**20:.0f} MB | "
            f"{o['machine_increase'] / 2**20:.0f} MB | {b['peak_rss'] / 2**20:.0f} MB | "
            f"{o['auc']:.6f} / {b['auc']:.6f} |"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        grow = (last["rayline"]["driver_peak_rss"] - first["rayline"]["driver_peak_rss"]) / 2**20
        lines.append(
            f"\nrayline's driver peak RSS grew {grow:+.0f} MB from {first['records']:,} to "
            f"{last['records']:,} records; plain's peak grew "
            f"{(last['plain']['peak_rss'] - first['plain']['peak_rss']) / 2**20:+.0f} MB."
        )
    (out / "monitor_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

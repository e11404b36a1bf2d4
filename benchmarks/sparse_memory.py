"""Peak memory of training XGBoost on a sparse libFM file: rayline vs. plain scipy CSR + XGBoost.

The file: ``--rows`` lines (100,000) of ``label field:index:1`` tokens, one per field (10 fields),
each field drawing from its own ``--ids`` distinct ids (5,000; global indices, so the CSR matrix
is rows x fields*ids), with a Zipf-like popularity and a label that depends on a few ids (seeded).

- rayline: ``rayline run`` of a spec reading the file with ``format: libfm`` and
  ``libsvm.sparse: ids`` (reader -> Ray Data -> split -> features -> Ray Train XGBoost on one CSR
  matrix -> evaluation on the test split -> registry), in this process, on a Ray started (and
  warmed up) before the baseline is taken; once with ``num_workers: 0`` (training in the driver)
  and once with one Ray Train worker.
- plain: a fresh process that parses the same file with numpy into a scipy CSR matrix and calls
  ``xgboost.train`` with the same parameters and rounds on the same rows.

Each rayline configuration also runs on a 2,000-row file of the same shape: what a run takes
whatever the data (Ray Train's controller and worker processes, the scoring actor) is the small
run's peak, and the big run's peak minus it is what grows with the data.

Memory, sampled every 50 ms: the machine's ``MemTotal - MemAvailable`` (includes Ray's shared
object store, but also anything else running on the machine), the proportional set size (PSS)
of this process and every Ray process it started, and the driver's peak RSS. Each is reported as
the increase over its value before the run, and minus the CSR size (nnz x 8 bytes + 8 per row).

    python benchmarks/sparse_memory.py [--rows 100000] [--fields 10] [--ids 5000] [--out DIR]

Writes sparse_memory.json and sparse_memory.md under --out (benchmarks/results). Starts Ray: run
it under ``flock /tmp/rayline-ray.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"max_depth": 6, "eta": 0.3}
ROUNDS = 50
SMALL_ROWS = 2_000  # the same run on this many rows: what does not grow with the data
MB = 2**20


def generate(path: Path, rows: int, fields: int, ids: int, seed: int) -> dict[str, int]:
    """Write the libFM file; return its shape (rows, nnz, columns)."""
    rng = np.random.default_rng(seed)
    # Zipf-like popularity within each field; field f's ids are f*ids .. (f+1)*ids-1
    p = 1.0 / np.arange(1, ids + 1) ** 1.1
    p /= p.sum()
    local = np.stack([rng.choice(ids, size=rows, p=p) for _ in range(fields)], axis=1)
    index = local + np.arange(fields) * ids
    effect = rng.normal(0, 1, size=fields * ids) * (rng.random(fields * ids) < 0.05)
    logit = effect[index].sum(axis=1) - 0.2
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    with path.open("w") as f:
        for start in range(0, rows, 10_000):
            block = []
            for r in range(start, min(start + 10_000, rows)):
                toks = " ".join(f"{j}:{index[r, j]}:1" for j in range(fields))
                block.append(f"{label[r]} {toks}\n")
            f.write("".join(block))
    return {"rows": rows, "nnz": rows * fields, "columns": fields * ids}


def csr_bytes(rows: int, nnz: int) -> int:
    """indices (int32) + values (float32) + indptr (int64)."""
    return nnz * 8 + (rows + 1) * 8


def _meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


def machine_used() -> int:
    m = _meminfo()
    return m["MemTotal"] - m["MemAvailable"]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(parent, []).append(int(name))
    return kids


def tree_pss(root: int) -> int:
    """PSS (bytes) of ``root`` and all its descendants (shared pages counted once in total)."""
    kids, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def driver_rss() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process, bytes."""
    cur = peak = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cur, peak


def reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Sampler:
    """Peak machine memory and process-tree PSS, sampled in a thread every ``every`` s."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.peak_machine = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.peak_machine = max(self.peak_machine, machine_used())
            self.peak_pss = max(self.peak_pss, tree_pss(me))
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def spec_doc(data: Path, storage: Path, workers: int) -> dict[str, Any]:
    scaling: dict[str, Any] = {"num_workers": workers}
    if workers:
        scaling["resources_per_worker"] = {"CPU": 1}
    return {
        "name": f"sparse-memory-w{workers}",
        "task": "binary",
        "storage": str(storage),
        "data": {
            "source": {"uri": str(data), "format": "libfm", "libsvm": {"sparse": "ids"}},
        },
        "features": {"sparse": ["ids"]},
        "split": {"method": "random", "seed": 0},
        "models": [
            {
                "name": "gbdt",
                "params": PARAMS,
                "num_boost_round": ROUNDS,
                "early_stopping_rounds": None,
                "report_every": ROUNDS,
                "scaling": scaling,
            }
        ],
        "evaluation": {"metric": "auc"},
        "serve": {"enabled": False},
    }


def rayline(data: Path, storage: Path, workers: int, name: str) -> dict[str, Any]:
    """One rayline run of the file on the Ray this process started; memory over the baseline."""
    from pipelines.cli import main

    spec = storage / f"{name}.yaml"
    doc = spec_doc(data, storage, workers)
    doc["name"] = name
    spec.write_text(yaml.safe_dump(doc))
    time.sleep(2)  # let the previous run's memory settle
    base_machine, base_pss = machine_used(), tree_pss(os.getpid())
    reset_peak_rss()
    base_rss = driver_rss()[0]
    start = time.time()
    with Sampler() as s:
        code = main(["run", str(spec)])
    seconds = time.time() - start
    if code != 0:
        raise SystemExit(f"rayline run failed (exit {code})")
    runs = sorted((storage / "runs" / name).iterdir())
    report = json.loads((runs[-1] / "report.json").read_text())
    return {
        "workers": workers,
        "seconds": seconds,
        "machine_increase": s.peak_machine - base_machine,
        "pss_increase": s.peak_pss - base_pss,
        "driver_rss_increase": driver_rss()[1] - base_rss,
        "test_auc": report["test"].get("auc"),
    }


PLAIN = r"""
import json, os, resource, sys, time
import numpy as np, scipy.sparse, xgboost
from sklearn.metrics import roc_auc_score

def used():
    m = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":", 1)
        m[k] = int(v.split()[0]) * 1024
    return m["MemTotal"] - m["MemAvailable"]

path, fields, params, rounds = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = used()
start = time.time()
tokens = np.array(open(path, "rb").read().replace(b":", b" ").split(), dtype=np.float64)
table = tokens.reshape(-1, 1 + 3 * fields)
del tokens
label = table[:, 0]
index = table[:, 2::3].astype(np.int32).ravel()
value = table[:, 3::3].astype(np.float32).ravel()
rows = len(table)
del table
indptr = np.arange(0, rows * fields + 1, fields, dtype=np.int64)
x = scipy.sparse.csr_matrix((value, index, indptr), shape=(rows, int(index.max()) + 1))
cut = int(rows * 0.8)
d = xgboost.DMatrix(x[:cut], label=label[:cut])
booster = xgboost.train({"tree_method": "hist", "objective": "binary:logistic", **params}, d, rounds)
auc = roc_auc_score(label[cut:], booster.inplace_predict(x[cut:]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": time.time() - start, "rss_increase": peak - base_rss,
                  "machine_after": used() - base, "test_auc": float(auc)}))
"""


def plain(data: Path, fields: int) -> dict[str, Any]:
    """scipy CSR + xgboost.train in a fresh process (peak RSS over its RSS after imports)."""
    before = machine_used()
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], machine_used())
            done.wait(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    out = subprocess.run(
        [sys.executable, "-c", PLAIN, str(data), str(fields), json.dumps(PARAMS), str(ROUNDS)],
        check=True,
        capture_output=True,
        text=True,
    )
    done.set()
    t.join()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["machine_increase"] = peak[0] - before
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--fields", type=int, default=10)
    ap.add_argument("--ids", type=int, default=5_000, help="distinct ids per field")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)

    from pipelines.cluster import TRAIN_ENV

    for k, v in TRAIN_ENV.items():
        os.environ.setdefault(k, v)
    with tempfile.TemporaryDirectory(prefix="rayline-sparse-") as tmp:
        folder = Path(tmp)
        data = folder / "data.ffm"
        shape = generate(data, args.rows, args.fields, args.ids, args.seed)
        csr = csr_bytes(shape["rows"], shape["nnz"])
        dense = shape["rows"] * shape["columns"] * 8
        print(
            f"{data.name}: {data.stat().st_size / MB:.1f} MB, {shape['rows']:,} rows x "
            f"{shape['columns']:,} columns, {shape['nnz']:,} entries; CSR {csr / MB:.1f} MB "
            f"(as dense float64 columns: {dense / 2**30:,.1f} GiB)"
        )
        small = folder / "small.ffm"
        small_shape = generate(small, SMALL_ROWS, args.fields, args.ids, args.seed + 1)
        base = plain(data, args.fields)
        import ray

        ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
        try:
            # warm-up runs, not measured: Ray's worker processes import what the runs need
            for w in (0, 1):
                rayline(small, folder, w, f"sparse-memory-warm-up-w{w}")
            runs = []
            for w in (0, 1):
                tiny = rayline(small, folder, w, f"sparse-memory-small-w{w}")
                big = rayline(data, folder, w, f"sparse-memory-w{w}")
                runs.append({**big, "small": tiny})
        finally:
            ray.shutdown()

    def mb(v: float) -> str:
        return f"{v / MB:,.0f}"

    rows = [
        [
            "plain scipy CSR + xgboost.train",
            mb(base["machine_increase"]),
            "-",
            "-",
            mb(base["rss_increase"]),
            mb(base["rss_increase"] - csr),
            f"{base['seconds']:.1f}",
            f"{base['test_auc']:.4f}",
        ]
    ]
    for r in runs:
        grows = max(r["machine_increase"] - r["small"]["machine_increase"], 0)
        grows = max(grows, r["pss_increase"] - r["small"]["pss_increase"])
        r["data_dependent"] = grows
        rows.append(
            [
                f"rayline run, num_workers: {r['workers']}",
                mb(r["machine_increase"]),
                mb(r["pss_increase"]),
                f"{mb(r['small']['machine_increase'])} / {mb(r['small']['pss_increase'])}",
                mb(grows),
                mb(grows - csr),
                f"{r['seconds']:.1f}",
                f"{r['test_auc']:.4f}" if r["test_auc"] is not None else "-",
            ]
        )
    header = [
        "path",
        "machine used, peak +MB",
        "process tree PSS, peak +MB",
        f"same on {SMALL_ROWS:,} rows (machine / PSS)",
        "grows with the data, MB",
        "over the CSR size, MB",
        "seconds",
        "test AUC",
    ]
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )
    intro = (
        f"libFM file of {shape['rows']:,} rows x {args.fields} fields x {args.ids:,} ids per "
        f"field ({shape['columns']:,} columns, {shape['nnz']:,} entries): CSR {csr / MB:.1f} MB, "
        f"dense float64 {dense / 2**30:,.1f} GiB. XGBoost {PARAMS}, {ROUNDS} rounds, 2 CPUs. "
        "Peaks are increases over the memory before each run (rayline: on a Ray started and "
        "warmed up first; they include the processes a run starts: Ray Train's controller and "
        f"worker, the scoring actor). 'Grows with the data' is the run's peak minus the same "
        f"run's on a {SMALL_ROWS:,}-row file (the larger of the machine and PSS differences); "
        "for plain XGBoost, its process's peak RSS over its RSS after the imports."
    )
    print(intro)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"shape": shape, "small_shape": small_shape, "csr_bytes": csr, "params": PARAMS}
    doc |= {"rounds": ROUNDS, "plain": base, "rayline": runs}
    (args.out / "sparse_memory.json").write_text(json.dumps(doc, indent=1))
    command = "flock /tmp/rayline-ray.lock .venv/bin/python benchmarks/sparse_memory.py"
    (args.out / "sparse_memory.md").write_text(
        f"# Sparse input memory\n\n`{command}`\n\n{intro}\n\n{table}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The whole-run cost curve: rayline against plain pyarrow + XGBoost as the rows grow.

For each N in ``--rows`` (1M, 4M and 10M by default):

1. data: ``synthetic:ctr`` (the built-in generator: 13 dense counts, 26 string categoricals, a
   click label) written as Parquet files of ``--file-rows`` rows (500,000) each, one block at a
   time in a child process, so no process ever holds the whole N. A folder is reused when its
   ``_COMPLETE`` marker (written last) matches the rows, seed and file size.
2. rayline: ``rayline run`` of a generated spec as a child process (it starts its own local Ray,
   which stops with it): ``task: binary``, the 13 dense columns numeric (``impute: none``: XGBoost
   takes missing values itself), the 26 categoricals ``encoding: hash, hash_buckets: 4096``,
   ``split: random 0.8/0.1/0.1`` (stratified by label, rayline's default), XGBoost
   ``binary:logistic`` depth 6, eta 0.3, ``--rounds`` (50) rounds without early stopping on
   ``--workers`` (2) Ray Train workers of 0.5 CPU each (one thread each), serving off, into a fresh
   storage folder. Then the same run again into the same storage, so its register step gates
   against the production version the first run registered (only for N in ``--gate-rows``, all
   of ``--rows`` by default). Measured per run: the wall time, the seconds of each step
   (report.json's ``step_seconds``), the driver's peak RSS (VmHWM of the ``rayline`` process,
   read every 0.2 s), and the machine's memory in use (MemTotal - MemAvailable, every 0.2 s) at
   its peak minus before the run: that counts Ray's shared object store once, where summed RSS
   would count it in every process that maps it. A run is interrupted (SIGINT, as Ctrl-C) when the
   machine's available memory drops below ``--min-available-gib`` (2 GiB), and the table says so.
   Before each run no Ray process may be running on the machine; after it, none may remain.
3. plain: a child process that reads the train rows of the same files with pyarrow, hashes the
   26 categoricals into the same 4,096 buckets rayline uses (``components.hashing.hash_strings``
   on each file's dictionary, code = hash % 4096 + 1, missing as NaN), builds an
   ``xgboost.QuantileDMatrix`` with them as XGBoost categoricals (``feature_types`` "c") and
   trains the same model with ``--threads`` (2) threads, then predicts the test rows and computes
   their AUC (scikit-learn). Its rows are rayline's own split: the ``row_id`` values of the first
   run's prepared train and test splits (``<run dir>/prepared/``); where those are missing (a run
   interrupted before its split) the last tenth of the files is the test set and the rest trains
   (a file-level split; the table says which). No validation set (rayline evaluates one every
   round). Measured: its wall time (after its imports), each phase, its peak RSS and the
   machine's memory at its peak minus before.

It prints a line per phase as it goes and, at the end, the tables: per N the wall times, memory
and ratios, rayline's step seconds, plain's phases, and the growth with N (least-squares slope:
seconds per million rows and bytes per row; the log-log exponent). Results are written after
every N to scale.json and scale.md under ``--out``, with a log-log plot of wall time and peak
memory against N (scale.png).

    python benchmarks/scale.py [--rows 1000000 4000000 10000000] [--workers 2] [--rounds 50]
        [--threads 2] [--gate-rows N ...] [--file-rows 500000] [--scratch DIR] [--out DIR]
        [--keep-storage] [--min-available-gib 2] [--append]

Starts Ray (through ``rayline run``): run it under ``flock /tmp/rayline-ray.lock`` on a shared
machine. Scratch (``--scratch``, default ``<temp>/rayline-scale``): the data (kept for the next
invocation; about 80 MB per million rows), each N's storage (deleted after its N unless
``--keep-storage``) and the runs' console logs. ``--append`` keeps the other N of an earlier
scale.json under ``--out`` made with the same settings, so the N can be run one invocation each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
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
MB = 2**20
GIB = 2**30
DEFAULT_ROWS = (1_000_000, 4_000_000, 10_000_000)
FILE_ROWS = 500_000
SEED = 0
HASH_BUCKETS = 4096
PARAMS = {"max_depth": 6, "eta": 0.3}
NAME = "scale-ctr"
NUMERIC = [f"I{j + 1}" for j in range(13)]
CATEGORICAL = [f"C{j + 1}" for j in range(26)]
SAMPLE_EVERY = 0.2  # seconds between memory samples
RAY_GONE_TIMEOUT = 60.0  # seconds to wait for a finished run's Ray processes to exit
INTERRUPT_GRACE = 120.0  # seconds an interrupted run gets to stop before it is killed
STEP_LINE = re.compile(r"^\[\d+/\d+\] ")
MARKER = "_COMPLETE"


# ---------------------------------------------------------------------------- memory


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


def machine_used() -> int:
    """The machine's memory in use: MemTotal - MemAvailable (page cache excluded, shm counted)."""
    m = meminfo()
    return m["MemTotal"] - m["MemAvailable"]


def rss_of(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes; (0, 0) once it is gone."""
    cur = peak = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    return cur, peak


def ray_processes(pgid: int | None = None) -> list[str]:
    """Ray's own processes on this machine (raylet, gcs_server, ray:: workers), as "pid name";
    with ``pgid``, also every other process left in that process group."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":  # a zombie holds no memory and waits for its parent
            continue
        ray = comm in ("raylet", "gcs_server") or comm.startswith("ray::")
        if ray or (pgid is not None and int(fields[2]) == pgid):
            found.append(f"{name} {comm}")
    return found


class Watch:
    """Samples the machine's memory in use and (optionally) a process's RSS every
    ``SAMPLE_EVERY`` s in a thread; calls ``on_low`` once if MemAvailable drops below
    ``min_available`` bytes."""

    def __init__(self, pid: int | None, min_available: int, on_low: Any = None) -> None:
        self.pid = pid
        self.min_available = min_available
        self.on_low = on_low
        self.before = machine_used()
        self.peak_machine = self.before
        self.peak_rss = 0
        self.low: dict[str, float] | None = None  # when and how low memory got, if it did
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            m = meminfo()
            self.peak_machine = max(self.peak_machine, m["MemTotal"] - m["MemAvailable"])
            if self.pid is not None:
                self.peak_rss = max(self.peak_rss, rss_of(self.pid)[1])
            if self.low is None and m["MemAvailable"] < self.min_available:
                self.low = {
                    "at_seconds": round(time.time() - self.started, 1),
                    "available_gib": round(m["MemAvailable"] / GIB, 2),
                }
                if self.on_low is not None:
                    self.on_low()
            self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def machine_increase(self) -> int:
        return self.peak_machine - self.before


# ---------------------------------------------------------------------------- data

# Runs in a child process so that the generator's frames never stay in this process's memory.
WRITE = r"""
import json, os, sys
import pyarrow as pa, pyarrow.parquet as pq
from components import generators

folder, rows, file_rows, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tasks = generators.plan_blocks("ctr", {"rows": rows, "seed": seed, "block_rows": file_rows})
width = len(str(len(tasks) - 1))
for t in tasks:
    frame = generators.generate_block(t)
    path = os.path.join(folder, f"part-{t.index:0{width}d}.parquet")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path + ".tmp")
    os.replace(path + ".tmp", path)
    del frame
    print(f"{t.index + 1}/{len(tasks)}", flush=True)
"""


def ensure_data(scratch: Path, rows: int, file_rows: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The Parquet folder of ``rows`` synthetic:ctr rows (written now unless already complete)."""
    folder = scratch / f"ctr-{rows}-seed{seed}-file{file_rows}"
    want = {"generator": "synthetic:ctr", "rows": rows, "seed": seed, "file_rows": file_rows}
    marker = folder / MARKER
    if marker.exists():
        info: dict[str, Any] = json.loads(marker.read_text())
        if {k: info.get(k) for k in want} == want:
            print(f"  data: reusing {folder} ({info['files']} files, {info['mb']:,.0f} MB)")
            return folder, info | {"reused": True}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    start = time.time()
    subprocess.run(
        [sys.executable, "-c", WRITE, str(folder), str(rows), str(file_rows), str(seed)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    files = sorted(folder.glob("*.parquet"))
    info = want | {
        "files": len(files),
        "mb": round(sum(f.stat().st_size for f in files) / MB, 1),
        "seconds": round(time.time() - start, 1),
    }
    marker.write_text(json.dumps(info, indent=1))  # last: the folder is complete
    print(f"  data: wrote {len(files)} files, {info['mb']:,.0f} MB in {info['seconds']:.0f}s")
    return folder, info | {"reused": False}


# ---------------------------------------------------------------------------- rayline


def spec_doc(data: Path, storage: Path, workers: int, rounds: int) -> dict[str, Any]:
    """The rayline spec the benchmark runs (see the module docstring)."""
    return {
        "name": NAME,
        "task": "binary",
        "storage": str(storage),
        "data": {
            "source": {"uri": str(data), "format": "parquet"},
            "label": "label",
            "keys": ["row_id"],
        },
        "features": {
            "numeric": NUMERIC,
            "categorical": [
                {"name": c, "encoding": "hash", "hash_buckets": HASH_BUCKETS} for c in CATEGORICAL
            ],
            "impute": "none",
        },
        "split": {"method": "random", "train": 0.8, "valid": 0.1, "test": 0.1, "seed": 0},
        "models": [
            {
                "name": "gbdt",
                "kind": "xgboost",
                "params": PARAMS,
                "num_boost_round": rounds,
                "early_stopping_rounds": None,
                "report_every": rounds,
                "scaling": {"num_workers": workers, "resources_per_worker": {"CPU": 0.5}},
            }
        ],
        "evaluation": {"metric": "auc"},
        "serve": {"enabled": False},
    }


def rayline_command() -> list[str]:
    """``rayline`` from this interpreter's environment (``python -m pipelines`` without it)."""
    script = Path(sys.executable).parent / "rayline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines"]


def check_no_ray(when: str) -> None:
    """Stop the benchmark if any Ray runs here: a run would join it (or compete with it)."""
    found = ray_processes()
    if found:
        raise SystemExit(
            f"{when}: Ray processes are running on this machine ({', '.join(found[:5])}); stop "
            "them (or wait for whoever holds /tmp/rayline-ray.lock) and run the benchmark again"
        )


def wait_ray_gone(pgid: int) -> list[str]:
    """Wait until the finished run's Ray processes have exited; the ones left after
    ``RAY_GONE_TIMEOUT`` s (members of the run's own process group) are terminated by pid and
    reported."""
    deadline = time.time() + RAY_GONE_TIMEOUT
    while time.time() < deadline:
        left = ray_processes(pgid)
        if not left:
            return []
        time.sleep(1.0)
    left = ray_processes(pgid)
    for entry in left:
        pid = int(entry.split()[0])
        try:
            if os.getpgid(pid) == pgid:  # only what this benchmark's run started
                os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    time.sleep(5.0)
    check_no_ray("after stopping a run's leftover Ray processes")
    return left


def run_dirs(storage: Path) -> set[Path]:
    runs = storage / "runs" / NAME
    return {p for p in runs.iterdir() if p.is_dir()} if runs.is_dir() else set()


def rayline_run(
    spec: Path, storage: Path, log: Path, min_available: int, label: str
) -> dict[str, Any]:
    """One ``rayline run`` as a child process, measured; its report's figures."""
    check_no_ray(f"before {label}")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYLINE_STORAGE")}
    env["PYTHONUNBUFFERED"] = "1"
    before = run_dirs(storage)
    time.sleep(2.0)  # let the previous process's memory settle before the baseline sample
    cmd = [*rayline_command(), "run", str(spec), "--storage", str(storage)]
    with log.open("w") as out:
        start = time.time()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        interrupted: dict[str, float] = {}

        def low_memory() -> None:
            interrupted["at"] = time.time()
            os.kill(proc.pid, signal.SIGINT)

        with Watch(proc.pid, min_available, low_memory) as watch, log.open() as tail:
            while proc.poll() is None:
                for line in tail.readlines():
                    if STEP_LINE.match(line):
                        print(f"    {line.rstrip()}", flush=True)
                if interrupted and time.time() - interrupted["at"] > INTERRUPT_GRACE:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)  # the group this run started
                time.sleep(0.5)
            seconds = time.time() - start
            for line in tail.readlines():
                if STEP_LINE.match(line):
                    print(f"    {line.rstrip()}", flush=True)
    leftovers = wait_ray_gone(proc.pid)
    new = sorted(run_dirs(storage) - before)
    report: dict[str, Any] = {}
    if new and (new[-1] / "report.json").exists():
        report = json.loads((new[-1] / "report.json").read_text())
    result: dict[str, Any] = {
        "exit_code": proc.returncode,
        "status": report.get("status", "no report"),
        "seconds": round(seconds, 1),
        "step_seconds": report.get("step_seconds") or {},
        "driver_peak_rss": watch.peak_rss,
        "machine_before": watch.before,
        "machine_increase": watch.machine_increase,
        "test_auc": (report.get("test") or {}).get("auc"),
        "splits": report.get("splits"),
        "gate": report.get("gate"),
        "model": report.get("model"),
        "run_dir": str(new[-1]) if new else None,
        "log": str(log),
    }
    if watch.low is not None:
        result["interrupted_low_memory"] = watch.low
    if leftovers:
        result["ray_leftovers_stopped"] = leftovers
    if proc.returncode != 0 and watch.low is None:
        result["error"] = report.get("error") or f"exit {proc.returncode}, see {log}"
    return result


# ---------------------------------------------------------------------------- plain

PLAIN = r"""
import glob, json, os, resource, sys, time
import numpy as np, pyarrow.parquet as pq, xgboost
from sklearn.metrics import roc_auc_score
from components.hashing import hash_strings

cfg = json.loads(sys.argv[1])
NUMERIC, CATEGORICAL, BUCKETS = cfg["numeric"], cfg["categorical"], cfg["buckets"]
rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.time()
files = sorted(glob.glob(os.path.join(cfg["data"], "*.parquet")))

def parquet_in(folder):
    return sorted(glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True))

split = "file-level (the last tenth of the files is the test set)"
masks = None
if cfg["split_from"]:
    parts = {n: parquet_in(os.path.join(cfg["split_from"], n)) for n in ("train", "test")}
    if all(parts.values()):
        masks = {}
        for name, paths in parts.items():
            m = np.zeros(cfg["rows"], dtype=bool)
            for p in paths:
                m[pq.read_table(p, columns=["row_id"]).column(0).to_numpy()] = True
            masks[name] = m
        split = "rayline's (row_id of its prepared train and test splits)"
test_files = set(files[-max(1, round(len(files) * 0.1)):])

def chosen(name, path, row_id):
    if masks is not None:
        return masks[name][row_id]
    return np.full(len(row_id), (path in test_files) == (name == "test"))

def codes(column):
    # rayline's hash buckets: siphash of the value's text % buckets + 1; missing -> NaN, as
    # rayline hands missing categories to XGBoost. Hashing each file's dictionary, not each row.
    out = []
    for chunk in column.chunks:
        lut = (hash_strings(chunk.dictionary.to_numpy(zero_copy_only=False)) % np.uint64(BUCKETS)
               + np.uint64(1)).astype(np.float32)
        idx = chunk.indices.fill_null(0).to_numpy()
        c = lut[idx] if len(lut) else np.zeros(len(idx), np.float32)
        c[~chunk.is_valid().to_numpy(zero_copy_only=False)] = np.nan
        out.append(c)
    return np.concatenate(out) if out else np.zeros(0, np.float32)

def matrix(name):
    if masks is not None:
        n = int(masks[name].sum())
    else:
        n = sum(pq.ParquetFile(f).metadata.num_rows for f in files
                if (f in test_files) == (name == "test"))
    x = np.empty((n, len(NUMERIC) + len(CATEGORICAL)), dtype=np.float32)
    y = np.empty(n, dtype=np.float32)
    at = 0
    for f in files:
        t = pq.read_table(f, columns=["row_id", "label", *NUMERIC, *CATEGORICAL],
                          read_dictionary=CATEGORICAL)
        sel = chosen(name, f, t.column("row_id").to_numpy())
        k = int(sel.sum())
        if k == 0:
            continue
        y[at:at + k] = t.column("label").to_numpy()[sel]
        for j, c in enumerate(NUMERIC):
            x[at:at + k, j] = t.column(c).to_numpy()[sel]
        for j, c in enumerate(CATEGORICAL):
            x[at:at + k, len(NUMERIC) + j] = codes(t.column(c))[sel]
        at += k
        del t
    return x, y

types = ["q"] * len(NUMERIC) + ["c"] * len(CATEGORICAL)
names = NUMERIC + CATEGORICAL
x, y = matrix("train")
read = time.time()
train = xgboost.QuantileDMatrix(x, label=y, feature_names=names, feature_types=types,
                                enable_categorical=True, nthread=cfg["threads"])
train_rows = len(y)
del x, y
params = {"objective": "binary:logistic", "tree_method": "hist", "nthread": cfg["threads"],
          **cfg["params"]}
booster = xgboost.train(params, train, cfg["rounds"])
del train
trained = time.time()
x, y = matrix("test")
test = xgboost.DMatrix(x, feature_names=names, feature_types=types, enable_categorical=True,
                       nthread=cfg["threads"])
auc = roc_auc_score(y, booster.predict(test))
done = time.time()
print(json.dumps({
    "seconds": round(done - start, 1),
    "phase_seconds": {"read_split_encode": round(read - start, 1),
                      "quantile_dmatrix_train": round(trained - read, 1),
                      "read_predict_auc": round(done - trained, 1)},
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "rss_after_imports": rss_imports,
    "train_rows": train_rows, "test_rows": len(y), "test_auc": float(auc), "split": split,
}))
"""


def plain_run(
    data: Path, rows: int, split_from: str | None, rounds: int, threads: int, min_available: int
) -> dict[str, Any]:
    """pyarrow + xgboost.QuantileDMatrix in a fresh process; its own peak RSS and the machine's."""
    cfg = {
        "data": str(data),
        "rows": rows,
        "split_from": split_from,
        "rounds": rounds,
        "threads": threads,
        "params": PARAMS,
        "numeric": NUMERIC,
        "categorical": CATEGORICAL,
        "buckets": HASH_BUCKETS,
    }
    time.sleep(2.0)
    proc = subprocess.Popen(
        [sys.executable, "-c", PLAIN, json.dumps(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with Watch(None, min_available, proc.kill) as watch:
        out, err = proc.communicate()
    if watch.low is not None:
        return {"killed_low_memory": watch.low, "machine_increase": watch.machine_increase}
    if proc.returncode != 0:
        raise SystemExit(f"the plain baseline failed (exit {proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["machine_increase"] = watch.machine_increase
    return result


# ---------------------------------------------------------------------------- reporting


def fmt_mb(v: float | None) -> str:
    return "-" if v is None else f"{v / MB:,.0f}"


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def fmt_auc(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def ok(run: dict[str, Any] | None) -> bool:
    return bool(run) and run.get("status") == "succeeded"  # type: ignore[union-attr]


def outcome(run: dict[str, Any]) -> str:
    """A run's status as a table cell."""
    if "interrupted_low_memory" in run:
        low = run["interrupted_low_memory"]
        return f"interrupted: {low['available_gib']} GiB available after {low['at_seconds']}s"
    if "killed_low_memory" in run:
        low = run["killed_low_memory"]
        return f"stopped: {low['available_gib']} GiB available after {low['at_seconds']}s"
    return str(run.get("status", "succeeded"))


def gate_cell(run: dict[str, Any]) -> str:
    """The second run's register step: seconds and what the gate decided."""
    if not ok(run):
        return outcome(run)
    seconds = fmt_s(run["step_seconds"].get("register"))
    gate = run.get("gate") or {}
    if gate.get("champion") is None:  # no production version to gate against
        return f"{seconds} s ({gate.get('reason', 'no gate')})"
    decision = "promoted" if gate.get("promote") else "production kept"
    return (
        f"{seconds} s ({decision}: {gate['improvement']:+.4f} in [{gate['low']:+.4f}, "
        f"{gate['high']:+.4f}], {gate['resamples']:,} resamples of {gate['units']:,} {gate['unit']})"
    )


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float] | None:
    """Least-squares ``y = a + b x`` and the log-log exponent; None with fewer than 2 points."""
    if len(xs) < 2 or any(y <= 0 for y in ys):
        return None
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    k = np.polyfit(np.log(xs), np.log(ys), 1)[0]
    return {"intercept": float(a), "slope": float(b), "loglog_exponent": float(k)}


def growth(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Slopes of wall time and memory against N over the Ns whose runs all succeeded."""
    done = [r for r in results if ok(r["rayline"][0]) and "seconds" in r["plain"]]
    xs = [float(r["rows"]) for r in done]
    series = {
        "rayline_seconds": [r["rayline"][0]["seconds"] for r in done],
        "plain_seconds": [r["plain"]["seconds"] for r in done],
        "rayline_machine_bytes": [r["rayline"][0]["machine_increase"] for r in done],
        "rayline_driver_peak_rss_bytes": [r["rayline"][0]["driver_peak_rss"] for r in done],
        "plain_peak_rss_bytes": [r["plain"]["peak_rss"] for r in done],
    }
    out: dict[str, Any] = {"rows": [int(x) for x in xs]}
    for key, ys in series.items():
        out[key] = linear_fit(xs, [float(y) for y in ys])
    if len(done) >= 2:
        rss = series["rayline_driver_peak_rss_bytes"]
        out["driver_peak_rss_growth_bytes"] = int(rss[-1] - rss[0])
    return out


def growth_lines(g: dict[str, Any]) -> list[str]:
    if len(g["rows"]) < 2:
        return ["Growth with N: needs two or more N whose runs succeeded."]
    span = f"{g['rows'][0]:,} to {g['rows'][-1]:,} rows"
    lines = [f"Growth with N (least squares over {span}; log-log exponent in brackets):"]
    for key, label in (("rayline_seconds", "rayline wall"), ("plain_seconds", "plain wall")):
        f = g[key]
        lines.append(
            f"- {label}: {f['slope'] * 1e6:,.1f} s per million rows + {f['intercept']:,.1f} s "
            f"fixed [{f['loglog_exponent']:.2f}]"
        )
    for key, label in (
        ("rayline_machine_bytes", "rayline machine memory at peak"),
        ("rayline_driver_peak_rss_bytes", "rayline driver peak RSS"),
        ("plain_peak_rss_bytes", "plain peak RSS"),
    ):
        f = g[key]
        lines.append(
            f"- {label}: {f['slope']:,.0f} bytes per row + {f['intercept'] / MB:,.0f} MB fixed "
            f"[{f['loglog_exponent']:.2f}]"
        )
    lines.append(
        f"- the driver's peak RSS grew by {g['driver_peak_rss_growth_bytes'] / MB:,.0f} MB "
        f"from {g['rows'][0]:,} to {g['rows'][-1]:,} rows"
    )
    return lines


def md_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )


STEPS = ("ingest", "split", "features", "train", "evaluate", "register")


def tables(results: list[dict[str, Any]]) -> list[str]:
    """The summary, rayline's steps and plain's phases as markdown tables."""
    summary = []
    for r in results:
        first, plain = r["rayline"][0], r["plain"]
        second = r["rayline"][1] if len(r["rayline"]) > 1 else None
        both = ok(first) and "seconds" in plain
        summary.append(
            [
                f"{r['rows']:,}",
                fmt_s(first["seconds"]) if ok(first) else outcome(first),
                fmt_s(plain.get("seconds")) if "seconds" in plain else outcome(plain),
                f"{first['seconds'] / plain['seconds']:.1f}x" if both else "-",
                fmt_mb(first["machine_increase"]),
                fmt_mb(first["driver_peak_rss"]),
                fmt_mb(plain.get("peak_rss")),
                f"{first['machine_increase'] / plain['peak_rss']:.1f}x" if both else "-",
                f"{fmt_auc(first.get('test_auc'))} / {fmt_auc(plain.get('test_auc'))}",
                gate_cell(second) if second is not None else "not run",
            ]
        )
    steps = []
    for r in results:
        for i, run in enumerate(r["rayline"]):
            s = run["step_seconds"]
            inside = sum(float(v) for v in s.values())
            steps.append(
                [
                    f"{r['rows']:,}",
                    "1" if i == 0 else "2 (gate vs production)",
                    *(fmt_s(s.get(k)) for k in STEPS),
                    fmt_s(run["seconds"] - inside) if s else "-",
                    fmt_s(run["seconds"]),
                    outcome(run),
                ]
            )
    phases = []
    for r in results:
        p = r["plain"]
        ph = p.get("phase_seconds", {})
        phases.append(
            [
                f"{r['rows']:,}",
                fmt_s(ph.get("read_split_encode")),
                fmt_s(ph.get("quantile_dmatrix_train")),
                fmt_s(ph.get("read_predict_auc")),
                fmt_s(p.get("seconds")),
                fmt_mb(p.get("peak_rss")),
                fmt_mb(p.get("machine_increase")),
                p.get("split", outcome(p)),
            ]
        )
    rates = []
    for r in results:
        first, p, n = r["rayline"][0], r["plain"], r["rows"]
        s, ph = first["step_seconds"], p.get("phase_seconds", {})
        rates.append(
            [
                f"{n:,}",
                *(fmt_rate(n, s.get(k)) for k in ("ingest", "split", "features", "train")),
                fmt_rate(n, first["seconds"]) if ok(first) else "-",
                fmt_bytes_per_row(first.get("machine_increase"), n),
                fmt_rate(n, ph.get("quantile_dmatrix_train")),
                fmt_rate(n, p.get("seconds")),
                fmt_bytes_per_row(p.get("peak_rss"), n),
            ]
        )
    return [
        md_table(
            [
                "rows",
                "rayline wall s",
                "plain wall s",
                "wall ratio",
                "rayline machine peak +MB",
                "rayline driver peak RSS MB",
                "plain peak RSS MB",
                "memory ratio",
                "test AUC rayline / plain",
                "2nd run: register s (gate)",
            ],
            summary,
        ),
        md_table(
            ["rows", "rayline run", *STEPS, "outside the steps", "wall", "status"],
            steps,
        ),
        md_table(
            [
                "rows",
                "plain: read, split, encode s",
                "QuantileDMatrix + train s",
                "read test, predict, AUC s",
                "wall s",
                "peak RSS MB",
                "machine peak +MB",
                "rows used",
            ],
            phases,
        ),
        "Rows per second (thousands of the N rows per second of each step) and memory per row:",
        md_table(
            [
                "rows",
                "rayline ingest",
                "split",
                "features",
                "train",
                "rayline whole run",
                "rayline machine B/row",
                "plain QuantileDMatrix + train",
                "plain whole run",
                "plain peak RSS B/row",
            ],
            rates,
        ),
    ]


def fmt_rate(rows: int, seconds: float | None) -> str:
    return f"{rows / seconds / 1e3:,.0f}k" if seconds else "-"


def fmt_bytes_per_row(total: float | None, rows: int) -> str:
    return f"{total / rows:,.0f}" if total else "-"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Wall time and peak memory against N, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in results if ok(r["rayline"][0]) and "seconds" in r["plain"]]
    if not done:
        return
    n = [r["rows"] for r in done]
    fig, (wall, mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    wall.plot(n, [r["rayline"][0]["seconds"] for r in done], "o-", label="rayline run")
    wall.plot(n, [r["plain"]["seconds"] for r in done], "s-", label="plain pyarrow + xgboost")
    wall.set_ylabel("wall seconds")
    mem.plot(
        n,
        [r["rayline"][0]["machine_increase"] / GIB for r in done],
        "o-",
        label="rayline: machine memory at peak (+)",
    )
    mem.plot(
        n, [r["rayline"][0]["driver_peak_rss"] / GIB for r in done], "^--", label="rayline driver"
    )
    mem.plot(n, [r["plain"]["peak_rss"] / GIB for r in done], "s-", label="plain: peak RSS")
    mem.set_ylabel("peak memory, GiB")
    for ax in (wall, mem):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("synthetic:ctr, XGBoost binary: rayline vs plain, log-log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(out: Path, config: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """scale.json, scale.md and scale.png under ``out``; the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    g = growth(results)
    (out / "scale.json").write_text(
        json.dumps({"config": config, "results": results, "growth": g}, indent=1)
    )
    intro = (
        f"synthetic:ctr written as Parquet files of {config['file_rows']:,} rows (13 dense "
        f"counts, 26 string categoricals), XGBoost binary:logistic {PARAMS}, "
        f"{config['rounds']} rounds, no early stopping. rayline: `rayline run` (its own local "
        f"Ray), {config['workers']} Ray Train workers of 0.5 CPU, the categoricals hashed to "
        f"{HASH_BUCKETS} buckets, random split 0.8/0.1/0.1; the second run into the same storage "
        "gates against the first run's production version. plain: pyarrow reads the same files, "
        f"the same hash buckets, xgboost QuantileDMatrix (categoricals as XGBoost categoricals), "
        f"{config['threads']} threads, trained on rayline's train rows and scored on its test "
        "rows (see 'rows used'). Memory: rayline's is the machine's memory in use "
        "(MemTotal - MemAvailable) at the peak minus before the run (Ray's object store counted "
        "once), and the driver's (the `rayline` process's) peak RSS; plain's is its process's "
        "peak RSS. Ratios: rayline over plain. Sampled every 0.2 s; one run each, one after the "
        f"other, on this machine ({os.cpu_count()} CPUs, {meminfo()['MemTotal'] / GIB:.0f} GiB)."
    )
    md = "\n\n".join(
        [
            "# Whole-run cost against N: rayline vs plain pyarrow + XGBoost",
            f"`{config['command']}`",
            intro,
            *tables(results),
            "\n".join(growth_lines(g)),
        ]
    )
    (out / "scale.md").write_text(md + "\n")
    plot(results, out / "scale.png")
    return md


SETTINGS = ("workers", "rounds", "threads", "file_rows", "params", "hash_buckets")


def earlier_results(out: Path, config: dict[str, Any], rows: set[int]) -> list[dict[str, Any]]:
    """Results of an earlier invocation (``out``/scale.json) for N not being run now, when it
    used the same settings; the command lines of both are kept in the config."""
    path = out / "scale.json"
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    old = doc.get("config", {})
    differ = [k for k in SETTINGS if old.get(k) != config[k]]
    if differ:
        raise SystemExit(f"--append: {path} was made with other settings ({', '.join(differ)})")
    kept = [r for r in doc.get("results", []) if int(r["rows"]) not in rows]
    if kept:
        config["command"] = f"{old.get('command')}; {config['command']}"
        config["rows"] = sorted({*config["rows"], *(int(r["rows"]) for r in kept)})
        shown = ", ".join(f"{int(r['rows']):,}" for r in kept)
        print(f"--append: keeping the results for {shown} rows from {path}")
    return kept


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS))
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers (0.5 CPU each)")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2, help="plain XGBoost's threads")
    ap.add_argument(
        "--gate-rows",
        type=int,
        nargs="*",
        default=None,
        help="the N at which rayline runs a second time to gate against production "
        "(default: every N; none: no second runs)",
    )
    ap.add_argument("--file-rows", type=int, default=FILE_ROWS, help="rows per Parquet file")
    ap.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "rayline-scale")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--keep-storage", action="store_true", help="keep each N's storage folder")
    ap.add_argument(
        "--append",
        action="store_true",
        help="keep the results for other N from --out's scale.json when its settings match",
    )
    ap.add_argument(
        "--min-available-gib",
        type=float,
        default=2.0,
        help="interrupt a run when the machine's available memory drops below this",
    )
    args = ap.parse_args(argv)
    if any(n < 1_000 for n in args.rows):
        ap.error("--rows: every N must be at least 1000")
    if args.file_rows < 1:
        ap.error("--file-rows must be at least 1")
    gate_rows = set(args.rows if args.gate_rows is None else args.gate_rows)
    min_available = int(args.min_available_gib * GIB)
    config = {
        "rows": args.rows,
        "workers": args.workers,
        "rounds": args.rounds,
        "threads": args.threads,
        "file_rows": args.file_rows,
        "gate_rows": sorted(gate_rows),
        "params": PARAMS,
        "hash_buckets": HASH_BUCKETS,
        "min_available_gib": args.min_available_gib,
        "command": "flock /tmp/rayline-ray.lock .venv/bin/python benchmarks/scale.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    check_no_ray("before the benchmark")
    args.scratch.mkdir(parents=True, exist_ok=True)
    logs = args.scratch / "logs"
    logs.mkdir(exist_ok=True)
    results = earlier_results(args.out, config, set(args.rows)) if args.append else []
    stopped_at: int | None = None  # the N whose rayline run ran out of memory
    for rows in sorted(args.rows):
        print(f"{rows:,} rows", flush=True)
        if stopped_at is not None:
            print(f"  skipped: rayline ran out of memory at {stopped_at:,} rows")
            continue
        data, info = ensure_data(args.scratch, rows, args.file_rows, SEED)
        storage = args.scratch / f"storage-{rows}"
        if storage.exists():
            shutil.rmtree(storage)
        storage.mkdir()
        spec = storage / "spec.yaml"
        spec.write_text(yaml.safe_dump(spec_doc(data, storage, args.workers, args.rounds)))
        runs = []
        for k in (1, 2) if rows in gate_rows else (1,):
            what = "gates against production" if k == 2 else "first version"
            print(f"  rayline run {k} ({what})", flush=True)
            run = rayline_run(
                spec, storage, logs / f"rayline-{rows}-run{k}.log", min_available, f"run {k}"
            )
            peak = f"machine +{fmt_mb(run['machine_increase'])} MB, driver {fmt_mb(run['driver_peak_rss'])} MB"
            print(f"  rayline run {k}: {outcome(run)} in {run['seconds']:.1f}s, {peak}", flush=True)
            runs.append(run)
            if not ok(run):
                break
        first = runs[0]
        if "interrupted_low_memory" in first:
            stopped_at = rows
        elif not ok(first):
            print(f"  rayline failed: {first.get('error')}", flush=True)
        split_from = str(Path(first["run_dir"]) / "prepared") if first.get("run_dir") else None
        print("  plain pyarrow + xgboost", flush=True)
        plain = plain_run(data, rows, split_from, args.rounds, args.threads, min_available)
        if "seconds" in plain:
            print(
                f"  plain: {plain['seconds']:.1f}s, peak RSS {fmt_mb(plain['peak_rss'])} MB, "
                f"test AUC {plain['test_auc']:.4f} ({plain['split']})",
                flush=True,
            )
        else:
            print(f"  plain: {outcome(plain)}", flush=True)
        results.append({"rows": rows, "data": info, "rayline": runs, "plain": plain})
        results.sort(key=lambda r: int(r["rows"]))
        if not args.keep_storage:
            shutil.rmtree(storage, ignore_errors=True)
        write_results(args.out, config, results)
    md = write_results(args.out, config, results)
    print()
    print(md)
    print(f"\nwritten: {args.out / 'scale.md'}, scale.json, scale.png; data kept in {args.scratch}")
    failed = [r["rows"] for r in results if not ok(r["rayline"][0])]
    return 1 if failed and stopped_at is None else 0


if __name__ == "__main__":
    raise SystemExit(main())

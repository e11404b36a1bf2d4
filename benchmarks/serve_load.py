"""Load test: rayline's endpoint vs. a minimal Ray Serve deployment vs. bare FastAPI + uvicorn.

All serve the same model bundles through the same Predictor on 127.0.0.1:
- rayline: the real application (FastAPI ingress, request checks, @serve.batch, autoscaling off
  here: one replica, so the comparison is per replica), its prediction log on (the default);
- rayline_no_log: the same with ``serve.prediction_log.share: 0`` (what logging costs);
- minimal Serve: what a user writes by hand, one class with ``__call__``, no batching;
- bare FastAPI: one uvicorn process that loads the bundles and predicts request by request.

Serve's ingress is fixed when Ray starts, so each ingress (``serve.ingress``: Serve's HTTP proxy,
or HAProxy in front of replicas serving HTTP themselves) runs in its own phase: a fresh local Ray
in a child process, rayline and the minimal deployment behind that ingress, and bare FastAPI
measured again in the same phase (same background load). A lean closed-loop client
(benchmarks/http_load.py) sends /predict with 1 row and /rank with 100 candidates at 1, 8, 32
and 128 concurrent clients for a fixed time each: throughput and p50/p99 latency. The client
shares the machine's cores with the servers: compare ratios, not absolutes.

    python benchmarks/serve_load.py [--seconds 8] [--concurrency 1 8 32 128]
        [--ingress proxy haproxy] [--log-repeats N] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from http_load import measure

ROOT = Path(__file__).resolve().parents[1]
BARE_APP = """
import sys
import pandas as pd
from fastapi import FastAPI, Request
from components.predictor import Predictor

predictors = {"predict": Predictor.load(sys.argv[1]), "rank": Predictor.load(sys.argv[2])}
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    scores = predictors["predict"].predict(pd.DataFrame(body["rows"]))
    return {"scores": scores.tolist()}

@app.post("/rank")
async def rank(request: Request):
    body = await request.json()
    scores = predictors["rank"].predict(pd.DataFrame(body["candidates"]))
    order = (-scores).argsort(kind="stable")
    return {"ranked": [{"index": int(i), "score": float(scores[i])} for i in order]}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bodies(predict_bundle: str, rank_bundle: str) -> dict[str, bytes]:
    from components.predictor import Predictor
    from pipelines.deploy import example_row

    row = example_row(Predictor.load(predict_bundle).transform)
    rank_row = example_row(Predictor.load(rank_bundle).transform)
    rng = np.random.default_rng(0)
    cands = [
        {
            k: (float(v) + float(rng.normal()) if isinstance(v, float) else v)
            for k, v in rank_row.items()
        }
        for _ in range(100)
    ]
    return {
        "predict": json.dumps({"rows": [row]}).encode(),
        "rank": json.dumps({"candidates": cands}).encode(),
    }


def train_models(storage: str) -> tuple[str, str]:
    """A 100-tree binary model and a 100-tree ranking model, trained by rayline itself."""
    from components.registry import Registry
    from pipelines.cli import main

    common = [
        "--storage",
        storage,
        "serve.enabled=false",
        "models.0.num_boost_round=100",
        "models.0.early_stopping_rounds=null",
        "models.0.params.max_depth=6",
    ]
    assert (
        main(
            [
                "run",
                str(ROOT / "pipelines/configs/tiny/classification.yaml"),
                *common,
                "data.source.params.rows=20000",
                "models.0.scaling.num_workers=0",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                str(ROOT / "pipelines/configs/tiny/ranking.yaml"),
                *common,
                "data.source.params.rows=20000",
            ]
        )
        == 0
    )
    reg = Registry(storage)
    return reg.resolve("tiny-classification").path, reg.resolve("tiny-ranking").path


def minimal_serve_app(predict_bundle: str, rank_bundle: str) -> Any:
    """What a user would write by hand: one deployment, ``__call__``, no batching."""
    import pandas as pd
    from ray import serve
    from starlette.requests import Request

    from components.predictor import Predictor

    @serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.5})
    class Minimal:
        def __init__(self, predict_path: str, rank_path: str) -> None:
            self.p = Predictor.load(predict_path)
            self.r = Predictor.load(rank_path)

        async def __call__(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            if request.url.path.endswith("/rank"):
                s = self.r.predict(pd.DataFrame(body["candidates"]))
                order = (-s).argsort(kind="stable")
                return {"ranked": [{"index": int(i), "score": float(s[i])} for i in order]}
            return {"scores": self.p.predict(pd.DataFrame(body["rows"])).tolist()}

    return Minimal.bind(predict_bundle, rank_bundle)


SERVERS = ("rayline", "minimal_serve", "bare_fastapi")


def run_phase(
    ingress: str,
    storage: str,
    bare_url: str,
    payload: dict[str, bytes],
    concurrency: list[int],
    seconds: float,
    log_repeats: int = 0,
) -> list[dict[str, Any]]:
    """One fresh local Ray serving through ``ingress``; every cell measured against it, then
    ``log_repeats`` alternating pairs of logging on / off per cell."""
    from pipelines.cluster import ingress_env

    os.environ.update(ingress_env(ingress))  # before Ray starts: Serve reads it at start-up
    import ray
    from ray import serve

    from components.registry import Registry
    from pipelines.deploy import deploy, wait_healthy
    from serve.config import ServeArgs

    reg = Registry(storage)
    predict_bundle = reg.resolve("tiny-classification").path
    rank_bundle = reg.resolve("tiny-ranking").path
    # log_to_driver off: this process is also the load client, and streaming every replica's
    # access log to it would take CPU from the client
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    results: list[dict[str, Any]] = []
    try:
        common = {
            "storage": storage,
            "port": 8000,
            "min_replicas": 1,
            "max_replicas": 1,
            "num_cpus": 0.5,
            "auth": "none",
            "api_key_env": None,
            "ingress": ingress,
        }
        for model in ("tiny-classification", "tiny-ranking"):
            info = deploy(ServeArgs.model_validate({**common, "model": model}))
            assert info["ingress"] == ingress, f"asked for {ingress}, Serve uses {info['ingress']}"
            # the same application without its prediction log (on by default): what logging costs
            off = {"route_prefix": f"/no-log/{model}", "prediction_log": {"share": 0}}
            deploy(ServeArgs.model_validate({**common, "model": model, **off}))
        serve.run(
            minimal_serve_app(predict_bundle, rank_bundle), name="minimal", route_prefix="/minimal"
        )
        base = "http://127.0.0.1:8000"
        wait_healthy(f"{base}/tiny-classification", None, 60)
        targets = {
            "rayline": {
                "predict": f"{base}/tiny-classification/predict",
                "rank": f"{base}/tiny-ranking/rank",
            },
            "rayline_no_log": {
                "predict": f"{base}/no-log/tiny-classification/predict",
                "rank": f"{base}/no-log/tiny-ranking/rank",
            },
            "minimal_serve": {"predict": f"{base}/minimal/predict", "rank": f"{base}/minimal/rank"},
            "bare_fastapi": {"predict": f"{bare_url}/predict", "rank": f"{bare_url}/rank"},
        }
        for endpoint_name in ("predict", "rank"):
            for c in concurrency:
                for server, urls in targets.items():
                    m = measure(urls[endpoint_name], payload[endpoint_name], c, seconds)
                    row = {
                        "endpoint": endpoint_name,
                        "concurrency": c,
                        "server": server,
                        "ingress": ingress,
                        **m,
                    }
                    results.append(row)
                    print(
                        f"{ingress:8} {endpoint_name:8} c={c:<4} {server:14} {m['rps']:8.1f} req/s"
                        f"  p50 {m['p50_ms']:7.1f} ms  p99 {m['p99_ms']:7.1f} ms  errors "
                        f"{m['errors']} {m['first_error']}",
                        flush=True,
                    )
        for endpoint_name in ("predict", "rank"):
            for c in concurrency:
                for i in range(log_repeats):
                    # on/off, then off/on: drift in the machine's load falls on both alike
                    order = ("rayline", "rayline_no_log")[:: 1 if i % 2 == 0 else -1]
                    for server in order:
                        m = measure(targets[server][endpoint_name], payload[endpoint_name], c,
                                    seconds)  # fmt: skip
                        results.append({"endpoint": endpoint_name, "concurrency": c,
                                        "server": server, "ingress": ingress, "repeat": i, **m})  # fmt: skip
                        print(f"{ingress:8} {endpoint_name:8} c={c:<4} {server:14} repeat {i} "
                              f"{m['rps']:8.1f} req/s", flush=True)  # fmt: skip
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def log_cost_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per ingress, endpoint and clients, the repeated logging on / off pairs' req/s
    and the median of their ratios."""
    cells: dict[tuple[str, str, int], dict[int, dict[str, float]]] = {}
    for r in results:
        if "repeat" in r:
            key = (r["ingress"], r["endpoint"], r["concurrency"])
            cells.setdefault(key, {}).setdefault(r["repeat"], {})[r["server"]] = r["rps"]
    if not cells:
        return ""
    lines = [
        "| ingress | endpoint | clients | pairs | req/s on (median) | req/s off (median) "
        "| on / off per pair | median on / off |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (ingress, endpoint, c), reps in sorted(cells.items()):
        pairs = [(v["rayline"], v["rayline_no_log"]) for v in reps.values() if len(v) == 2]
        ratios = [on / off for on, off in pairs]
        lines.append(
            f"| {ingress} | /{endpoint} | {c} | {len(pairs)} "
            f"| {np.median([p[0] for p in pairs]):.1f} | {np.median([p[1] for p in pairs]):.1f} "
            f"| {', '.join(f'{x:.2f}' for x in ratios)} | {np.median(ratios):.3f} |"
        )
    return "\n".join(lines) + "\n"


def wait_for(url: str, body: bytes, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if measure(url, body, 1, 0.2)["requests"]:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per cell, with ratios to bare FastAPI (same phase) and to the minimal
    Serve deployment behind Serve's proxy (what a user gets by default)."""
    index = {(r["ingress"], r["endpoint"], r["concurrency"], r["server"]): r for r in results}
    lines = [
        "| endpoint | clients | server | ingress | req/s | p50 ms | p99 ms | errors "
        "| vs bare FastAPI | vs minimal Serve (proxy) | log on / off |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        bare = index[(r["ingress"], r["endpoint"], r["concurrency"], "bare_fastapi")]["rps"]
        minimal = index.get(("proxy", r["endpoint"], r["concurrency"], "minimal_serve"))
        vs_minimal = f"{r['rps'] / minimal['rps']:.2f}" if minimal else "-"
        ingress = "-" if r["server"] == "bare_fastapi" else r["ingress"]
        off = index.get((r["ingress"], r["endpoint"], r["concurrency"], "rayline_no_log"))
        vs_off = f"{r['rps'] / off['rps']:.2f}" if off and r["server"] == "rayline" else "-"
        lines.append(
            f"| /{r['endpoint']} | {r['concurrency']} | {r['server']} | {ingress} "
            f"| {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} "
            f"| {r['rps'] / bare:.2f} | {vs_minimal} | {vs_off} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seconds", type=float, default=8.0, help="seconds per measurement (default 8)"
    )
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument(
        "--ingress",
        nargs="+",
        choices=["proxy", "haproxy"],
        default=["proxy", "haproxy"],
        help="Serve ingresses to measure, one fresh Ray each (default: both)",
    )
    ap.add_argument(
        "--log-repeats",
        type=int,
        default=0,
        help="after the cells, this many alternating pairs of logging on / off per cell "
        "(their median ratio is what logging costs; one pair is too noisy on a small machine)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--phase", help=argparse.SUPPRESS)  # internal: child process of one ingress
    ap.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.phase:  # the child: storage, bare URL and bodies come from the parent
        state = json.loads(args.state.read_text())
        payload = {k: v.encode() for k, v in state["payload"].items()}
        results = run_phase(
            args.phase, state["storage"], state["bare_url"], payload, args.concurrency,
            args.seconds, args.log_repeats,
        )  # fmt: skip
        args.state.with_suffix(f".{args.phase}.json").write_text(json.dumps(results))
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    import ray

    from components.registry import Registry
    from pipelines.cluster import ingress_env

    storage = tempfile.mkdtemp(prefix="rayline-serve-bench-")
    os.environ.update(ingress_env("proxy"))
    ray.init(num_cpus=4, include_dashboard=False)
    try:
        train_models(storage)
    finally:
        ray.shutdown()
    reg = Registry(storage)
    predict_bundle = reg.resolve("tiny-classification").path
    rank_bundle = reg.resolve("tiny-ranking").path
    payload = bodies(predict_bundle, rank_bundle)
    bare_port = free_port()
    app_file = Path(storage) / "bare_app.py"
    app_file.write_text(BARE_APP)
    bare = subprocess.Popen(
        [sys.executable, str(app_file), predict_bundle, rank_bundle, str(bare_port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    bare_url = f"http://127.0.0.1:{bare_port}"
    results: list[dict[str, Any]] = []
    try:
        wait_for(f"{bare_url}/predict", payload["predict"], 60)
        state = Path(storage) / "state.json"
        state.write_text(
            json.dumps(
                {
                    "storage": storage,
                    "bare_url": bare_url,
                    "payload": {k: v.decode() for k, v in payload.items()},
                }
            )
        )
        for ingress in args.ingress:
            cmd = [sys.executable, __file__, "--phase", ingress, "--state", str(state)]
            cmd += ["--seconds", str(args.seconds), "--concurrency", *map(str, args.concurrency)]
            cmd += ["--log-repeats", str(args.log_repeats)]
            subprocess.run(cmd, check=True, cwd=ROOT)
            results += json.loads(state.with_suffix(f".{ingress}.json").read_text())
    finally:
        bare.terminate()
    (args.out / "serve_load.json").write_text(
        json.dumps({"seconds": args.seconds, "cpus": os.cpu_count(), "results": results}, indent=1)
    )
    plain = [r for r in results if "repeat" not in r]
    markdown = table(plain)
    cost = log_cost_table(results)
    if cost:
        markdown += "\nThe prediction log's cost, repeated pairs:\n\n" + cost
    (args.out / "serve_load.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

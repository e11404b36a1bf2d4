"""Load test: rayline's endpoint vs. a minimal Ray Serve deployment vs. bare FastAPI + uvicorn.

All three serve the same model bundle through the same Predictor on 127.0.0.1:
- rayline: the real application (FastAPI ingress, request checks, @serve.batch, autoscaling off
  here: one replica, so the comparison is per replica);
- minimal Serve: what a user writes by hand, one class with ``__call__``, no batching;
- bare FastAPI: one uvicorn process that loads the bundle and predicts request by request.

A bounded async HTTP client (httpx) sends /predict with 1 row and /rank with 100 candidates at
1, 8, 32 and 128 concurrent clients, for a fixed time each, and records throughput and p50/p99
latency. The client shares the machine's cores with the servers: compare ratios, not absolutes.

    python benchmarks/serve_load.py [--seconds 8] [--concurrency 1 8 32 128] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

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


async def _worker(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    until: float,
    lat: list[float],
    errors: list[int],
) -> None:
    headers = {"content-type": "application/json"}
    while time.perf_counter() < until:
        start = time.perf_counter()
        try:
            r = await client.post(url, content=body, headers=headers)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            lat.append(time.perf_counter() - start)
        else:
            errors.append(1)


async def measure(url: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for _ in range(3):  # warm-up
            await client.post(url, content=body, headers={"content-type": "application/json"})
        lat: list[float] = []
        errors: list[int] = []
        start = time.perf_counter()
        until = start + seconds
        await asyncio.gather(
            *[_worker(client, url, body, until, lat, errors) for _ in range(concurrency)]
        )
        elapsed = time.perf_counter() - start
    arr = np.asarray(lat) * 1000
    return {
        "rps": len(lat) / elapsed,
        "p50_ms": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
        "p99_ms": float(np.percentile(arr, 99)) if len(arr) else float("nan"),
        "requests": len(lat),
        "errors": len(errors),
    }


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seconds", type=float, default=8.0, help="seconds per measurement (default 8)"
    )
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import ray
    from ray import serve

    from pipelines.deploy import deploy, wait_healthy
    from serve.config import ServeArgs

    storage = tempfile.mkdtemp(prefix="rayline-serve-bench-")
    ray.init(num_cpus=4, include_dashboard=True)
    bare = None
    try:
        predict_bundle, rank_bundle = train_models(storage)
        payload = bodies(predict_bundle, rank_bundle)
        port = 8000
        common = {
            "storage": storage,
            "port": port,
            "min_replicas": 1,
            "max_replicas": 1,
            "num_cpus": 0.5,
            "api_key_env": None,
            "max_ongoing_requests": 64,
            "max_batch_size": 32,
            "target_ongoing_requests": 32,
        }
        deploy(ServeArgs.model_validate({**common, "model": "tiny-classification"}))
        deploy(ServeArgs.model_validate({**common, "model": "tiny-ranking"}))
        serve.run(
            minimal_serve_app(predict_bundle, rank_bundle), name="minimal", route_prefix="/minimal"
        )
        bare_port = free_port()
        app_file = Path(storage) / "bare_app.py"
        app_file.write_text(BARE_APP)
        bare = subprocess.Popen(
            [sys.executable, str(app_file), predict_bundle, rank_bundle, str(bare_port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        base = f"http://127.0.0.1:{port}"
        targets = {
            "rayline": {
                "predict": f"{base}/tiny-classification/predict",
                "rank": f"{base}/tiny-ranking/rank",
            },
            "minimal_serve": {"predict": f"{base}/minimal/predict", "rank": f"{base}/minimal/rank"},
            "bare_fastapi": {
                "predict": f"http://127.0.0.1:{bare_port}/predict",
                "rank": f"http://127.0.0.1:{bare_port}/rank",
            },
        }
        wait_healthy(f"{base}/tiny-classification", None, 60)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                httpx.post(
                    targets["bare_fastapi"]["predict"],
                    content=payload["predict"],
                    headers={"content-type": "application/json"},
                    timeout=5,
                )
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        results: list[dict[str, Any]] = []
        for endpoint_name in ("predict", "rank"):
            for c in args.concurrency:
                for server, urls in targets.items():
                    m = asyncio.run(
                        measure(urls[endpoint_name], payload[endpoint_name], c, args.seconds)
                    )
                    results.append(
                        {"endpoint": endpoint_name, "concurrency": c, "server": server, **m}
                    )
                    print(
                        f"{endpoint_name:8} c={c:<4} {server:14} {m['rps']:8.1f} req/s  p50 {m['p50_ms']:7.1f} ms"
                        f"  p99 {m['p99_ms']:7.1f} ms  errors {m['errors']}",
                        flush=True,
                    )
    finally:
        if bare is not None:
            bare.terminate()
        serve.shutdown()
        ray.shutdown()
    table = [
        "| endpoint | clients | server | req/s | p50 ms | p99 ms | errors | req/s vs bare | req/s vs minimal Serve |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    index = {(r["endpoint"], r["concurrency"], r["server"]): r for r in results}
    for r in results:
        bare_r = index[(r["endpoint"], r["concurrency"], "bare_fastapi")]["rps"]
        mini_r = index[(r["endpoint"], r["concurrency"], "minimal_serve")]["rps"]
        table.append(
            f"| /{r['endpoint']} | {r['concurrency']} | {r['server']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['errors']} | {r['rps'] / bare_r:.2f} | {r['rps'] / mini_r:.2f} |"
        )
    (args.out / "serve_load.json").write_text(
        json.dumps({"seconds": args.seconds, "cpus": os.cpu_count(), "results": results}, indent=1)
    )
    (args.out / "serve_load.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

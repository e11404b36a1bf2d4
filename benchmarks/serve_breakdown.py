"""Where a request's time goes inside a replica, without Ray or HTTP: JSON + pydantic parsing,
request checks and frame building, the feature transform, the model, and the response.

    python benchmarks/serve_breakdown.py BUNDLE_DIR [--rows 1 100] [--repeat 2000]

BUNDLE_DIR is a registered version (e.g. storage/registry/ranking-demo/1). Prints microseconds
per request for each stage; compare with the HTTP numbers of serve_load.py to see what the proxy
and the network stack add.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from components.predictor import Predictor
from pipelines.deploy import example_row
from serve.schemas import PredictRequest
from serve.scoring import Limits, ModelScorer, body_json


def per_call_us(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e6


def measure_stages(
    predictor: Predictor, scorer: ModelScorer, raw: bytes, repeat: int
) -> dict[str, float]:
    """Microseconds per request for each stage of the replica's scoring path."""
    body = PredictRequest.model_validate_json(raw)
    frame = scorer.frame(body.rows, "rows", 10_000)
    scored = predictor.score(frame)
    transform_us = per_call_us(lambda: predictor.transform.transform(frame), repeat)
    return {
        "parse": per_call_us(lambda: PredictRequest.model_validate_json(raw), repeat),
        "frame": per_call_us(lambda: scorer.frame(body.rows, "rows", 10_000), repeat),
        "transform": transform_us,
        # score() = transform + booster (+ guardrails); the model's share is the difference
        "model": per_call_us(lambda: predictor.score(frame), repeat) - transform_us,
        "response": per_call_us(lambda: body_json(scorer.predict_response(scored)), repeat),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("bundle")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args(argv)
    predictor = Predictor.load(args.bundle, threads=1)  # as a one-CPU replica loads it
    scorer = ModelScorer(predictor, "bench", 1, Limits())
    base = example_row(predictor.transform)
    rng = np.random.default_rng(0)
    print(
        "| rows | json+pydantic µs | checks+frame µs | transform µs | model µs | response µs | total µs |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.rows:
        rows = [
            {k: (v + float(rng.normal()) if isinstance(v, float) else v) for k, v in base.items()}
            for _ in range(n)
        ]
        stages = measure_stages(predictor, scorer, json.dumps({"rows": rows}).encode(), args.repeat)
        cells = " | ".join(f"{v:.0f}" for v in stages.values())
        print(f"| {n} | {cells} | {sum(stages.values()):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Request checks in serve.scoring on hostile bodies (no Ray): error entries are capped inside
the row loop, scanning stops early, numbers too large for a float are a 422, and GET /model's
answer is built once at load with lineage a client may see."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from components import bundle
from components.predictor import Predictor
from serve.schemas import PredictRequest, RankRequest
from serve.scoring import MAX_ERRORS, Limits, ModelScorer, RequestError, body_json
from tests import bundles

FRAME = pd.DataFrame({"age": [30.0, 12.0], "clicks": [3.0, 0.0], "country": ["us", "de"]})
LINEAGE = {
    "pipeline": "p",
    "run_id": "20260101-000000.000-abcd",
    "run_dir": "/home/me/secret/runs/p/20260101",
    "data_fingerprints": {"all": "ab" * 32},
    "spec_sha256": "cd" * 32,
    "git_commit": "ef" * 20,
    "packages": {"python": "3.11.7"},
    "ray_job_id": "01000000",
    "created_at": "2026-01-01T00:00:00+00:00",
    "command": "rayline run spec.yaml tracking.mlflow_uri=https://user:password@host",
}
METRICS = {
    "selection_metric": "auc",
    "test": {"auc": 0.9},
    "data": {
        "rows_read": 10,
        "rows_used": 9,
        "rows_quarantined": 1,
        "by_rule": {"r": 1},
        "quarantine": ["/home/me/secret/quarantine"],
        "skipped": ["all: _private.csv (starts with _)"],
        "fingerprints": {"all": "ab" * 32},
        "inputs": 2,
    },
}


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    transform = bundles.features(FRAME, numeric=("age", "clicks"), categorical=("country",))
    doc = {"name": "r", "rules": [{"name": "us", "when": "country == 'us'", "score": 0.9}]}
    doc["default"] = {"score": 0.1}
    contents = bundles.rules_contents("binary", doc, transform)
    contents = dataclasses.replace(
        contents,
        extra={
            "metrics.json": json.dumps(METRICS).encode(),
            "lineage.json": json.dumps(LINEAGE).encode(),
        },
    )
    return bundles.write(tmp_path_factory.mktemp("b") / "bundle", contents)


@pytest.fixture()
def scorer(bundle_path: str) -> ModelScorer:
    return ModelScorer(Predictor.load(bundle_path), "m", 1, Limits())


def _refused(call: object) -> tuple[list[dict], float]:
    started = time.perf_counter()
    with pytest.raises(RequestError) as e:
        call()  # type: ignore[operator]
    return e.value.detail, time.perf_counter() - started


def _row(**extra: object) -> dict[str, object]:
    return {"age": 1.0, "clicks": 2.0, "country": "us", **extra}


def test_a_3mb_row_of_unknown_keys_gets_a_short_422_quickly(scorer: ModelScorer) -> None:
    """Before: one entry per key (250,001 entries, 23.5 MB, ~2.7 s for a 3.4 MB body)."""
    row = _row(**{f"unknown_feature_{i:06d}": 0 for i in range(110_000)})
    raw = json.dumps({"rows": [row]}).encode()
    assert len(raw) >= 3_000_000
    rows = PredictRequest.model_validate_json(raw).rows
    detail, seconds = _refused(lambda: scorer.frame(rows, "rows", 1000))
    answer = body_json({"detail": detail})
    print(
        f"\n3 MB body of unknown keys: {len(raw):,} bytes -> 422 with {len(detail)} entries, "
        f"{len(answer):,} bytes, checked in {seconds * 1000:.2f} ms"
    )
    assert len(detail) == MAX_ERRORS + 1 and len(answer) < 5_000
    assert detail[0] == {
        "loc": ["body", "rows", 0, "unknown_feature_000000"],
        "msg": "unknown feature 'unknown_feature_000000'",
        "type": "extra_forbidden",
    }
    assert detail[-1]["type"] == "too_many_errors"
    assert f"... and {110_000 - MAX_ERRORS} more problem(s) not listed" in detail[-1]["msg"]


def test_many_bad_rows_stop_the_scan_early(scorer: ModelScorer) -> None:
    rows = [_row(colour=1) for _ in range(1000)]
    detail, seconds = _refused(lambda: scorer.frame(rows, "rows", 1000))
    print(f"\n1000 rows with an unknown key: {len(detail)} entries in {seconds * 1000:.2f} ms")
    assert len(detail) == MAX_ERRORS + 1
    assert [d["loc"][2] for d in detail[:-1]] == list(range(MAX_ERRORS))
    assert "rows 20 to 999 not checked" in detail[-1]["msg"]


def test_missing_and_unknown_in_one_row_and_few_errors_are_listed_whole(
    scorer: ModelScorer,
) -> None:
    rows = [{"age": 1.0, "colour": "red", "size": 3}]
    detail, _ = _refused(lambda: scorer.frame(rows, "rows", 10))
    assert [d["msg"] for d in detail] == [
        "missing feature(s) ['clicks', 'country']",
        "unknown feature 'colour'",
        "unknown feature 'size'",
    ]


def test_long_names_and_values_are_cut_in_messages(scorer: ModelScorer) -> None:
    name = "k" * 100_000
    detail, _ = _refused(lambda: scorer.frame([_row(**{name: 1})], "rows", 10))
    assert len(body_json({"detail": detail})) < 1_000
    detail, _ = _refused(lambda: scorer.frame([_row(age="x" * 100_000)], "rows", 10))
    assert "is numeric" in detail[0]["msg"] and len(detail[0]["msg"]) < 200


@pytest.mark.parametrize("value", [10**400, -(10**309), 2**1024])
def test_an_integer_beyond_the_float_range_is_a_422_naming_the_field(
    scorer: ModelScorer, value: int
) -> None:
    """Before: np.asarray(..., float64) raised OverflowError, an HTTP 500."""
    raw = f'{{"rows": [{{"age": {value}, "clicks": 1, "country": "us"}}]}}'
    rows = PredictRequest.model_validate_json(raw).rows
    detail, _ = _refused(lambda: scorer.frame(rows, "rows", 10))
    assert detail == [
        {
            "loc": ["body", "rows", 0, "age"],
            "msg": detail[0]["msg"],
            "type": "float_out_of_range",
        }
    ]
    assert "'age' is out of range for a 64-bit float" in detail[0]["msg"]
    assert len(detail[0]["msg"]) < 120  # the number is not echoed
    # the largest integers that fit still score
    ok = scorer.frame([_row(age=int(1.7e308), clicks=-(10**300))], "rows", 10)
    assert ok["age"][0] == pytest.approx(1.7e308)


def test_unknown_query_features_are_checked_once_not_per_candidate(scorer: ModelScorer) -> None:
    query = {f"q{i}": 0 for i in range(200_000)}
    body = RankRequest(query=query, candidates=[_row()] * 1000)
    detail, seconds = _refused(lambda: scorer.merge_query(body.query, body.candidates))
    print(f"\nquery with 200,000 unknown keys x 1000 candidates: {seconds * 1000:.2f} ms")
    assert len(detail) == MAX_ERRORS + 1 and detail[0]["loc"] == ["body", "query", "q0"]
    assert "199980 more" in detail[-1]["msg"]
    both = {"age": 3.0}
    detail, _ = _refused(lambda: scorer.merge_query(both, [_row()]))
    assert "['age'] given in both query and candidate" in detail[0]["msg"]


def test_model_info_is_built_once_at_load_with_a_trimmed_lineage(
    scorer: ModelScorer, bundle_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = Path(bundle_path, bundle.MANIFEST).read_bytes()

    def no_reading(*_: object, **__: object) -> None:
        raise AssertionError("GET /model read or hashed the bundle")

    for name in ("verify_bundle", "read_bundle_file", "read_json"):
        monkeypatch.setattr(bundle, name, no_reading)
    monkeypatch.setattr(bundle.Storage, "read_bytes", no_reading)
    monkeypatch.setattr(bundle.Storage, "sha256", no_reading)
    info = scorer.info()
    assert info.bundle_sha256 == hashlib.sha256(manifest).hexdigest()
    assert info.lineage == {
        k: LINEAGE[k]
        for k in (
            "pipeline",
            "run_id",
            "created_at",
            "spec_sha256",
            "data_fingerprints",
            "git_commit",
        )
    }
    text = info.model_dump_json()
    for secret in ("/home/me", "password", "rayline run", "run_dir", "command", "_private.csv"):
        assert secret not in text, secret
    assert info.metrics["test"] == {"auc": 0.9}
    assert info.metrics["data"] == {
        "rows_read": 10,
        "rows_used": 9,
        "rows_quarantined": 1,
        "by_rule": {"r": 1},
        "inputs": 2,
    }
    # limits follow a reconfigure; each call returns its own copy
    scorer.limits = Limits(max_rows=7)
    again = scorer.info()
    assert again.limits["max_rows"] == 7 and again is not info

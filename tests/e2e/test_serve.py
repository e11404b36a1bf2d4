"""Serving over real HTTP: endpoints, validation, API key, parity with evaluation and batch
inference, zero-downtime version switches and autoscaling."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from components import evaluation, generators
from components.predictor import Predictor
from components.registry import Registry
from pipelines.cli import main
from pipelines.deploy import INGRESS_NAMES, deploy, endpoint
from serve.config import ServeArgs
from tests import bundles
from tests.conftest import CONFIGS
from tests.load import assert_switched, calls_during

pytestmark = pytest.mark.usefixtures("ray_session")

PORT = 8011
TINY = CONFIGS / "tiny"


def _args(storage: str, model: str, **kw: object) -> ServeArgs:
    base: dict[str, object] = {
        "storage": storage,
        "model": model,
        "port": PORT,
        "min_replicas": 1,
        "max_replicas": 1,
        "num_cpus": 0.25,
        "max_rows": 50,
        "max_candidates": 20,
        "max_body_bytes": 64 * 1024,
        "auth": "none",
        "max_ongoing_requests": 16,
        "max_batch_size": 8,
    }
    base.update(kw)
    return ServeArgs.model_validate(base)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    from ray import serve

    storage = str(tmp_path_factory.mktemp("serve-storage"))
    for name in ("classification", "ranking"):
        assert main(["run", str(TINY / f"{name}.yaml"), "--storage", storage]) == 0
    urls = {}
    for model in ("tiny-classification", "tiny-ranking"):
        urls[model] = deploy(_args(storage, model))["url"]
    yield {"storage": storage, **urls}
    serve.shutdown()


def _apps() -> set[str]:
    from ray import serve

    try:
        return set(serve.status().applications)
    except Exception:  # Serve not running (a test without the module's apps)
        return set()


@pytest.fixture(autouse=True)
def _delete_the_apps_a_test_adds() -> Iterator[None]:
    """Each replica holds a share of the session's 4 CPUs: apps left by earlier tests would keep
    a later test's Ray Data tasks (1 CPU each) waiting."""
    from ray import serve

    before = _apps()
    yield
    for name in _apps() - before:
        serve.delete(name)


def _raw_rows(report_dir: Path, n: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test-split rows straight from the generator, and the evaluation's scores for them."""
    report = json.loads((report_dir / "report.json").read_text())
    scored = pd.read_parquet(report["predictions"])
    if n is not None:
        scored = scored.head(n)
    params = {"rows": 4000, "seed": 1, "block_rows": 1000}
    raw = pd.concat(
        [generators.generate_block(t) for t in generators.plan_blocks("binary", params)]
    )
    rows = raw.set_index("row_id").loc[scored["row_id"].to_numpy()].reset_index()
    return rows, scored


def _json_rows(frame: pd.DataFrame, features: list[str]) -> list[dict[str, object]]:
    out = []
    for rec in frame[features].to_dict("records"):
        out.append(
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
        )
    return out


def _run_dir(storage: str, pipeline: str) -> Path:
    return sorted((Path(storage) / "runs" / pipeline).iterdir())[-1]


def test_health_model_and_docs(served: dict) -> None:
    url = served["tiny-classification"]
    r = httpx.get(f"{url}/healthz")
    assert r.status_code == 200 and r.json() == {
        "status": "ok",
        "model": "tiny-classification",
        "version": 1,
        "auth": "none",
    }
    r = httpx.get(f"{url}/model")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["task"] == "binary" and info["version"] == 1
    assert {"name": "cat_0", "type": "categorical"} in info["features"]
    assert "auc" in info["metrics"]["test"] and info["lineage"]["spec_sha256"]
    # lineage a client needs: no run folder or other path, no command line, no packages
    assert set(info["lineage"]) <= {
        "pipeline",
        "run_id",
        "created_at",
        "spec_sha256",
        "data_fingerprints",
        "git_commit",
    }
    assert str(served["storage"]) not in r.text and "command" not in r.text
    manifest = Path(Registry(str(served["storage"])).resolve("tiny-classification").path)
    digest = hashlib.sha256((manifest / "MANIFEST.json").read_bytes()).hexdigest()
    assert info["bundle_sha256"] == digest
    spec = httpx.get(f"{url}/openapi.json").json()
    assert "/predict" in spec["paths"] and "/rank" in spec["paths"]
    assert httpx.get(f"{url}/docs").status_code == 200


def test_concurrent_requests_are_scored_in_shared_batches(served: dict) -> None:
    """No batch wait (the default): requests that queue while a batch is scored form the next."""
    url = served["tiny-classification"]
    before = httpx.get(f"{url}/model").json()["batching"]
    calls = calls_during(f"{url}/predict", {"rows": [_row()]}, clients=8, before_s=0)
    statuses = [status for status, _ in calls]
    after = httpx.get(f"{url}/model").json()["batching"]
    assert set(statuses) == {200}
    assert after["requests"] - before["requests"] == len(statuses)
    batches = after["batches"] - before["batches"]
    assert 0 < batches < len(statuses), (batches, len(statuses))  # fewer predicts than requests
    assert 2 <= after["largest"] <= 8  # max_batch_size of this deployment


def test_the_cluster_ingress_is_reported(served: dict) -> None:
    """A spec asking for the ingress the session's Ray was not started with is told so, and
    served through the one the cluster has."""
    from pipelines.cluster import cluster_ingress

    running = cluster_ingress()
    assert running == ("haproxy" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "proxy")
    other = "proxy" if running == "haproxy" else "haproxy"
    said: list[str] = []
    info = deploy(_args(str(served["storage"]), "tiny-classification", ingress=other), said.append)
    assert info["ingress"] == running and info["url"] == served["tiny-classification"]
    assert INGRESS_NAMES[running] in said[0]
    note = [line for line in said if "note:" in line]
    assert note and f"serve.ingress is {other}" in note[0]
    assert f"RAY_SERVE_ENABLE_HA_PROXY={1 if other == 'haproxy' else 0}" in note[0]
    assert httpx.get(f"{info['url']}/healthz").status_code == 200


def test_same_scores_through_evaluation_batch_inference_and_http(
    served: dict, tmp_path: Path
) -> None:
    storage = str(served["storage"])
    rows, scored = _raw_rows(_run_dir(storage, "tiny-classification"))
    bundle = Registry(storage).resolve("tiny-classification").path
    features = Predictor.load(bundle).feature_columns
    # HTTP, in requests of 50 rows (the configured limit)
    http_scores = []
    for start in range(0, len(rows), 50):
        body = {"rows": _json_rows(rows.iloc[start : start + 50], features)}
        r = httpx.post(f"{served['tiny-classification']}/predict", json=body, timeout=30)
        assert r.status_code == 200, r.text
        http_scores += [p["score"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(http_scores, scored["score"].to_numpy(), rtol=0, atol=1e-6)
    # Batch inference through Ray Data
    src = tmp_path / "in.parquet"
    rows.to_parquet(src)
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "tiny-classification",
                str(src),
                str(out),
                "--storage",
                storage,
                "--keys",
                "row_id",
            ]
        )
        == 0
    )
    batch = pd.read_parquet(out).sort_values("_source_row")
    assert len(batch) == len(rows)
    np.testing.assert_allclose(
        batch["score"].to_numpy(), scored["score"].to_numpy(), rtol=0, atol=1e-6
    )
    assert batch["row_id"].tolist() == rows["row_id"].tolist()


def test_rank_sorts_candidates_and_honours_top_k(served: dict) -> None:
    url = served["tiny-ranking"]
    rng = np.random.default_rng(0)
    cands = [{f"f{i}": float(rng.normal()) for i in range(8)} for _ in range(12)]
    r = httpx.post(f"{url}/rank", json={"candidates": cands})
    assert r.status_code == 200, r.text
    ranked = r.json()["ranked"]
    assert sorted(c["index"] for c in ranked) == list(range(12))
    scores = [c["score"] for c in ranked]
    assert scores == sorted(scores, reverse=True)
    bundle = Registry(str(served["storage"])).resolve("tiny-ranking").path
    expected = Predictor.load(bundle).predict(pd.DataFrame(cands))
    np.testing.assert_allclose([expected[c["index"]] for c in ranked], scores, atol=1e-6)
    top = httpx.post(f"{url}/rank", json={"candidates": cands, "top_k": 3}).json()["ranked"]
    assert top == ranked[:3]
    # query/context features are shared by every candidate
    query = {"f0": 0.5, "f1": -1.0}
    rest = [{k: v for k, v in c.items() if k not in query} for c in cands]
    merged = httpx.post(f"{url}/rank", json={"query": query, "candidates": rest}).json()["ranked"]
    expected = Predictor.load(bundle).predict(pd.DataFrame([{**query, **c} for c in rest]))
    np.testing.assert_allclose(
        [expected[c["index"]] for c in merged], [c["score"] for c in merged], atol=1e-6
    )


def _row() -> dict[str, object]:
    row: dict[str, object] = {f"num_{i}": 0.1 * i for i in range(8)}
    row.update({"cat_0": "c0_1", "cat_1": "c1_2", "cat_2": "c2_3"})
    return row


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (
            {"rows": [{k: v for k, v in _row().items() if k != "num_3"}]},
            422,
            "missing feature(s) ['num_3']",
        ),
        ({"rows": [{**_row(), "colour": 1}]}, 422, "unknown feature 'colour'"),
        ({"rows": [{**_row(), "num_2": "high"}]}, 422, "feature 'num_2' is numeric"),
        ({"rows": []}, 422, "at least 1"),
        ({"rows": [_row()] * 51}, 413, "more than the limit of 50"),
        ({"row": [_row()]}, 422, "Field required"),
        ({"rows": [_row()], "extra": 1}, 422, "Extra inputs"),
        ({"rows": "nope"}, 422, "valid list"),
    ],
)
def test_bad_requests_get_4xx_naming_the_field(
    served: dict, body: dict, status: int, needle: str
) -> None:
    r = httpx.post(f"{served['tiny-classification']}/predict", json=body)
    assert r.status_code == status, r.text
    assert needle in json.dumps(r.json())


def test_non_finite_malformed_and_oversized_bodies(served: dict) -> None:
    url = f"{served['tiny-classification']}/predict"
    row = json.dumps(_row())
    nan = row.replace('"num_1": 0.1', '"num_1": NaN')
    r = httpx.post(
        url, content=f'{{"rows": [{nan}]}}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "num_1" in r.text
    r = httpx.post(url, content=b'{"rows": [', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in r.text.lower()
    big = json.dumps({"rows": [_row()] * 40, "pad": "x" * 70_000})
    r = httpx.post(url, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than the limit" in r.text


def test_unseen_categories_and_nulls_are_scored(served: dict) -> None:
    row = {**_row(), "cat_0": "never-seen-before", "num_4": None, "cat_1": None}
    r = httpx.post(f"{served['tiny-classification']}/predict", json={"rows": [row]})
    assert r.status_code == 200
    p = r.json()["predictions"][0]
    assert 0 <= p["score"] <= 1 and p["label"] in (0, 1)


def test_api_key_guards_everything_but_healthz(served: dict, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    args = _args(
        str(served["storage"]),
        "tiny-classification",
        route_prefix="/guarded",
        auth="api_key",
        api_key_file=str(key_file),
    )
    info = deploy(args)
    url = info["url"]
    assert info["auth"] == "api_key"
    body = {"rows": [_row()]}
    health = httpx.get(f"{url}/healthz")
    assert health.status_code == 200 and health.json()["auth"] == "api_key"
    assert httpx.get(f"{url}/openapi.json").status_code == 200  # the same for every model
    assert httpx.get(f"{url}/docs").status_code == 200
    assert httpx.post(f"{url}/predict", json=body).status_code == 401
    assert (
        httpx.post(
            f"{url}/predict", json=body, headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    assert httpx.get(f"{url}/model").status_code == 401
    assert httpx.get(f"{url}/healthz/").status_code in (401, 404)  # only exact open paths
    ok = httpx.post(f"{url}/predict", json=body, headers={"Authorization": "Bearer s3cret-key"})
    assert ok.status_code == 200
    assert (
        httpx.post(f"{url}/predict", json=body, headers={"X-API-Key": "s3cret-key"}).status_code
        == 200
    )


def test_the_key_is_checked_before_the_body_is_read(served: dict, tmp_path: Path) -> None:
    """Without the key: 401 for a body that is not JSON (a 422 would mean it was parsed) and for
    one over the size limit (a 413 would mean it was counted), declared or chunked."""
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    url = deploy(
        _args(
            str(served["storage"]),
            "tiny-classification",
            route_prefix="/guarded",
            auth="api_key",
            api_key_file=str(key_file),
        )
    )["url"]
    json_type = {"content-type": "application/json"}
    r = httpx.post(f"{url}/predict", content=b'{"rows": [' * 1000, headers=json_type)
    assert r.status_code == 401, r.text
    r = httpx.post(f"{url}/predict", content=b"x" * 200_000, headers=json_type)
    assert r.status_code == 401, r.text

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 10_000

    r = httpx.post(f"{url}/predict", content=chunks(), headers=json_type)
    assert r.status_code == 401, r.text
    keyed = {**json_type, "Authorization": "Bearer s3cret-key"}
    r = httpx.post(f"{url}/predict", content=b'{"rows": [', headers=keyed)
    assert r.status_code == 422  # with the key, the body is read and parsed


def test_a_replica_without_its_key_refuses_to_start(
    served: dict, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rayline deploy` with auth api_key and the key's variable unset here and on the nodes:
    the replicas refuse to start and the command fails naming the variable (no hang, no open
    endpoint)."""
    from ray import serve

    monkeypatch.delenv("RAYLINE_TEST_NO_SUCH_KEY", raising=False)
    options = [f"port={PORT}", "num_cpus=0.25", "max_replicas=1", "min_replicas=1"]
    started = time.time()
    code = main(
        [
            "deploy",
            "tiny-classification",
            "--storage",
            str(served["storage"]),
            *options,
            "route_prefix=/nokey",
            "auth=api_key",
            "api_key_env=RAYLINE_TEST_NO_SUCH_KEY",
        ]
    )
    seconds = time.time() - started
    err = capsys.readouterr().err
    with capsys.disabled():
        print(f"\nrefused to start after {seconds:.1f}s: {err.strip().splitlines()[-1][:400]}")
    try:
        assert code == 1
        assert "refused to start" in err and "RAYLINE_TEST_NO_SUCH_KEY" in err
        assert "unset or empty" in err
        r = httpx.post(f"http://127.0.0.1:{PORT}/nokey/predict", json={"rows": [_row()]})
        assert r.status_code != 200  # nothing serves openly
    finally:
        serve.delete("nokey")
    # The same key exported in the operator's shell reaches the replicas (Ray started without
    # it), and the printed curl examples send it.
    monkeypatch.setenv("RAYLINE_TEST_NO_SUCH_KEY", "operator-key")
    code = main(
        [
            "deploy",
            "tiny-classification",
            "--storage",
            str(served["storage"]),
            *options,
            "route_prefix=/withkey",
            "auth=api_key",
            "api_key_env=RAYLINE_TEST_NO_SUCH_KEY",
        ]
    )
    out = capsys.readouterr().out
    try:
        assert code == 0
        assert '-H "Authorization: Bearer $RAYLINE_TEST_NO_SUCH_KEY"' in out
        assert "passed to the replicas" in out and "operator-key" not in out
        url = f"http://127.0.0.1:{PORT}/withkey"
        assert httpx.post(f"{url}/predict", json={"rows": [_row()]}).status_code == 401
        ok = httpx.post(
            f"{url}/predict",
            json={"rows": [_row()]},
            headers={"Authorization": "Bearer operator-key"},
        )
        assert ok.status_code == 200, ok.text
    finally:
        serve.delete("withkey")


def test_a_chunked_body_over_the_limit_is_413(served: dict) -> None:
    url = f"{served['tiny-classification']}/predict"
    row = json.dumps(_row()).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield b'{"rows": ['
        for _ in range(400):  # ~160 KB, over the 64 KiB limit
            yield row + b","
        yield row + b"]}"

    r = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "larger than the limit" in r.text

    def small() -> Iterator[bytes]:
        yield b'{"rows": ['
        yield row
        yield b"]}"

    r = httpx.post(url, content=small(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_an_integer_beyond_the_float_range_is_422(served: dict) -> None:
    url = f"{served['tiny-classification']}/predict"
    for digits in (400, 5000):  # 5000: beyond Python's int limit for json.loads
        raw = json.dumps({"rows": [_row()]}).replace('"num_1": 0.1', f'"num_1": {"9" * digits}')
        r = httpx.post(url, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert len(r.text) < 1000
        if digits == 400:
            assert r.json()["detail"][0]["loc"] == ["body", "rows", 0, "num_1"]
            assert "out of range" in r.text
    cands = [{f"f{i}": 0.0 for i in range(8)}]
    raw = json.dumps(
        {"query": {"f0": 1}, "candidates": [{k: v for k, v in cands[0].items() if k != "f0"}]}
    )
    raw = raw.replace('"f0": 1', f'"f0": -{"1" * 320}')
    r = httpx.post(
        f"{served['tiny-ranking']}/rank", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "'f0' is out of range" in r.text, r.text


def test_a_3mb_body_of_unknown_keys_gets_a_short_422(served: dict) -> None:
    """Before: one error entry per key (a 3.4 MB request: 250,001 entries, 23.5 MB, ~2.7 s)."""
    from ray import serve

    url = deploy(
        _args(
            str(served["storage"]),
            "tiny-classification",
            route_prefix="/bigbody",
            max_body_bytes=4 * 1024 * 1024,
        )
    )["url"]
    row = {**_row(), **{f"unknown_feature_{i:06d}": 0 for i in range(110_000)}}
    raw = json.dumps({"rows": [row]}).encode()
    assert len(raw) >= 3_000_000
    try:
        with httpx.Client(timeout=60) as client:
            times = []
            for _ in range(5):
                started = time.perf_counter()
                r = client.post(
                    f"{url}/predict", content=raw, headers={"content-type": "application/json"}
                )
                times.append(time.perf_counter() - started)
                assert r.status_code == 422
            detail = r.json()["detail"]
        print(
            f"\n{len(raw):,}-byte body of unknown keys over HTTP: 422 with {len(detail)} entries, "
            f"{len(r.content):,} bytes, in {min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms "
            "(most of it reading and parsing the JSON)"
        )
        assert len(detail) == 21 and len(r.content) < 5_000
        assert detail[-1]["type"] == "too_many_errors" and "109980 more" in detail[-1]["msg"]
    finally:
        serve.delete("bigbody")


def test_fuzzed_requests_never_get_a_server_error(served: dict) -> None:
    """Requests generated from the endpoint's own OpenAPI schema (schemathesis): never a 5xx."""
    from hypothesis import given

    url = served["tiny-classification"]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=url, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.path} {case.body!r:.200} -> {response.status_code}: {response.text[:300]}"
            )

        check()


def _logged(storage: str, model: str) -> pd.DataFrame:
    import pyarrow.dataset as pds

    folder = Path(storage, "logs", model)
    if not folder.exists():
        return pd.DataFrame({"request_id": []})
    return pds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas()


def test_every_answered_request_is_logged_once_under_load(served: dict) -> None:
    """4 clients, 400 requests: each logged request is in the Parquet log exactly once with
    what was sent and answered; X-Rayline-No-Log keeps a request out; ids are echoed."""
    url, model = str(served["tiny-classification"]), "tiny-classification"
    before = httpx.get(f"{url}/model").json()["prediction_log"]
    answers: dict[str, tuple[int, dict, dict]] = {}
    skipped: set[str] = set()

    def client(t: int) -> None:
        with httpx.Client(timeout=30) as c:
            for i in range(100):
                rid = f"log-{t}-{i}"
                row = {**_row(), "num_0": t + i / 100}
                headers = {"X-Request-Id": rid}
                if i % 10 == 0:
                    headers["X-Rayline-No-Log"] = "1"
                    skipped.add(rid)
                r = c.post(f"{url}/predict", json={"rows": [row]}, headers=headers)
                assert r.headers["x-request-id"] == rid
                answers[rid] = (r.status_code, row, r.json())

    threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {s for s, _, _ in answers.values()} == {200} and len(answers) == 400
    generated = httpx.post(f"{url}/predict", json={"rows": [_row()]}).headers["x-request-id"]
    assert generated and generated not in answers
    deadline = time.time() + 30  # the writer flushes every 5 s
    while True:
        stats = httpx.get(f"{url}/model").json()["prediction_log"]
        done = stats["written"] + stats["dropped"] - before["written"] - before["dropped"]
        if done >= 361 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert stats["not_logged"] - before["not_logged"] == 40
    assert stats["dropped"] == before["dropped"] and stats["queued"] == 0
    logs = _logged(str(served["storage"]), model)
    mine = logs[logs["request_id"].str.startswith("log-")]
    assert mine["request_id"].is_unique and set(mine["request_id"]) == set(answers) - skipped
    assert generated in set(logs["request_id"])
    for rec in mine.itertuples():
        _, row, body = answers[rec.request_id]
        assert json.loads(rec.features)["rows"] == [row]
        assert json.loads(rec.outputs) == body
        assert (rec.model, rec.version, rec.route, rec.answered_by) == (
            model,
            1,
            "predict",
            "production",
        )
        assert rec.latency_ms > 0


def test_switching_versions_under_load_drops_nothing(served: dict) -> None:
    storage = str(served["storage"])
    reg = Registry(storage)
    if len(reg.versions("tiny-classification")) < 2:  # v2: v1's bundle again (only versions count)
        v1 = reg.resolve("tiny-classification", version=1)
        reg.publish("tiny-classification", v1.path, aliases=["candidate"], note="v1 again")
    url = endpoint(_args(storage, "tiny-classification"))
    calls = calls_during(
        f"{url}/predict",
        {"rows": [_row()]},
        lambda: deploy(_args(storage, "tiny-classification", version=2)),
    )
    assert_switched(calls, old=1, new=2)
    deploy(_args(storage, "tiny-classification", version=1))  # leave v1 for the other tests


def _health_version(url: str) -> int:
    r = httpx.get(f"{url}/healthz", timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def test_promote_and_rollback_switch_the_running_deployment(
    served: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = str(served["storage"])
    model = "tiny-classification"
    reg = Registry(storage)
    if len(reg.versions(model)) < 2:
        assert main(["run", str(TINY / "classification.yaml"), "--storage", storage]) == 0
    url = endpoint(_args(storage, model))
    assert main(["promote", model, "1", "--storage", storage]) == 0
    assert _health_version(url) == 1
    capsys.readouterr()
    assert main(["promote", model, "2", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "production v1 -> v2" in out and "the running deployment now serves v2" in out
    assert reg.aliases(model)["production"] == 2 and _health_version(url) == 2
    assert main(["rollback", model, "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "production v2 -> v1" in out and "now serves v1" in out
    assert reg.aliases(model)["production"] == 1 and _health_version(url) == 1
    assert reg.history(model)[-1]["note"] == "rollback from v2"
    assert main(["promote", model, "99", "--storage", storage]) == 1
    assert "no version 99" in capsys.readouterr().err


def _replicas(app: str) -> int:
    from ray import serve

    states = serve.status().applications[app].deployments["ModelServer"].replica_states
    return int(states.get("RUNNING", 0))


def test_autoscaling_follows_load(served: dict) -> None:
    args = _args(
        str(served["storage"]),
        "tiny-ranking",
        route_prefix="/scaled",
        max_replicas=3,
        target_ongoing_requests=1,
        upscale_delay_s=0.5,
        downscale_delay_s=3,
        max_ongoing_requests=4,
        max_batch_size=2,
    )
    url = deploy(args)["url"]
    assert _replicas("scaled") == 1
    cands = [{f"f{i}": float(i + j) for i in range(8)} for j in range(20)]
    stop = threading.Event()
    failures: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{url}/rank", json={"candidates": cands})
                if r.status_code != 200:
                    failures.append(r.status_code)

    threads = [threading.Thread(target=load) for _ in range(12)]
    for t in threads:
        t.start()
    peak, deadline = 1, time.time() + 60
    while time.time() < deadline and peak < 2:
        peak = max(peak, _replicas("scaled"))
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert peak >= 2, "no replica was added under load"
    deadline = time.time() + 60
    while time.time() < deadline and _replicas("scaled") > 1:
        time.sleep(1)
    assert _replicas("scaled") == 1, "replicas did not scale back down after the load stopped"
    assert failures == []


def test_serve_deploy_of_the_shipped_config(served: dict, tmp_path: Path) -> None:
    """`serve deploy serve/configs/ranking-demo.yaml` against the running cluster, as operators do."""
    import os
    import subprocess
    import sys

    import ray
    import yaml

    from pipelines.deploy import wait_healthy

    doc = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "serve/configs/ranking-demo.yaml").read_text()
    )
    doc["http_options"]["port"] = PORT
    app = doc["applications"][0]
    app.update(name="from-yaml", route_prefix="/from-yaml")
    key_file = tmp_path / "api_key"
    key_file.write_text("yaml-key\n")
    assert app["args"]["auth"] == "api_key"
    app["args"].update(
        storage=served["storage"],
        model="tiny-ranking",
        api_key_file=str(key_file),  # the shipped config's /etc/rayline/api_key, here
        num_cpus=0.25,
        min_replicas=1,
        max_replicas=1,
    )
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(doc))
    dashboard = "http://" + ray._private.worker.global_worker.node.address_info["webui_url"]
    serve_cli = str(Path(sys.executable).parent / "serve")
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    res = subprocess.run(
        [serve_cli, "deploy", str(config), "-a", dashboard],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    url = f"http://127.0.0.1:{PORT}/from-yaml"
    wait_healthy(url, None, 120)
    cands = {"candidates": [{f"f{i}": 0.0 for i in range(8)}]}
    assert httpx.post(f"{url}/rank", json=cands).status_code == 401
    r = httpx.post(f"{url}/rank", json=cands, headers={"Authorization": "Bearer yaml-key"})
    assert r.status_code == 200 and r.json()["model"] == "tiny-ranking"


def test_killing_a_replica_under_load(served: dict) -> None:
    """SIGKILL one of two replicas under steady load: <= 0.1% failures, back to 2 within 30 s."""
    import os
    import signal

    from ray.util.state import list_actors

    args = _args(
        str(served["storage"]),
        "tiny-classification",
        route_prefix="/resilient",
        min_replicas=2,
        max_replicas=2,
    )
    url = deploy(args)["url"]
    assert _replicas("resilient") == 2
    actors = [
        a
        for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
        if a.class_name == "ServeReplica:resilient:ModelServer"
    ]
    assert len(actors) == 2
    statuses: list[int] = []
    failures: list[tuple[float, str]] = []  # (when, what): the assertion shows them
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{url}/predict", json={"rows": [_row()]})
                    statuses.append(r.status_code)
                    if r.status_code != 200:
                        failures.append((time.time(), f"{r.status_code} {r.text[:80]}"))
                except httpx.HTTPError as e:
                    statuses.append(-1)
                    failures.append((time.time(), f"{type(e).__name__}: {e}"))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    os.kill(actors[0].pid, signal.SIGKILL)
    killed_at = time.time()
    time.sleep(1)
    back_after = None
    while time.time() - killed_at < 60:
        if _replicas("resilient") == 2:
            back_after = time.time() - killed_at
            break
        time.sleep(0.5)
    # The 0.1% bound needs a window of a few thousand requests to say anything, and at least
    # 1000 per failure seen.
    while len(statuses) < max(4000, 1000 * len(failures)) and time.time() - killed_at < 150:
        time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    failed = sum(s != 200 for s in statuses)
    seen = [f"{when - killed_at:+.2f}s {what}" for when, what in failures]
    assert back_after is not None and back_after <= 30, f"replicas back after {back_after}"
    assert failed / len(statuses) <= 0.001, f"{failed} of {len(statuses)} failed: {seen}"
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        # Serve's proxy fails only what was in flight on the killed replica (one per client);
        # HAProxy may also lose a request sent on a pooled connection before it marks the
        # replica down, or on a keep-alive connection closed by its reload: the rate bounds those.
        assert failed <= len(threads), f"{failed} failed, more than were in flight: {seen}"
    assert len(statuses) >= 3000


def test_no_wait_on_a_running_cluster_leaves_the_endpoint_up(served: dict, tmp_path: Path) -> None:
    """`rayline run --address ... --no-wait` returns once serving; the endpoint outlives it."""
    import os
    import subprocess
    import sys

    import ray

    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    overrides = [
        "serve.enabled=true",
        f"serve.port={PORT}",
        "serve.route_prefix=/nowait",
        "serve.num_cpus=0.25",
        "serve.max_replicas=1",
        "serve.auth=none",
    ]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            str(TINY / "ranking.yaml"),
            "--address",
            gcs,
            "--no-wait",
            "--storage",
            str(tmp_path / "storage"),
            *overrides,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"curl -s http://127.0.0.1:{PORT}/nowait/healthz" in res.stdout
    assert "Authorization" not in res.stdout and "serve.auth is none" in res.stdout
    r = httpx.get(f"http://127.0.0.1:{PORT}/nowait/healthz")
    assert r.status_code == 200 and r.json()["model"] == "tiny-ranking"


def test_ctrl_c_during_a_deploy_to_a_cluster_leaves_the_update_to_serve(served: dict) -> None:
    """SIGINT while `rayline deploy --address` waits for the replicas: exit 130 with a line
    saying the cluster's Serve finishes the update; the endpoint then comes up (no rollback)."""
    import os
    import signal
    import subprocess
    import sys

    import ray

    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    options = ["route_prefix=/interrupted", f"port={PORT}", "num_cpus=0.25", "auth=none"]
    cmd = [sys.executable, "-m", "pipelines", "deploy", "tiny-classification", "--version", "1"]
    proc = subprocess.Popen(
        [*cmd, "--address", gcs, "--storage", str(served["storage"]), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = iter(proc.stdout)
    for line in lines:
        if "deploying tiny-classification v1" in line:
            break
    next(lines)  # the API key line, printed just before the update goes to Serve
    time.sleep(1.0)  # inside serve.run (which takes seconds) or waiting for /healthz
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "an update of tiny-classification already handed to the cluster's Serve goes on" in err
    deadline = time.time() + 90
    status = None
    while time.time() < deadline and status != 200:
        try:
            status = httpx.get(f"http://127.0.0.1:{PORT}/interrupted/healthz").status_code
        except httpx.HTTPError:
            status = None
        time.sleep(1)
    assert status == 200


def test_no_wait_without_a_cluster_is_refused(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            str(TINY / "ranking.yaml"),
            "--no-wait",
            "serve.enabled=true",
            "--storage",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 2 and "--no-wait needs a running Ray cluster" in res.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind", ["torch.mlp", "torch.dlrm"])
def test_a_served_torch_model_ranks_like_its_predictor(
    served: dict, kind: str, tmp_path: Path
) -> None:
    """Torch bundles (state_dict + architecture JSON: MLP, DLRM) serve /rank through the same
    app, with the scores of their Predictor (the bundles are built directly: the pipeline's
    torch training is covered by the torch e2e and Ray tests)."""
    storage = str(served["storage"])
    model = f"tiny-{kind.replace('.', '-')}"
    frame = bundles.tiny_frame(200, "ranking", seed=3)
    path = bundles.write(tmp_path / "bundle", bundles.torch_contents(frame, "ranking", kind=kind))
    Registry(storage).publish(model, path, aliases=["production"])
    url = deploy(_args(storage, model))["url"]
    rows = frame[["age", "clicks", "country"]].head(10)
    cands = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    r = httpx.post(f"{url}/rank", json={"candidates": cands, "top_k": 5})
    assert r.status_code == 200, r.text
    ranked = r.json()["ranked"]
    bundle = Registry(storage).resolve(model).path
    assert Path(bundle, "model.pt").exists() and Path(bundle, "architecture.json").exists()
    expected = Predictor.load(bundle).predict(pd.DataFrame(cands))
    assert [c["index"] for c in ranked] == list(np.argsort(-expected, kind="stable")[:5])
    np.testing.assert_allclose([c["score"] for c in ranked], np.sort(expected)[::-1][:5], atol=1e-6)


def _keyed_load(url: str, requests: int, clients: int = 4) -> list[tuple[str, str, int, int]]:
    """``requests`` POSTs of one row from ``clients`` threads, each with an X-Request-Id and an
    X-Rayline-Key of 2,500 callers (two requests each): (request id, key, status, answering version)."""
    out: list[tuple[str, str, int, int]] = []

    def client(t: int) -> None:
        with httpx.Client(timeout=30) as c:
            for i in range(t, requests, clients):
                rid, key = f"route-{i}", f"user-{i % 2500}"
                r = c.post(
                    f"{url}/predict",
                    json={"rows": [_row()]},
                    headers={"X-Request-Id": rid, "X-Rayline-Key": key},
                )
                out.append((rid, key, r.status_code, r.json().get("version", 0)))

    threads = [threading.Thread(target=client, args=(t,)) for t in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_a_failing_shadow_and_a_sticky_canary_under_load(
    served: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shadow that fails on every request (it needs other features) and a 20% canary,
    started together and the canary stopped under load by 4 clients: every request answered 200, the canary's share
    within 2 points over 5,000 requests and one version per key, every request logged once
    with the other version's outputs (or the shadow's error, or, where the replica already ran
    its limit of companion scorings, the note that it skipped one)."""
    from serve.app import COMPANION_SKIPPED

    storage, model = str(served["storage"]), "tiny-classification"
    reg = Registry(storage)
    if len(reg.versions(model)) < 2:
        v1 = reg.resolve(model, version=1)
        reg.publish(model, v1.path, aliases=["candidate"], note="v1 again")
    odd = bundles.write(tmp_path / "odd", bundles.xgboost_contents(bundles.tiny_frame()))
    shadow = reg.publish(model, odd, note="other features: fails as a shadow").version
    url = endpoint(_args(storage, model))
    before = httpx.get(f"{url}/model").json()["prediction_log"]
    calls = calls_during(  # both started by one rolling update, under load
        f"{url}/predict",
        {"rows": [_row()]},
        lambda: deploy(_args(storage, model, version=1, shadow=shadow, canary=2, canary_share=0.2)),
    )
    assert {s for s, _ in calls} == {200} and set(v for _, v in calls) <= {1, 2}
    info = httpx.get(f"{url}/model").json()
    assert info["routing"]["shadow_version"] == shadow and info["routing"]["canary_version"] == 2
    answers = _keyed_load(url, 5000)
    assert {s for _, _, s, _ in answers} == {200} and len(answers) == 5000
    share = sum(v == 2 for *_, v in answers) / len(answers)
    assert abs(share - 0.2) <= 0.02, share
    by_key: dict[str, set[int]] = {}
    for _, key, _, v in answers:
        by_key.setdefault(key, set()).add(v)
    assert all(len(vs) == 1 for vs in by_key.values())
    calls = calls_during(
        f"{url}/predict",
        {"rows": [_row()]},
        lambda: main(["rollback", model, "--storage", storage]),
    )
    assert {s for s, _ in calls} == {200} and calls[-1][1] == 1
    assert "canary v2 rolled back; production stays v1" in capsys.readouterr().out
    assert reg.aliases(model)["production"] == 1
    assert "canary v2 rolled back" in reg.history(model)[-1]["note"]
    routing = httpx.get(f"{url}/model").json()["routing"]
    assert routing["canary_version"] is None and routing["shadow_version"] == shadow
    deadline = time.time() + 30
    while time.time() < deadline:
        stats = httpx.get(f"{url}/model").json()["prediction_log"]
        if stats["queued"] == 0:
            break
        time.sleep(0.5)
    assert stats["dropped"] == before["dropped"]
    logs = _logged(storage, model)
    mine = logs[logs["request_id"].str.startswith("route-")]
    assert mine["request_id"].is_unique and set(mine["request_id"]) == {a[0] for a in answers}
    answered = {rid: v for rid, _, _, v in answers}
    skipped = 0
    for rec in mine.itertuples():
        assert rec.version == answered[rec.request_id]
        if (
            rec.shadow_error == COMPANION_SKIPPED
        ):  # a replica at its limit of companions (fast ingress)
            assert pd.isna(rec.shadow_outputs) and rec.shadow_version in (1, shadow)
            skipped += 1
        elif rec.answered_by == "canary":  # production scored beside it
            assert rec.version == 2 and rec.shadow_version == 1 and pd.isna(rec.shadow_error)
            assert json.loads(rec.shadow_outputs)["predictions"][0]["score"] == pytest.approx(
                json.loads(rec.outputs)["predictions"][0]["score"]
            )
        else:  # the shadow: it needs age, clicks and country, so it fails every time
            assert rec.version == 1 and rec.shadow_version == shadow
            assert pd.isna(rec.shadow_outputs) and "missing feature" in rec.shadow_error
    assert skipped < len(mine) / 2, f"{skipped} of {len(mine)} requests had no companion"
    shadowed = logs[logs["shadow_version"] == shadow]
    assert len(shadowed) > 0 and shadowed["shadow_error"].notna().all()
    deploy(_args(storage, model, version=1))  # leave v1 alone for the other tests


def _send(url: str, rows: pd.DataFrame, features: list[str], prefix: str, per: int) -> set[str]:
    """The rows in requests of ``per`` rows (request ``<prefix>-<first row>``, its own sticky
    key); the request ids."""
    ids = set()
    with httpx.Client(timeout=30) as c:
        for start in range(0, len(rows), per):
            rid = f"{prefix}-{start}"
            r = c.post(
                f"{url}/predict",
                json={"rows": _json_rows(rows.iloc[start : start + per], features)},
                headers={"X-Request-Id": rid, "X-Rayline-Key": rid},
            )
            assert r.status_code == 200, r.text
            ids.add(rid)
    return ids


def _wait_logged(storage: str, model: str, ids: set[str]) -> None:
    deadline = time.time() + 30  # the writer flushes every 5 s
    while time.time() < deadline:
        if ids <= set(_logged(storage, model)["request_id"]):
            return
        time.sleep(0.5)
    pytest.fail("the requests did not reach the prediction log in 30 s")


def _labels(path: Path, rows: pd.DataFrame, prefix: str, per: int) -> str:
    """What arrives later: each row's label by request id and row."""
    starts = np.arange(len(rows)) // per * per
    pd.DataFrame(
        {
            "request_id": [f"{prefix}-{s}" for s in starts],
            "row": np.arange(len(rows)) - starts,
            "label": rows["label"].to_numpy(),
        }
    ).to_parquet(path)
    return str(path)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat()


def test_monitor_reports_the_offline_metric_online_and_names_a_drifted_feature(
    served: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The test split through /predict, its labels joined later: the online AUC and logloss
    are the offline ones on the same rows (1e-9), re-scoring the log finds no skew, nothing
    drifted; the same rows with num_0 shifted exit 2 naming num_0 and only it."""
    storage, model = str(served["storage"]), "tiny-classification"
    url = str(served[model])
    rows, _ = _raw_rows(_run_dir(storage, model))
    mv = Registry(storage).resolve(model, version=1)
    predictor = Predictor.load(mv.path)
    since = _now()
    _wait_logged(storage, model, _send(url, rows, predictor.feature_columns, "mon", 50))
    labels = _labels(tmp_path / "labels.parquet", rows, "mon", 50)
    out = tmp_path / "report"
    argv = ["monitor", model, "--storage", storage, "--since", since, "--out", str(out)]
    assert main([*argv, "--labels", labels]) == 0, capsys.readouterr().out
    report = json.loads((out / "monitor.json").read_text())
    assert report["labels"] == {"given": len(rows), "matched": len(rows), "logged_rows": len(rows)}
    online = report["metrics"]["1"]["all"]
    offline = evaluation.evaluate(
        "binary", pd.DataFrame({"score": predictor.predict(rows), "label": rows["label"]}), "label"
    )
    assert online["auc"] == pytest.approx(offline["auc"], abs=1e-9)
    assert online["logloss"] == pytest.approx(offline["logloss"], abs=1e-9)
    iv = report["intervals"]["1"]  # the version's AUC with its bootstrap interval
    assert iv["metric"] == "auc" and iv["units"] == len(rows) and iv["value"] == online["auc"]
    assert iv["low"] < online["auc"] < iv["high"] and iv["high"] - iv["low"] < 0.5
    assert report["skew"]["1"]["rows"] > 0 and report["skew"]["1"]["max_abs_diff"] == 0.0
    assert report["breaches"] == [] and report["drift"]["1"]["all"]["num_0"]["psi"] < 0.25
    assert "<img" in (out / "monitor.html").read_text()
    since = _now()
    shifted = rows.assign(num_0=rows["num_0"] + 5.0)
    sent = _send(url, shifted, predictor.feature_columns, "drift", 50)
    too_many = _json_rows(rows.head(51), predictor.feature_columns)  # serve max_rows is 50
    for i in range(3):  # refused: logged with their status, counted as the version's errors
        r = httpx.post(
            f"{url}/predict", json={"rows": too_many}, headers={"X-Request-Id": f"big-{i}"}
        )
        assert r.status_code == 413, r.text
    _wait_logged(storage, model, sent | {f"big-{i}" for i in range(3)})
    capsys.readouterr()
    assert main([*argv[:4], "--since", since, "--out", str(tmp_path / "drifted")]) == 2
    said = capsys.readouterr().out
    assert "feature 'num_0' drifted" in said and "1 threshold(s) breached" in said, said
    assert f"{len(rows) // 50 + (len(rows) % 50 > 0)} answered requests, 3 failed" in said, said
    errors = json.loads((tmp_path / "drifted" / "monitor.json").read_text())["errors"]
    assert [(e["version"], e["errors"]) for e in errors] == [(1, 3)]
    assert errors[0]["first_error"].startswith("413: "), errors


def test_monitor_act_promotes_a_better_canary_and_rolls_back_a_worse_one(
    served: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A weak production (trained on shuffled labels) with the good v1 as a 50% canary: the
    canary is confidently better on the logged labels and --act promotes it; then the weak
    version as a canary of v1 is worse and --act rolls it back. Both recorded with evidence."""
    storage, model = str(served["storage"]), "tiny-classification"
    url = str(served[model])
    reg = Registry(storage)
    rows, _ = _raw_rows(_run_dir(storage, model))
    good = Predictor.load(reg.resolve(model, version=1).path)
    shuffled = rows.assign(label=np.random.default_rng(0).permutation(rows["label"].to_numpy()))
    contents = bundles.xgboost_contents(shuffled, transform=good.transform, rounds=3)
    weak = reg.publish(model, bundles.write(tmp_path / "weak", contents), note="weak").version
    spec = str(TINY / "classification.yaml")
    knobs = ["monitor.canary.min_labelled_rows=100", "monitor.canary.max_latency_ratio=20"]
    for n, (prod, canary, action) in enumerate([(weak, 1, "promoted"), (1, weak, "rolled back")]):
        reg.set_alias(model, "production", prod, note="test set-up")
        deploy(_args(storage, model, version=prod, canary=canary, canary_share=0.5))
        since = _now()
        prefix = f"act{n}"
        _wait_logged(storage, model, _send(url, rows, good.feature_columns, prefix, 10))
        labels = _labels(tmp_path / f"{prefix}.parquet", rows, prefix, 10)
        capsys.readouterr()
        code = main(
            ["monitor", model, "--storage", storage, "--since", since, "--labels", labels,
             "--out", str(tmp_path / prefix), "--act", "--spec", spec, "monitor.max_psi=10",
             *knobs]
        )  # fmt: skip
        said = capsys.readouterr().out
        assert code == 0, said
        assert f"canary v{canary} {action} by rayline monitor" in said, said
        assert reg.aliases(model)["production"] == 1
        note = reg.history(model)[-1]["note"]
        assert f"canary v{canary} {action} by rayline monitor" in note
        assert "auc" in note  # the evidence: the metric, on how many rows
        info = httpx.get(f"{url}/model").json()
        assert info["version"] == 1 and info["routing"] is None  # production alone
        report = json.loads((tmp_path / prefix / "monitor.json").read_text())
        assert report["actions"][0]["action"] == ("promote" if n == 0 else "rollback")

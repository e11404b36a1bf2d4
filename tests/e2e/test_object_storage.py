"""A whole life cycle on object storage: `storage: s3://...` against a real S3-compatible server
(moto's, on 127.0.0.1), reached the way users reach theirs (AWS_ENDPOINT_URL + credentials).

Run dir, prepared data, Ray Train checkpoints, bundles, the registry, `models list/show`, a
served endpoint loading its bundle from the bucket, `rayline predict` from and to the bucket and
promote/rollback of the running deployment; nothing of it on local disk.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components import generators, uris
from components.bundle import Storage
from components.predictor import Predictor
from components.registry import Registry
from pipelines.cli import main
from pipelines.deploy import deploy
from serve.config import ServeArgs
from tests.conftest import CONFIGS
from tests.s3_server import S3Server

pytestmark = pytest.mark.usefixtures("ray_session")

MODEL = "tiny-s3"
PORT = 8011  # the port every e2e test's Serve uses (one HTTP proxy per cluster)
SPEC = str(CONFIGS / "tiny" / "classification.yaml")
# a real Ray Train worker group, so checkpoints go to the bucket too
OVERRIDES = [f"registry.model_name={MODEL}", "models.0.scaling.num_workers=2"]


@pytest.fixture(scope="module")
def bucket_run(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """One run with ``--storage s3://rayline-e2e/team/rayline``, from an empty working folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    cwd = tmp_path_factory.mktemp("cwd")
    mp.chdir(cwd)
    bucket = s3_server.make_bucket("rayline-e2e")
    storage = f"{bucket}/team/rayline"
    assert main(["run", SPEC, "--storage", storage, *OVERRIDES]) == 0
    try:
        yield {"bucket": bucket, "storage": storage, "cwd": str(cwd)}
    finally:
        from ray import serve

        if MODEL in serve.status().applications:
            serve.delete(MODEL)
        mp.undo()


def _files(location: str) -> list[str]:
    return Storage(uris.normalize(location)).walk_files()


def test_the_run_lives_in_the_bucket_and_nothing_on_local_disk(
    bucket_run: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    files = _files(bucket_run["storage"])
    run = sorted({f.split("/")[2] for f in files if f.startswith("runs/tiny-classification/")})
    assert len(run) == 1
    base = f"runs/tiny-classification/{run[0]}/"
    for name in (
        "spec.yaml",
        "report.json",
        "report.md",
        "report.html",
    ):
        assert base + name in files
    # the predictions, written by the scoring tasks
    assert any(f.startswith(base + "predictions_test.parquet/") for f in files)
    assert base + "prepared/key.json" in files
    for split in ("train", "valid", "test"):
        assert any(
            f.startswith(f"{base}prepared/{split}/") and f.endswith(".parquet") for f in files
        )
    assert base + "candidates/gbdt/MANIFEST.json" in files
    # Ray Train's checkpoints of the 2-worker run, written through the pyarrow S3 filesystem
    assert any(f.startswith(base + "train/") and "/checkpoint_" in f for f in files), files
    assert f"registry/{MODEL}/1/MANIFEST.json" in files
    report = json.loads(
        Storage(uris.normalize(bucket_run["storage"])).read_text(base + "report.json")
    )
    assert report["status"] == "succeeded" and report["model"]["version"] == 1
    assert report["test"]["auc"] > 0.75
    # nothing under the working folder: no "s3:" folder, no ./storage (logs go to the temp folder)
    assert os.listdir(bucket_run["cwd"]) == []
    # the run's printed paths are the bucket's, without the endpoint options
    assert main(["report", run[0], "--storage", bucket_run["storage"]]) == 0
    out = capsys.readouterr().out
    assert f"report.html: {bucket_run['storage']}/{base}report.html" in out
    assert "endpoint_override" not in out


def test_models_list_and_show_read_the_bucket(
    bucket_run: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["models", "--storage", bucket_run["storage"], "list"]) == 0
    assert MODEL in capsys.readouterr().out
    assert main(["models", "--storage", bucket_run["storage"], "show", MODEL]) == 0
    out = capsys.readouterr().out
    assert "auc" in out and "v1" in out


FEATURES = [f"num_{i}" for i in range(8)] + ["cat_0", "cat_1", "cat_2"]


def _input_rows() -> pd.DataFrame:
    """Rows of the tiny spec's generator, without the label."""
    blocks = generators.plan_blocks("binary", {"rows": 300, "seed": 7})
    frame = pd.concat([generators.generate_block(t) for t in blocks], ignore_index=True)
    return frame.drop(columns=["label"])


def _json_rows(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [
        {k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()}
        for rec in frame[FEATURES].to_dict("records")
    ]


def test_predict_reads_and_writes_the_bucket(
    bucket_run: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    storage = uris.normalize(bucket_run["storage"])
    rows = _input_rows()
    buf = io.BytesIO()
    rows.to_parquet(buf, index=False)
    Storage(uris.normalize(bucket_run["bucket"])).write_bytes(
        "inputs/day1/part-0.parquet", buf.getvalue()
    )
    out_uri = f"{bucket_run['bucket']}/scored/day1"
    args = ["predict", MODEL, f"{bucket_run['bucket']}/inputs/day1", out_uri]
    assert main([*args, "--storage", bucket_run["storage"], "--keys", "row_id"]) == 0
    assert f"-> {len(rows):,} rows" in capsys.readouterr().out
    written = Storage(uris.normalize(out_uri))
    marker = json.loads(written.read_text("_RAYLINE_PREDICTIONS"))
    assert marker["rows"] == len(rows) and "endpoint_override" not in marker["bundle"]
    fs, inner = uris.filesystem(uris.normalize(out_uri))
    scored = pq.read_table(inner, filesystem=fs).to_pandas().sort_values("row_id")
    mv = Registry(storage).resolve(MODEL)
    expected = Predictor.load(mv.path).predict(rows.sort_values("row_id"))
    assert len(scored) == len(rows)
    assert scored["score"].to_numpy() == pytest.approx(expected, abs=1e-6)
    # an earlier output is replaced; anything else under OUTPUT is refused
    assert main([*args, "--storage", bucket_run["storage"]]) == 0
    Storage(uris.normalize(bucket_run["bucket"])).write_bytes("other/notes.txt", b"keep me")
    bad = ["predict", MODEL, f"{bucket_run['bucket']}/inputs/day1", f"{bucket_run['bucket']}/other"]
    assert main([*bad, "--storage", bucket_run["storage"]]) == 2
    assert "is not an earlier rayline output" in capsys.readouterr().err
    assert Storage(uris.normalize(bucket_run["bucket"])).read_bytes("other/notes.txt") == b"keep me"


def _args(storage: str) -> ServeArgs:
    return ServeArgs.model_validate(
        {
            "storage": storage,
            "model": MODEL,
            "port": PORT,
            "min_replicas": 1,
            "max_replicas": 1,
            "num_cpus": 0.25,
            "auth": "none",
        }
    )


def test_serving_and_promote_rollback_from_the_bucket(
    bucket_run: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    storage = uris.normalize(bucket_run["storage"])
    url = deploy(_args(storage))["url"]
    health = httpx.get(f"{url}/healthz", timeout=10).json()
    assert health["version"] == 1
    row = _input_rows().head(3)
    resp = httpx.post(f"{url}/predict", json={"rows": _json_rows(row)}, timeout=30)
    assert resp.status_code == 200, resp.text
    mv = Registry(storage).resolve(MODEL)
    expected = Predictor.load(mv.path).predict(row)
    assert [p["score"] for p in resp.json()["predictions"]] == pytest.approx(expected, abs=1e-6)
    # a second version, then the running deployment follows promote and rollback
    # a second version: the run's bundle published again, object to object within the bucket
    assert Registry(storage).publish(MODEL, mv.path, aliases=["candidate"]).version == 2
    assert main(["promote", MODEL, "1", "--storage", bucket_run["storage"]]) == 0
    capsys.readouterr()
    assert main(["promote", MODEL, "2", "--storage", bucket_run["storage"]]) == 0
    assert "the running deployment now serves v2" in capsys.readouterr().out
    assert httpx.get(f"{url}/healthz", timeout=10).json()["version"] == 2
    assert main(["rollback", MODEL, "--storage", bucket_run["storage"]]) == 0
    assert "now serves v1" in capsys.readouterr().out
    assert httpx.get(f"{url}/healthz", timeout=10).json()["version"] == 1
    assert Registry(storage).aliases(MODEL)["production"] == 1
    assert os.listdir(bucket_run["cwd"]) == []
    assert not Path(bucket_run["cwd"], "s3:").exists()

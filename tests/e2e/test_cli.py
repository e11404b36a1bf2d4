"""The CLI end to end on the tiny specs: run, registry, report, and scores identical everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import generators
from components.predictor import Predictor
from components.registry import Registry
from pipelines.cli import main
from tests.conftest import CONFIGS, ROOT

pytestmark = pytest.mark.usefixtures("ray_session")

TINY = CONFIGS / "tiny"
FLOORS = {  # well above a trivial model on each generator
    "classification": ("auc", 0.75),
    "multiclass": ("accuracy", 0.5),
    "ranking": ("ndcg@10", None),
    "ctr": ("ndcg@10", None),
    "ranking_mlp": ("ndcg@10", None),  # torch MLP, listwise loss, in-process
    "ctr_dlrm": ("ndcg@10", None),  # DLRM, 2 DDP workers (gloo)
}


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("storage"))


def _last_report(storage: str, pipeline: str) -> dict:
    runs = sorted((Path(storage) / "runs" / pipeline).iterdir())
    return json.loads((runs[-1] / "report.json").read_text())


# The tiny specs train in-process here; a real 2-worker XGBoost group (checkpoints through a
# pyarrow filesystem) is tests/e2e/test_object_storage.py's run.
OVERRIDES: dict[str, list[str]] = {}


@pytest.mark.parametrize("name", list(FLOORS))
def test_tiny_spec_runs_and_registers(
    name: str, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(TINY / f"{name}.yaml")
    assert main(["run", spec, "--storage", storage, *OVERRIDES.get(name, [])]) == 0
    out = capsys.readouterr().out
    assert "[1/6] ingest" in out and "[6/6] register: done" in out and "registered tiny-" in out
    report = _last_report(storage, f"tiny-{name.replace('_', '-')}")
    assert report["status"] == "succeeded"
    data = report["data"]
    assert data["rows_read"] == data["rows_used"] + data["rows_quarantined"]
    assert sum(report["splits"]["rows"].values()) == data["rows_used"]
    metric, floor = FLOORS[name]
    assert report["test"][metric] > report["baseline"][metric] + 0.05
    if floor is not None:
        assert report["test"][metric] >= floor
    if report["task"] == "ranking":  # the no-relevant convention, named in the report and console
        assert report["metric_conventions"]["ndcg_no_relevant"] == "one"
        assert "no_relevant=one: queries without a relevant row (" in out
    reg = Registry(storage)
    mv = reg.resolve(f"tiny-{name.replace('_', '-')}")
    assert "production" in mv.aliases and Path(mv.path, "MANIFEST.json").exists()
    # the training split's feature profiles, for drift checks on live traffic
    profiles = json.loads(Path(mv.path, "profile.json").read_text())
    transform = Predictor.load(mv.path).transform
    hashed = {c.name for c in transform.categorical if c.encoding == "hash"}
    names = [p.name for p in transform.numeric]
    names += [c.name for c in transform.categorical if c.name not in hashed]
    assert [p["name"] for p in profiles] == names
    assert all(abs(sum(p["shares"]) - 1) < 1e-9 and p["rows"] > 0 for p in profiles)
    assert Path(report["run_dir"], "report.md").read_text().count("| test |") == 1
    page = Path(report["run_dir"], "report.html").read_text()
    assert "<h2>Test metrics (whole test split)</h2>" in page
    assert "alt='learning_curves'" in page
    assert ("alt='ndcg_by_k'" in page) if report["task"] == "ranking" else True
    assert ("alt='roc'" in page) if report["task"] == "binary" else True


def test_models_list_and_show(storage: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(TINY / "ranking.yaml"), "--storage", storage]) == 0
    capsys.readouterr()
    assert main(["models", "--storage", storage, "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-ranking" in out and "v2" in out and "production" in out and "ndcg@10=" in out
    assert main(["models", "--storage", storage, "show", "tiny-ranking", "1"]) == 0
    out = capsys.readouterr().out
    assert "tiny-ranking v1" in out and "spec_sha256" in out and "sha256 verified" in out
    assert main(["models", "--storage", storage, "show", "tiny-ranking", "7"]) == 1
    assert "version 7" in capsys.readouterr().err


def test_same_rows_same_scores_in_a_fresh_process(storage: str, tmp_path: Path) -> None:
    """Evaluation's scores (Ray Data tasks) == Predictor.load().predict in a new process."""
    report = _last_report(storage, "tiny-classification")
    scored = pd.read_parquet(report["predictions"])
    # Rebuild the raw rows straight from the generator (no Ray, no ingest step).
    params = {"rows": 4000, "seed": 1, "block_rows": 1000}
    raw = pd.concat(
        [generators.generate_block(t) for t in generators.plan_blocks("binary", params)]
    )
    rows = raw.set_index("row_id").loc[scored["row_id"].to_numpy()].reset_index()
    rows_path, out_path = tmp_path / "rows.parquet", tmp_path / "scores.npy"
    rows.to_parquet(rows_path)
    bundle = report["model"]["path"]
    code = (
        "import sys, numpy as np, pandas as pd; from components.predictor import Predictor; "
        f"p = Predictor.load({bundle!r}); np.save({str(out_path)!r}, p.predict(pd.read_parquet({str(rows_path)!r}))); "
        "assert 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    np.testing.assert_allclose(np.load(out_path), scored["score"].to_numpy(), rtol=0, atol=1e-6)


def test_bad_spec_fails_before_ray_with_field_path(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        (TINY / "ranking.yaml").read_text().replace("num_boost_round: 30", "num_boost_rounds: 30")
    )
    env = {
        **os.environ,
        "RAY_ADDRESS": "127.0.0.1:1",
    }  # would hang or fail loudly if Ray were contacted
    for cmd in ("validate", "run"):
        res = subprocess.run(
            [sys.executable, "-m", "pipelines", cmd, str(spec)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        assert res.returncode == 2, res.stderr
        assert str(spec) in res.stderr and "models.0.num_boost_rounds" in res.stderr


def test_spec_that_does_not_fit_the_cluster(
    storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            str(TINY / "ranking.yaml"),
            "--storage",
            storage,
            "models.0.scaling.num_workers=2",
            "models.0.scaling.use_gpu=true",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "need GPU 2" in err and "use_gpu: false" in err


def test_bad_data_fails_with_file_row_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "d.csv"
    lines = ["num_0,label,row_id"] + [f"{i % 7},{i % 2},{i}" for i in range(200)]
    lines[42] = "oops,1,41"
    csv.write_text("\n".join(lines) + "\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"""
name: bad-data
task: binary
storage: {tmp_path / "storage"}
data: {{source: {{uri: {csv}}}, keys: [row_id]}}
features: {{numeric: [num_0]}}
models: [{{num_boost_round: 5, scaling: {{num_workers: 0}}}}]
serve: {{enabled: false}}
""")
    assert main(["run", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{csv}, row 43" in err and "column 'num_0'" in err and "'oops'" in err
    assert Registry(str(tmp_path / "storage")).models() == []
    # Quarantine instead: the run goes on and the report counts the row.
    assert main(["run", str(spec), "data.validation.wrong_type=quarantine"]) == 0
    report = _last_report(str(tmp_path / "storage"), "bad-data")
    assert report["data"]["rows_quarantined"] == 1 and report["data"]["rows_used"] == 199


def test_gate_promotes_only_a_confidently_better_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """First run: promoted (no production). A clearly better model: promoted. The same model
    again: registered as candidate, production unchanged, and the report says why."""
    storage = str(tmp_path / "gate")
    spec = str(TINY / "classification.yaml")
    mlflow_db = tmp_path / "mlflow.db"
    weak = [
        "models.0.num_boost_round=1",
        "models.0.params.max_depth=1",
        f"tracking.mlflow_uri=sqlite:///{mlflow_db}",  # the first run is also logged to MLflow
    ]
    reports = []
    for overrides in (weak, [], []):
        assert main(["run", spec, "--storage", storage, *overrides]) == 0
        reports.append(_last_report(storage, "tiny-classification"))
    out = capsys.readouterr().out
    first, better, same = (r["gate"] for r in reports)
    assert reports[0]["tracking"]["model_version"] == "1" and mlflow_db.exists()
    assert "tracking" not in reports[1]
    assert first["promote"] and "no production version" in first["reason"]
    assert better["promote"] and better["champion_version"] == 1
    assert better["low"] > 0 and "better on auc" in better["reason"]
    assert not same["promote"] and same["champion_version"] == 2
    assert same["improvement"] == 0.0 and "not confidently better" in same["reason"]
    assert "registered as candidate: not confidently better" in out
    reg = Registry(storage)
    assert reg.aliases("tiny-classification") == {"production": 2, "candidate": 3}
    md = Path(reports[2]["run_dir"], "report.md").read_text()
    assert "## Promotion gate" in md and "keep production" in md and "paired-bootstrap" in md
    notes = [e.get("note", "") for e in reg.history("tiny-classification")]
    assert "no production version" in notes[0] and "not confidently better" in notes[-1]

    # by hand: promote the candidate, then roll back to the gate's choice
    capsys.readouterr()
    assert main(["promote", "tiny-classification", "3", "--storage", storage]) == 0
    assert "production v2 -> v3" in capsys.readouterr().out
    assert main(["rollback", "tiny-classification", "--storage", storage]) == 0
    assert "production v3 -> v2" in capsys.readouterr().out
    assert reg.aliases("tiny-classification")["production"] == 2


def test_real_data_options_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Train and test files without a valid file, a derived label, a feature selector, per-query
    weights, a categorical with values unseen in training and the zero no-relevant convention:
    the report's test metrics are the weighted metrics of the predictions it wrote."""
    from components import metrics

    params = {"rows": 3000, "n_features": 6, "mean_query_size": 15, "seed": 5}
    frame = generators.generate_block(generators.plan_blocks("ranking", params)[0])
    rng = np.random.default_rng(0)
    frame["stars"] = frame.pop("label") + 1  # relevance = stars - 1
    frame["w"] = frame["qid"].map(dict(enumerate(rng.uniform(0.5, 3.0, frame["qid"].max() + 1))))
    frame["site"] = rng.choice(["a", "b", "c"], len(frame))
    cut = int(frame.loc[frame["qid"].ne(frame["qid"].shift()), :].index[60])  # a query boundary
    train, test = frame.iloc[:cut].copy(), frame.iloc[cut:].copy()
    test.loc[test.index[::3], "site"] = "never-seen"
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    spec = {
        "name": "real-data",
        "task": "ranking",
        "data": {
            "sources": {
                "train": {"uri": str(tmp_path / "train.parquet")},
                "test": {"uri": str(tmp_path / "test.parquet")},
            },
            "label_from": {"column": "stars", "offset": -1},
            "group": "qid",
            "keys": ["row_id"],
            "weight": "w",
        },
        "features": {"numeric": {"prefix": "f"}, "categorical": ["site"]},
        "split": {"method": "explicit", "valid": 0.2, "seed": 1},
        "models": [{"name": "gbdt", "num_boost_round": 20, "scaling": {"num_workers": 0}}],
        "evaluation": {"metric": "ndcg@10", "no_relevant": "zero"},
        "serve": {"enabled": False, "auth": "none"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec))
    assert main(["run", str(path), "--storage", str(tmp_path / "storage")]) == 0
    out = capsys.readouterr().out
    report = _last_report(str(tmp_path / "storage"), "real-data")
    assert report["status"] == "succeeded"
    rows = report["splits"]["rows"]
    assert rows["test"] == len(test) and rows["train"] + rows["valid"] == len(train)
    assert 0.1 < rows["valid"] / len(train) < 0.3  # whole queries, about split.valid of train
    assert report["metric_conventions"] == {
        "ndcg_no_relevant": "zero",
        "map_no_relevant": "zero",
        "mrr_no_relevant": "zero",
        "weight": "w",
    }
    assert "weighted by column 'w'" in out
    run = Path(report["run_dir"])
    written = (run / "spec.yaml").read_text()
    assert all(f"- f{i}" in written for i in range(6))  # the selector, resolved in full
    scored = pd.read_parquet(run / "predictions_test.parquet")
    expected = metrics.ranking_metrics(
        scored["label"].to_numpy(),
        scored["score"].to_numpy(),
        scored["_group"].to_numpy(),
        no_relevant="zero",
        weights=test.set_index("row_id").loc[scored["row_id"], "w"].to_numpy(),
    )
    assert report["test"]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-9)
    assert report["test"]["map"] == pytest.approx(expected["map"], abs=1e-9)
    assert (
        scored["label"] == test.set_index("row_id").loc[scored["row_id"], "stars"].values - 1
    ).all()

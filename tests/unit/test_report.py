"""The run report: markdown, JSON and a self-contained HTML page with its figures (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import report
from pipelines.cli import main


def _doc(tmp_path: Path, task: str) -> dict:
    rng = np.random.default_rng(0)
    n = 400
    if task == "binary":
        y = rng.integers(0, 2, n)
        frame = pd.DataFrame({"label": y, "score": np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)})
        test = {"auc": 0.8, "logloss": 0.5}
    else:
        frame = pd.DataFrame(
            {
                "label": rng.integers(0, 4, n),
                "score": rng.normal(size=n),
                "_group": np.repeat(np.arange(40), 10),
            }
        )
        test = {"ndcg@10": 0.7, "queries": 40.0}
    predictions = tmp_path / "predictions_test.parquet"
    frame.to_parquet(predictions)
    history = [{"round": i + 1, "valid-auc": 0.7 + 0.01 * i} for i in range(10)]
    return {
        "pipeline": "p",
        "run_id": "r1",
        "task": task,
        "label": "label",
        "status": "succeeded",
        "selection_metric": "auc",
        "models": [
            {
                "name": "gbdt",
                "kind": "xgboost",
                "rounds": 10,
                "best_iteration": 9,
                "train_seconds": 1.0,
                "valid": {"auc": 0.79},
                "history": history,
            }
        ],
        "winner": "gbdt",
        "tuning": {
            "gbdt": {
                "metric": "valid-auc",
                "mode": "max",
                "seconds": 3.0,
                "winner_from": "the best trial's own model",
                "best": {"trial_id": "t1"},
                "trials": [
                    {
                        "trial_id": "t1",
                        "status": "completed",
                        "value": 0.79,
                        "reached": 10,
                        "seconds": 1.2,
                        "config": {"params.eta": 0.1},
                        "error": "",
                    },
                    {
                        "trial_id": "t2",
                        "status": "stopped early",
                        "value": 0.6,
                        "reached": 2,
                        "seconds": 0.4,
                        "config": {"params.eta": 0.01},
                        "error": "",
                    },
                ],
            }
        },
        "test": test,
        "baseline": dict.fromkeys(test, 0.5),
        "predictions": str(predictions),
        "gate": {
            "metric": "auc",
            "promote": False,
            "reason": "not confidently better on auc",
            "challenger": 0.8,
            "champion": 0.79,
            "champion_version": 1,
            "improvement": 0.01,
            "low": -0.01,
            "high": 0.03,
            "confidence": 0.95,
            "resamples": 1000,
            "min_improvement": 0.0,
            "unit": "rows",
            "units": 400,
        },
    }


def test_binary_report_files_sections_and_figures(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "binary")
    md_path, json_path = report.write(str(tmp_path), doc)
    md = Path(md_path).read_text()
    for section in ("## Models", "## Tuning: gbdt", "## Promotion gate", "## Test metrics"):
        assert section in md
    assert "| t1 **best** | completed | 0.7900 | 10 | 1.2 | params.eta=0.1000 |" in md
    assert "keep production" in md and "[-0.0100, +0.0300]" in md
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<h2>Tuning: gbdt</h2>" in page
    for name in (
        "learning_curves",
        "trials_gbdt",
        "roc",
        "precision_recall",
        "calibration",
        "gate",
    ):
        assert f"alt='{name}'" in page
        png = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
    assert json.loads(Path(json_path).read_text())["gate"]["promote"] is False


def test_ranking_report_has_ndcg_figures(tmp_path: Path) -> None:
    report.write(str(tmp_path), _doc(tmp_path, "ranking"))
    page = (tmp_path / "report.html").read_text()
    assert "alt='ndcg_by_k'" in page and "alt='ndcg_per_query'" in page
    assert "alt='roc'" not in page


def test_a_figure_that_fails_never_fails_the_report(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "binary")
    Path(doc["predictions"]).write_text("not parquet")
    report.write(str(tmp_path), doc)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert "figures_error" in saved and (tmp_path / "report.html").exists()


def test_rayline_report_finds_a_run(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "runs" / "p" / "20260101-000000.000-abcd"
    run_dir.mkdir(parents=True)
    report.write(str(run_dir), {**_doc(tmp_path, "binary"), "seconds": 1.0})
    assert main(["report", "20260101", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"report.html: {run_dir / 'report.html'}" in out and "succeeded" in out
    assert main(["report", str(run_dir)]) == 0
    assert main(["report", "2099", "--storage", str(tmp_path)]) == 1
    assert "no run matching '2099'" in capsys.readouterr().err


def test_report_names_the_no_relevant_convention_and_the_weight(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "ranking")
    doc["test"] = {"ndcg@10": 0.43, "map": 0.2, "queries": 40.0, "queries_no_relevant": 16.0}
    doc["baseline"] = dict.fromkeys(doc["test"], 0.1)
    doc["metric_conventions"] = {
        "ndcg_no_relevant": "zero",
        "map_no_relevant": "zero",
        "mrr_no_relevant": "zero",
        "weight": "w",
    }
    note = (
        "no_relevant=zero: queries without a relevant row (16 of 40 test queries): "
        "ndcg counts each 0, map and mrr 0"
    )
    md = report.markdown(doc)
    assert f"- {note}" in md and "- weighted by column 'w'" in md
    assert "| queries" not in md  # counts are not metric rows
    console = report.summary(doc).splitlines()
    assert f"    {note}" in console and "    weighted by column 'w'" in console
    assert not any(line.strip().startswith("queries") for line in console)
    doc["metric_conventions"] = dict.fromkeys(doc["metric_conventions"], "skip")
    del doc["metric_conventions"]["weight"]
    assert "ndcg, map and mrr leave them out of the mean" in report.summary(doc)
    assert "weighted" not in report.summary(doc)
    del doc["metric_conventions"]
    assert "no_relevant" not in report.markdown(doc) + report.summary(doc)

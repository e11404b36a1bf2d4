"""The pipeline's stages (pipelines/stages/) and the runner's helpers, without Ray.

Ray is imported by some stage modules but never started: the "datasets" of a ``Prepared`` are
pandas frames of tens of rows, and the scorer is a fake that scores a frame with
``components.steps.score.ScoreBatch`` (the Predictor each Ray actor would run). Bundles are real
(components.model_bundle, tests/bundles.py), the registry is a real one on ``tmp_path``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components import bundle, evaluation, gate, split_evaluation
from components.features import FeatureTransform, fit_transform, partial_stats
from components.model_bundle import LINEAGE_JSON, METRICS_JSON, MODEL_FILES
from components.predictor import Predictor
from components.registry import ModelVersion, Registry
from components.steps.ingest import IngestResult
from components.steps.score import ScoreBatch
from components.steps.train_common import TrainOutcome
from pipelines import resume, runner, trainers, translate
from pipelines.errors import PipelineError
from pipelines.resume import Resume, Reusable
from pipelines.run_dir import RunDir, new_run_id, runs_of
from pipelines.run_report import RunReport
from pipelines.spec import PipelineSpec, XGBoostModelSpec, spec_from_dict
from pipelines.stages import evaluate, features, prepare, register, select, serve, train
from pipelines.stages.common import (
    FrameSplit,
    RunContext,
    Scorer,
    SplitScorer,
    frame_split_scorer,
    kept_columns,
    remove_stale,
    rules_outcome,
)
from pipelines.timer import StepTimer
from tests import bundles

RULES = {
    "name": "rules",
    "kind": "rules",
    "rules": [{"name": "many_clicks", "when": "clicks > 3", "score": 0.7}],
    "default": {"score": 0.4},
}
GBDT = {"name": "gbdt", "params": {"max_depth": 3}, "num_boost_round": 5}
GUARDRAILS = [
    {"name": "young", "when": "age < 25", "override": {"score": 0.05}},
    {"name": "cap", "clamp": {"max": 0.65}},
]


def spec_doc(**changes: Any) -> dict[str, Any]:
    """A small binary spec over tests/bundles.tiny_frame's columns; ``a__b=v`` sets d[a][b]."""
    d: dict[str, Any] = {
        "name": "stages",
        "task": "binary",
        "data": {
            "source": {"uri": "synthetic:binary", "params": {"rows": 40, "seed": 1}},
            "label": "label",
        },
        "features": {"numeric": ["age", "clicks"], "categorical": ["country"]},
        "split": {"method": "random", "seed": 0},
        "models": [RULES, GBDT],
        "evaluation": {"metric": "auc"},
        "registry": {"gate": {"resamples": 200}},
        "serve": {"enabled": False},
    }
    d = copy.deepcopy(d)
    for path, value in changes.items():
        node = d
        *parents, last = path.split("__")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return d


def make_spec(**changes: Any) -> PipelineSpec:
    return spec_from_dict(spec_doc(**changes))


def frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """tiny_frame plus the row key every ingested row carries."""
    f = bundles.tiny_frame(rows, seed=seed)
    f["_row_key"] = np.arange(rows, dtype=np.int64) + 1000 * seed
    return f


def data_summary() -> prepare.DataSummary:
    return prepare.summarize(
        {"all": IngestResult(None, 61, 60, 1, {"wrong_type": 1}, 1, "fp-all", "/q/all")}
    )


def prepared_from(
    train_f: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame
) -> prepare.Prepared:
    rows = {"train": len(train_f), "valid": len(valid), "test": len(test)}
    return prepare.Prepared(train_f, valid, test, rows, {}, data_summary())


def fit(spec: PipelineSpec, train_f: pd.DataFrame, key: str = "features-key") -> features.Features:
    """The run's transform fitted on a pandas frame (what fit_features does per block)."""
    cfg = translate.feature_config(spec)
    return features.Features(fit_transform([partial_stats(train_f, cfg)], cfg), key)


def fake_scorer(spec: PipelineSpec, calls: list[str] | None = None) -> Scorer:
    """Scores a pandas frame with the bundle as a Ray Data actor would (no Ray)."""
    keep = kept_columns(spec)

    def score(data: Any, bundle: str) -> pd.DataFrame:  # named as in the Scorer protocol
        if calls is not None:
            calls.append(str(bundle))
        return ScoreBatch(str(bundle), keep)(data)

    return score


def train_context(
    ctx: RunContext, feats: features.Features, label_mean: float
) -> trainers.TrainContext:
    return trainers.TrainContext(
        task=ctx.task,
        label=ctx.label,
        metric=ctx.metric,
        num_classes=ctx.spec.data.num_classes,
        features_json=feats.transform.to_json(),
        eval_kwargs=ctx.eval_kwargs,
        label_mean=label_mean,
    )


@dataclasses.dataclass
class World:
    """One run's context over pandas splits, with its printed lines and scorer calls."""

    spec: PipelineSpec
    ctx: RunContext
    storage: Path
    lines: list[str]
    prepared: prepare.Prepared
    feats: features.Features
    tctx: trainers.TrainContext
    calls: list[str]
    score: Scorer

    @property
    def split(self) -> SplitScorer:
        """The stages' scorer: both bundles' outputs side by side, in blocks."""
        return frame_split_scorer(self.score)

    def rules_candidate(self) -> train.Candidate:
        i, m = next((i, m) for i, m in enumerate(self.spec.models) if m.kind == "rules")
        return train.train_candidate(
            self.ctx, i, m, self.tctx, self.prepared, self.feats, self.split
        )

    def xgb_candidate(
        self, name: str = "gbdt", flip: bool = False, index: int = 1
    ) -> train.Candidate:
        """A real 20-round XGBoost bundle (trained on flipped labels: a worse model)."""
        train_f = self.prepared.train.copy()
        if flip:
            train_f["label"] = 1 - train_f["label"]
        contents = bundles.xgboost_contents(train_f, transform=self.feats.transform, rounds=20)
        path = bundles.write(self.storage / "bundles" / f"{name}-{flip}", contents)
        scored = self.score(self.prepared.valid, path)
        valid = evaluation.evaluate("binary", scored, "label", **self.ctx.eval_kwargs)
        outcome = TrainOutcome(
            model=contents.model,
            history=[{"round": 19, "auc": valid["auc"]}],
            best_iteration=19,
            rounds=20,
            seconds=0.25,
            checkpoint_path=None,
        )
        m = XGBoostModelSpec.model_validate({**GBDT, "name": name})
        return train.Candidate(index, m, outcome, path, valid)


def world(tmp_path: Path, spec: PipelineSpec | None = None, rows: int = 60) -> World:
    spec = spec or make_spec()
    storage = tmp_path / "storage"
    lines: list[str] = []
    ctx = RunContext(spec, RunDir(str(storage), spec.name, "run-1"), lines.append)
    train_f, valid, test = frame(rows, 0), frame(rows, 1), frame(rows, 2)
    prepared = prepared_from(train_f, valid, test)
    feats = fit(spec, train_f)
    calls: list[str] = []
    return World(
        spec,
        ctx,
        storage,
        lines,
        prepared,
        feats,
        train_context(ctx, feats, float(train_f["label"].mean())),
        calls,
        fake_scorer(spec, calls),
    )


@pytest.fixture(autouse=True)
def _never_starts_ray() -> Iterator[None]:
    import ray

    before = ray.is_initialized()  # `make test` runs the unit tests beside the Ray tiers
    yield
    assert before or not ray.is_initialized(), "a unit test started Ray"


def _quiet(line: str) -> None:
    pass


def _never() -> Any:
    raise AssertionError("computed although a stored result was expected")


# -- prepare -----------------------------------------------------------------------------------


def test_summarize_adds_up_every_source() -> None:
    reads = {
        "train": IngestResult(
            None, 100, 97, 3, {"wrong_type": 2, "null_label": 1}, 2, "fp-t", "/q/t"
        ),
        "valid": IngestResult(None, 20, 19, 1, {"null_label": 1}, 1, "fp-v", None),
        "test": IngestResult(None, 30, 30, 0, {}, 3, "fp-s"),
    }
    s = prepare.summarize(reads)
    assert s == prepare.DataSummary(
        rows_read=150,
        rows_used=146,
        rows_quarantined=4,
        by_rule={"wrong_type": 2, "null_label": 2},
        quarantine=["/q/t"],  # sources that quarantined nothing have no folder
        fingerprints={"train": "fp-t", "valid": "fp-v", "test": "fp-s"},
        inputs=6,
    )
    assert s.rows_read == s.rows_used + s.rows_quarantined
    assert s.to_dict() == {
        "rows_read": 150,
        "rows_used": 146,
        "rows_quarantined": 4,
        "by_rule": {"wrong_type": 2, "null_label": 2},
        "quarantine": ["/q/t"],
        "fingerprints": {"train": "fp-t", "valid": "fp-v", "test": "fp-s"},
        "inputs": 6,
        "skipped": [],
    }
    assert prepare.summarize({}) == prepare.DataSummary()


def test_ingest_counts_and_names_the_skipped_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files of an input folder that are not read were skipped without being counted or named:
    ingest prints them per source and the data summary keeps them (issue 14)."""
    from components.steps import ingest as ingest_step

    skipped = {
        "all": ["_SUCCESS (starts with _)", "notes.txt (unknown extension)"]
        + [f"_tmp/{i}.csv (in the folder _tmp/, which starts with _)" for i in range(11)],
    }

    def fake_ingest(source: Any, schema: Any, policies: Any, root: str, label: str) -> Any:
        return IngestResult(None, 10, 10, 0, {}, 1, "fp", None, skipped[label])

    monkeypatch.setattr(ingest_step, "ingest", fake_ingest)
    w = world(tmp_path)
    got = prepare.ingest(w.ctx)
    assert w.lines[-1] == (
        "    all: skipped 13 file(s) in the folder: _SUCCESS (starts with _), notes.txt "
        "(unknown extension), "
        + ", ".join(f"_tmp/{i}.csv (in the folder _tmp/, which starts with _)" for i in range(8))
        + ", and 3 more"
    )
    assert got.data.skipped == [f"all: {s}" for s in skipped["all"]]
    assert list(got.data.to_dict())[-1] == "skipped"  # appended: the older keys keep their order
    assert prepare.DataSummary(**got.data.to_dict()) == got.data  # what --resume reads back
    assert prepare.skipped_line("train", []) is None
    reads = {
        "train": IngestResult(None, 1, 1, 0, {}, 1, "a", None, ["_x (starts with _)"]),
        "valid": IngestResult(None, 1, 1, 0, {}, 1, "b"),
    }
    assert prepare.summarize(reads).skipped == ["train: _x (starts with _)"]


@pytest.mark.parametrize(
    ("rows", "empty"),
    [
        ({"train": 5, "valid": 0, "test": 3}, "valid"),
        ({"train": 5, "valid": 2, "test": 0}, "test"),
        ({"train": 0, "valid": 0, "test": 0}, "train"),  # the first empty one is named
    ],
)
def test_check_not_empty_names_the_empty_split(rows: dict[str, int], empty: str) -> None:
    with pytest.raises(PipelineError, match=rf"split '{empty}' is empty") as e:
        prepare.check_not_empty(rows)
    assert str(rows) in str(e.value) and "split fractions or time cut-offs" in str(e.value)


def test_check_not_empty_passes_non_empty_splits() -> None:
    prepare.check_not_empty({"train": 1, "valid": 1, "test": 1})


def test_prepared_summary() -> None:
    p = prepare.Prepared(
        None, None, None, {"train": 8, "valid": 1, "test": 1}, {"train": 4}, data_summary()
    )
    assert p.summary == {"rows": {"train": 8, "valid": 1, "test": 1}, "groups": {"train": 4}}


def _prepare_key(tmp_path: Path, **changes: Any) -> str:
    spec = make_spec(**changes)
    return prepare.input_key(RunContext(spec, RunDir(str(tmp_path), spec.name, "r")))


def test_prepare_input_key_follows_data_and_split_only(tmp_path: Path) -> None:
    base = _prepare_key(tmp_path)
    assert base == _prepare_key(tmp_path)  # stable
    # what ingest and split read
    assert _prepare_key(tmp_path, split__seed=1) != base
    assert _prepare_key(tmp_path, split__stratify=False) != base
    assert (
        _prepare_key(
            tmp_path, data__source={"uri": "synthetic:binary", "params": {"rows": 41, "seed": 1}}
        )
        != base
    )
    assert _prepare_key(tmp_path, data__keys=["row_id"]) != base
    # what later stages read
    assert _prepare_key(tmp_path, models=[GBDT]) == base
    assert _prepare_key(tmp_path, models__1={**GBDT, "num_boost_round": 9}) == base
    assert _prepare_key(tmp_path, features__standardize=True) == base
    assert _prepare_key(tmp_path, evaluation__metric="logloss") == base
    assert _prepare_key(tmp_path, registry__promote=False) == base
    assert _prepare_key(tmp_path, guardrails=GUARDRAILS) == base


def test_carve_line_says_how_valid_is_held_out() -> None:
    from components.splits import carve_plan

    assert prepare.carve_line(carve_plan("group", 0, 0.2), stratify=False) == (
        "valid: 0.2 of the train source held out (whole queries; no valid source given)"
    )
    assert "(rows, stratified by label;" in prepare.carve_line(carve_plan("random", 0, 0.1), True)
    assert "(rows;" in prepare.carve_line(carve_plan("random", 0, 0.1), False)


def test_ingest_prints_the_spec_warnings_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components.steps import ingest as ingest_step

    monkeypatch.setattr(
        ingest_step, "ingest", lambda *a, **k: IngestResult(None, 5, 5, 0, {}, 1, "fp", None)
    )
    same = {"uri": str(tmp_path / "te.parquet")}
    spec = make_spec(
        data__source=None,
        data__sources={"train": {"uri": "tr.parquet"}, "valid": same, "test": same},
        split={"method": "explicit"},
        models=[RULES],
    )
    w = world(tmp_path, spec)
    prepare.ingest(w.ctx)
    assert w.lines[0].startswith("    warning: data.sources.valid is the same data as data.sources")
    assert len(w.lines) == 4  # the warning, then one line per source


def test_the_run_uses_the_resolved_features_in_spec_yaml_and_the_bundle(tmp_path: Path) -> None:
    """Selectors are resolved when the run starts: the run's spec.yaml and every bundle's
    schema hold the full feature lists."""
    data = tmp_path / "data.parquet"
    bundles.tiny_frame(20).to_parquet(data)
    spec = make_spec(
        data__source={"uri": str(data)},
        features={"numeric": {"all_except": ["country"]}, "categorical": {"pattern": "c.*y"}},
        models=[RULES],
    )
    assert not spec.features.resolved
    r = runner.Runner(spec, out=_quiet, storage=str(tmp_path / "storage"), run_id="run-1")
    assert r.spec.features.numeric == ["age", "clicks"]  # the label is never picked
    assert r.spec.features.categorical == ["country"]
    assert r.ctx.spec is r.spec and r.ctx.schema.numeric == ("age", "clicks")
    r._start()
    from pipelines.spec import load_spec

    written = load_spec(r.paths.spec_file)
    assert written == r.spec and written.features.resolved
    w = world(tmp_path, r.spec)
    cand = w.rules_candidate()
    schema = Predictor.load(cand.bundle).schema
    assert (schema.numeric, schema.categorical) == (("age", "clicks"), ("country",))


def test_prepare_reusable_is_kept_under_prepared(tmp_path: Path) -> None:
    w = world(tmp_path)
    r = prepare.reusable(w.ctx, "k")
    assert (r.names, r.folder, r.key) == (("ingest", "split"), w.ctx.paths.prepared, "k")


class _AppendingSplit:
    """Writes as Ray Data's write_parquet does: new files added to an existing folder."""

    def __init__(self, text: str) -> None:
        self.text = text

    def write_parquet(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        Path(path, f"part-{len(list(Path(path).iterdir()))}.parquet").write_text(self.text)


def test_prepared_save_replaces_what_an_interrupted_save_left(tmp_path: Path) -> None:
    w = world(tmp_path)
    paths = w.ctx.paths
    for name in ("train", "valid"):  # a save that stopped half-way, and its temp folder
        Path(paths.prepared_split(name)).mkdir(parents=True)
        Path(paths.prepared_split(name), "part-0.parquet").write_text("old")
    splits = {n: _AppendingSplit(f"new {n}") for n in ("train", "valid", "test")}
    p = prepare.Prepared(**splits, rows={}, groups={}, data=prepare.DataSummary())
    prepare.reusable(w.ctx, "k").save(p)
    for name in ("train", "valid", "test"):
        files = list(Path(paths.prepared_split(name)).iterdir())
        assert [f.read_text() for f in files] == [f"new {name}"]
    # each split was written aside and renamed: no temporary folder is left
    assert sorted(os.listdir(paths.prepared)) == ["test", "train", "valid"]


def test_remove_stale_never_leaves_the_run_directory(tmp_path: Path) -> None:
    w = world(tmp_path)
    outside = tmp_path / "precious"
    outside.mkdir()
    with pytest.raises(ValueError, match="not an output inside the run directory"):
        remove_stale(w.ctx, str(outside))
    with pytest.raises(ValueError, match="not an output inside the run directory"):
        remove_stale(w.ctx, w.ctx.paths.root)
    assert outside.exists()


# -- features ----------------------------------------------------------------------------------


def test_features_summary(tmp_path: Path) -> None:
    w = world(tmp_path)
    t = w.feats.transform
    assert [p.name for p in t.numeric] == ["age", "clicks"]
    vocab = set(w.prepared.train["country"].dropna())
    assert w.feats.summary == {
        "numeric": 2,
        "categorical": {"country": len(vocab) + 1},  # + the missing/unknown code
        "rows_fitted": 60,
    }


def test_features_reusable_round_trip(tmp_path: Path) -> None:
    w = world(tmp_path)
    r = features.reusable(w.ctx, w.feats.key)
    first = Resume(True)
    assert first.stored(r) is None
    got = first.run(r, lambda: w.feats)
    assert got is w.feats and first.reused == []
    path = Path(w.ctx.paths.features_file)
    assert FeatureTransform.from_json(path.read_text()) == w.feats.transform
    assert resume.stored(w.ctx.paths.features) == {"key": w.feats.key}

    again = Resume(True)
    assert again.stored(r) == {"key": w.feats.key}
    loaded = again.run(r, _never)
    assert loaded.transform == w.feats.transform and loaded.key == w.feats.key
    assert loaded.summary == w.feats.summary
    assert again.reused == ["features"]
    assert w.lines[-1] == "    3 features (2 numeric, 1 categorical)"

    # another key (the data or the features section changed): fitted again
    stale = features.reusable(w.ctx, "other")
    assert Resume(True).run(stale, lambda: w.feats) is w.feats
    assert resume.stored(w.ctx.paths.features) == {"key": "other"}


def test_features_input_key_chains_the_prepared_key(tmp_path: Path) -> None:
    def key(prepared_key: str, **changes: Any) -> str:
        spec = make_spec(**changes)
        return features.input_key(
            RunContext(spec, RunDir(str(tmp_path), spec.name, "r")), prepared_key
        )

    base = key("p1")
    assert base == key("p1")
    assert key("p2") != base
    assert key("p1", features__standardize=True) != base
    assert key("p1", features__categorical=[{"name": "country", "min_frequency": 2}]) != base
    assert key("p1", models=[GBDT]) == base
    assert key("p1", split__seed=3) == base  # the split reaches it through the prepared key


# -- train -------------------------------------------------------------------------------------


def _regression(objective: str) -> RunContext:
    spec = make_spec(
        task="regression",
        evaluation={},
        models=[{"name": "gbdt", "params": {"objective": objective}}],
        data__source={"uri": "synthetic:regression", "params": {"rows": 40}},
    )
    return RunContext(spec, RunDir("/s", spec.name, "r"))


def test_check_regression_labels_rejects_negative_labels_for_tweedie() -> None:
    ctx = _regression("reg:tweedie")
    with pytest.raises(PipelineError) as e:
        train.check_regression_labels(ctx, -1.5)
    msg = str(e.value)
    assert msg.startswith("models.0.params.objective reg:tweedie needs labels >= 0")
    assert "'label' holds -1.5 in the training split" in msg
    train.check_regression_labels(ctx, 0.0)  # zero is a valid tweedie label
    train.check_regression_labels(_regression("reg:squarederror"), -1.5)


def test_candidate_key_follows_model_guardrails_metric(tmp_path: Path) -> None:
    def key(model: int = 1, feats_key: str = "f1", **changes: Any) -> str:
        spec = make_spec(**changes)
        ctx = RunContext(spec, RunDir(str(tmp_path), spec.name, "r"))
        f = features.Features(FeatureTransform((), ()), feats_key)
        return train.candidate_key(ctx, f, spec.models[model])

    base = key()
    assert base == key()
    assert key(feats_key="f2") != base
    assert key(models__1={**GBDT, "num_boost_round": 6}) != base
    assert key(models__1={**GBDT, "params": {"max_depth": 4}}) != base
    assert key(models__1={**GBDT, "scaling": {"num_workers": 0}}) != base
    assert key(model=0) != base  # another model
    assert key(guardrails=GUARDRAILS) != base
    assert key(evaluation__metric="logloss") != base
    assert key(evaluation__threshold=0.3) != base
    # not an input of the candidate
    assert key(registry__promote=False) == base
    assert key(models__0={**RULES, "default": {"score": 0.1}}) == base  # the other model
    assert key(tune__num_samples=3) == base  # only models with a search are tuned


def test_candidate_key_follows_tune_for_a_searched_model(tmp_path: Path) -> None:
    searched = {**GBDT, "search": {"params.eta": {"loguniform": [0.01, 0.3]}}}

    def key(**changes: Any) -> str:
        spec = make_spec(models=[searched], **changes)
        ctx = RunContext(spec, RunDir(str(tmp_path), spec.name, "r"))
        return train.candidate_key(
            ctx, features.Features(FeatureTransform((), ()), "f"), spec.models[0]
        )

    assert key() != key(tune__num_samples=3)


def test_train_candidate_for_a_rule_model(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.rules_candidate()
    assert c.bundle == w.ctx.paths.candidate("rules") and c.name == "rules"
    assert c.index == 0 and c.is_baseline and c.tuning is None
    assert c.outcome == rules_outcome(w.spec.models[0])  # type: ignore[arg-type]
    manifest = bundle.verify_bundle(c.bundle)
    assert {"model.json", "features.json", "schema.json", MODEL_FILES["rules"]} <= set(
        manifest["files"]
    )
    predictor = Predictor.load(c.bundle)
    assert predictor.task == "binary"
    # scored once, on the validation split, with the candidate's own bundle
    assert w.calls == [c.bundle]
    expected = ScoreBatch(c.bundle, kept_columns(w.spec))(w.prepared.valid)
    clicks = w.prepared.valid["clicks"].to_numpy()
    np.testing.assert_allclose(expected["score"], np.where(clicks > 3, 0.7, 0.4))
    assert c.valid == pytest.approx(evaluation.evaluate("binary", expected, "label", threshold=0.5))
    assert w.lines == [
        f"    models.0 rules: 1 rule(s), no training; valid auc = {c.valid['auc']:.4f}"
    ]
    assert c.summary == {
        "name": "rules",
        "kind": "rules",
        "valid": c.valid,
        "rounds": 0,
        "best_iteration": 0,
        "train_seconds": 0.0,
        "resumed_from": 0,
        "trained_on": {},
        "history": [],
    }


def test_candidate_summary_of_a_trained_model(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.xgb_candidate()
    assert not c.is_baseline
    assert c.summary == {
        "name": "gbdt",
        "kind": "xgboost",
        "valid": c.valid,
        "rounds": 20,
        "best_iteration": 19,
        "train_seconds": 0.2,  # round(0.25, 1)
        "resumed_from": 0,
        "trained_on": {},
        "history": [{"round": 19, "auc": c.valid["auc"]}],
    }
    assert list(c.summary) == [
        "name", "kind", "valid", "rounds", "best_iteration", "train_seconds",
        "resumed_from", "trained_on", "history",
    ]  # fmt: skip


def test_train_candidate_needs_a_computable_metric(tmp_path: Path) -> None:
    spec = make_spec(
        task="regression",
        evaluation={"metric": "mape"},
        data__source={"uri": "synthetic:regression", "params": {"rows": 40}},
        models=[
            {
                "name": "rules",
                "kind": "rules",
                "rules": [{"when": "clicks > 3", "value": 2}],
                "default": {"value": 1},
            }
        ],
    )
    w = world(tmp_path, spec)
    valid = w.prepared.valid.assign(label=-np.abs(w.prepared.valid["label"]))  # no positive label
    prepared = dataclasses.replace(w.prepared, valid=valid)
    with pytest.raises(PipelineError, match=r"evaluation\.metric mape cannot be computed"):
        train.train_candidate(w.ctx, 0, spec.models[0], w.tctx, prepared, w.feats, w.split)


def test_train_reusable_round_trip(tmp_path: Path) -> None:
    w = world(tmp_path)
    m = w.spec.models[0]
    key = train.candidate_key(w.ctx, w.feats, m)
    r = train.reusable(w.ctx, 0, m, key)
    assert r.folder == w.ctx.paths.candidate_done("rules")
    first = Resume(enabled=True)
    c = first.run(
        r, lambda: train.train_candidate(w.ctx, 0, m, w.tctx, w.prepared, w.feats, w.split)
    )
    assert first.reused == []
    doc = resume.stored(r.folder)
    assert doc is not None and doc["key"] == key and doc["valid"] == c.valid

    again = Resume(enabled=True)
    loaded = again.run(r, _never)
    assert again.reused == ["models.0 rules"]
    assert loaded.spec == c.spec and loaded.valid == c.valid and loaded.bundle == c.bundle
    assert loaded.outcome == c.outcome  # the model bytes come back from the bundle
    assert loaded.summary == c.summary
    assert w.lines[-1] == (
        f"    models.0 rules: reused (trained before the run stopped; valid auc = {c.valid['auc']:.4f})"
    )
    # a changed model is trained again
    assert Resume(True).stored(train.reusable(w.ctx, 0, m, "another key")) is None


def test_train_reusable_refuses_a_damaged_bundle(tmp_path: Path) -> None:
    w = world(tmp_path)
    m = w.spec.models[0]
    r = train.reusable(w.ctx, 0, m, "k")
    Resume(True).run(r, w.rules_candidate)
    Path(w.ctx.paths.candidate("rules"), MODEL_FILES["rules"]).write_text("{}")
    with pytest.raises(bundle.BundleError):
        Resume(True).run(r, _never)


def test_a_stale_candidate_is_trained_again_on_resume(tmp_path: Path) -> None:
    w = world(tmp_path)
    m = w.spec.models[0]
    Resume(True).run(train.reusable(w.ctx, 0, m, "key before the spec changed"), w.rules_candidate)
    # --resume after models.0 changed (or after a stop between its bundle and its key): the key
    # is stale, so the candidate is trained again, into the same run directory
    c = Resume(True).run(train.reusable(w.ctx, 0, m, "key now"), w.rules_candidate)
    assert bundle.verify_bundle(c.bundle)


# -- select ------------------------------------------------------------------------------------


def _cand(name: str, **valid: float) -> train.Candidate:
    m = XGBoostModelSpec(name=name)
    outcome = TrainOutcome(b"", [], 0, 1, 0.0, None)
    return train.Candidate(0, m, outcome, f"/b/{name}", dict(valid))


def test_best_higher_and_lower_is_better_and_ties() -> None:
    a, b, c = (
        _cand("a", auc=0.7, logloss=0.5),
        _cand("b", auc=0.9, logloss=0.6),
        _cand("c", auc=0.8, logloss=0.4),
    )
    assert select.best([a, b, c], "auc") is b
    assert select.best([a, b, c], "logloss") is c  # lower is better
    x, y, z = (
        _cand("x", auc=0.8, rmse=1.0),
        _cand("y", auc=0.8, rmse=1.0),
        _cand("z", auc=0.1, rmse=2.0),
    )
    assert select.best([z, x, y], "auc") is x  # the first of equals
    assert select.best([z, y, x], "auc") is y
    assert select.best([z, x, y], "rmse") is x
    assert select.best([a], "auc") is a


def test_select_a_trained_model_that_beats_the_rule_baseline(tmp_path: Path) -> None:
    w = world(tmp_path)
    rules, gbdt = w.rules_candidate(), w.xgb_candidate()
    assert gbdt.valid["auc"] > rules.valid["auc"]
    s = select.select(w.ctx, [rules, gbdt], w.prepared, w.feats, w.tctx, w.split)
    assert s.winner is gbdt
    assert s.final_model == "gbdt as trained on the training split (its best round by validation)"
    g = s.baseline_gate
    assert g is not None and g["promote"] is True
    assert (g["challenger_name"], g["baseline"], g["split"], g["metric"]) == (
        "gbdt",
        "rules",
        "valid",
        "auc",
    )
    assert g["challenger"] == pytest.approx(gbdt.valid["auc"])
    assert g["champion"] == pytest.approx(rules.valid["auc"])
    assert (g["units"], g["resamples"]) == (60, 200)
    assert w.lines[-1].startswith(
        "    baseline rules: gbdt beats rules on validation: better on auc"
    )


def test_select_keeps_the_rule_baseline_over_a_worse_model(tmp_path: Path) -> None:
    w = world(tmp_path)
    rules, worse = w.rules_candidate(), w.xgb_candidate(flip=True)
    assert worse.valid["auc"] < rules.valid["auc"]
    s = select.select(w.ctx, [rules, worse], w.prepared, w.feats, w.tctx, w.split)
    assert s.winner is rules
    assert s.final_model == "the rule model rules (no training)"
    g = s.baseline_gate
    assert g is not None and g["promote"] is False and g["challenger_name"] == "gbdt"
    assert "the rule baseline 'rules' stays" in g["reason"]
    assert w.lines[-1].startswith(
        "    baseline rules: rules stays the winner over gbdt on validation"
    )


def test_select_without_a_baseline_or_with_only_baselines(tmp_path: Path) -> None:
    w = world(tmp_path)
    rules = w.rules_candidate()
    good, bad = w.xgb_candidate("good"), w.xgb_candidate("bad", flip=True, index=2)
    s = select.select(w.ctx, [bad, good], w.prepared, w.feats, w.tctx, w.split)
    assert s.winner is good and s.baseline_gate is None
    assert s.final_model.startswith("good as trained on the training split")
    s = select.select(w.ctx, [rules], w.prepared, w.feats, w.tctx, w.split)
    assert s.winner is rules and s.baseline_gate is None
    assert s.final_model == "the rule model rules (no training)"


def test_select_scores_both_candidates_in_one_pass(tmp_path: Path) -> None:
    w = world(tmp_path)
    rules, gbdt = w.rules_candidate(), w.xgb_candidate()
    w.calls.clear()
    s = select.select(w.ctx, [rules, gbdt], w.prepared, w.feats, w.tctx, w.split)
    assert w.calls == [gbdt.bundle, rules.bundle]  # the winner, then the baseline, once each
    assert s.baseline_gate is not None and s.baseline_gate["split"] == "valid"


# -- evaluate ----------------------------------------------------------------------------------


def _guarded(tmp_path: Path) -> tuple[World, train.Candidate]:
    w = world(tmp_path, make_spec(guardrails=GUARDRAILS, models=[RULES]))
    return w, w.rules_candidate()


def test_measure_equals_components_evaluation(tmp_path: Path) -> None:
    w, c = _guarded(tmp_path)
    scored = w.score(w.prepared.test, c.bundle)
    assert {"raw_score", "guardrails"} <= set(scored.columns)
    ev = evaluate.measure(w.ctx, FrameSplit(scored), 0.45)
    assert ev.predictions == w.ctx.paths.predictions and ev.rows == len(scored)
    assert ev.test == pytest.approx(evaluation.evaluate("binary", scored, "label", threshold=0.5))
    alone = evaluation.without_guardrails(scored)
    assert alone is not None
    assert ev.test_without_guardrails == pytest.approx(
        evaluation.evaluate("binary", alone, "label", threshold=0.5)
    )
    assert ev.test_without_guardrails != ev.test  # the guardrails changed scores
    assert ev.baseline == pytest.approx(
        evaluation.baseline("binary", scored, "label", 0.45, None, threshold=0.5)
    )
    fired = scored["guardrails"].str.split(",").explode()
    assert [g["fired"] for g in ev.guardrails] == [
        int((fired == "young").sum()),
        int((fired == "cap").sum()),
    ]
    assert ev.guardrails[1]["fired"] > 0  # 0.7 is capped at 0.65


def test_measure_without_guardrails(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.rules_candidate()
    scored = w.score(w.prepared.test, c.bundle)
    ev = evaluate.measure(w.ctx, FrameSplit(scored), 0.5)
    assert ev.test_without_guardrails is None and ev.guardrails is None
    assert ev.test == pytest.approx(evaluation.evaluate("binary", scored, "label", threshold=0.5))


def test_guardrail_report_counts() -> None:
    spec = make_spec(guardrails=GUARDRAILS)
    block = pd.DataFrame({"guardrails": ["young", "", "young,cap", None, "cap"]})
    fired = split_evaluation.merge_parts(
        [{"fired": {"young": 1}, "rows": 1}, {"fired": {"young": 1, "cap": 2}, "rows": 4}]
    )["fired"]
    assert fired == {"young": 2, "cap": 2}
    assert evaluate.guardrail_report(fired, len(block), spec.guardrails) == [
        {"name": "young", "action": "override", "when": "age < 25", "fired": 2, "share": 0.4},
        {"name": "cap", "action": "clamp", "when": None, "fired": 2, "share": 0.4},
    ]
    empty = evaluate.guardrail_report({}, 0, spec.guardrails)
    assert [(g["fired"], g["share"]) for g in empty] == [(0, 0.0), (0, 0.0)]


def test_write_predictions_replaces_atomically(tmp_path: Path) -> None:
    path = str(tmp_path / "predictions_test.parquet")
    first = pd.DataFrame({"_row_key": [1, 2, 3], "score": [0.1, 0.5, 0.9]})
    FrameSplit(first).write(path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), first)
    second = first.assign(score=[0.2, 0.3, 0.4], **{"champion:score": [0.0, 0.0, 0.0]})
    FrameSplit(second).write(path)  # over an earlier file; the champion's outputs stay out
    pd.testing.assert_frame_equal(pd.read_parquet(path), second.drop(columns=["champion:score"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions_test.parquet"]


def test_evaluate_scores_the_test_split_with_the_winner(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.rules_candidate()
    Path(w.ctx.paths.root).mkdir(parents=True, exist_ok=True)
    w.calls.clear()
    ev = evaluate.evaluate(
        w.ctx, select.Selection(c, "rules"), w.prepared, 0.5, frame_split_scorer(w.score)
    )
    assert w.calls == [c.bundle]
    written = pd.read_parquet(w.ctx.paths.predictions)
    assert (
        len(written) == 60 and written["_row_key"].tolist() == w.prepared.test["_row_key"].tolist()
    )
    assert ev.test == pytest.approx(
        evaluate.measure(w.ctx, FrameSplit(written, blocks=1), 0.5).test
    )
    assert not list(Path(w.ctx.paths.root).glob("*.tmp"))


def test_evaluate_refuses_a_wrong_row_count(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.rules_candidate()
    prepared = dataclasses.replace(w.prepared, rows={**w.prepared.rows, "test": 61})
    with pytest.raises(RuntimeError, match="scored 60 test rows, expected 61"):
        evaluate.evaluate(
            w.ctx, select.Selection(c, "rules"), prepared, 0.5, frame_split_scorer(w.score)
        )
    assert not Path(w.ctx.paths.predictions).exists()


# -- register ----------------------------------------------------------------------------------


def test_lineage(tmp_path: Path) -> None:
    w = world(tmp_path)
    doc = register.lineage(w.ctx, {"all": "fp"}, "job-7")
    assert list(doc) == [
        "pipeline", "run_id", "run_dir", "data_fingerprints", "spec_sha256", "git_commit",
        "packages", "ray_job_id", "created_at", "command",
    ]  # fmt: skip
    assert doc["pipeline"] == "stages" and doc["run_id"] == "run-1"
    assert doc["run_dir"] == w.ctx.paths.root
    assert doc["data_fingerprints"] == {"all": "fp"}
    assert doc["spec_sha256"] == w.spec.fingerprint() and len(doc["spec_sha256"]) == 64
    assert doc["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", doc["git_commit"])
    assert set(doc["packages"]) == {
        "python",
        "rayline",
        "ray",
        "xgboost",
        "numpy",
        "pandas",
        "pyarrow",
        "pydantic",
    }
    assert doc["packages"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert doc["ray_job_id"] == "job-7"
    created = dt.datetime.fromisoformat(doc["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 60
    assert doc["command"] == " ".join(sys.argv)
    json.dumps(doc)  # goes into lineage.json as is


def _evaluation(w: World, c: train.Candidate) -> evaluate.Evaluation:
    """The evaluate stage of candidate ``c`` (gated against the registry's production)."""
    return evaluate.evaluate(
        w.ctx,
        select.Selection(c, c.name),
        w.prepared,
        w.tctx.label_mean,
        frame_split_scorer(w.score),
    )


def test_metrics_doc(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.rules_candidate()
    ev = _evaluation(w, c)
    doc = register.metrics_doc(w.ctx, select.Selection(c, "rules"), ev, w.prepared)
    assert list(doc) == [
        "selection_metric",
        "test",
        "valid",
        "baseline",
        "metric_conventions",
        "splits",
        "data",
    ]
    assert doc["selection_metric"] == "auc"
    assert doc["metric_conventions"] == {}  # binary, unweighted: nothing to say
    assert (doc["test"], doc["valid"], doc["baseline"]) == (ev.test, c.valid, ev.baseline)
    assert doc["splits"] == {"rows": {"train": 60, "valid": 60, "test": 60}, "groups": {}}
    data = w.prepared.data.to_dict()
    assert "quarantine" not in doc["data"]  # run-local paths stay out of the bundle
    assert doc["data"] == {k: v for k, v in data.items() if k != "quarantine"}

    wg, cg = _guarded(tmp_path / "guarded")
    evg = _evaluation(wg, cg)
    doc = register.metrics_doc(wg.ctx, select.Selection(cg, "rules"), evg, wg.prepared)
    assert list(doc)[:3] == ["selection_metric", "test", "test_without_guardrails"]
    assert doc["test_without_guardrails"] == evg.test_without_guardrails


def test_the_gate_without_a_champion_promotes(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.rules_candidate()
    w.calls.clear()
    d = _evaluation(w, c).gate
    assert d is not None and w.calls == [c.bundle]  # nothing else scored
    assert d["promote"] is True and d["champion"] is None and "champion_version" not in d
    assert d["reason"] == "no production version yet: the first model is promoted"
    scored = w.score(w.prepared.test, c.bundle)
    assert d["challenger"] == pytest.approx(evaluation.evaluate("binary", scored, "label")["auc"])


def _publish(w: World, c: train.Candidate, alias: str = "production") -> ModelVersion:
    return Registry(w.storage).publish(w.spec.model_name(), c.bundle, aliases=[alias])


def test_the_gate_against_the_same_model_does_not_promote(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.rules_candidate()
    _publish(w, c)
    d = _evaluation(w, c).gate
    assert d is not None and d["promote"] is False and d["improvement"] == 0.0
    assert d["resamples"] == 200 and d["champion_version"] == 1


def test_gate_against_production(tmp_path: Path) -> None:
    w = world(tmp_path)
    rules, gbdt = w.rules_candidate(), w.xgb_candidate()
    _publish(w, rules)
    w.calls.clear()
    d = _evaluation(w, gbdt).gate
    assert d is not None
    assert w.calls and Path(w.calls[1]).parts[-2:] == ("stages", "1")  # production scored it
    assert d["champion_version"] == 1 and d["promote"] is True
    ours = w.score(w.prepared.test, gbdt.bundle)
    theirs = w.score(w.prepared.test, rules.bundle)
    expected = gate.decide(
        "binary", "auc", ours["label"].to_numpy(), ours["score"].to_numpy(),
        theirs["score"].to_numpy(), None, **translate.gate_settings(w.spec),
    ).to_dict()  # fmt: skip
    # the same decision; the point values agree to the AUC bound, the interval to resampling noise
    assert d["promote"] == expected["promote"] and d["units"] == expected["units"]
    assert d["challenger"] == pytest.approx(expected["challenger"], abs=1e-4)
    assert d["champion"] == pytest.approx(expected["champion"], abs=1e-4)
    width = expected["high"] - expected["low"]
    assert d["low"] == pytest.approx(expected["low"], abs=0.15 * width)


def test_gate_keeps_a_better_production(tmp_path: Path) -> None:
    w = world(tmp_path)
    _publish(w, w.xgb_candidate())
    d = _evaluation(w, w.xgb_candidate("worse", flip=True)).gate
    assert d is not None and d["promote"] is False and d["champion_version"] == 1
    assert d["reason"].startswith("worse on auc") and d["reason"].endswith("production stays")


def test_gate_when_production_cannot_score_the_split(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.rules_candidate()
    _publish(w, c)

    def fewer_rows(data: Any, bundle: str) -> pd.DataFrame:
        scored = w.score(data, bundle)
        return scored.iloc[:-1] if "registry" in Path(bundle).parts else scored

    ev = evaluate.evaluate(
        w.ctx, select.Selection(c, "rules"), w.prepared, 0.5, frame_split_scorer(fewer_rows)
    )
    d = ev.gate
    assert d is not None
    assert d["promote"] is False and d["champion_version"] == 1 and d["metric"] == "auc"
    assert d["reason"].startswith(
        "production v1 could not score this test split (ValueError: it scored different rows)"
    )
    assert ev.rows == 60  # the winner's metrics stand


def test_register_end_to_end(tmp_path: Path) -> None:
    w = world(tmp_path)
    gbdt = w.xgb_candidate()
    selection = select.Selection(gbdt, "gbdt as trained")
    ev = _evaluation(w, gbdt)
    reg = register.register(w.ctx, str(w.storage), selection, ev, w.prepared, w.feats, None)
    assert reg.promoted is True and reg.gate["promote"] is True
    v = reg.version
    assert (v.model, v.version, v.aliases) == ("stages", 1, ("production",))
    assert Registry(w.storage).resolve("stages").version == 1
    files = set(bundle.verify_bundle(v.path)["files"])
    assert {METRICS_JSON, LINEAGE_JSON, "model.json", MODEL_FILES["xgboost"]} <= files
    assert bundle.read_json(v.path, METRICS_JSON) == json.loads(
        json.dumps(register.metrics_doc(w.ctx, selection, ev, w.prepared))
    )
    lineage = bundle.read_json(v.path, LINEAGE_JSON)
    assert lineage == reg.lineage and lineage["ray_job_id"] is None
    assert lineage["data_fingerprints"] == {"all": "fp-all"}
    # the registered model is the winner's, with the run's transform
    assert bundle.read_bundle_file(v.path, MODEL_FILES["xgboost"]) == gbdt.outcome.model
    scored = ScoreBatch(v.path, kept_columns(w.spec))(w.prepared.test)
    written = pd.read_parquet(w.ctx.paths.predictions)
    np.testing.assert_allclose(scored["score"], written["score"])
    assert Path(w.ctx.paths.bundle).is_dir()
    assert w.lines[-1] == f"    promoted to production: {reg.gate['reason']}"


def test_register_without_promotion(tmp_path: Path) -> None:
    w = world(tmp_path, make_spec(registry={"promote": False, "gate": {"resamples": 200}}))
    c = w.rules_candidate()
    reg = register.register(
        w.ctx,
        str(w.storage),
        select.Selection(c, "rules"),
        _evaluation(w, c),
        w.prepared,
        w.feats,
        "job",
    )
    assert reg.promoted is False and reg.version.aliases == ("candidate",)
    assert reg.gate["reason"].endswith("; registry.promote is false: never promoted automatically")
    assert w.lines[-1].startswith("    registered as candidate: ")
    assert Registry(w.storage).aliases("stages") == {"candidate": 1}


def test_register_again_in_a_resumed_run(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.rules_candidate()
    args = (select.Selection(c, "rules"), _evaluation(w, c), w.prepared, w.feats, None)
    register.register(w.ctx, str(w.storage), *args)
    # the run failed after registering (e.g. in serve); `rayline run --resume` registers again
    again = register.register(w.ctx, str(w.storage), *args)
    assert again.version.version == 2


# -- serve -------------------------------------------------------------------------------------


def test_serve_without_a_production_version_does_not_serve(tmp_path: Path) -> None:
    w = world(tmp_path)
    lines: list[str] = []
    timer = StepTimer(lines.append, total=7)
    new = ModelVersion("stages", 1, str(tmp_path / "v1"), "2026-01-01T00:00:00Z", ("candidate",))
    assert serve.serve_production(w.ctx, str(w.storage), new, timer) is None
    assert w.lines == [
        "    not serving: stages has no production version (registry.promote is false)"
    ]
    assert lines == [] and timer.index == 0  # no serve step was started


# -- runner helpers ----------------------------------------------------------------------------


def test_run_report_to_dict_keeps_field_order_and_omits_none() -> None:
    doc = RunReport(pipeline="p", run_id="r", task="binary", label="y", run_dir="/d")
    doc.error, doc.winner, doc.reused, doc.data = "boom", "gbdt", [], {"rows_read": 3}
    d = doc.to_dict()
    assert list(d) == [
        "pipeline",
        "run_id",
        "task",
        "label",
        "run_dir",
        "status",
        "data",
        "winner",
        "error",
        "reused",
    ]
    assert d["status"] == "running" and d["reused"] == []  # empty is not None
    names = [f.name for f in dataclasses.fields(RunReport)]
    full = RunReport(**{n: n for n in names})  # type: ignore[arg-type]
    assert list(full.to_dict()) == names


def test_run_dir_paths() -> None:
    p = RunDir("/s", "pipe", "r1")
    root = "/s/runs/pipe/r1"
    assert runs_of("/s", "pipe") == "/s/runs/pipe"
    assert p.root == root
    assert p.spec_file == f"{root}/spec.yaml"
    assert p.prepared == f"{root}/prepared"
    assert p.prepared_split("valid") == f"{root}/prepared/valid"
    assert p.features == f"{root}/prepared/features"
    assert p.features_file == f"{root}/prepared/features/features.json"
    assert p.candidate("gbdt") == f"{root}/candidates/gbdt"
    assert p.candidate_done("gbdt") == f"{root}/candidates/.done/gbdt"
    assert p.tune == f"{root}/tune"
    assert p.train == f"{root}/train"
    assert p.bundle == f"{root}/bundle"
    assert p.predictions == f"{root}/predictions_test.parquet"


def test_new_run_id_is_sortable_and_unique() -> None:
    ids = [new_run_id() for _ in range(20)]
    assert all(re.fullmatch(r"\d{8}-\d{6}\.\d{3}-[0-9a-f]{4}", i) for i in ids)
    assert len(set(ids)) == 20
    assert ids[0][:19] <= ids[-1][:19]


def _counting(tmp_path: Path, key: str) -> tuple[Reusable[int], list[int], list[dict[str, Any]]]:
    computed: list[int] = []
    loaded: list[dict[str, Any]] = []

    def load(doc: dict[str, Any]) -> int:
        loaded.append(doc)
        return int(doc["value"])

    r = Reusable(("step",), str(tmp_path / "step"), key, lambda v: {"value": v}, load)
    return r, computed, loaded


def _compute(computed: list[int], n: int) -> Callable[[], int]:
    """A stage that records that it ran and returns ``n``."""

    def run() -> int:
        computed.append(n)
        return n

    return run


def test_resume_disabled_always_computes_and_still_stores(tmp_path: Path) -> None:
    r, computed, loaded = _counting(tmp_path, "k")
    off = Resume(enabled=False)
    for n in (1, 2):
        assert off.run(r, _compute(computed, n)) == n
        assert off.stored(r) is None
    assert computed == [1, 2] and loaded == [] and off.reused == []
    assert resume.stored(r.folder) == {"key": "k", "value": 2}  # a later --resume can reuse it
    on = Resume(enabled=True)
    assert on.run(r, _never) == 2 and on.reused == ["step"]
    assert loaded == [{"key": "k", "value": 2}]


def test_resume_recomputes_a_stale_key(tmp_path: Path) -> None:
    old, _, _ = _counting(tmp_path, "old")
    Resume(True).run(old, lambda: 1)
    new, computed, loaded = _counting(tmp_path, "new")
    res = Resume(True)
    assert res.stored(new) is None
    assert res.run(new, _compute(computed, 5)) == 5
    assert computed == [5] and loaded == [] and res.reused == []
    assert resume.stored(new.folder) == {"key": "new", "value": 5}
    assert Resume(True).run(new, _never) == 5


def test_resume_stores_nothing_when_the_stage_fails(tmp_path: Path) -> None:
    r, _, _ = _counting(tmp_path, "k")

    def fail() -> int:
        raise ValueError("stage failed")

    with pytest.raises(ValueError, match="stage failed"):
        Resume(True).run(r, fail)
    assert resume.stored(r.folder) is None


def _clock(monkeypatch: pytest.MonkeyPatch, *times: float) -> None:
    ticks = iter(times)
    monkeypatch.setattr("pipelines.timer.time.time", lambda: next(ticks))


def test_step_timer_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    timer = StepTimer(lines.append, total=3)
    _clock(monkeypatch, 10.0, 12.5, 20.0)
    with timer.step("ingest", "reading with Ray Data"):
        lines.append("    inside")
    timer.skip("split", "reused with the ingested data")
    with pytest.raises(KeyError), timer.step("features", "fitting"):
        raise KeyError("x")
    assert lines == [
        "[1/3] ingest: reading with Ray Data",
        "    inside",
        "[1/3] ingest: done in 2.5s",
        "[2/3] split: reused with the ingested data",
        "[3/3] features: fitting",  # no "done" line for a step that failed
    ]
    assert timer.times == {"ingest": 2.5, "split": 0.0}
    assert timer.index == 3


def test_runner_reopens_the_unfinished_run(tmp_path: Path) -> None:
    spec = make_spec()
    runs = Path(runs_of(str(tmp_path), spec.name))
    (runs / "20260101-000000.000-aaaa").mkdir(parents=True)
    r = runner.Runner(spec, out=_quiet, storage=str(tmp_path), resume=True)
    assert r.run_id == "20260101-000000.000-aaaa" and r.resume.enabled
    assert r.run_dir == str(runs / r.run_id) == r.paths.root
    fresh = runner.Runner(spec, out=_quiet, storage=str(tmp_path))
    assert fresh.run_id != r.run_id and not fresh.resume.enabled
    assert not Path(fresh.run_dir).exists()  # nothing is written before run()


def test_runner_report_of_a_failed_run_has_what_finished(tmp_path: Path) -> None:
    w = world(tmp_path)
    r = runner.Runner(w.spec, out=_quiet, storage=str(w.storage), run_id="run-1")
    r.results.prepared, r.results.features = w.prepared, w.feats
    timer = StepTimer(_quiet, total=6)
    timer.skip("ingest", "x")
    doc = r._report("failed", timer, error="boom").to_dict()
    assert list(doc) == [
        "pipeline",
        "run_id",
        "task",
        "label",
        "run_dir",
        "status",
        "data",
        "splits",
        "features",
        "error",
        "step_seconds",
    ]
    assert doc["data"] == w.prepared.data.to_dict() and doc["splits"] == w.prepared.summary
    assert doc["features"] == w.feats.summary and doc["step_seconds"] == {"ingest": 0.0}
    assert runner._model_entry("m", None) is None

"""components.model_bundle: the one bundle writer writes byte for byte what the pipeline's
register stage wrote before it (a verbatim copy of ``Runner._write_bundle`` below), and
``Predictor.load`` reads every kind back and scores it. No Ray."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from components import bundle, model_bundle, predictor, xgboost_model
from components.features import FeatureTransform
from components.model_bundle import BundleContents, write_model_bundle
from components.predictor import Predictor
from components.validation import DataSchema
from pipelines.spec import (
    EvaluationSpec,
    GuardrailSpec,
    RulesModelSpec,
    TorchModelSpec,
    XGBoostModelSpec,
)
from tests import bundles

predictor_mod = predictor


def _legacy_write_bundle(
    self: Any,
    directory: str,
    m: Any,
    transform: FeatureTransform,
    outcome: Any,
    extra: dict[str, bytes],
) -> None:
    """pipelines/runner.py ``Runner._write_bundle`` as it was before components.model_bundle."""
    meta = {
        "kind": m.kind,
        "name": m.name,
        "task": self.spec.task,
        "num_classes": self.spec.data.num_classes,
        "threshold": self.spec.evaluation.threshold,
        "label": self.spec.data.label,
        "label_mapping": self.spec.data.label_mapping,
        "features": transform.feature_names,
        "best_iteration": outcome.best_iteration,
        "rounds": outcome.rounds,
        "params": m.model_dump(mode="json", exclude={"scaling"}),
        "guardrails": [g.name for g in self.spec.guardrails],
    }
    files = {
        "model.json": json.dumps(meta, indent=1, default=str).encode(),
        "features.json": transform.to_json().encode(),
        "schema.json": self.schema.to_json().encode(),
        **extra,
    }
    if self.spec.guardrails:
        items = [g.model_dump(mode="json", exclude_none=True) for g in self.spec.guardrails]
        files[predictor_mod.GUARDRAILS_FILE] = json.dumps(items, indent=1).encode()
    if isinstance(m, RulesModelSpec):
        files["rules.json"] = outcome.model
    elif isinstance(m, TorchModelSpec):
        files["model.pt"] = outcome.model
        files["architecture.json"] = outcome.architecture.encode()
    else:
        booster = xgboost_model.load_booster(outcome.model)
        files["model.ubj"] = outcome.model
        importance = xgboost_model.feature_importance(booster)
        files["feature_importance.json"] = json.dumps(importance, indent=1).encode()
    bundle.write_bundle(directory, files)


def _contents(runner: Any, m: Any, transform: FeatureTransform, outcome: Any, extra: dict) -> Any:
    """What the register stage passes to write_model_bundle for the same inputs."""
    spec = runner.spec
    return BundleContents(
        kind=m.kind,
        name=m.name,
        task=spec.task,
        label=spec.data.label,
        transform=transform,
        schema=runner.schema,
        model=outcome.model,
        params=m.model_dump(mode="json", exclude={"scaling"}),
        num_classes=spec.data.num_classes,
        threshold=spec.evaluation.threshold,
        label_mapping=spec.data.label_mapping,
        best_iteration=outcome.best_iteration,
        rounds=outcome.rounds,
        architecture=outcome.architecture,
        guardrails=tuple(g.model_dump(mode="json", exclude_none=True) for g in spec.guardrails),
        extra=extra,
    )


def _runner(
    task: str, schema: DataSchema, guardrails: list[dict], threshold: float | None = None, **data
) -> Any:
    evaluation = EvaluationSpec() if threshold is None else EvaluationSpec(threshold=threshold)
    spec = SimpleNamespace(
        task=task,
        data=SimpleNamespace(
            label="label", num_classes=data.get("num_classes"), label_mapping=data.get("mapping")
        ),
        evaluation=evaluation,
        guardrails=[GuardrailSpec.model_validate(g) for g in guardrails],
    )
    return SimpleNamespace(spec=spec, schema=schema)


def _case(kind: str) -> tuple[Any, Any, FeatureTransform, Any, dict, Any]:
    """(runner, model spec, transform, outcome, extra, frame) for one tiny model of ``kind``."""
    frame = bundles.tiny_frame(120, "binary")
    transform = bundles.features(frame)
    schema = bundles.schema("binary", transform)
    if kind == "xgboost":
        m = XGBoostModelSpec(name="gbdt", params={"max_depth": 2}, num_boost_round=4)
        trained = bundles.xgboost_contents(frame, transform=transform, rounds=4)
        outcome = SimpleNamespace(model=trained.model, best_iteration=2, rounds=4, architecture="")
        runner = _runner(
            "binary",
            schema,
            [
                {"name": "cap", "clamp": {"max": 0.95}},
                {"name": "us-floor", "when": "country == 'us'", "clamp": {"min": 0.05}},
            ],
            threshold=0.3,
            mapping={"no": 0, "yes": 1},
        )
        extra = {
            "metrics.json": json.dumps({"test": {"auc": 0.9}}, indent=1).encode(),
            "lineage.json": json.dumps({"run_id": "r1", "created_at": "now"}, indent=1).encode(),
        }
    elif kind == "torch.mlp":
        m = TorchModelSpec(kind="torch.mlp", name="mlp", hidden=[8], epochs=1)
        trained = bundles.torch_contents(frame, transform=transform)
        outcome = SimpleNamespace(
            model=trained.model, best_iteration=0, rounds=1, architecture=trained.architecture
        )
        runner, extra = _runner("binary", schema, []), {"metrics.json": b"{}"}
    else:
        m = RulesModelSpec.model_validate(
            {
                "kind": "rules",
                "name": "editorial",
                "rules": [
                    {"name": "young", "when": "age < 18", "score": 0.1},
                    {"when": "country == 'us'", "score": 0.8},
                ],
                "default": {"score": 0.4},
            }
        )
        outcome = SimpleNamespace(
            model=m.model_dump_json().encode(), best_iteration=0, rounds=0, architecture=""
        )
        runner = _runner(
            "binary",
            schema,
            [{"name": "ca", "when": "country == 'ca'", "override": {"score": 0.0}}],
        )
        extra = {}
    return runner, m, transform, outcome, extra, frame


def _written(monkeypatch: pytest.MonkeyPatch, write: Any) -> list[tuple[str, bytes]]:
    """The (name, bytes) pairs ``write`` passes to bundle.write_bundle, in insertion order."""
    seen: list[list[tuple[str, bytes]]] = []
    real = bundle.write_bundle

    def spy(directory: Any, files: Any) -> Any:
        seen.append(list(files.items()))
        return real(directory, files)

    monkeypatch.setattr(bundle, "write_bundle", spy)
    write()
    monkeypatch.setattr(bundle, "write_bundle", real)
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("kind", ["xgboost", "torch.mlp", "rules"])
def test_byte_identical_to_the_runner_writer_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    runner, m, transform, outcome, extra, frame = _case(kind)
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old = _written(
        monkeypatch,
        lambda: _legacy_write_bundle(runner, str(old_dir), m, transform, outcome, extra),
    )
    contents = _contents(runner, m, transform, outcome, extra)
    new = _written(monkeypatch, lambda: write_model_bundle(new_dir, contents))
    assert [n for n, _ in new] == [n for n, _ in old]  # same files, same insertion order
    for (name, a), (_, b) in zip(old, new, strict=True):
        assert bytes(a) == bytes(b), name
    assert model_bundle.bundle_files(contents) == dict(old)
    # on disk: the same files and MANIFEST entries (only created_at differs)
    on_disk = {p.name for p in new_dir.iterdir()}
    assert on_disk == {p.name for p in old_dir.iterdir()}
    for name in on_disk - {bundle.MANIFEST}:
        assert (new_dir / name).read_bytes() == (old_dir / name).read_bytes(), name
    assert bundle.verify_bundle(new_dir)["files"] == bundle.verify_bundle(old_dir)["files"]
    expected = {"model.json", "features.json", "schema.json", predictor.MODEL_FILES[kind]}
    assert expected | set(extra) <= on_disk
    assert (predictor.GUARDRAILS_FILE in on_disk) == bool(runner.spec.guardrails)
    # and the predictor reads it back and scores
    p = Predictor.load(new_dir)
    assert p.meta == json.loads((old_dir / "model.json").read_text())
    assert list(p.meta) == [
        "kind",
        "name",
        "task",
        "num_classes",
        "threshold",
        "label",
        "label_mapping",
        "features",
        "best_iteration",
        "rounds",
        "params",
        "guardrails",
    ]
    scores = p.predict(frame)
    assert scores.shape == (len(frame),) and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, Predictor.load(old_dir).predict(frame))
    assert set(p.predict_frame(frame)["label_pred"]) <= {0, 1}


def test_xgboost_bundle_has_feature_importance_from_the_booster(tmp_path: Path) -> None:
    frame = bundles.tiny_frame(120)
    contents = bundles.xgboost_contents(frame, rounds=3)
    path = bundles.write(tmp_path / "b", contents)
    importance = bundle.read_json(path, model_bundle.FEATURE_IMPORTANCE_JSON)
    booster = xgboost_model.load_booster(contents.model)
    assert importance == xgboost_model.feature_importance(booster) and importance
    assert set(importance) <= set(contents.transform.feature_names)


def test_defaults_match_the_spec_defaults() -> None:
    fields = {f.name: f.default for f in model_bundle.BundleContents.__dataclass_fields__.values()}
    assert fields["threshold"] == EvaluationSpec().threshold
    assert fields["num_classes"] is None and fields["label_mapping"] is None
    assert predictor.MODEL_FILES is model_bundle.MODEL_FILES
    assert predictor.GUARDRAILS_FILE == model_bundle.GUARDRAILS_FILE == "guardrails.json"


@pytest.mark.parametrize("task", ["multiclass", "ranking", "regression"])
def test_other_tasks_round_trip(tmp_path: Path, task: str) -> None:
    frame = bundles.tiny_frame(100, task)
    k = 3 if task == "multiclass" else None
    for name, contents in {
        "xgb": bundles.xgboost_contents(frame, task, rounds=3, num_classes=k),
        "mlp": bundles.torch_contents(frame, task, num_classes=k),
        "dlrm": bundles.torch_contents(frame, task, kind="torch.dlrm", num_classes=k),
    }.items():
        p = Predictor.load(bundles.write(tmp_path / name, contents))
        out = p.predict(frame)
        assert out.shape == ((len(frame), 3) if task == "multiclass" else (len(frame),))
        assert p.meta["num_classes"] == k and p.task == task


def test_bad_contents_are_refused(tmp_path: Path) -> None:
    frame = bundles.tiny_frame(60)
    contents = bundles.torch_contents(frame)
    with pytest.raises(ValueError, match="unknown model kind"):
        write_model_bundle(tmp_path / "a", _replace(contents, kind="torch.gbm"))
    with pytest.raises(ValueError, match="needs its architecture"):
        write_model_bundle(tmp_path / "b", _replace(contents, architecture=""))
    with pytest.raises(ValueError, match=r"\['model.json'\]"):
        write_model_bundle(tmp_path / "c", _replace(contents, extra={"model.json": b"{}"}))
    with pytest.raises(ValueError, match="guardrails\\[0\\] needs a 'name'"):
        write_model_bundle(tmp_path / "d", _replace(contents, guardrails=({"clamp": {}},)))
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(bundle.BundleError, match="already exists"):
        write_model_bundle(tmp_path, contents)


def _replace(contents: BundleContents, **changes: Any) -> BundleContents:
    import dataclasses

    return dataclasses.replace(contents, **changes)

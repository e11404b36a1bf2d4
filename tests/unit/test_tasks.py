"""components.tasks: every record agrees with the code that computes what it describes."""

from __future__ import annotations

import inspect
from typing import Any, get_args

import numpy as np
import pandas as pd
import pytest
import torch
import xgboost

from components import evaluation, gate, metrics, rule_models, rules, torch_training, xgboost_model
from components.losses import LOSSES
from components.tasks import LOWER_IS_BETTER, TASKS, TaskInfo, metric_family, task_info
from pipelines import spec as spec_mod
from pipelines.spec import EvaluationSpec, SpecError, TorchModelSpec, spec_from_dict
from serve.schemas import RowPrediction

NAMES = sorted(TASKS)
K = 3  # classes of the multiclass examples
KS = (1, 3, 10)  # ranking cut-offs of the examples (10: that of the default metric)


def _cut(metric: str) -> str:
    """A concrete name for a metric family: ``ndcg@k`` -> ``ndcg@3``."""
    return metric.replace("@k", f"@{KS[-1]}")


def _scored(task: str) -> pd.DataFrame:
    """A tiny scored frame as the Predictor writes one: label, model output, group, row key."""
    rng = np.random.default_rng(0)
    n = 12
    frame = pd.DataFrame({"_row_key": np.arange(n, dtype=np.int64)})
    info = task_info(task)
    if info.labels == "binary":
        frame["label"] = np.tile([0, 1], n // 2)
        frame["score"] = np.clip(0.3 + 0.4 * frame["label"] + rng.normal(0, 0.2, n), 0, 1)
    elif info.labels == "class":
        frame["label"] = np.arange(n) % K
        logits = rng.normal(size=(n, K)) + 2 * np.eye(K)[frame["label"]]
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        for c in range(K):
            frame[f"proba_{c}"] = proba[:, c]
    elif info.labels == "relevance":
        frame["label"] = np.array([0, 1, 2, 0, 0, 1, 3, 0, 1, 0, 0, 2])
        frame["score"] = [0.1, 0.8, 0.5, 0.9, 0.3, 0.2, 0.7, 0.6, 0.4, 0.0, 0.5, 0.2]
        frame["_group"] = np.repeat([7, 8, 9], 4)
    else:
        frame["label"] = rng.uniform(1, 5, n)
        frame["score"] = frame["label"] + rng.normal(0, 0.3, n)
    return frame


def _evaluate(task: str, frame: pd.DataFrame) -> dict[str, float]:
    info = task_info(task)
    options: dict[str, Any] = {
        "ks": KS,
        "relevance_threshold": 1.0,
        "threshold": 0.5,
        "no_relevant": "one",
    }
    return evaluation.evaluate(task, frame, "label", **{k: options[k] for k in info.eval_options})


# -- the table itself ---------------------------------------------------------------------------


def test_one_record_per_task_named_as_its_key() -> None:
    assert set(TASKS) == set(get_args(spec_mod.Task)) == set(get_args(torch_training.Task))
    for name, info in TASKS.items():
        assert isinstance(info, TaskInfo) and info.name == name
        assert task_info(name) is info


def test_unknown_task_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'ctr'.*binary, multiclass"):
        task_info("ctr")


def test_records_are_frozen() -> None:
    with pytest.raises(AttributeError):
        TASKS["binary"].grouped = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        TASKS["binary"].xgb_tracking["auc"] = "error"  # type: ignore[index]


@pytest.mark.parametrize("task", NAMES)
def test_fields_are_consistent(task: str) -> None:
    info = task_info(task)
    assert info.has_metric(info.default_metric)
    assert info.lower_is_better <= set(info.metrics)
    assert len(set(info.metrics)) == len(info.metrics)
    assert info.unit == ("queries" if info.grouped else "rows")
    assert info.proba == (info.output == "probabilities")
    assert info.classes == (info.labels in ("binary", "class"))
    assert not info.stratify or info.classes  # only class labels can be stratified on
    assert not info.standardized_label or info.labels == "real"
    assert info.output != "probability" or info.labels == "binary"
    assert info.rule_outputs and set(info.rule_outputs) <= {"score", "label", "value"}
    assert info.response_field in RowPrediction.model_fields
    assert set(info.xgb_tracking) == set(info.metrics)  # every metric can be early-stopped on
    assert info.default_objective == info.xgb_objectives[0]
    assert info.default_loss == info.torch_losses[0]
    assert info.baseline in ("label_mean", "uniform", "random")


def test_lower_is_better_is_one_set_for_every_task() -> None:
    assert metrics.LOWER_IS_BETTER == LOWER_IS_BETTER == {"logloss", "rmse", "mae", "mape"}
    assert gate.LOWER_IS_BETTER == LOWER_IS_BETTER
    for info in TASKS.values():  # a metric name means the same in every task reporting it
        assert {m for m in info.metrics if m in LOWER_IS_BETTER} == info.lower_is_better
        for m in info.metrics:
            assert info.mode(m) == ("min" if m in LOWER_IS_BETTER else "max")


def test_metric_family() -> None:
    assert metric_family("ndcg@10") == "ndcg@k" and metric_family("map@3") == "map@k"
    assert metric_family("mrr") == "mrr" and metric_family("auc") == "auc"
    assert task_info("ranking").has_metric("ndcg@5") and not task_info("ranking").has_metric("ndcg")
    assert not task_info("binary").has_metric("ndcg@10")


# -- metrics, the baseline and the gate -------------------------------------------------------


@pytest.mark.parametrize("task", NAMES)
def test_every_metric_is_computed_by_evaluate(task: str) -> None:
    info = task_info(task)
    reported = _evaluate(task, _scored(task))
    families = {metric_family(m) for m in reported}
    assert set(info.metrics) <= families
    assert info.default_metric in reported
    assert all(np.isfinite(v) for v in reported.values())


@pytest.mark.parametrize("task", NAMES)
def test_eval_options_are_evaluate_arguments_and_spec_fields(task: str) -> None:
    params = inspect.signature(evaluation.evaluate).parameters
    for option in task_info(task).eval_options:
        assert option in params and option in EvaluationSpec.model_fields


@pytest.mark.parametrize("task", NAMES)
def test_baseline_reports_the_same_metrics(task: str) -> None:
    frame = _scored(task)
    info = task_info(task)
    options: dict[str, Any] = {
        "ks": KS,
        "relevance_threshold": 1.0,
        "threshold": 0.5,
        "no_relevant": "one",
    }
    base = evaluation.baseline(
        task,
        frame,
        "label",
        train_label_mean=float(frame["label"].mean()),
        num_classes=K if info.proba else None,
        **{k: options[k] for k in info.eval_options},
    )
    assert set(base) == set(_evaluate(task, frame))


@pytest.mark.parametrize("task", NAMES)
def test_the_gate_computes_every_metric_as_evaluate_does(task: str) -> None:
    info = task_info(task)
    frame = _scored(task)
    reported = _evaluate(task, frame)
    y = frame["label"].to_numpy(dtype=np.float64)
    out = evaluation.model_outputs(frame, task)
    champion = out[::-1].copy()
    groups = frame["_group"].to_numpy() if info.grouped else None
    for family in info.metrics:
        metric = _cut(family)
        d = gate.decide(task, metric, y, out, champion, groups, resamples=100)
        assert d.unit == info.unit
        assert d.challenger == pytest.approx(reported[metric], rel=1e-9), metric


# -- XGBoost ----------------------------------------------------------------------------------


def _dmatrix(task: str) -> xgboost.DMatrix:
    rng = np.random.default_rng(1)
    n = 60
    x = rng.normal(size=(n, 3))
    info = task_info(task)
    kwargs: dict[str, Any] = {}
    if info.labels == "binary":
        y = (x[:, 0] > 0).astype(float)
    elif info.labels == "class":
        y = (np.digitize(x[:, 0], [-0.5, 0.5])).astype(float)
    elif info.labels == "relevance":
        y = np.clip(np.round(x[:, 0] + 1), 0, 1)  # 0/1: rank:map takes binary relevance only
        kwargs["qid"] = np.repeat(np.arange(n // 6), 6)
    else:
        y = np.exp(x[:, 0])  # positive, for reg:tweedie
    return xgboost.DMatrix(x, label=y, **kwargs)


@pytest.mark.parametrize("task", NAMES)
def test_every_objective_and_eval_metric_is_accepted_by_xgboost(task: str) -> None:
    info = task_info(task)
    d = _dmatrix(task)
    k = K if info.proba else None
    runs = [({"objective": o}, info.default_metric) for o in info.xgb_objectives]
    runs += [({}, _cut(m)) for m in info.metrics]
    for params, metric in runs:
        full = xgboost_model.build_params(task, params, metric, k, False, nthread=1)
        history: dict[str, Any] = {}
        booster = xgboost.train(
            full, d, num_boost_round=2, evals=[(d, "valid")], evals_result=history
        )
        assert list(history["valid"]) == full["eval_metric"]
        assert full["eval_metric"][-1] == xgboost_model.eval_metric(task, metric)
        pred = booster.predict(d)
        assert pred.shape == ((d.num_row(), K) if info.proba else (d.num_row(),))
        if info.output == "probability":
            assert pred.min() >= 0 and pred.max() <= 1


def test_tracking_eval_metrics() -> None:
    expected = {
        ("binary", "auc"): "auc",
        ("binary", "logloss"): "logloss",
        ("binary", "accuracy"): "error",
        ("binary", "f1"): "logloss",
        ("multiclass", "accuracy"): "merror",
        ("multiclass", "macro_f1"): "mlogloss",
        ("multiclass", "logloss"): "mlogloss",
        ("ranking", "ndcg@10"): "ndcg@10",
        ("ranking", "ndcg@3"): "ndcg@3",
        ("ranking", "map@5"): "ndcg@5",
        ("ranking", "mrr"): "ndcg",
        ("regression", "rmse"): "rmse",
        ("regression", "mae"): "mae",
        ("regression", "r2"): "rmse",
        ("regression", "mape"): "mae",
    }
    for (task, metric), xgb in expected.items():
        assert xgboost_model.eval_metric(task, metric) == xgb
    with pytest.raises(ValueError, match="not a binary metric"):
        xgboost_model.eval_metric("binary", "rmse")


def test_build_params_refuses_an_objective_of_another_task() -> None:
    with pytest.raises(ValueError, match="does not fit task binary"):
        xgboost_model.build_params("binary", {"objective": "reg:tweedie"}, "auc", None, False, 1)


# -- torch ------------------------------------------------------------------------------------


def test_every_loss_belongs_to_a_task_and_to_the_spec() -> None:
    allowed = set().union(*(t.torch_losses for t in TASKS.values()))
    literal = set(get_args(TorchModelSpec.model_fields["loss"].annotation)) - {"auto"}
    assert allowed == set(LOSSES) == literal


@pytest.mark.parametrize("task", NAMES)
def test_every_allowed_loss_runs_on_the_task_outputs(task: str) -> None:
    info = task_info(task)
    torch.manual_seed(0)
    n = 8
    outputs = torch.randn(n, K) if info.proba else torch.randn(n)
    labels = {
        "binary": torch.tensor([0, 1] * (n // 2), dtype=torch.float32),
        "class": torch.arange(n, dtype=torch.float32) % K,
        "relevance": torch.tensor([0, 1, 1, 0, 1, 0, 0, 1], dtype=torch.float32),
        "real": torch.randn(n),
    }[info.labels]
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    for loss in info.torch_losses:
        value = LOSSES[loss](outputs.clone().requires_grad_(), labels, groups)
        assert value.ndim == 0 and torch.isfinite(value), loss
    assert TorchModelSpec(kind="torch.mlp").loss_for(task) == info.default_loss


@pytest.mark.parametrize("task", NAMES)
def test_torch_predict_output_shape(task: str) -> None:
    from components.torch_models import ArchitectureSpec, build_model

    info = task_info(task)
    arch = ArchitectureSpec(
        kind="torch.mlp", num_numeric=2, cardinalities=(), num_outputs=K if info.proba else 1
    )
    model = build_model(arch)
    pred = torch_training.predict(model, np.zeros((5, 2)), task)  # type: ignore[arg-type]
    assert pred.shape == ((5, K) if info.proba else (5,))
    if info.output == "probability":
        assert ((pred >= 0) & (pred <= 1)).all()
    empty = torch_training.predict(model, np.zeros((0, 2)), task)  # type: ignore[arg-type]
    assert empty.shape == ((0, K) if info.proba else (0,))


# -- the spec ---------------------------------------------------------------------------------


def _doc(task: str, model: dict[str, Any]) -> dict[str, Any]:
    info = task_info(task)
    data: dict[str, Any] = {"source": {"uri": f"synthetic:{task}", "params": {"rows": 100}}}
    doc: dict[str, Any] = {
        "name": "t",
        "task": task,
        "data": data,
        "features": {"numeric": ["num_0"]},
        "models": [model],
    }
    if info.labels == "class":
        data["num_classes"] = K
    if info.grouped:
        data["group"] = "qid"
        data["max_relevance"] = 1  # so that the pointwise bce loss fits
        doc["split"] = {"method": "group"}
    return doc


def _error(doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as e:
        spec_from_dict(doc)
    return str(e.value)


@pytest.mark.parametrize("task", NAMES)
def test_spec_defaults_come_from_the_table(task: str) -> None:
    spec = spec_from_dict(_doc(task, {"kind": "xgboost"}))
    assert spec.selection_metric() == task_info(task).default_metric


@pytest.mark.parametrize("task", NAMES)
def test_spec_takes_exactly_the_task_metrics(task: str) -> None:
    info = task_info(task)
    for family in info.metrics:
        doc = _doc(task, {"kind": "xgboost"})
        doc["evaluation"] = {"metric": _cut(family)}
        assert spec_from_dict(doc).selection_metric() == _cut(family)
    others = {m for t in TASKS.values() for m in t.metrics} - set(info.metrics)
    for family in sorted(others):
        doc = _doc(task, {"kind": "xgboost"})
        doc["evaluation"] = {"metric": _cut(family)}
        assert f"is not a {task} metric" in _error(doc)


@pytest.mark.parametrize("task", NAMES)
def test_spec_takes_exactly_the_task_objectives(task: str) -> None:
    info = task_info(task)
    every = {o for t in TASKS.values() for o in t.xgb_objectives}
    for objective in sorted(every):
        doc = _doc(task, {"kind": "xgboost", "params": {"objective": objective}})
        if objective in info.xgb_objectives:
            spec_from_dict(doc)
        else:
            msg = _error(doc)
            assert "models.0.params.objective" in msg and f"does not fit task {task}" in msg


@pytest.mark.parametrize("task", NAMES)
def test_spec_takes_exactly_the_task_losses(task: str) -> None:
    info = task_info(task)
    for loss in sorted(LOSSES):
        doc = _doc(task, {"kind": "torch.mlp", "loss": loss})
        if loss in info.torch_losses:
            spec_from_dict(doc)
        else:
            msg = _error(doc)
            assert "models.0.loss" in msg and f"does not fit task {task}" in msg


def test_spec_refuses_bce_on_graded_relevance() -> None:
    doc = _doc("ranking", {"kind": "torch.mlp", "loss": "bce"})
    doc["data"]["max_relevance"] = 4
    assert "needs 0/1 labels" in _error(doc)


@pytest.mark.parametrize("task", NAMES)
def test_spec_needs_group_and_num_classes_as_the_table_says(task: str) -> None:
    info = task_info(task)
    doc = _doc(task, {"kind": "xgboost"})
    doc["data"].pop("group", None)
    doc["data"].pop("num_classes", None)
    doc.pop("split", None)
    if info.grouped:
        assert "needs data.group" in _error(doc)
    elif info.labels == "class":
        assert "needs data.num_classes" in _error(doc)
    else:
        spec_from_dict(doc)


# -- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", NAMES)
def test_rule_outputs(task: str) -> None:
    info = task_info(task)
    kinds = rules.feature_kinds(["x"], [])
    for field in ("score", "label", "value"):
        doc = {"rules": [{"when": "x > 0", field: 1}], "default": {field: 0}}
        if field in info.rule_outputs:
            model = rule_models.compile_rule_model(task, doc, kinds, K)
            out, _ = model.predict(pd.DataFrame({"x": [1.0, -1.0]}))
            assert out.shape == ((2, K) if info.proba else (2,))
        else:
            with pytest.raises(rule_models.RulesConfigError, match="give exactly one of"):
                rule_models.compile_rule_model(task, doc, kinds, K)

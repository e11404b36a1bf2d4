"""One factory for training jobs: plain training and every Ray Tune trial build them here.

``make_job`` turns a model spec (possibly with a trial's sampled values applied) into the
adapter's job; ``fit_job`` runs it on Ray Train. ``TrainContext`` carries what every job needs
from the pipeline (task, label, metric, fitted features) as plain, JSON-able data, so a Tune
trial on another node rebuilds exactly the job the plain path would have built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from components import xgboost_model
from components.features import FeatureTransform
from components.metrics import LOWER_IS_BETTER
from components.steps.train_common import TrainOutcome
from components.tasks import task_info
from components.torch_models import ArchitectureSpec
from pipelines import translate
from pipelines.spec import TorchModelSpec, TrainedModelSpec


@dataclass(frozen=True)
class Progress:
    """How a family reports while training: the Tune metric, its mode, and the time axis."""

    metric: str  # key in the reported metrics
    mode: str  # "max" or "min"
    time_attr: str  # "round" (XGBoost) or "epoch" (torch)
    max_t: int  # rounds or epochs of a full trial
    step: int  # time units between two reports


@dataclass(frozen=True)
class TrainContext:
    task: str
    label: str
    metric: str  # the spec's selection metric
    num_classes: int | None
    features_json: str
    eval_kwargs: dict[str, Any] = field(default_factory=dict)
    # regression: the training split's label mean and standard deviation (torch models learn
    # the standardised label)
    label_mean: float = 0.0
    label_std: float = 1.0

    @cached_property
    def transform(self) -> FeatureTransform:
        """The fitted transform, parsed once per context."""
        return FeatureTransform.from_json(self.features_json)


def _xgboost_job(ctx: TrainContext, m: Any) -> Any:
    from components.steps import train_xgboost

    params = xgboost_model.build_params(
        ctx.task, m.params, ctx.metric, ctx.num_classes, m.scaling.use_gpu, nthread=None
    )
    return train_xgboost.XGBoostJob(
        task=ctx.task,
        label=ctx.label,
        params=params,
        num_boost_round=m.num_boost_round,
        early_stopping_rounds=m.early_stopping_rounds,
        report_every=m.report_every,
        external_memory=m.scaling.external_memory,
        features_json=ctx.features_json,
        **translate.worker_scaling(m.scaling),
    )


def _torch_job(ctx: TrainContext, m: Any) -> Any:
    from components.steps import train_torch

    return train_torch.TorchJob(
        task=ctx.task,
        label=ctx.label,
        loss=m.loss_for(ctx.task),
        arch_json=architecture(ctx, m).to_json(),
        features_json=ctx.features_json,
        metric=ctx.metric,
        maximize=ctx.metric not in LOWER_IS_BETTER,
        epochs=m.epochs,
        batch_size=m.batch_size,
        learning_rate=m.learning_rate,
        weight_decay=m.weight_decay,
        early_stopping_epochs=m.early_stopping_epochs,
        bf16=m.bf16,
        seed=m.seed,
        eval_kwargs=dict(ctx.eval_kwargs),
        **translate.worker_scaling(m.scaling),
    )


def _xgboost_progress(ctx: TrainContext, m: Any) -> Progress:
    tracked = xgboost_model.eval_metric(ctx.task, ctx.metric)
    mode = "max" if xgboost_model.maximize(tracked) else "min"
    return Progress(f"valid-{tracked}", mode, "round", m.num_boost_round, m.report_every)


def _torch_progress(ctx: TrainContext, m: Any) -> Progress:
    mode = task_info(ctx.task).mode(ctx.metric)
    return Progress(f"valid-{ctx.metric}", mode, "epoch", m.epochs, 1)


def _xgboost_describe(m: Any, job: Any) -> str:
    return (
        f"{m.kind}, {m.scaling.num_workers} worker(s), up to {m.num_boost_round} rounds, "
        f"objective {job.params['objective']}"
    )


def _torch_describe(m: Any, job: Any) -> str:
    return f"{m.kind}, {m.scaling.num_workers} worker(s), up to {m.epochs} epochs, loss {job.loss}"


@dataclass(frozen=True)
class Family:
    """What rayline knows about one trained model kind: how to build, describe and watch its
    job, its time unit, and the spec fields a refit for ``n`` units sets."""

    unit: str  # "rounds" or "epochs"
    make_job: Callable[[TrainContext, Any], Any]
    describe: Callable[[Any, Any], str]
    progress: Callable[[TrainContext, Any], Progress]
    refit: Callable[[int], dict[str, Any]]


FAMILIES: dict[str, Family] = {
    "xgboost": Family(
        "rounds",
        _xgboost_job,
        _xgboost_describe,
        _xgboost_progress,
        lambda n: {"num_boost_round": n, "early_stopping_rounds": None},
    ),
    **{
        kind: Family(
            "epochs",
            _torch_job,
            _torch_describe,
            _torch_progress,
            lambda n: {"epochs": n, "early_stopping_epochs": None},
        )
        for kind in ("torch.mlp", "torch.dlrm")
    },
}


def family(m: TrainedModelSpec) -> Family:
    """The family record of a trained model spec."""
    return FAMILIES[m.kind]


def make_job(ctx: TrainContext, m: TrainedModelSpec) -> Any:
    """The adapter job (XGBoostJob or TorchJob) for model spec ``m``."""
    return family(m).make_job(ctx, m)


def architecture(ctx: TrainContext, m: TorchModelSpec) -> ArchitectureSpec:
    """The torch model's architecture for the fitted features (embedding tables sized by the
    vocabularies and sparse dims) and the model spec's layers."""
    t, info = ctx.transform, task_info(ctx.task)
    return ArchitectureSpec(
        kind=m.kind,
        num_numeric=len(t.numeric),
        cardinalities=tuple(c.cardinality for c in t.categorical),
        embedding_dim=m.embedding_dim,
        bottom_mlp=tuple(m.bottom_mlp),
        top_mlp=tuple(m.top_mlp),
        hidden=tuple(m.hidden),
        dropout=m.dropout,
        first_order=m.first_order,
        num_outputs=(ctx.num_classes or 2) if info.proba else 1,
        target_mean=ctx.label_mean if info.standardized_label else 0.0,
        target_scale=(ctx.label_std or 1.0) if info.standardized_label else 1.0,
        # one EmbeddingBag per sparse column, as wide as the fitted transform's dim
        sparse=tuple((p.name, p.dim) for p in t.sparse),
    )


def describe(m: TrainedModelSpec, job: Any) -> str:
    """One line for the run's output."""
    return family(m).describe(m, job)


def fit_job(
    job: Any,
    train: Any,
    valid: Any,
    storage_path: str,
    run_name: str,
    callbacks: Sequence[Any] = (),
) -> TrainOutcome:
    """Train ``job`` on Ray Train (its adapter picked by the job's type)."""
    from components.steps import train_torch, train_xgboost

    if isinstance(job, train_torch.TorchJob):
        outcome = train_torch.fit(job, train, valid, storage_path, run_name, callbacks)
        outcome.architecture = job.arch_json
        return outcome
    return train_xgboost.fit(job, train, valid, storage_path, run_name, callbacks)


def progress(ctx: TrainContext, m: TrainedModelSpec) -> Progress:
    """What Ray Tune watches for model ``m``: its own validation metric, per round or epoch."""
    return family(m).progress(ctx, m)

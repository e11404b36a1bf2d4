"""Stage 3: one candidate per model of the spec, each trained (or tuned) on Ray Train, written as
a bundle and scored on the validation split. Rule models need no training."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from components import bundle, split_evaluation
from components.label_stats import LabelMoments
from components.model_bundle import MODEL_FILES
from components.steps.train_common import TrainOutcome
from components.tasks import task_info
from components.validation import WEIGHT
from pipelines import resume, trainers
from pipelines.errors import PipelineError
from pipelines.spec import (
    ModelSpecType,
    RulesModelSpec,
    TrainedModelSpec,
    XGBoostModelSpec,
    parse_model,
)
from pipelines.stages.common import (
    RunContext,
    SplitScorer,
    parts_of,
    plan,
    rules_outcome,
    unit,
    write_bundle,
)
from pipelines.stages.features import Features
from pipelines.stages.prepare import Prepared


class TuneFailed(PipelineError):
    """No trial of a search finished; ``tuning`` is its trials, for the report."""

    def __init__(self, message: str, model: str, tuning: dict[str, Any]) -> None:
        super().__init__(message)
        self.model, self.tuning = model, tuning


@dataclass(frozen=True)
class Candidate:
    """A trained model of the spec: its bundle and how it did on the validation split."""

    index: int  # in spec.models
    spec: ModelSpecType  # as trained: a tuned model's best trial
    outcome: TrainOutcome
    bundle: str
    valid: dict[str, float]
    tuning: dict[str, Any] | None = None  # a tuned model's trials

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_baseline(self) -> bool:
        return isinstance(self.spec, RulesModelSpec) and self.spec.baseline

    @property
    def summary(self) -> dict[str, Any]:
        """The report's entry for this candidate."""
        o = self.outcome
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "valid": self.valid,
            "rounds": o.rounds,
            "best_iteration": o.best_iteration,
            "train_seconds": round(o.seconds, 1),
            # > 0 when a worker or node died and the worker group resumed from a checkpoint
            "resumed_from": o.resumed_from,
            "trained_on": o.node,
            "history": o.history,
        }


def check_regression_labels(ctx: RunContext, lowest: float) -> None:
    """reg:tweedie fails deep inside XGBoost on a negative label; say so before training."""
    for i, m in enumerate(ctx.spec.models):
        objective = m.params.get("objective") if isinstance(m, XGBoostModelSpec) else None
        if objective == "reg:tweedie" and lowest < 0:
            raise PipelineError(
                f"models.{i}.params.objective reg:tweedie needs labels >= 0, but column "
                f"{ctx.label!r} holds {lowest:g} in the training split; use reg:squarederror or "
                "reg:absoluteerror"
            )


def train_label_mean(moments: LabelMoments, weighted: bool) -> float:
    """The training split's label mean, weighted by the sample weights when there are any (the
    constant a featureless baseline predicts)."""
    if not weighted:
        return moments.mean
    mean = moments.weighted_mean
    if mean is None:
        raise PipelineError("every sample weight in the training split is 0 (data.weight)")
    return mean


def context(ctx: RunContext, prepared: Prepared, features: Features) -> trainers.TrainContext:
    """What every training job of this run needs (label statistics from the training split,
    counted in one round of tasks over its blocks)."""
    from components.steps.prepare import label_moments

    label = ctx.label
    weighted = bool(ctx.spec.data.weight)
    moments = label_moments(prepared.train, label, WEIGHT if weighted else None)
    label_mean = train_label_mean(moments, weighted)
    label_std = 1.0
    if task_info(ctx.task).standardized_label:
        label_std = float(moments.std or 1.0)
        check_regression_labels(ctx, moments.lowest)
    return trainers.TrainContext(
        task=ctx.task,
        label=label,
        metric=ctx.metric,
        num_classes=ctx.spec.data.num_classes,
        features_json=features.transform.to_json(),
        eval_kwargs=ctx.eval_kwargs,
        label_mean=label_mean,
        label_std=label_std,
    )


def candidate_key(ctx: RunContext, features: Features, m: ModelSpecType) -> str:
    """Everything a candidate depends on: the features' key, its model and tune sections, the
    guardrails (inside every bundle), the selection metric and evaluation settings."""
    spec = ctx.spec
    tune = spec.tune.model_dump(mode="json") if getattr(m, "search", None) else None
    return resume.key(
        features.key,
        m.model_dump(mode="json"),
        tune,
        [g.model_dump(mode="json") for g in spec.guardrails],
        spec.selection_metric(),
        spec.evaluation.model_dump(mode="json"),
    )


def _done_line(m: ModelSpecType, outcome: TrainOutcome) -> str:
    if isinstance(m, RulesModelSpec):
        return f"{len(m.rules)} rule(s), no training"
    return (
        f"{outcome.rounds} {unit(m)} (best {outcome.best_iteration + 1}) in {outcome.seconds:.1f}s"
    )


def train_candidate(
    ctx: RunContext,
    i: int,
    m: ModelSpecType,
    tctx: trainers.TrainContext,
    prepared: Prepared,
    features: Features,
    score: SplitScorer,
    restore_tune: bool = False,
) -> Candidate:
    """Train (tune) model ``i``, write its bundle, score the validation split."""
    tuning = None
    if isinstance(m, RulesModelSpec):
        outcome = rules_outcome(m)
    elif m.search:
        m, outcome, tuning = tune(ctx, i, m, tctx, prepared, restore_tune)
    else:
        outcome = fit(ctx, i, m, tctx, prepared)
    bundle_dir = ctx.paths.candidate(m.name)
    write_bundle(ctx, bundle_dir, m, features.transform, outcome)
    # scored and measured in tasks, block by block (nothing of the split on the driver)
    parts = parts_of(score(prepared.valid, bundle_dir, None), plan(ctx, 0.0, champion=False))
    valid = split_evaluation.finish_parts(parts)["test"]
    metric = ctx.metric
    if metric not in valid:  # mape without a positive label
        raise PipelineError(
            f"evaluation.metric {metric} cannot be computed on the validation split "
            f"(for mape, no row has a positive {ctx.label!r}); choose another metric"
        )
    ctx.out(
        f"    models.{i} {m.name}: {_done_line(m, outcome)}; valid {metric} = {valid[metric]:.4f}"
        + (
            f" (restarted after a failure, resumed at {outcome.resumed_from})"
            if outcome.resumed_from
            else ""
        )
    )
    return Candidate(i, m, outcome, bundle_dir, valid, tuning)


def fit(
    ctx: RunContext,
    i: int,
    m: TrainedModelSpec,
    tctx: trainers.TrainContext,
    prepared: Prepared,
) -> TrainOutcome:
    """One plain Ray Train run of model ``i``."""
    job = trainers.make_job(tctx, m)
    ctx.out(f"    models.{i} {m.name}: {trainers.describe(m, job)}")
    return trainers.fit_job(
        job,
        prepared.train,
        prepared.valid,
        ctx.paths.train,
        run_name=f"{m.name}-{ctx.paths.run_id}",
    )


def tune(
    ctx: RunContext,
    i: int,
    m: TrainedModelSpec,
    tctx: trainers.TrainContext,
    prepared: Prepared,
    restore: bool,
) -> tuple[TrainedModelSpec, TrainOutcome, dict[str, Any]]:
    """Search model ``m``'s space: the best finished trial's spec, its model and the trials."""
    from pipelines import tuning

    t = ctx.spec.tune
    ctx.out(
        f"    models.{i} {m.name}: tuning {len(m.search or {})} parameter(s), "
        f"{t.num_samples} sample(s), {t.searcher} search, {t.scheduler} scheduler, "
        f"{t.max_concurrent_trials} at a time"
        + (f", budget {t.time_budget_s:g}s" if t.time_budget_s else "")
    )
    if restore and bundle.bundle_key() is not None:
        # Ray Tune keeps its search state as pickles in the run directory: restoring them runs
        # whatever is in those files. Where bundles are signed, storage is not trusted that far.
        ctx.out(
            f"    models.{i} {m.name}: {bundle.KEY_ENV} is set: the interrupted Tune search is "
            "not restored (its state is pickled); the search starts again"
        )
        restore = False
    started = time.time()
    result = tuning.search(
        tctx, m, t, prepared.train, prepared.valid, ctx.paths.tune, name=m.name, restore=restore
    )
    summary = {
        "metric": result.metric,
        "mode": result.mode,
        "trials": [dataclasses.asdict(tr) for tr in result.trials],
        "best": dataclasses.asdict(result.best) if result.best else None,
        "seconds": round(time.time() - started, 1),
        "path": result.path,
        "winner_from": "the best trial's own model (trained on the training split)",
        "restored": result.extra.get("restored", False),
    }
    if result.extra.get("restored"):
        ctx.out(
            f"    models.{i} {m.name}: continued the interrupted Tune run (finished trials kept)"
        )
    if result.best is None or result.best_outcome is None:
        states = ", ".join(f"{tr.trial_id}: {tr.status} {tr.error}".strip() for tr in result.trials)
        raise TuneFailed(
            f"models.{i} {m.name}: no trial finished ({states or 'no trials ran'}); "
            "raise tune.time_budget_s or lower the search's cost",
            m.name,
            summary,
        )
    counts = Counter(tr.status for tr in result.trials)
    n = len(result.trials)
    ctx.out(
        f"    models.{i} {m.name}: {n} trial{'' if n == 1 else 's'} ("
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        + f") in {time.time() - started:.1f}s; best {result.metric} {result.best.value:.4f} "
        f"with {result.best.config}"
    )
    best = tuning.trial_model(m.model_dump_json(), result.best.config)
    return best, result.best_outcome, summary


def reusable(ctx: RunContext, i: int, m: ModelSpecType, key: str) -> resume.Reusable[Candidate]:
    """A candidate is kept as its bundle (already in the run dir) plus a key document with its
    spec as trained, its validation metrics, its outcome and tuning."""
    folder = ctx.paths.candidate_done(m.name)

    def save(c: Candidate) -> dict[str, Any]:
        outcome = {f: v for f, v in dataclasses.asdict(c.outcome).items() if f != "model"}
        return {
            "spec": c.spec.model_dump(mode="json"),
            "valid": c.valid,
            "outcome": outcome,
            "tuning": c.tuning,
        }

    def load(doc: dict[str, Any]) -> Candidate:
        spec = parse_model(doc["spec"])
        bundle_dir = ctx.paths.candidate(m.name)
        bundle.verify_bundle(bundle_dir)
        model = bundle.Storage(bundle_dir).read_bytes(MODEL_FILES[spec.kind])
        outcome = TrainOutcome(model=model, **doc["outcome"])
        metric = ctx.metric
        ctx.out(
            f"    models.{i} {m.name}: reused (trained before the run stopped; valid "
            f"{metric} = {doc['valid'][metric]:.4f})"
        )
        return Candidate(i, spec, outcome, bundle_dir, doc["valid"], doc.get("tuning"))

    return resume.Reusable((f"models.{i} {m.name}",), folder, key, save, load)

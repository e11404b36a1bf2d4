"""Tune one model family with Ray Tune: trials built by ``pipelines.trainers``, as plain runs are.

Each trial applies its sampled values to the model's spec, re-validates it (so a trial can never
run a model the spec would refuse), builds the job with ``make_job`` and fits it with Tune's
report callback: ASHA sees every round/epoch report and stops the weak trials.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from components import search_space, uris
from components.steps import tune as tune_step
from pipelines import trainers, translate
from pipelines.spec import RulesModelSpec, TrainedModelSpec, TuneSpec, parse_model

TRIAL_RESOURCES = {"cpu": 0.0, "memory": 1.0}
"""What a trial's own process holds while its Train worker group holds the rest: no CPU (a CPU
per trial deadlocks small clusters), but Tune refuses an empty request, so a token of memory.
A search always has workers: the spec refuses num_workers 0 with a search."""


def trial_model(model_json: str, config: dict[str, Any]) -> TrainedModelSpec:
    """The model spec a trial trains: the base spec with the sampled values, validated again."""
    doc = search_space.apply(json.loads(model_json), config)
    doc.pop("search", None)
    model = parse_model(doc)
    assert not isinstance(model, RulesModelSpec)  # rule models have no search space
    return model


def trial(
    config: dict[str, Any],
    *,
    ctx_json: str,
    model_json: str,
    train: Any,
    valid: Any,
    train_storage: str,
    trial_prefix: str,
) -> None:
    """A Ray Tune function trainable: train one sampled model, report it when it finishes."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = trainers.TrainContext(**json.loads(ctx_json))
    m = trial_model(model_json, config)
    job = trainers.make_job(ctx, m)
    trial_id = ray.tune.get_context().get_trial_id()
    outcome = trainers.fit_job(
        job,
        train,
        valid,
        train_storage,
        run_name=f"{trial_prefix}-{trial_id}",
        callbacks=[TuneReportCallback()],
    )
    tune_step.report_final(outcome, trainers.progress(ctx, m).time_attr)


def search(
    ctx: trainers.TrainContext,
    m: TrainedModelSpec,
    settings: TuneSpec,
    train: Any,
    valid: Any,
    storage_path: str,
    name: str,
    restore: bool = False,
) -> tune_step.SearchResult:
    """Run the search for model ``m`` (which has a ``search:`` space) under ``storage_path``:
    the Tune run in ``<storage_path>/<name>``, its trials' Train runs in ``.../train``."""
    space = search_space.parse_space(m.search or {})
    p = trainers.progress(ctx, m)
    grace = settings.grace_period or max(p.step, p.max_t // 4)
    watch = tune_step.Watch(p.metric, p.mode, p.time_attr, p.max_t)
    options = translate.search_settings(settings, grace)
    return tune_step.run_search(
        trial,
        space,
        options,
        watch,
        storage_path,
        name,
        dict(TRIAL_RESOURCES),
        restore=restore,
        ctx_json=json.dumps(dataclasses.asdict(ctx)),
        model_json=m.model_dump_json(),
        train=train,
        valid=valid,
        train_storage=uris.join(storage_path, name, "train"),
        trial_prefix=name,
    )

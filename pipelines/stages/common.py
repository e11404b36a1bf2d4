"""What every stage is given (the spec, the run's paths, a printer) and the few things stages
share: scoring a split with a bundle, a scored frame's model output, writing a bundle."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import pandas as pd

from components import evaluation, uris
from components.features import FeatureTransform
from components.model_bundle import BundleContents, write_model_bundle
from components.steps.train_common import TrainOutcome
from components.validation import WEIGHT, DataSchema
from pipelines import trainers, translate
from pipelines.run_dir import RunDir
from pipelines.spec import ModelSpecType, PipelineSpec, RulesModelSpec

Printer = Callable[[str], None]


@dataclass(frozen=True)
class RunContext:
    """The spec of a run, where its files go, and where its progress lines go."""

    spec: PipelineSpec
    paths: RunDir
    out: Printer = print

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def label(self) -> str:
        return self.spec.data.label

    @property
    def metric(self) -> str:
        return self.spec.selection_metric()

    @cached_property
    def schema(self) -> DataSchema:
        return translate.data_schema(self.spec)

    @cached_property
    def eval_kwargs(self) -> dict[str, Any]:
        return translate.eval_kwargs(self.spec)

    def weights(self, scored: pd.DataFrame) -> np.ndarray | None:
        """The sample weights of a scored split's rows (None without data.weight)."""
        return evaluation.weights_of(scored, WEIGHT if self.spec.data.weight else None)


class Scorer(Protocol):
    """Scores every row of a split with a bundle: the kept columns plus the model outputs."""

    def __call__(self, data: Any, bundle: str) -> pd.DataFrame: ...


def kept_columns(spec: PipelineSpec) -> list[str]:
    """The columns a scored split keeps beside the outputs (label, row key, keys, group,
    weight)."""
    d = spec.data
    return (
        [d.label, "_row_key", *d.keys]
        + (["_group"] if d.group else [])
        + ([WEIGHT] if d.weight else [])
    )


def ray_scorer(spec: PipelineSpec) -> Scorer:
    """Score a Ray dataset with an actor pool (half the cluster's CPUs), collected as pandas."""

    def score(data: Any, bundle: str) -> pd.DataFrame:
        import ray

        from components.steps.score import score_dataset

        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // 2))
        return score_dataset(data, bundle, kept_columns(spec), actors=actors).to_pandas()

    return score


def unit(m: ModelSpecType) -> str:
    """What a model's training counts: epochs (torch) or rounds (XGBoost)."""
    return "rounds" if isinstance(m, RulesModelSpec) else trainers.family(m).unit


def write_bundle(
    ctx: RunContext,
    directory: str,
    m: ModelSpecType,
    transform: FeatureTransform,
    outcome: TrainOutcome,
    extra: Mapping[str, bytes] | None = None,
) -> None:
    """A model bundle for candidate ``m`` as trained (``outcome``) with the run's transform.

    A bundle already at ``directory`` is an earlier attempt of this run (a resumed run whose
    stored key was stale or never written): it is replaced, as the stage runs again."""
    spec = ctx.spec
    remove_stale(ctx, directory)
    write_model_bundle(
        directory,
        BundleContents(
            kind=m.kind,
            name=m.name,
            task=spec.task,
            label=spec.data.label,
            transform=transform,
            schema=ctx.schema,
            model=outcome.model,
            params=m.model_dump(mode="json", exclude={"scaling"}),
            num_classes=spec.data.num_classes,
            threshold=spec.evaluation.threshold,
            label_mapping=spec.data.label_mapping,
            best_iteration=outcome.best_iteration,
            rounds=outcome.rounds,
            architecture=outcome.architecture,
            guardrails=tuple(g.model_dump(mode="json", exclude_none=True) for g in spec.guardrails),
            extra=dict(extra or {}),
        ),
    )


def remove_stale(ctx: RunContext, path: str) -> None:
    """Remove an output of this run that a stage is about to produce again (never anything
    outside the run directory)."""
    root = ctx.paths.root
    rel = _inside(root, path)
    if rel is None:
        raise ValueError(f"{path} is not an output inside the run directory {root}")
    ctx.paths.store.remove(rel)


def _inside(root: str, path: str) -> str | None:
    """``path`` relative to ``root`` when it lies strictly inside it (local paths or URIs)."""
    if not uris.is_uri(root):
        r, p = os.path.abspath(root), os.path.abspath(path)
        if os.path.commonpath([r, p]) != r or p == r:
            return None
        return os.path.relpath(p, r)
    base, inner = uris.display(root).rstrip("/") + "/", uris.display(path)
    rel = inner[len(base) :] if inner.startswith(base) else ""
    return rel if rel and ".." not in rel.split("/") else None


def rules_outcome(m: RulesModelSpec) -> TrainOutcome:
    """A rule model needs no training: its spec is its model."""
    return TrainOutcome(
        model=m.model_dump_json().encode(),
        history=[],
        best_iteration=0,
        rounds=0,
        seconds=0.0,
        checkpoint_path=None,
    )


def json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, indent=1).encode()

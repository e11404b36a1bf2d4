"""What every stage is given (the spec, the run's paths, a printer) and the few things stages
share: scoring a split with a bundle, a scored frame's model output, writing a bundle."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import pandas as pd

from components import evaluation, gate, metric_parts, split_evaluation, uris
from components.bundle import Storage
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


class ScoredSplit(Protocol):
    """A scored split held where it was scored (Ray's object store, or a frame in memory):
    its row count, a function run on each block (the results come back one by one), and a way
    to write it as Parquet."""

    @property
    def rows(self) -> int: ...

    def map_blocks(self, fn: Callable[[pd.DataFrame], Any]) -> Iterator[Any]: ...

    def write(self, location: str) -> None: ...


class SplitScorer(Protocol):
    """Scores every row of a split with a bundle and, when given, the production bundle too
    (its outputs prefixed ``champion:``), keeping the kept columns."""

    def __call__(self, data: Any, bundle: str, champion: str | None) -> ScoredSplit: ...


@dataclass(frozen=True)
class RaySplit:
    """A scored split as a materialized Ray dataset (blocks hold whole queries for ranking)."""

    ds: Any

    @property
    def rows(self) -> int:
        return int(self.ds.count())

    def map_blocks(self, fn: Callable[[pd.DataFrame], Any]) -> Iterator[Any]:
        from components.steps.evaluate_split import map_blocks

        return map_blocks(self.ds, fn)

    def write(self, location: str) -> None:
        from components.steps import parquet_io
        from components.steps.evaluate_split import drop_champion

        parquet_io.write_fresh(drop_champion(self.ds), location)


def ray_split_scorer(spec: PipelineSpec) -> SplitScorer:
    """Score a Ray dataset in tasks (up to half the cluster's CPUs at a time), kept in the
    object store."""

    def score(data: Any, bundle: str, champion: str | None) -> ScoredSplit:
        import ray

        from components.steps.evaluate_split import score_split

        tasks = max(1, int(ray.cluster_resources().get("CPU", 1) // 2))
        group = "_group" if spec.data.group else None
        return RaySplit(
            score_split(data, bundle, kept_columns(spec), champion, group=group, tasks=tasks)
        )

    return score


@dataclass(frozen=True)
class FrameSplit:
    """A scored split as a frame in memory, cut into ``blocks`` blocks of whole queries (the
    same per-block code as on a cluster; for tests and small data)."""

    frame: pd.DataFrame
    blocks: int = 3

    @property
    def rows(self) -> int:
        return len(self.frame)

    def parts(self) -> list[pd.DataFrame]:
        f = self.frame
        if "_group" in f:  # whole queries per block: cut at query boundaries after a sort
            f = f.sort_values("_group", kind="stable").reset_index(drop=True)
            starts = np.flatnonzero(f["_group"].ne(f["_group"].shift()).to_numpy())
            cuts = [
                int(starts[i])
                for i in np.linspace(0, len(starts), self.blocks + 1)[1:-1].astype(int)
            ]
        else:
            cuts = [int(c) for c in np.linspace(0, len(f), self.blocks + 1)[1:-1]]
        edges = [0, *cuts, len(f)]
        return [f.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(edges) if b > a]

    def map_blocks(self, fn: Callable[[pd.DataFrame], Any]) -> Iterator[Any]:
        return (fn(b) for b in self.parts())

    def write(self, location: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from components.split_evaluation import CHAMPION

        ours = self.frame[[c for c in self.frame.columns if not str(c).startswith(CHAMPION)]]
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(ours, preserve_index=False), sink)
        Storage(uris.parent(location)).remove(uris.basename(location))
        Storage(uris.parent(location)).write_bytes(
            uris.basename(location), sink.getvalue().to_pybytes()
        )


def frame_split_scorer(score: Scorer, blocks: int = 3) -> SplitScorer:
    """A SplitScorer from a frame Scorer: both bundles' outputs side by side, in memory."""

    def split(data: Any, bundle: str, champion: str | None) -> ScoredSplit:
        from components.split_evaluation import CHAMPION

        ours = score(data, bundle)
        if champion is None:
            return FrameSplit(ours, blocks)
        theirs = score(data, champion)
        if not theirs["_row_key"].equals(ours["_row_key"]):
            raise ValueError("it scored different rows")
        # the champion's outputs: what scoring added to the split's own columns
        outputs = [c for c in theirs.columns if c not in getattr(data, "columns", ())]
        extra = theirs[outputs].add_prefix(CHAMPION).reset_index(drop=True)
        ours = ours.reset_index(drop=True)
        return FrameSplit(pd.concat([ours, extra], axis=1), blocks)

    return split


def plan(ctx: RunContext, label_mean: float, champion: bool) -> split_evaluation.EvalPlan:
    """What each block of the scored test split contributes."""
    spec = ctx.spec
    return split_evaluation.EvalPlan(
        task=ctx.task,
        label=ctx.label,
        eval_kwargs=dict(ctx.eval_kwargs),
        label_mean=label_mean,
        num_classes=spec.data.num_classes,
        guardrails=tuple(g.name for g in spec.guardrails),
        champion=champion,
    )


def parts_of(split: ScoredSplit, p: split_evaluation.EvalPlan) -> dict[str, Any]:
    """The merged parts of every block, with the AUC refinement passes (each one more pass over
    the scored rows) until every AUC is within its bound."""
    parts = split_evaluation.merge_parts(split.map_blocks(BlockFn(split_evaluation.block_parts, p)))
    for _ in range(metric_parts.REFINE_PASSES):
        grids = split_evaluation.refinements(parts)
        if not grids:
            break
        again = split.map_blocks(BlockFn(split_evaluation.block_parts, replace(p, grids=grids)))
        parts = split_evaluation.with_refined(parts, split_evaluation.merge_parts(again))
    return parts


@dataclass(frozen=True)
class BlockFn:
    """``fn(block, arg)`` as a one-argument function that pickles by reference."""

    fn: Any
    arg: Any

    def __call__(self, block: pd.DataFrame) -> Any:
        return self.fn(block, self.arg)


@dataclass(frozen=True)
class _Bootstrap:
    plan: gate.BootstrapPlan
    label: str
    weight: str | None

    def __call__(self, block: pd.DataFrame) -> gate.BootstrapPart:
        return split_evaluation.bootstrap_block(block, self.plan, self.label, self.weight)


def gate_decision(
    ctx: RunContext,
    split: ScoredSplit,
    parts: dict[str, Any],
    champion_version: int | None,
    champion_name: str = "production",
) -> dict[str, Any]:
    """The gate: the winner against the champion's outputs on the same rows (one bootstrap pass
    over the scored blocks), or promote-when-first without a champion (``champion_version``
    None; the rule baseline on validation passes 0 and its name)."""
    settings = translate.gate_settings(ctx.spec)
    metrics = split_evaluation.finish_parts(parts)
    challenger = metrics["test"][ctx.metric]
    rule = {k: settings[k] for k in ("min_improvement", "confidence")}
    if champion_version is None:
        return gate.first_model(ctx.task, ctx.metric, challenger, **rule).to_dict()
    p = split_evaluation.gate_plan(ctx.task, ctx.metric, parts, settings)
    weight = ctx.eval_kwargs.get("weight")
    boot = split_evaluation.merge_bootstrap(split.map_blocks(_Bootstrap(p, ctx.label, weight)))
    champion = metrics["champion"][ctx.metric]
    decision = gate.decide_from_parts(
        p, boot, challenger, champion, champion_name=champion_name, **rule
    ).to_dict()
    return {**decision, "champion_version": champion_version}


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

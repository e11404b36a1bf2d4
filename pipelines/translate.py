"""The spec, translated into the components' own configs: the one place a spec field is copied.

Components never import the spec (import-linter enforces it); each mapping from a spec section
to a component config lives here once, and tests/unit/test_translate.py round-trips each.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from components import uris
from components.features import CategoricalConfig, FeatureConfig
from components.sparse import SparseConfig
from components.splits import SplitPlan, carve_plan
from components.tasks import task_info
from components.validation import WEIGHT, DataSchema
from pipelines.spec import PipelineSpec, ScalingSpec, SourceSpec, TuneSpec

if TYPE_CHECKING:  # the adapters import Ray; the translation itself does not need it
    from components.steps.ingest import SourceConfig
    from components.steps.tune import SearchSettings


def data_schema(spec: PipelineSpec) -> DataSchema:
    """What ingest validates each row against (columns, label, group, policies)."""
    d = spec.data
    lf = d.label_from
    return DataSchema(
        task=spec.task,
        numeric=tuple(spec.features.numeric_names()),
        categorical=tuple(c.name for c in spec.features.categorical_features()),
        sparse={c.name: c.dim for c in spec.features.sparse_features()},
        label=d.label,
        group=d.group,
        timestamp=d.timestamp,
        keys=tuple(d.keys),
        weight=d.weight,
        label_mapping=d.label_mapping,
        label_source=lf.column if lf else None,
        label_threshold=lf.threshold if lf else None,
        label_offset=lf.offset if lf else None,
        num_classes=d.num_classes,
        max_relevance=d.max_relevance,
        unexpected_columns=d.validation.unexpected_columns,
    )


def feature_config(spec: PipelineSpec) -> FeatureConfig:
    """The feature transform to fit on the training split."""
    f = spec.features
    return FeatureConfig(
        numeric=tuple(f.numeric_names()),
        categorical=tuple(
            CategoricalConfig(c.name, c.encoding, c.min_frequency, c.max_vocab_size, c.hash_buckets)
            for c in f.categorical_features()
        ),
        sparse=tuple(SparseConfig(c.name, c.dim) for c in f.sparse_features()),
        impute=f.impute,
        standardize=f.standardize,
        log1p=tuple(f.log1p),
    )


def timestamp(value: float | str | None) -> float | None:
    """A spec time cut-off (epoch seconds or ISO 8601; naive means UTC) as epoch seconds."""
    if value is None or isinstance(value, (int, float)):
        return value
    ts = dt.datetime.fromisoformat(value)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return ts.timestamp()


def split_plan(spec: PipelineSpec) -> SplitPlan:
    """How rows are assigned to train/valid/test."""
    s = spec.split
    return SplitPlan(
        method=s.method,
        seed=s.seed,
        train=s.train,
        valid=s.valid,
        label=spec.data.label,
        valid_from=timestamp(s.valid_from),
        test_from=timestamp(s.test_from),
    )


def valid_plan(spec: PipelineSpec) -> SplitPlan | None:
    """How the valid split is held out of the train source, for explicit sources without a
    valid one (None otherwise): whole queries for grouped tasks, else rows (stratified)."""
    d = spec.data
    if d.sources is None or "valid" in d.sources:
        return None
    method = "group" if task_info(spec.task).grouped else "random"
    return carve_plan(method, spec.split.seed, spec.split.valid, d.label)


def source_config(src: SourceSpec) -> SourceConfig:
    """One data source for ingest: its URI, format, generator params and reader options."""
    from components.steps.ingest import SourceConfig

    # An s3:// source carries its endpoint (AWS_ENDPOINT_URL) to the read tasks, as storage does.
    uri = uris.normalize(src.uri) if src.uri.startswith("s3://") else src.uri
    return SourceConfig(
        uri=uri, format=src.format, params=dict(src.params), read_options=read_options(src)
    )


def read_options(src: SourceSpec) -> dict[str, Any]:
    """The reader's options of a file source (components.readers.ReadOptions fields; none for
    a generator), without importing the Ray adapters."""
    opts: dict[str, Any] = {}
    if not src.is_synthetic:
        c, lib = src.csv, src.libsvm
        opts = {
            "header": c.header,
            "column_names": tuple(c.column_names) if c.column_names else None,
            "delimiter": c.delimiter,
            "null_values": tuple(c.null_values),
            "skip_initial_space": c.skip_initial_space,
            "num_features": lib.num_features,
            "max_features": lib.max_features,
            "zero_based": lib.zero_based,
            "feature_prefix": lib.feature_prefix,
            "query_file_suffix": lib.query_file_suffix,
            "sparse": lib.sparse,
            "num_fields": lib.num_fields,
        }
    return opts


def sources(spec: PipelineSpec) -> dict[str, SourceSpec]:
    """The data's sources by name: ``all`` for one source to split, else train/valid/test."""
    d = spec.data
    if d.source is not None:
        return {"all": d.source}
    return {name: src for name, src in (d.sources or {}).items() if src is not None}


def worker_scaling(s: ScalingSpec) -> dict[str, Any]:
    """The fields of components.steps.train_common.WorkerScaling, for the job classes."""
    return {
        "num_workers": s.num_workers,
        "use_gpu": s.use_gpu,
        "resources_per_worker": s.per_worker() if s.num_workers > 0 else None,
        "max_failures": s.max_failures,
        "label_selector": s.label_selector,
        "accelerator_type": s.accelerator_type,
    }


def search_settings(t: TuneSpec, grace_period: int) -> SearchSettings:
    """How one Ray Tune search runs; ``grace_period`` resolved for the model family."""
    from components.steps.tune import SearchSettings

    return SearchSettings(
        num_samples=t.num_samples,
        max_concurrent_trials=t.max_concurrent_trials,
        time_budget_s=t.time_budget_s,
        searcher=t.searcher,
        scheduler=t.scheduler,
        grace_period=grace_period,
        reduction_factor=t.reduction_factor,
        seed=t.seed,
    )


def eval_kwargs(spec: PipelineSpec) -> dict[str, Any]:
    """components.evaluation's per-task keyword arguments from the evaluation section."""
    e = spec.evaluation
    out = {name: getattr(e, name) for name in task_info(spec.task).eval_options}
    if spec.data.weight:  # ingest puts the weights of every row in this column
        out["weight"] = WEIGHT
    return out


def gate_settings(spec: PipelineSpec) -> dict[str, Any]:
    """components.gate.decide's keyword arguments from registry.gate and evaluation."""
    g, e = spec.registry.gate, spec.evaluation
    return {
        "min_improvement": g.min_improvement,
        "resamples": g.resamples,
        "confidence": g.confidence,
        "seed": g.seed,
        "relevance_threshold": e.relevance_threshold,
        "threshold": e.threshold,
        "no_relevant": e.no_relevant,
    }

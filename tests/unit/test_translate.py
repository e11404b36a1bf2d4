"""pipelines.translate: each spec section round-trips into its component config (no Ray).

Every spec field below is set to a non-default value; each test then checks the component
config field by field through ``dataclasses.fields``, so a field added to a config without a
mapping here (or a mapping that silently keeps the default) fails.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
from typing import Any

import pytest

from components import evaluation, gate
from components.features import CategoricalConfig, FeatureConfig
from components.readers import ReadOptions
from components.sparse import SparseConfig
from components.splits import SplitPlan
from components.validation import DataSchema
from pipelines import translate
from pipelines.spec import (
    CategoricalFeature,
    CsvOptions,
    FeatureSpec,
    GateSpec,
    LibsvmOptions,
    PipelineSpec,
    ScalingSpec,
    TuneSpec,
    spec_from_dict,
)

FILE_SOURCE: dict[str, Any] = {
    "uri": "data/train/*.csv",
    "format": "csv",
    "csv": {
        "header": False,
        "column_names": ["qid", "rel", "when", "doc_id", "user_id", "a", "b", "c", "d"],
        "delimiter": ";",
        "null_values": ["-", "n/a"],
        "skip_initial_space": False,
    },
    "libsvm": {
        "num_features": 12,
        "max_features": 5000,
        "zero_based": False,
        "feature_prefix": "x",
        "query_file_suffix": ".qid",
        "sparse": "ids",
        "num_fields": 6,
    },
}
SYNTHETIC = {"uri": "synthetic:ranking", "params": {"rows": 50, "n_features": 2, "seed": 5}}


def doc(**changes: Any) -> dict[str, Any]:
    """A ranking spec with a non-default value in every field translate copies."""
    d: dict[str, Any] = {
        "name": "translate",
        "task": "ranking",
        "data": {
            "source": FILE_SOURCE,
            "label": "rel",
            "label_mapping": {"bad": 0, "good": 3},
            "num_classes": 5,
            "max_relevance": 3,
            "group": "qid",
            "timestamp": "when",
            "keys": ["doc_id", "user_id"],
            "weight": "w",
            "validation": {"unexpected_columns": "fail"},
        },
        "features": {
            "numeric": ["a", "b"],
            "categorical": [
                "c",
                {
                    "name": "d",
                    "encoding": "hash",
                    "min_frequency": 3,
                    "max_vocab_size": 50,
                    "hash_buckets": 128,
                },
            ],
            "sparse": ["ids", {"name": "bag", "dim": 40}],
            "impute": "none",
            "standardize": True,
            "log1p": ["b"],
        },
        "split": {
            "method": "time",
            "train": 0.6,
            "valid": 0.3,
            "seed": 7,
            "stratify": False,
            "valid_from": "2024-03-01T00:00:00",  # naive: UTC
            "test_from": "2024-04-01T12:00:00+02:00",
        },
        "models": [{"name": "lm", "params": {"objective": "rank:ndcg"}}],
        "evaluation": {
            "ks": [2, 7],
            "metric": "ndcg@7",
            "relevance_threshold": 2.0,
            "threshold": 0.7,
            "no_relevant": "zero",
        },
        "registry": {
            "gate": {"min_improvement": 0.01, "confidence": 0.9, "resamples": 200, "seed": 3}
        },
        "tune": {
            "num_samples": 3,
            "max_concurrent_trials": 4,
            "time_budget_s": 60,
            "searcher": "optuna",
            "scheduler": "fifo",
            "grace_period": 4,
            "reduction_factor": 3,
            "seed": 11,
            "winner": "refit",
        },
    }
    for path, value in changes.items():
        node = d
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return d


def spec(**changes: Any) -> PipelineSpec:
    return spec_from_dict(doc(**changes))


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def assert_fields(
    config: Any, expected: dict[str, Any], computed: frozenset[str] | set[str] = frozenset()
) -> None:
    """Every field of ``config`` is in ``expected`` (or ``computed``: not from the spec) and holds
    its value, and that value differs from the field's default (so the mapping is exercised)."""
    fields = dataclasses.fields(config)
    names = {f.name for f in fields}
    assert names - computed == set(expected), (
        f"fields without a mapping: {sorted(names - computed - set(expected))}, "
        f"stale expectations: {sorted(set(expected) - names)}"
    )
    for f in fields:
        if f.name not in expected:
            continue
        value = getattr(config, f.name)
        assert value == expected[f.name], f"{type(config).__name__}.{f.name}"
        assert value != _default(f), f"{type(config).__name__}.{f.name}: test a non-default value"


def test_data_schema() -> None:
    schema = translate.data_schema(spec())
    assert isinstance(schema, DataSchema)
    assert_fields(
        schema,
        {
            "task": "ranking",
            "numeric": ("a", "b"),
            "categorical": ("c", "d"),
            "label": "rel",
            "group": "qid",
            "timestamp": "when",
            "keys": ("doc_id", "user_id"),
            "weight": "w",
            "label_mapping": {"bad": 0, "good": 3},
            "num_classes": 5,
            "max_relevance": 3,
            "unexpected_columns": "fail",
            "sparse": {"ids": None, "bag": 40},
        },
        # require_label and extra are set by scoring-time callers, not by the spec; the derived
        # label's fields exclude label_mapping: test_data_schema_with_a_derived_label
        computed={"require_label", "extra", "label_source", "label_threshold", "label_offset"},
    )
    assert schema.require_label is True and schema.extra == {}


def test_data_schema_with_a_derived_label() -> None:
    d = doc(data__label_mapping=None, data__label_from={"column": "stars", "offset": -1})
    schema = translate.data_schema(spec_from_dict(d))
    assert (schema.label_source, schema.label_offset, schema.label_threshold) == ("stars", -1, None)
    d["data"]["label_from"] = {"column": "stars", "threshold": 3.5}
    schema = translate.data_schema(spec_from_dict(d))
    assert (schema.label_source, schema.label_offset) == ("stars", None)
    assert schema.label_threshold == 3.5
    assert translate.data_schema(spec()).label_source is None


def test_valid_plan_holds_valid_out_of_train_without_a_valid_source() -> None:
    d = doc(split={"method": "explicit", "valid": 0.25, "seed": 9})
    d["data"].pop("source")
    d["data"]["sources"] = {"train": {"uri": "tr.parquet"}, "test": {"uri": "te.parquet"}}
    plan = translate.valid_plan(spec_from_dict(d))
    assert plan == SplitPlan("group", seed=9, train=0.75, valid=0.25, label="rel")  # ranking
    binary = _binary_explicit()
    assert translate.valid_plan(binary) == SplitPlan("random", seed=0, train=0.9, valid=0.1)
    d["data"]["sources"]["valid"] = {"uri": "va.parquet"}
    assert translate.valid_plan(spec_from_dict(d)) is None  # the valid source is used
    assert translate.valid_plan(spec()) is None  # one source, split by split.method


def _binary_explicit() -> PipelineSpec:
    return spec_from_dict(
        {
            "name": "b",
            "task": "binary",
            "data": {"sources": {"train": {"uri": "a.csv"}, "test": {"uri": "b.csv"}}},
            "features": {"numeric": ["x"]},
            "split": {"method": "explicit"},
            "models": [{"kind": "xgboost"}],
        }
    )


def test_feature_translations_need_a_resolved_spec() -> None:
    s = spec_from_dict(doc(features__numeric={"prefix": "f"}))
    for fn in (translate.data_schema, translate.feature_config):
        with pytest.raises(ValueError, match=r"features.numeric is the selector \{prefix: 'f'\}"):
            fn(s)


def test_feature_config() -> None:
    s = spec()
    cfg = translate.feature_config(s)
    assert isinstance(cfg, FeatureConfig)
    # the config mirrors the spec section field for field
    assert {f.name for f in dataclasses.fields(FeatureConfig)} == set(FeatureSpec.model_fields)
    assert_fields(
        cfg,
        {
            "numeric": ("a", "b"),
            "categorical": (
                CategoricalConfig("c"),
                CategoricalConfig("d", "hash", 3, 50, 128),
            ),
            "impute": "none",
            "standardize": True,
            "log1p": ("b",),
            "sparse": (SparseConfig("ids"), SparseConfig("bag", 40)),
        },
    )
    assert {f.name for f in dataclasses.fields(CategoricalConfig)} == set(
        CategoricalFeature.model_fields
    )
    for got, want in zip(cfg.categorical, s.features.categorical_features(), strict=True):
        for f in dataclasses.fields(CategoricalConfig):
            assert getattr(got, f.name) == getattr(want, f.name), f.name
    hashed = cfg.categorical[1]
    assert_fields(
        hashed,
        {"encoding": "hash", "min_frequency": 3, "max_vocab_size": 50, "hash_buckets": 128},
        computed={"name"},
    )


def test_split_plan_with_iso_timestamps() -> None:
    plan = translate.split_plan(spec())
    assert isinstance(plan, SplitPlan)
    utc = dt.timezone.utc
    assert_fields(
        plan,
        {
            "method": "time",
            "seed": 7,
            "train": 0.6,
            "valid": 0.3,
            "label": "rel",
            "valid_from": dt.datetime(2024, 3, 1, tzinfo=utc).timestamp(),  # naive means UTC
            "test_from": dt.datetime(2024, 4, 1, 10, tzinfo=utc).timestamp(),  # +02:00
        },
        computed={"class_cuts"},  # computed from the data by the split step
    )
    assert plan.valid_from == 1709251200.0 and plan.test_from == 1711965600.0


@pytest.mark.parametrize(
    ("value", "epoch"),
    [
        (None, None),
        (1_700_000_000, 1_700_000_000),
        (1_700_000_000.5, 1_700_000_000.5),
        ("2024-03-01", 1709251200.0),
        ("2024-03-01T00:00:00Z", 1709251200.0),
        ("2024-03-01T01:30:00+01:30", 1709251200.0),
        ("2024-02-29T19:00:00-05:00", 1709251200.0),
    ],
)
def test_timestamp(value: Any, epoch: Any) -> None:
    assert translate.timestamp(value) == epoch


def test_split_plan_with_epoch_cut_offs_and_without() -> None:
    plan = translate.split_plan(spec(split__valid_from=1.5e9, split__test_from=1.6e9))
    assert (plan.valid_from, plan.test_from) == (1.5e9, 1.6e9)
    d = doc()
    d["split"] = {"method": "group", "train": 0.5, "valid": 0.25, "test": 0.25}
    plan = translate.split_plan(spec_from_dict(d))
    assert (plan.method, plan.train, plan.valid) == ("group", 0.5, 0.25)
    assert plan.valid_from is None and plan.test_from is None


def test_source_config_for_a_file_source() -> None:
    s = spec()
    src = s.data.source
    assert src is not None
    cfg = translate.source_config(src)
    assert_fields(
        cfg,
        {
            "uri": "data/train/*.csv",
            "format": "csv",
            "read_options": {
                "header": False,
                "column_names": ("qid", "rel", "when", "doc_id", "user_id", "a", "b", "c", "d"),
                "delimiter": ";",
                "null_values": ("-", "n/a"),
                "skip_initial_space": False,
                "num_features": 12,
                "max_features": 5000,
                "zero_based": False,
                "feature_prefix": "x",
                "query_file_suffix": ".qid",
                "sparse": "ids",
                "num_fields": 6,
            },
        },
        computed={"params"},  # only synthetic sources have params
    )
    assert cfg.params == {} and not cfg.is_synthetic
    # every csv and libsvm option travels, under the name the reader takes
    options = set(CsvOptions.model_fields) | set(LibsvmOptions.model_fields)
    assert set(cfg.read_options) == options
    reader_fields = {f.name for f in dataclasses.fields(ReadOptions)} - {"format"}
    assert set(cfg.read_options) == reader_fields
    read = ReadOptions(format="csv", **cfg.read_options)
    for name, value in cfg.read_options.items():
        assert getattr(read, name) == value, name


def test_source_config_for_default_csv_options() -> None:
    cfg = translate.source_config(spec(data__source={"uri": "x.tsv"}).data.source)  # type: ignore[arg-type]
    assert cfg.format is None
    assert cfg.read_options["column_names"] is None
    assert cfg.read_options["delimiter"] is None  # resolved per file by extension at read time
    assert cfg.read_options["null_values"] == tuple(CsvOptions().null_values)


def test_source_config_for_a_synthetic_source() -> None:
    src = spec(data__source=SYNTHETIC).data.source
    assert src is not None
    cfg = translate.source_config(src)
    assert cfg.uri == "synthetic:ranking" and cfg.is_synthetic
    assert cfg.params == {"rows": 50, "n_features": 2, "seed": 5}
    assert cfg.params is not src.params  # a copy: the frozen spec is never shared
    assert cfg.format is None and cfg.read_options == {}


def test_sources_one_source_is_all() -> None:
    s = spec()
    assert translate.sources(s) == {"all": s.data.source}


def test_sources_explicit_train_valid_test() -> None:
    d = doc()
    d["data"].pop("source")
    d["data"]["sources"] = {
        "test": {"uri": "t/*.parquet", "format": "parquet"},
        "train": {"uri": "tr/*.parquet"},
        "valid": {"uri": "v.jsonl", "format": "jsonl"},
    }
    d["split"] = {"method": "explicit"}
    s = spec_from_dict(d)
    got = translate.sources(s)
    assert set(got) == {"train", "valid", "test"}
    assert {n: g.uri for n, g in got.items()} == {
        "train": "tr/*.parquet",
        "valid": "v.jsonl",
        "test": "t/*.parquet",
    }
    assert translate.source_config(got["valid"]).format == "jsonl"


def _worker_fields() -> set[str]:
    from components.steps.train_common import WorkerScaling

    return {f.name for f in dataclasses.fields(WorkerScaling)}


def test_worker_scaling_with_gpu() -> None:
    from components.steps.train_common import WorkerScaling

    s = ScalingSpec(
        num_workers=3,
        use_gpu=True,
        resources_per_worker={"CPU": 2.0},
        max_failures=5,
        label_selector={"node-type": "gpu"},
        accelerator_type="H100",
    )
    got = translate.worker_scaling(s)
    assert set(got) == _worker_fields()
    scaling = WorkerScaling(**got)
    assert_fields(
        scaling,
        {
            "num_workers": 3,
            "use_gpu": True,
            "resources_per_worker": {"CPU": 2.0, "GPU": 1.0},  # use_gpu adds one GPU
            "max_failures": 5,
            "label_selector": {"node-type": "gpu"},
            "accelerator_type": "H100",
        },
    )
    # an explicit GPU count is kept
    got = translate.worker_scaling(ScalingSpec(use_gpu=True, resources_per_worker={"GPU": 0.5}))
    assert got["resources_per_worker"] == {"GPU": 0.5}
    # the default: one CPU per worker, no GPU
    got = translate.worker_scaling(ScalingSpec())
    assert got["resources_per_worker"] == {"CPU": 1.0} and got["use_gpu"] is False


def test_worker_scaling_with_no_workers_trains_in_the_driver() -> None:
    got = translate.worker_scaling(ScalingSpec(num_workers=0, resources_per_worker={"CPU": 4}))
    assert got["num_workers"] == 0
    assert got["resources_per_worker"] is None  # no worker group to size


def test_search_settings() -> None:
    from components.steps.tune import SearchSettings

    t = spec().tune
    got = translate.search_settings(t, grace_period=9)  # resolved per model family
    assert isinstance(got, SearchSettings)
    names = {f.name for f in dataclasses.fields(SearchSettings)}
    # every field comes from the tune section, except winner (the select stage reads it)
    assert names == set(TuneSpec.model_fields) - {"winner"}
    expected = {n: getattr(t, n) for n in names}
    expected["grace_period"] = 9  # the argument, not tune.grace_period (4)
    assert expected == {
        "num_samples": 3,
        "max_concurrent_trials": 4,
        "time_budget_s": 60.0,
        "searcher": "optuna",
        "scheduler": "fifo",
        "grace_period": 9,
        "reduction_factor": 3,
        "seed": 11,
    }
    for n, v in expected.items():
        assert getattr(got, n) == v, n
    assert translate.search_settings(TuneSpec(), 5).time_budget_s is None


EVAL_PARAMS = set(inspect.signature(evaluation.evaluate).parameters) - {"task", "scored", "label"}


@pytest.mark.parametrize(
    ("task", "extra", "expected"),
    [
        ("ranking", {}, {"ks": [2, 7], "relevance_threshold": 2.0, "no_relevant": "zero"}),
        ("binary", {}, {"threshold": 0.7}),
        ("multiclass", {"num_classes": 3}, {}),
        ("regression", {}, {}),
    ],
)
def test_eval_kwargs_per_task(task: str, extra: dict[str, Any], expected: dict[str, Any]) -> None:
    d = doc()
    d["task"] = task
    if task != "ranking":  # ndcg@7
        del d["evaluation"]["metric"]
    d["data"] = {"source": SYNTHETIC, **extra}
    d["features"] = {"numeric": ["f0", "f1"]}
    d["split"] = {"method": "group" if task == "ranking" else "random"}
    if task == "ranking":
        d["data"]["group"] = "qid"
    d["models"] = [{"name": "m"}]
    s = spec_from_dict(d)
    got = translate.eval_kwargs(s)
    assert got == expected
    assert set(got) <= EVAL_PARAMS  # what components.evaluation.evaluate accepts


def test_gate_settings() -> None:
    got = translate.gate_settings(spec())
    assert got == {
        "min_improvement": 0.01,
        "resamples": 200,
        "confidence": 0.9,
        "seed": 3,
        "relevance_threshold": 2.0,
        "threshold": 0.7,
        "no_relevant": "zero",
    }
    params = inspect.signature(gate.decide).parameters
    assert set(got) <= set(params)
    for name, value in got.items():
        assert value != params[name].default, f"{name}: test a non-default value"
    # every registry.gate setting reaches the gate
    assert set(GateSpec.model_fields) <= set(got)

"""Spec loading and validation: every shipped YAML validates; bad specs name file, field, reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import translate
from pipelines.spec import SpecError, load_spec, spec_from_dict
from tests.conftest import CONFIGS

ALL_SPECS = sorted(CONFIGS.rglob("*.yaml"))


def test_configs_exist() -> None:
    names = {p.name for p in ALL_SPECS}
    assert {"classification.yaml", "multiclass.yaml", "ranking.yaml", "ctr.yaml"} <= names


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_spec_validates(path: Path) -> None:
    spec = load_spec(path)
    assert spec.models and spec.selection_metric()


def _base() -> dict:
    return {
        "name": "t",
        "task": "binary",
        "data": {"source": {"uri": "synthetic:binary", "params": {"rows": 100}}},
        "features": {"numeric": ["num_0"]},
        "models": [{"kind": "xgboost"}],
    }


def _error(doc: dict) -> str:
    with pytest.raises(SpecError) as e:
        spec_from_dict(doc, source="my.yaml")
    return str(e.value)


def test_unknown_field_is_named_with_its_path() -> None:
    doc = _base()
    doc["models"][0]["num_boost_rounds"] = 5
    msg = _error(doc)
    assert "my.yaml" in msg and "models.0.num_boost_rounds" in msg and "Extra inputs" in msg


def test_wrong_type_is_named() -> None:
    doc = _base()
    doc["split"] = {"train": "lots"}
    msg = _error(doc)
    assert "split.train" in msg


def test_fractions_must_sum_to_one() -> None:
    doc = _base()
    doc["split"] = {"train": 0.5, "valid": 0.1, "test": 0.1}
    assert "sum to 1" in _error(doc)


def test_ranking_needs_group_and_not_random_split() -> None:
    doc = _base()
    doc["task"] = "ranking"
    assert "data.group" in _error(doc)
    doc["data"]["group"] = "qid"
    doc["data"]["source"]["uri"] = "synthetic:ranking"
    assert "cut queries" in _error(doc)


def test_metric_must_fit_task() -> None:
    doc = _base()
    doc["evaluation"] = {"metric": "ndcg@10"}
    assert "not a binary metric" in _error(doc)


def test_unknown_generator_and_param() -> None:
    doc = _base()
    doc["data"]["source"]["uri"] = "synthetic:nope"
    assert "unknown generator 'nope'" in _error(doc)
    doc = _base()
    doc["data"]["source"]["params"]["colour"] = 3
    assert "colour" in _error(doc)


def test_label_cannot_be_feature() -> None:
    doc = _base()
    doc["features"]["numeric"] = ["num_0", "label"]
    assert "the label column 'label' (data.label) cannot also be a feature" in _error(doc)


def _ranking_doc(**data: object) -> dict:
    return {
        "name": "r",
        "task": "ranking",
        "data": {
            "source": {"uri": "synthetic:ranking", "params": {"rows": 100}},
            "group": "qid",
            **data,
        },
        "features": {"numeric": ["f0"]},
        "split": {"method": "group"},
        "models": [{"kind": "xgboost"}],
    }


def test_group_is_a_feature_only_when_listed_and_timestamp_never() -> None:
    doc = _ranking_doc()
    doc["features"] = {"numeric": ["f0", "qid"]}
    assert spec_from_dict(doc).features.numeric == ["f0", "qid"]
    doc["features"] = {"numeric": ["f0"], "categorical": ["qid"]}
    assert spec_from_dict(doc).features.names() == ["f0", "qid"]
    doc = _ranking_doc(timestamp="ts")
    doc["features"] = {"numeric": ["f0", "ts"]}
    assert "the timestamp column 'ts' (data.timestamp) cannot also be a feature" in _error(doc)


def test_label_from_needs_one_rule_that_fits_the_task() -> None:
    doc = _ranking_doc(label_from={"column": "rating", "offset": -1})
    lf = spec_from_dict(doc).data.label_from
    assert lf is not None and (lf.column, lf.offset, lf.threshold) == ("rating", -1, None)
    doc = _ranking_doc(label_from={"column": "rating", "threshold": 4})
    assert spec_from_dict(doc).data.label_from.threshold == 4.0  # 0/1 relevance
    for rule in ({}, {"threshold": 4, "offset": -1}):
        msg = _error(_ranking_doc(label_from={"column": "rating", **rule}))
        assert "data.label_from: give exactly one of threshold" in msg
    msg = _error(_ranking_doc(label_from={"column": "r", "offset": 1}, label_mapping={"a": 1}))
    assert "at most one of data.label_mapping and data.label_from" in msg
    binary = _base()
    binary["data"]["label_from"] = {"column": "num_1", "threshold": 0.5}
    assert spec_from_dict(binary).data.label_from.column == "num_1"
    binary["data"]["label_from"] = {"column": "num_1", "offset": 1}
    assert "data.label_from.offset shifts integer labels" in _error(binary)
    binary["task"], binary["data"]["num_classes"] = "multiclass", 3
    assert spec_from_dict(binary).data.label_from.offset == 1
    binary["data"]["label_from"] = {"column": "num_1", "threshold": 0.5}
    assert "data.label_from.threshold gives 0/1 labels" in _error(binary)
    binary["task"] = "regression"
    binary["data"].pop("num_classes")
    assert "not regression" in _error(binary)


def test_the_label_source_column_cannot_be_a_feature() -> None:
    doc = _base()
    doc["data"]["label_from"] = {"column": "num_0", "threshold": 1}
    msg = _error(doc)
    assert "data.label_from.column 'num_0' cannot also be a feature" in msg and "leakage" in msg


def _explicit(**sources: object) -> dict:
    doc = _base()
    doc["data"] = {"sources": sources}
    doc["split"] = {"method": "explicit"}
    return doc


def test_explicit_sources_may_leave_valid_out() -> None:
    spec = spec_from_dict(_explicit(train={"uri": "tr.parquet"}, test={"uri": "te.parquet"}))
    assert set(spec.data.sources or {}) == {"train", "test"} and spec.split.valid == 0.1
    assert spec.warnings() == []
    msg = _error(_explicit(train={"uri": "tr.parquet"}, valid={"uri": "v.parquet"}))
    assert "data.sources needs train and test, and may have valid" in msg


def test_valid_that_is_the_test_data_is_refused_with_early_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    same = {"valid": {"uri": "./data/../te.parquet"}, "test": {"uri": str(tmp_path / "te.parquet")}}
    doc = _explicit(train={"uri": "tr.parquet"}, **same)
    msg = _error(doc)
    assert "data.sources.valid and data.sources.test are the same data" in msg
    assert "models.0.early_stopping_rounds stops training on it" in msg
    doc["models"] = [{"kind": "torch.mlp", "early_stopping_epochs": 2}]
    assert "models.0.early_stopping_epochs stops training on it" in _error(doc)
    # without early stopping it is allowed, with a warning
    doc["models"] = [{"kind": "xgboost", "early_stopping_rounds": None}]
    spec = spec_from_dict(doc)
    assert len(spec.warnings()) == 1
    assert spec.warnings()[0].startswith("data.sources.valid is the same data as data.sources.test")
    # a different file, or a different generator seed, is different data
    doc["data"]["sources"]["valid"] = {"uri": "va.parquet"}
    assert spec_from_dict(doc).warnings() == []
    gen = _explicit(
        train={"uri": "synthetic:binary", "params": {"rows": 50}},
        valid={"uri": "synthetic:binary", "params": {"rows": 50, "seed": 1}},
        test={"uri": "synthetic:binary", "params": {"rows": 50, "seed": 2}},
    )
    assert spec_from_dict(gen).warnings() == []
    gen["data"]["sources"]["valid"]["params"] = {"rows": 50, "seed": 2}
    assert "same data" in _error(gen)


def test_feature_selectors_are_checked_before_the_data_is_read() -> None:
    doc = _base()
    doc["features"] = {"numeric": {"prefix": "num_"}, "categorical": {"pattern": "cat_\\d"}}
    spec = spec_from_dict(doc)
    assert not spec.features.resolved
    assert [s.describe() for s in spec.features.selectors().values()] == [
        "{prefix: 'num_'}",
        "{pattern: 'cat_\\\\d'}",
    ]
    cases = [
        ({"numeric": {"prefix": "a", "pattern": "b"}}, "features.numeric: a column selector"),
        ({"numeric": {}}, "exactly one of prefix, pattern or all_except, got none"),
        ({"numeric": {"pattern": "("}}, "features.numeric: pattern '(' is not a regular"),
        ({"numeric": {"prefx": "a"}}, "features.numeric.prefx: Extra inputs"),
        ({"numeric": {"prefix": ""}}, "features.numeric.prefix: String should have at least 1"),
        ({"categorical": {"prefix": "c", "encoding": "x"}}, "features.categorical.encoding"),
        ({"numeric": "num_0"}, "features.numeric: Input should be a valid list"),
        (
            {"numeric": {"all_except": []}, "categorical": {"all_except": ["a"]}},
            "cannot both be all_except",
        ),
    ]
    for features, needle in cases:
        doc["features"] = features
        assert needle in _error(doc), features
    doc["features"] = {"numeric": ["num_0", "label"], "categorical": {"prefix": "cat_"}}
    assert "cannot also be a feature" in _error(doc)  # the names given are checked at once


def test_reserved_xgboost_params() -> None:
    doc = _base()
    doc["models"][0]["params"] = {"device": "cuda"}
    assert "use_gpu" in _error(doc)


def test_overrides_are_applied_and_validated(tmp_path: Path) -> None:
    spec = load_spec(
        CONFIGS / "ranking.yaml", ["models.0.num_boost_round=7", "data.source.params.rows=500"]
    )
    assert spec.models[0].num_boost_round == 7
    assert spec.data.source is not None and spec.data.source.params["rows"] == 500
    with pytest.raises(SpecError, match=r"models\.0\.num_boost_round"):
        load_spec(CONFIGS / "ranking.yaml", ["models.0.num_boost_round=-1"])
    with pytest.raises(SpecError, match="not an index"):
        load_spec(CONFIGS / "ranking.yaml", ["models.5.name=x"])
    with pytest.raises(SpecError, match="key=value"):
        load_spec(CONFIGS / "ranking.yaml", ["models.0.name"])


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="YAML mapping"):
        load_spec(bad)


def test_storage_env_overrides_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_from_dict(_base())
    assert spec.storage_root() == "./storage"
    monkeypatch.setenv("RAYLINE_STORAGE", "/tmp/elsewhere")
    assert spec.storage_root() == "/tmp/elsewhere"


def test_spec_fingerprint_is_stable() -> None:
    assert spec_from_dict(_base()).fingerprint() == spec_from_dict(_base()).fingerprint()
    other = _base()
    other["name"] = "u"
    assert spec_from_dict(other).fingerprint() != spec_from_dict(_base()).fingerprint()


def _ranking(model: dict, max_relevance: int = 4) -> dict:
    doc = _base()
    doc["task"] = "ranking"
    doc["data"]["group"] = "qid"
    doc["data"]["max_relevance"] = max_relevance
    doc["split"] = {"method": "group"}
    doc["models"] = [model]
    return doc


def test_bce_on_graded_relevance_is_refused() -> None:
    msg = _error(_ranking({"kind": "torch.mlp", "loss": "bce"}))
    assert "models.0.loss bce needs 0/1 labels" in msg and "max_relevance is 4" in msg
    assert spec_from_dict(_ranking({"kind": "torch.mlp", "loss": "bce"}, max_relevance=1))
    assert spec_from_dict(_ranking({"kind": "torch.mlp", "loss": "mse"}))


def test_loss_that_does_not_fit_the_task() -> None:
    doc = _base()
    doc["models"] = [{"kind": "torch.mlp", "loss": "listwise"}]
    assert "models.0.loss 'listwise' does not fit task binary" in _error(doc)


def test_external_memory_is_an_xgboost_setting() -> None:
    doc = _base()
    doc["models"][0]["scaling"] = {"external_memory": True}
    spec = spec_from_dict(doc)
    assert spec.models[0].scaling.external_memory is True  # type: ignore[union-attr]
    doc["models"] = [{"kind": "torch.mlp", "scaling": {"external_memory": True}}]
    assert "scaling.external_memory is an XGBoost setting" in _error(doc)


def test_scaling_placement_fields() -> None:
    doc = _base()
    doc["models"][0]["scaling"] = {
        "num_workers": 2,
        "use_gpu": True,
        "label_selector": {"node-type": "gpu"},
        "accelerator_type": "H100",
        "max_failures": 0,
    }
    scaling = spec_from_dict(doc).models[0].scaling
    kwargs = translate.worker_scaling(scaling)
    assert kwargs["label_selector"] == {"node-type": "gpu"} and kwargs["max_failures"] == 0
    assert kwargs["resources_per_worker"] == {"CPU": 1.0, "GPU": 1.0}
    assert scaling.worker_resources()["accelerator_type:H100"] > 0
    doc["models"][0]["scaling"]["use_gpu"] = False
    assert "accelerator_type needs use_gpu: true" in _error(doc)


def _regression(**extra: object) -> dict:
    doc = {
        "name": "r",
        "task": "regression",
        "data": {"source": {"uri": "synthetic:regression", "params": {"rows": 100}}},
        "features": {"numeric": ["num_0"], "categorical": ["cat_0"]},
        "models": [{"kind": "xgboost", "params": {"objective": "reg:tweedie"}}],
    }
    doc.update(extra)
    return doc


def test_regression_task_metrics_losses_and_objectives() -> None:
    spec = spec_from_dict(_regression())
    assert spec.selection_metric() == "rmse"
    assert spec_from_dict(_regression(evaluation={"metric": "mape"})).selection_metric() == "mape"
    assert "not a regression metric" in _error(_regression(evaluation={"metric": "auc"}))
    msg = _error(
        _regression(models=[{"kind": "xgboost", "params": {"objective": "binary:logistic"}}])
    )
    assert "models.0.params.objective 'binary:logistic' does not fit task regression" in msg
    msg = _error(_regression(models=[{"kind": "torch.mlp", "loss": "bce"}]))
    assert "models.0.loss 'bce' does not fit task regression" in msg
    torch_spec = spec_from_dict(_regression(models=[{"kind": "torch.mlp"}]))
    assert torch_spec.models[0].loss_for("regression") == "mse"  # type: ignore[union-attr]


def test_rules_and_guardrails_are_checked_with_their_position() -> None:
    rules_model = {
        "kind": "rules",
        "name": "base",
        "rules": [{"when": "num_0 > 1", "value": 2}, {"when": "cat_0 == 3", "value": 1}],
        "default": {"value": 0},
    }
    msg = _error(_regression(models=[rules_model]))
    assert "  - models.0.rules.1.when: at character 7: '==' compares a string" in msg
    good = {**rules_model, "rules": [{"when": "num_0 > 1", "value": "num_0 * 2"}]}
    spec = spec_from_dict(
        _regression(models=[good], guardrails=[{"name": "c", "clamp": {"min": 0}}])
    )
    assert spec.models[0].kind == "rules" and spec.guardrails[0].name == "c"
    msg = _error(
        _regression(models=[good], guardrails=[{"name": "f", "when": "num_0 > 1", "filter": True}])
    )
    assert "guardrails.0.filter: only for task ranking (this is regression)" in msg
    msg = _error(_regression(models=[{**good, "rules": []}]))
    assert "models.0.rules" in msg and "at least 1 item" in msg
    msg = _error(_regression(models=[{**good, "search": {"x": {"choice": [1]}}}]))
    assert "models.0.search" in msg and "Extra inputs" in msg


def test_guardrail_names_are_identifiers() -> None:
    doc = _regression(guardrails=[{"name": "a,b", "clamp": {"min": 0}}])
    assert "  - guardrails.0.name: use letters, digits" in _error(doc)


# --- hardening (issue 14) ----------------------------------------------------------------------


def test_nan_and_inf_clamp_bounds_are_refused(tmp_path: Path) -> None:
    # clamp: {min: .nan} was accepted and turned every output into NaN
    import yaml

    for key, text in (("min", ".nan"), ("max", ".inf"), ("min", "-.inf")):
        spec = tmp_path / "s.yaml"
        doc = _regression(guardrails=[{"name": "c", "clamp": {key: "BOUND"}}])
        spec.write_text(yaml.safe_dump(doc).replace("BOUND", text))
        with pytest.raises(SpecError) as e:
            load_spec(spec)
        assert f"  - guardrails.0.clamp.{key}: Input should be a finite number" in str(e.value)
    ok = spec_from_dict(_regression(guardrails=[{"name": "c", "clamp": {"min": 0, "max": 9}}]))
    assert ok.guardrails[0].clamp is not None and ok.guardrails[0].clamp.max == 9


def test_deep_rule_conditions_are_spec_errors_with_the_position() -> None:
    # ~120 nested parentheses or ~500 terms raised RecursionError (a traceback)
    deep = "(" * 120 + "num_0 > 1" + ")" * 120
    long = " + ".join(["num_0"] * 300) + " > 1"
    for when, where in ((deep, "at character 33: nested more than 32"), (long, "more than 200")):
        rules_model = {
            "kind": "rules",
            "rules": [{"when": when, "value": 1}],
            "default": {"value": 0},
        }
        msg = _error(_regression(models=[rules_model]))
        assert "  - models.0.rules.0.when: " in msg and where in msg
        msg = _error(_regression(guardrails=[{"name": "g", "when": when, "clamp": {"max": 1}}]))
        assert "  - guardrails.0.when: " in msg and where in msg


def test_libsvm_max_features() -> None:
    doc = _base()
    doc["data"]["source"] = {"uri": "data/*.svm", "libsvm": {"max_features": 2000}}
    src = spec_from_dict(doc).data.source
    assert src is not None and src.libsvm.max_features == 2000
    assert translate.source_config(src).read_options["max_features"] == 2000
    doc["data"]["source"] = {"uri": "data/*.svm"}
    src = spec_from_dict(doc).data.source
    assert src is not None and src.libsvm.max_features == 1_000_000
    doc["data"]["source"] = {"uri": "x.svm", "libsvm": {"num_features": 10, "max_features": 5}}
    assert "libsvm.num_features 10 is above libsvm.max_features 5" in _error(doc)
    doc["data"]["source"] = {"uri": "x.svm", "libsvm": {"max_features": 0}}
    assert "data.source.libsvm.max_features: Input should be greater than 0" in _error(doc)

"""Rule models and guardrails: first-match semantics, every action, per-task outputs, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components.rule_models import (
    RulesConfigError,
    compile_guardrails,
    compile_rule_model,
    filtered_scores,
)

KINDS: dict[str, Any] = {"age": "number", "clicks": "number", "country": "string"}
FRAME = pd.DataFrame(
    {
        "age": [15.0, 25.0, 40.0, np.nan],
        "clicks": [0.0, 10.0, 3.0, 1.0],
        "country": ["us", "ca", "us", None],
    }
)


def test_first_matching_rule_decides_else_the_default() -> None:
    model = compile_rule_model(
        "regression",
        {
            "rules": [
                {"name": "young", "when": "age < 18", "value": 1.0},
                {"name": "us", "when": "country == 'us'", "value": "clicks * 2 + 0.5"},
                {"when": "age > 30", "value": 99},  # never reached for row 2: "us" fired first
            ],
            "default": {"value": 7},
        },
        KINDS,
    )
    values, which = model.predict(FRAME)
    assert values.tolist() == [1.0, 7.0, 6.5, 7.0]
    assert model.rule_names(which) == ["young", "default", "us", "default"]


def test_outputs_per_task() -> None:
    binary = compile_rule_model(
        "binary",
        {"rules": [{"when": "clicks > 2", "label": 1}], "default": {"score": 0.2}},
        KINDS,
    )
    assert binary.predict(FRAME)[0].tolist() == [0.2, 1.0, 1.0, 0.2]
    multi = compile_rule_model(
        "multiclass",
        {"rules": [{"when": "country == 'us'", "label": 2}], "default": {"label": 0}},
        KINDS,
        num_classes=3,
    )
    out, _ = multi.predict(FRAME)
    assert out.shape == (4, 3) and out.argmax(axis=1).tolist() == [2, 0, 2, 0]
    assert np.allclose(out.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "task, doc, message",
    [
        ("regression", {"rules": [], "default": {"value": 1}}, "rules.rules: list at least one"),
        (
            "regression",
            {"rules": [{"when": "age > 1", "score": 1}], "default": {"value": 1}},
            "rules.rules.0: give exactly one of value for task regression (got score)",
        ),
        (
            "binary",
            {"rules": [{"when": "age > 1", "score": 1.5}], "default": {"score": 0}},
            "rules.rules.0.score: a binary score is a probability",
        ),
        (
            "binary",
            {"rules": [{"when": "age > 1", "score": "clicks"}], "default": {"score": 0}},
            "rules.rules.0.score: a binary score is a probability",
        ),
        (
            "multiclass",
            {"rules": [{"when": "age > 1", "label": 3}], "default": {"label": 0}},
            "rules.rules.0.label: a class id in 0..2",
        ),
        (
            "regression",
            {"rules": [{"when": "agee > 1", "value": 1}], "default": {"value": 1}},
            "rules.rules.0.when: at character 1: unknown feature 'agee'",
        ),
        (
            "regression",
            {"rules": [{"when": "age", "value": 1}], "default": {"value": 1}},
            "rules.rules.0.when: at character 1: expected a condition, got a number",
        ),
        (
            "regression",
            {"rules": [{"when": "age > 1", "value": "country"}], "default": {"value": 1}},
            "rules.rules.0.value: at character 1: expected a number",
        ),
        (
            "regression",
            {
                "rules": [
                    {"name": "a", "when": "age > 1", "value": 1},
                    {"name": "a", "when": "age > 2", "value": 2},
                ],
                "default": {"value": 1},
            },
            "rule names must be distinct, repeated: ['a']",
        ),
        (
            "regression",
            {"rules": [{"when": "age > 1", "value": 1}], "default": {}},
            "rules.default: give exactly one of value",
        ),
    ],
)
def test_rule_model_errors_name_the_rule(task: str, doc: dict, message: str) -> None:
    with pytest.raises(RulesConfigError) as e:
        compile_rule_model(task, doc, KINDS, num_classes=3)
    assert message in str(e.value), str(e.value)


def test_guardrails_run_in_order_and_report_what_fired() -> None:
    g = compile_guardrails(
        "ranking",
        [
            {"name": "minors", "when": "age < 18", "filter": True},
            {"name": "fresh", "when": "clicks >= 3", "boost": "0.1 * clicks"},
            {"name": "cap", "clamp": {"max": 1.0}},
            {"name": "pin", "when": "country is null", "override": {"score": -5}},
        ],
        KINDS,
    )
    applied = g.apply(FRAME, np.array([0.3, 0.5, 0.95, 0.2]))
    # row 1: 0.5 + 1.0 -> clamped to 1.0; row 2: 0.95 + 0.3 -> 1.0; row 3: pinned to -5
    np.testing.assert_allclose(applied.output, [0.3, 1.0, 1.0, -5.0])
    assert applied.filtered.tolist() == [True, False, False, False]
    assert applied.fired_names() == [["minors"], ["fresh", "cap"], ["fresh", "cap"], ["pin"]]


def test_a_clamp_fires_only_where_it_changes_the_value() -> None:
    g = compile_guardrails(
        "regression", [{"name": "floor", "when": "country == 'us'", "clamp": {"min": 0}}], KINDS
    )
    applied = g.apply(FRAME, np.array([-1.0, -2.0, 3.0, -4.0]))
    assert applied.output.tolist() == [0.0, -2.0, 3.0, -4.0]  # only "us" rows are clamped
    assert applied.fired_names() == [["floor"], [], [], []]


def test_multiclass_and_binary_overrides() -> None:
    g = compile_guardrails(
        "multiclass",
        [{"name": "ca", "when": "country == 'ca'", "override": {"label": 1}}],
        KINDS,
        3,
    )
    out = g.apply(FRAME, np.full((4, 3), 1 / 3)).output
    assert out[1].tolist() == [0.0, 1.0, 0.0] and out[0].tolist() == [1 / 3] * 3
    b = compile_guardrails(
        "binary", [{"name": "young", "when": "age < 18", "override": {"label": 0}}], KINDS
    )
    assert b.apply(FRAME, np.full(4, 0.9)).output.tolist() == [0.0, 0.9, 0.9, 0.9]


@pytest.mark.parametrize(
    "task, items, message",
    [
        (
            "binary",
            [{"name": "b", "when": "age > 1", "boost": 1}],
            "guardrails.0.boost: only for task ranking",
        ),
        (
            "regression",
            [{"name": "f", "when": "age > 1", "filter": True}],
            "guardrails.0.filter: only for task ranking",
        ),
        (
            "multiclass",
            [{"name": "c", "clamp": {"max": 1}}],
            "guardrails.0.clamp: not for multiclass",
        ),
        ("ranking", [{"name": "f", "filter": True}], "guardrails.0.when: filter needs a condition"),
        (
            "ranking",
            [{"name": "x", "when": "age > 1"}],
            "guardrails.0: give exactly one of override, clamp, boost, filter",
        ),
        (
            "ranking",
            [{"name": "x", "when": "age > 1", "boost": 1, "filter": True}],
            "(got boost, filter)",
        ),
        ("ranking", [{"name": "c", "clamp": {"min": 2, "max": 1}}], "clamp: min 2 is above max 1"),
        ("binary", [{"name": "c", "clamp": {"max": 2}}], "a binary score stays within [0, 1]"),
        ("ranking", [{"name": "c", "clamp": {}}], "a mapping with min and/or max"),
        (
            "ranking",
            [{"when": "age > 1", "filter": True}],
            "guardrails.0.name: every guardrail needs a name",
        ),
        (
            "ranking",
            [
                {"name": "a", "when": "age > 1", "filter": True},
                {"name": "a", "when": "age > 2", "filter": True},
            ],
            "guardrail names must be distinct",
        ),
        (
            "ranking",
            [{"name": "b", "when": "age > 1", "boost": "country"}],
            "guardrails.0.boost: at character 1: expected a number",
        ),
        (
            "ranking",
            [{"name": "b", "when": "country > 'x'", "boost": 1}],
            "guardrails.0.when: at character 9: '>' is not defined for strings",
        ),
        (
            "regression",
            [{"name": "o", "when": "age > 1", "override": {"score": 1}}],
            "guardrails.0.override: give exactly one of value",
        ),
    ],
)
def test_guardrail_errors_name_the_item(task: str, items: list, message: str) -> None:
    with pytest.raises(RulesConfigError) as e:
        compile_guardrails(task, items, KINDS, 3)
    assert message in str(e.value), str(e.value)


def test_filtered_scores_rank_dropped_rows_last() -> None:
    scores = np.array([5.0, -1.0, 3.0, 10.0])
    out = filtered_scores(scores, np.array([False, False, False, True]))
    assert out.tolist() == [5.0, -1.0, 3.0, -2.0]
    assert filtered_scores(scores, np.zeros(4, dtype=bool)) is scores


def _rules_bundle(path: Any, guardrails: list[dict] | None) -> str:
    from tests import bundles

    rules_doc = {
        "name": "editorial",
        "rules": [{"name": "us", "when": "country == 'us'", "score": "clicks + 1"}],
        "default": {"score": 0.5},
    }
    transform = bundles.features(FRAME, numeric=("age", "clicks"), categorical=("country",))
    contents = bundles.rules_contents("ranking", rules_doc, transform, guardrails=guardrails)
    return bundles.write(path, contents)


def test_a_rules_bundle_with_guardrails_through_the_predictor(tmp_path: Any) -> None:
    from components import bundle
    from components.predictor import Predictor

    path = _rules_bundle(
        tmp_path / "b",
        [
            {"name": "kids", "when": "age < 18", "filter": True},
            {"name": "cap", "clamp": {"max": 5}},
        ],
    )
    p = Predictor.load(path)
    frame = p.predict_frame(FRAME)
    assert frame["raw_score"].tolist() == [1.0, 0.5, 4.0, 0.5]
    assert frame["score"].tolist() == [1.0, 0.5, 4.0, 0.5]  # nothing above 5
    assert frame["filtered"].tolist() == [True, False, False, False]
    assert frame["guardrails"].tolist() == ["kids", "", "", ""]
    assert frame["rule"].tolist() == ["us", "default", "us", "default"]
    assert p.predict(FRAME).tolist() == frame["score"].tolist()
    # without guardrails: no extra columns, the same rule output
    plain = Predictor.load(_rules_bundle(tmp_path / "plain", None)).predict_frame(FRAME)
    assert list(plain.columns) == ["score", "rule"]
    # a guardrail that no longer compiles (edited by hand) is refused with the bundle's path
    bad = _rules_bundle(tmp_path / "bad", [{"name": "x", "when": "agee > 1", "filter": True}])
    with pytest.raises(bundle.BundleError, match="unknown feature 'agee'"):
        Predictor.load(bad)


def test_evaluation_ranks_filtered_candidates_last_and_reports_without_guardrails() -> None:
    from components import evaluation

    scored = pd.DataFrame(
        {
            "label": [3, 0, 1, 0],
            "_group": [1, 1, 1, 1],
            "score": [9.0, 2.0, 1.0, 0.0],
            "raw_score": [9.0, 2.0, 1.0, 0.0],
            "filtered": [True, False, False, False],
        }
    )
    with_guard = evaluation.evaluate("ranking", scored, "label", ks=(1,))
    plain = evaluation.without_guardrails(scored)
    assert plain is not None and "filtered" not in plain and "raw_score" not in plain
    without = evaluation.evaluate("ranking", plain, "label", ks=(1,))
    assert without["ndcg@1"] == 1.0  # the relevant row first
    assert with_guard["ndcg@1"] == 0.0  # filtered: it ranks last, below two weaker rows
    assert evaluation.without_guardrails(scored.drop(columns=["raw_score"])) is None


def test_serving_columns_and_batches_split_back_per_request(tmp_path: Any) -> None:
    """Request rows -> column arrays -> one batched score -> one result per request."""
    from components.predictor import Predictor
    from serve.scoring import Limits, ModelScorer, score_frames

    path = _rules_bundle(tmp_path / "b", [{"name": "kids", "when": "age < 18", "filter": True}])
    scorer = ModelScorer(Predictor.load(path), "m", 1, Limits())
    rows = FRAME.astype(object).where(FRAME.notna(), None).to_dict("records")
    frames = [scorer.frame(rows[:1], "rows", 10), scorer.frame(rows[1:], "rows", 10)]
    assert frames[1]["age"].dtype == np.float64 and np.isnan(frames[1]["age"][2])
    parts = score_frames(scorer.predictor, frames)
    assert [len(p) for p in parts] == [1, 3]
    whole = scorer.predictor.predict_frame(FRAME)
    assert [*parts[0].output, *parts[1].output] == whole["score"].tolist()
    assert parts[0].fired == [["kids"]] and parts[1].rule == ["default", "us", "default"]
    body = scorer.rank_response(parts[1], top_k=None)
    assert [c["index"] for c in body["ranked"]] == [1, 0, 2] and body["filtered"] == []


# --- hardening (issue 14) ----------------------------------------------------------------------


@pytest.mark.parametrize("bound", [math.nan, math.inf, -math.inf, 10**400])
def test_clamp_bounds_must_be_finite(bound: float) -> None:
    # clamp: {min: .nan} was accepted and turned every output into NaN
    for key in ("min", "max"):
        with pytest.raises(
            RulesConfigError, match=rf"guardrails\.0\.clamp\.{key}: a finite number"
        ):
            compile_guardrails("regression", [{"name": "c", "clamp": {key: bound}}], KINDS)


def test_non_finite_rule_outputs_are_refused() -> None:
    for out in ({"value": math.nan}, {"value": math.inf}):
        with pytest.raises(RulesConfigError, match=r"rules\.default\.value: .*finite number"):
            compile_rule_model(
                "regression", {"rules": [{"when": "age > 1", "value": 1}], "default": out}, KINDS
            )
    with pytest.raises(RulesConfigError, match=r"guardrails\.0\.boost: .*finite number"):
        compile_guardrails("ranking", [{"name": "b", "when": "age > 1", "boost": math.nan}], KINDS)


@pytest.mark.parametrize(
    "doc, message",
    [
        (["x"], "rules: a mapping with rules and default, got list"),
        ({"rules": "age > 1", "default": {"value": 1}}, "rules.rules: a list of rules, got str"),
        ({"rules": {"a": 1}, "default": {"value": 1}}, "rules.rules: a list of rules, got dict"),
        ({"rules": ["age > 1"], "default": {"value": 1}}, "rules.rules.0: a mapping such as"),
        ({"rules": [{"when": "age > 1", "value": 1}], "default": 3}, "rules.default: a mapping"),
    ],
)
def test_rule_models_of_the_wrong_shape_are_config_errors(doc: Any, message: str) -> None:
    # these raised AttributeError ('str' object has no attribute 'get', ...)
    with pytest.raises(RulesConfigError) as e:
        compile_rule_model("regression", doc, KINDS)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize(
    "items, message",
    [
        ({"name": "c", "clamp": {"max": 1}}, "guardrails: a list of guardrails, got dict"),
        ("clamp", "guardrails: a list of guardrails, got str"),
        (None, "guardrails: a list of guardrails, got NoneType"),
        (["c"], "guardrails.0: a mapping such as"),
        ([{"name": "c", "clamp": {"max": 1}}, 3], "guardrails.1: a mapping such as"),
    ],
)
def test_guardrails_of_the_wrong_shape_are_config_errors(items: Any, message: str) -> None:
    with pytest.raises(RulesConfigError) as e:
        compile_guardrails("regression", items, KINDS)
    assert str(e.value).startswith(message)


def _rewrite(path: str, tmp_path: Any, name: str, content: bytes) -> str:
    """A copy of the bundle at ``path`` with one file replaced (and a matching MANIFEST)."""
    from components import bundle

    files = {f: bundle.read_bundle_file(path, f) for f in bundle.verify_bundle(path)["files"]}
    files[name] = content
    return str(bundle.write_bundle(tmp_path / f"edited-{len(list(tmp_path.iterdir()))}", files))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("guardrails.json", b'{"name": "cap", "clamp": {"max": 5}}', "a list of guardrails"),
        ("guardrails.json", b'["cap"]', "guardrails.0: a mapping such as"),
        ("guardrails.json", b"null", "a list of guardrails, got NoneType"),
        ("guardrails.json", b'[{"name": "c", "clamp": {"min": NaN}}]', "a finite number"),
        ("guardrails.json", b"[{", "not valid JSON"),
        ("guardrails.json", b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        ("rules.json", b'["us"]', "rules: a mapping with rules and default, got list"),
        ("rules.json", b'{"rules": "x", "default": {}}', "rules.rules: a list of rules"),
        ("rules.json", b"\xff", "not valid JSON"),
    ],
)
def test_a_malformed_rules_or_guardrails_file_is_a_bundle_error(
    tmp_path: Any, name: str, content: bytes, message: str
) -> None:
    # a rules or guardrails JSON of the wrong shape raised AttributeError
    from components import bundle
    from components.predictor import Predictor

    good = _rules_bundle(tmp_path / "good", [{"name": "cap", "clamp": {"max": 5}}])
    bad = _rewrite(good, tmp_path, name, content)
    with pytest.raises(bundle.BundleError) as e:
        Predictor.load(bad)
    assert str(e.value).startswith(f"{bad}: {name}: ") and message in str(e.value)

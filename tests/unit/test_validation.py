"""Row-level coercion and checks: every bad-input case names the column, the value and the row."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components.validation import DataSchema, DataValidationError, coerce_frame, describe_bad_rows


def schema(**kw) -> DataSchema:
    base = {"task": "binary", "numeric": ("x",), "categorical": ("c",), "label": "y"}
    base.update(kw)
    return DataSchema(**base)


def rules(out: pd.DataFrame) -> list[str | None]:
    return [None if pd.isna(r) else r for r in out["_rule"]]


def frame(**cols) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    df = pd.DataFrame(cols)
    df["_source_file"] = "data/part-1.csv"
    df["_source_row"] = np.arange(2, n + 2)
    return df


def test_good_rows_are_typed_and_unmarked() -> None:
    out = coerce_frame(
        frame(x=["1.5", "2", None], c=[1.0, "b", None], y=["0", "1", "1"]), schema(), "f"
    )
    assert out["x"].tolist()[:2] == [1.5, 2.0] and np.isnan(out["x"].iloc[2])
    assert out["c"].tolist()[:2] == ["1", "b"] and pd.isna(out["c"].iloc[2])
    assert out["y"].tolist() == [0.0, 1.0, 1.0]
    assert out["_rule"].isna().all()
    assert out["_row_key"].nunique() == 3


def test_wrong_type_names_column_value_and_row() -> None:
    out = coerce_frame(frame(x=["1", "abc", "inf"], c=["a", "b", "c"], y=[0, 1, 0]), schema(), "f")
    assert rules(out) == [None, "wrong_type", "wrong_type"]
    assert "column 'x'" in out["_reason"][1] and "'abc'" in out["_reason"][1]
    text = describe_bad_rows(out[out["_rule"].notna()])
    assert "data/part-1.csv, row 3" in text and "data/part-1.csv, row 4" in text


def test_null_and_out_of_range_labels() -> None:
    out = coerce_frame(frame(x=[1, 2, 3, 4], c=["a"] * 4, y=[None, 2, 0.5, 1]), schema(), "f")
    assert rules(out) == ["null_label", "label_out_of_range", "label_out_of_range", None]
    assert "0 or 1" in out["_reason"][1]


def test_multiclass_and_ranking_label_ranges() -> None:
    s = schema(task="multiclass", num_classes=3)
    out = coerce_frame(frame(x=[1, 2, 3], c=["a"] * 3, y=[0, 2, 3]), s, "f")
    assert rules(out) == [None, None, "label_out_of_range"]
    s = schema(task="ranking", group="q", max_relevance=4)
    out = coerce_frame(frame(x=[1, 2, 3], c=["a"] * 3, y=[4, 5, -1], q=[1, 1, 2]), s, "f")
    assert rules(out) == [None, "label_out_of_range", "label_out_of_range"]


def test_label_mapping_with_trailing_dots() -> None:
    s = schema(label_mapping={">50K": 1, "<=50K": 0, ">50K.": 1, "<=50K.": 0})
    out = coerce_frame(frame(x=[1, 2, 3], c=["a"] * 3, y=[" >50K.", "<=50K", "maybe"]), s, "f")
    assert out["y"].tolist()[:2] == [1.0, 0.0]
    assert rules(out) == [None, None, "label_out_of_range"]
    assert "data.label_mapping" in out["_reason"][2]


def test_missing_group() -> None:
    s = schema(task="ranking", group="q")
    out = coerce_frame(frame(x=[1, 2], c=["a", "b"], y=[1, 0], q=[7, None]), s, "f")
    assert rules(out) == [None, "missing_group"]
    assert out["_group"].iloc[0] == 7


def test_string_group_ids_hash_stably() -> None:
    s = schema(task="ranking", group="q")
    a = coerce_frame(frame(x=[1, 2, 3], c=["a"] * 3, y=[1, 0, 1], q=["u1", "u2", "u1"]), s, "f")
    b = coerce_frame(frame(x=[1], c=["a"], y=[1], q=["u2"]), s, "f")
    assert a["_group"].iloc[0] == a["_group"].iloc[2] != a["_group"].iloc[1]
    assert b["_group"].iloc[0] == a["_group"].iloc[1]


def test_timestamps_numbers_and_iso_strings() -> None:
    s = schema(timestamp="t")
    out = coerce_frame(
        frame(
            x=[1, 2, 3, 4],
            c=["a"] * 4,
            y=[0, 1, 0, 1],
            t=["1767225600", "2026-01-01T00:00:00Z", "yesterday", None],
        ),
        s,
        "f",
    )
    assert out["_ts"].iloc[0] == out["_ts"].iloc[1] == 1767225600.0
    assert rules(out) == [None, None, "wrong_type", "missing_timestamp"]


def test_missing_columns_fail_naming_file_and_columns() -> None:
    with pytest.raises(DataValidationError, match=r"data/x.parquet: missing column \['y'\]"):
        coerce_frame(pd.DataFrame({"x": [1], "c": ["a"]}), schema(), "data/x.parquet")


def test_unexpected_columns_ignored_or_rejected() -> None:
    f = frame(x=[1], c=["a"], y=[1], extra=[5])
    assert "extra" not in coerce_frame(f, schema(), "f").columns
    with pytest.raises(DataValidationError, match=r"unexpected column \['extra'\]"):
        coerce_frame(f, schema(unexpected_columns="fail"), "f.csv")


def test_first_rule_wins_and_rows_are_never_dropped() -> None:
    out = coerce_frame(frame(x=["bad"], c=["a"], y=[None]), schema(), "f")
    assert len(out) == 1 and rules(out) == ["wrong_type"]


def test_schema_json_round_trip() -> None:
    s = schema(task="ranking", group="q", keys=("id",), label_mapping={"a": 1})
    assert DataSchema.from_json(s.to_json()) == s


def test_label_from_a_threshold() -> None:
    s = schema(label="label", label_source="rating", label_threshold=4.0)
    out = coerce_frame(
        frame(x=[1] * 5, c=["a"] * 5, rating=["5", "3.5", "4", None, "lots"]), s, "f"
    )
    assert out["label"].tolist()[:3] == [1.0, 0.0, 1.0]
    assert rules(out) == [None, None, None, "null_label", "wrong_type"]
    assert out["_reason"][3] == "column 'rating': label is missing"
    assert out["_reason"][4] == "column 'rating': 'lots' is not a number"
    assert "rating" not in out.columns  # the source column is not carried as a feature
    # the label column itself need not exist; the source column must
    with pytest.raises(DataValidationError, match=r"missing column \['rating'\]"):
        coerce_frame(frame(x=[1], c=["a"], label=[1]), s, "f")


def test_label_from_an_offset_is_range_checked() -> None:
    s = schema(task="ranking", group="q", max_relevance=4, label_source="rating", label_offset=-1)
    out = coerce_frame(frame(x=[1] * 5, c=["a"] * 5, q=[1] * 5, rating=[1, 5, 6, 0, 2.5]), s, "f")
    assert out["y"].tolist() == [0.0, 4.0, 5.0, -1.0, 1.5]
    assert rules(out)[:2] == [None, None]
    assert rules(out)[2:] == ["label_out_of_range"] * 3
    # the rule is label_out_of_range, so data.validation.label_out_of_range decides (fail or
    # quarantine) as for any label; the reason names the column and the value it came from
    assert out["_reason"][2] == (
        "column 'rating': label 5 (value 6 - 1) is not an integer relevance 0..4"
    )
    assert out["_reason"][3] == (
        "column 'rating': label -1 (value 0 - 1) is not an integer relevance 0..4"
    )
    up = schema(task="multiclass", num_classes=3, label_source="grade", label_offset=2)
    out = coerce_frame(frame(x=[1, 2], c=["a"] * 2, grade=[-2, 1]), up, "f")
    assert out["y"].tolist() == [0.0, 3.0] and rules(out) == [None, "label_out_of_range"]
    assert "label 3 (value 1 + 2) is not an integer class id 0..2" in out["_reason"][1]


def test_a_group_listed_as_a_feature_keeps_its_feature_values() -> None:
    s = schema(task="ranking", numeric=("x", "q"), group="q")
    out = coerce_frame(frame(x=[1, 2, 3], c=["a"] * 3, y=[1, 0, 1], q=["7", "7", "8"]), s, "f")
    assert out["q"].tolist() == [7.0, 7.0, 8.0]  # coerced as a numeric feature
    assert out["_group"].tolist() == [7, 7, 8] and rules(out) == [None] * 3
    assert s.required_columns().count("q") == 1
    s = schema(task="ranking", categorical=("c", "q"), group="q")
    out = coerce_frame(frame(x=[1, 2], c=["a"] * 2, y=[1, 0], q=[3, 4]), s, "f")
    assert out["q"].tolist() == ["3", "4"] and out["_group"].tolist() == [3, 4]


def test_schema_json_round_trip_with_a_derived_label() -> None:
    s = schema(label_source="rating", label_threshold=4.0)
    assert DataSchema.from_json(s.to_json()) == s
    old = json.loads(schema().to_json())  # a bundle written before label_from existed
    for k in ("label_source", "label_threshold", "label_offset"):
        old.pop(k)
    assert DataSchema.from_json(json.dumps(old)) == schema()
    assert s.unlabeled().label_source is None

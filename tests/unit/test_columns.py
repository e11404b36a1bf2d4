"""Feature selectors: a data source's columns read as ingest reads them, selectors resolved in the
data's order (never a column with a role), the resolved spec validated again, and
`rayline validate --data` printing the lists (no Ray)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components import generators, readers
from components.columns import file_columns, reader_options, source_columns
from pipelines import cli, columns
from pipelines.errors import PipelineError
from pipelines.spec import (
    CategoricalFeature,
    CategoricalSelector,
    ColumnSelector,
    SpecError,
    spec_from_dict,
)
from tests.conftest import ROOT

COLS = ["row_id", "qid", "ts", "rating", "f0", "f1", "g0", "f2", "c_a", "c_b", "label"]


def doc(**features: Any) -> dict[str, Any]:
    return {
        "name": "sel",
        "task": "ranking",
        "data": {
            "source": {"uri": "data/x.parquet"},
            "group": "qid",
            "timestamp": "ts",
            "keys": ["row_id"],
        },
        "features": features,
        "split": {"method": "group"},
        "models": [{"kind": "xgboost"}],
    }


def resolve(**features: Any) -> Any:
    return columns.resolve(spec_from_dict(doc(**features)), COLS, "data.source (x.parquet)")


def test_prefix_pattern_and_all_except_pick_in_the_data_order() -> None:
    s = resolve(numeric={"prefix": "f"})
    assert s.features.numeric == ["f0", "f1", "f2"] and s.features.resolved
    s = resolve(numeric={"pattern": "[fg]\\d"})  # the whole name matches
    assert s.features.numeric == ["f0", "f1", "g0", "f2"]
    s = resolve(numeric={"all_except": ["c_a", "c_b"]})
    # label, group (qid), timestamp (ts) and keys (row_id) are never picked
    assert s.features.numeric == ["rating", "f0", "f1", "g0", "f2"]


def test_all_except_takes_what_the_other_list_leaves() -> None:
    s = resolve(numeric={"all_except": ["rating"]}, categorical={"prefix": "c_"})
    assert s.features.numeric == ["f0", "f1", "g0", "f2"]
    assert s.features.categorical == ["c_a", "c_b"]
    # names listed explicitly in the other list are not picked either
    s = resolve(numeric=["rating"], categorical={"all_except": ["f0", "f1", "g0", "f2"]})
    assert s.features.categorical == ["c_a", "c_b"]
    # a group listed by name is a feature; a selector never picks it
    s = resolve(numeric=["qid"], categorical={"prefix": "c_"})
    assert s.features.names() == ["qid", "c_a", "c_b"]


def test_a_label_source_column_is_never_picked() -> None:
    d = doc(numeric={"all_except": ["c_a", "c_b"]})
    d["data"]["label_from"] = {"column": "rating", "offset": -1}
    s = columns.resolve(spec_from_dict(d), COLS, "x")
    assert s.features.numeric == ["f0", "f1", "g0", "f2"]
    assert "rating" in s.data.role_columns()


def test_categorical_selector_gives_each_column_its_options() -> None:
    s = resolve(categorical={"prefix": "c_", "encoding": "hash", "hash_buckets": 64})
    assert s.features.categorical_features() == [
        CategoricalFeature(name="c_a", encoding="hash", hash_buckets=64),
        CategoricalFeature(name="c_b", encoding="hash", hash_buckets=64),
    ]
    assert resolve(categorical={"prefix": "c_"}).features.categorical == ["c_a", "c_b"]
    # the selector's options are exactly a categorical feature's (besides the name)
    options = set(CategoricalSelector.model_fields) - set(ColumnSelector.model_fields)
    assert options == set(CategoricalFeature.model_fields) - {"name"}
    for name in options:
        assert (
            CategoricalSelector.model_fields[name].default
            == CategoricalFeature.model_fields[name].default
        )


def test_a_selector_that_picks_nothing_is_an_error() -> None:
    with pytest.raises(SpecError) as e:
        resolve(numeric={"prefix": "zz"})
    msg = str(e.value)
    assert "features.numeric {prefix: 'zz'} matches no column of data.source (x.parquet)" in msg
    assert "'f0'" in msg  # the data's columns are listed
    with pytest.raises(SpecError, match=r"features.numeric \{pattern: 'f'\} matches no column"):
        resolve(numeric={"pattern": "f"})  # a full match: 'f0' does not match 'f'
    with pytest.raises(SpecError, match=r"\{prefix: 'q'\} matches no column"):
        resolve(numeric={"prefix": "q"})  # qid is the group: never picked by a selector


def test_all_except_naming_an_absent_column_is_an_error() -> None:
    with pytest.raises(SpecError) as e:
        resolve(numeric={"all_except": ["f0", "nope"]})
    assert "features.numeric {all_except: ['f0', 'nope']}: ['nope'] are not columns of" in str(
        e.value
    )


def test_the_resolved_spec_is_validated_again() -> None:
    with pytest.raises(SpecError, match=r"log1p names columns that are not numeric features"):
        resolve(numeric={"prefix": "f"}, log1p=["g0"])
    assert resolve(numeric={"prefix": "f"}, log1p=["f1"]).features.log1p == ["f1"]
    # rules are compiled only once the feature names are known
    d = doc(numeric={"prefix": "f"})
    d["models"].append(
        {"kind": "rules", "rules": [{"when": "g0 > 1", "score": 1}], "default": {"score": 0}}
    )
    spec = spec_from_dict(d)  # g0 may be a feature: not checked before resolution
    with pytest.raises(SpecError, match=r"models\.1\.rules\.0\.when.*g0"):
        columns.resolve(spec, COLS, "x")
    d["features"]["numeric"] = {"pattern": "[fg]\\d"}
    assert "g0" in columns.resolve(spec_from_dict(d), COLS, "x").features.numeric


def test_a_spec_without_selectors_is_returned_as_it_is() -> None:
    spec = spec_from_dict(doc(numeric=["f0"]))
    assert columns.resolve(spec, COLS, "x") is spec
    assert columns.resolved(spec) is spec  # no data is read


def test_an_unresolved_spec_refuses_to_give_its_feature_lists() -> None:
    spec = spec_from_dict(doc(numeric={"prefix": "f"}))
    with pytest.raises(ValueError, match=r"features.numeric is the selector \{prefix: 'f'\}"):
        spec.features.numeric_names()


# -- the columns of a source, as the ingest reader gives them ---------------------------------


def _reader_columns(path: Path, fmt: str, **opts: Any) -> list[str]:
    frame = readers.read_file(str(path), reader_options(str(path), fmt, opts))
    return [c for c in frame.columns if not c.startswith("_source_")]


@pytest.mark.parametrize(
    ("name", "text", "opts"),
    [
        ("a.csv", "x,y , z\n1,2,3\n", {}),
        ("b.csv", '\ufeff\n"a,b",c,\n1,2,3\n', {}),  # BOM, blank first line, quoted, unnamed
        ("c.tsv", "p\tq\n1\t2\n", {}),  # tab by extension
        ("d.csv", "1;2\n", {"header": False, "column_names": ("u", "v"), "delimiter": ";"}),
        ("e.csv", "k; l\n1; 2\n", {"delimiter": ";"}),  # spaces after the delimiter
    ],
)
def test_csv_columns_equal_the_reader(tmp_path: Path, name: str, text: str, opts: dict) -> None:
    path = tmp_path / name
    path.write_text(text)
    got = file_columns(str(path), reader_options(str(path), "csv", opts))
    assert got == _reader_columns(path, "csv", **opts)


def test_parquet_jsonl_libsvm_columns_equal_the_reader(tmp_path: Path) -> None:
    df = pd.DataFrame({"b": [1.0, 2.0], "a": ["x", "y"], "label": [0, 1]})
    df.to_parquet(tmp_path / "p.parquet")
    df.set_index("a").to_parquet(tmp_path / "i.parquet")  # a named index is a column again
    (tmp_path / "j.jsonl").write_text('{"b": 1, "a": "x"}\n{"c": 2, "b": 3}\n')
    (tmp_path / "s.svm").write_text("1 qid:3 0:1.5 4:2\n0 qid:3 2:1\n")
    assert file_columns(str(tmp_path / "p.parquet"), readers.ReadOptions("parquet")) == [
        "b",
        "a",
        "label",
    ]
    assert set(file_columns(str(tmp_path / "i.parquet"), readers.ReadOptions("parquet"))) == set(
        _reader_columns(tmp_path / "i.parquet", "parquet")
    )
    assert file_columns(str(tmp_path / "j.jsonl"), readers.ReadOptions("jsonl")) == [
        "b",
        "a",
        "c",
    ]
    assert file_columns(str(tmp_path / "s.svm"), readers.ReadOptions("libsvm")) == [
        "label",
        "qid",
        *[f"f{j}" for j in range(5)],
    ]


def test_source_columns_of_a_folder_and_of_a_generator(tmp_path: Path) -> None:
    for name in ("b.csv", "a.csv"):
        (tmp_path / name).write_text(f"{name[0]}1,label\n1,0\n")
    where, cols = source_columns(str(tmp_path))
    assert where.endswith("a.csv") and cols == ["a1", "label"]  # the first file listed
    where, cols = source_columns("synthetic:ctr", params={"rows": 10})
    first = generators.plan_blocks("ctr", {"rows": 10})[0]
    frame = generators.generate_block(dataclasses.replace(first, rows=3))
    assert where == "synthetic:ctr#block0" and cols == list(frame.columns)
    with pytest.raises(readers.SourceError, match="nowhere"):
        source_columns(str(tmp_path / "nowhere.csv"))
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(readers.SourceError, match=r"empty\.csv: .*no header line"):
        file_columns(str(empty), readers.ReadOptions("csv"))


# -- rayline validate --data --------------------------------------------------------------


def _spec_file(tmp_path: Path, features: dict[str, Any], **data: Any) -> Path:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "qid": np.repeat(np.arange(5), 4),
            "rating": rng.integers(1, 6, 20),
            **{f"f{j}": rng.random(20) for j in range(3)},
            "city": rng.choice(["a", "b"], 20),
        }
    )
    df.to_parquet(tmp_path / "train.parquet")
    df.to_parquet(tmp_path / "test.parquet")
    import yaml

    spec = {
        "name": "cli-sel",
        "task": "ranking",
        "data": {
            "sources": {
                "train": {"uri": str(tmp_path / "train.parquet")},
                "test": {"uri": str(tmp_path / "test.parquet")},
            },
            "group": "qid",
            "label_from": {"column": "rating", "offset": -1},
            **data,
        },
        "features": features,
        "split": {"method": "explicit"},
        "models": [{"kind": "xgboost"}],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_validate_with_data_prints_the_resolved_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _spec_file(tmp_path, {"numeric": {"prefix": "f"}, "categorical": {"all_except": []}})
    assert cli.main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "features.numeric {prefix: 'f'}: resolved against the data's columns" in out
    assert "features.categorical {all_except: []}" in out
    assert cli.main(["validate", str(path), "--data"]) == 0
    out = capsys.readouterr().out
    assert f"6 columns in data.sources.train ({tmp_path / 'train.parquet'})" in out
    assert "  features.numeric (3): f0, f1, f2\n" in out
    assert "  features.categorical (1): city\n" in out  # rating is the label's source
    assert "resolved against the data's columns when" not in out
    # validate never starts Ray, nor imports it (reading the columns needs no adapter)
    code = (
        "import sys; from pipelines import cli; "
        f"assert cli.main(['validate', {str(path)!r}, '--data']) == 0; "
        "assert 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)


def test_validate_with_data_names_a_missing_column_and_a_bad_selector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _spec_file(tmp_path, {"numeric": ["f0", "f9"]})
    assert cli.main(["validate", str(path)]) == 0  # without --data the data is not read
    assert cli.main(["validate", str(path), "--data"]) == 1
    err = capsys.readouterr().err
    assert "data.sources.train" in err and "has no column ['f9']" in err
    assert cli.main(["validate", str(path), "--data", "features.numeric={prefix: x}"]) == 2
    assert "features.numeric {prefix: 'x'} matches no column" in capsys.readouterr().err


def test_columns_of_an_unreadable_source_are_a_pipeline_error(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, {"numeric": {"prefix": "f"}})
    (tmp_path / "train.parquet").write_bytes(b"PAR1 not parquet")
    from pipelines.spec import load_spec

    with pytest.raises(PipelineError, match=r"cannot read the columns of data.sources.train"):
        columns.resolved(load_spec(path))

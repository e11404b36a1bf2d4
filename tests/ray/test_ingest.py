"""Ray Data ingestion: the Ray path equals the pandas path; every bad input is named or quarantined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.readers import SourceError
from components.steps.errors import find_user_error
from components.steps.ingest import SourceConfig, ingest, load_one, read_tasks
from components.validation import DataSchema, DataValidationError

pytestmark = pytest.mark.usefixtures("ray_session")

BINARY = DataSchema(
    task="binary",
    numeric=("num_0", "num_1"),
    categorical=("cat_0",),
    label="label",
    keys=("row_id",),
)
FAIL = {
    r: "fail"
    for r in (
        "wrong_type",
        "null_label",
        "label_out_of_range",
        "missing_group",
        "missing_timestamp",
    )
}
QUARANTINE = dict.fromkeys(FAIL, "quarantine")


def _ingest(source: SourceConfig, schema: DataSchema, policies: dict, tmp_path: Path):
    try:
        return ingest(source, schema, policies, str(tmp_path))
    except Exception as e:  # Ray wraps errors raised in tasks; the CLI unwraps them the same way
        user = find_user_error(e)
        if user is None:
            raise
        raise user from None


def test_generated_data_equals_pandas_path(tmp_path: Path) -> None:
    src = SourceConfig("synthetic:binary", params={"rows": 3000, "block_rows": 1000, "seed": 4})
    res = _ingest(src, BINARY, FAIL, tmp_path)
    assert res.inputs == 3 and res.rows_read == res.rows_used == 3000 and res.rows_quarantined == 0
    got = res.dataset.to_pandas().sort_values("row_id").reset_index(drop=True)
    want = pd.concat([load_one(t, BINARY, {}) for t in read_tasks(src)]).drop(
        columns=["_rule", "_reason", "_ok"]
    )
    want = want.sort_values("row_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(_plain(got[want.columns]), _plain(want))


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Values only: Ray returns Arrow-backed dtypes (NA), pandas numpy ones (NaN)."""
    return pd.DataFrame(
        {c: [None if pd.isna(v) else v for v in df[c].tolist()] for c in df.columns}
    )


def _csv(tmp_path: Path, text: str, name: str = "d.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


GOOD_CSV = "num_0,num_1,cat_0,label,row_id\n1,2,a,0,1\n3,4,b,1,2\n5,6,a,0,3\n"


def test_csv_parquet_jsonl_all_read(tmp_path: Path) -> None:
    df = pd.read_csv(_csv(tmp_path, GOOD_CSV))
    df.to_parquet(tmp_path / "d.parquet")
    df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    for name in ("d.csv", "d.parquet", "d.jsonl"):
        res = _ingest(SourceConfig(str(tmp_path / name)), BINARY, FAIL, tmp_path)
        assert res.rows_used == 3, name
    res = _ingest(SourceConfig(str(tmp_path / "d.*")), BINARY, FAIL, tmp_path)
    assert res.rows_used == 9 and res.inputs == 3


def test_wrong_type_fails_naming_file_row_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD_CSV.replace("3,4,b,1,2", "3,four,b,1,2"))
    with pytest.raises(DataValidationError) as e:
        _ingest(SourceConfig(path), BINARY, FAIL, tmp_path)
    msg = str(e.value)
    assert (
        f"{path}, row 3" in msg
        and "column 'num_1'" in msg
        and "'four'" in msg
        and "wrong_type" in msg
    )


@pytest.mark.parametrize(
    ("row", "rule", "needle"),
    [
        ("3,4,b,,2", "null_label", "label is missing"),
        ("3,4,b,7,2", "label_out_of_range", "not 0 or 1"),
    ],
)
def test_bad_labels_fail(tmp_path: Path, row: str, rule: str, needle: str) -> None:
    path = _csv(tmp_path, GOOD_CSV.replace("3,4,b,1,2", row))
    with pytest.raises(DataValidationError) as e:
        _ingest(SourceConfig(path), BINARY, FAIL, tmp_path)
    assert f"{path}, row 3" in str(e.value) and rule in str(e.value) and needle in str(e.value)


def test_ranking_row_without_query_id(tmp_path: Path) -> None:
    schema = DataSchema(task="ranking", numeric=("f0",), categorical=(), label="label", group="qid")
    path = _csv(tmp_path, "qid,f0,label\n1,0.5,2\n,0.1,1\n2,0.3,0\n")
    with pytest.raises(DataValidationError) as e:
        _ingest(SourceConfig(path), schema, FAIL, tmp_path)
    assert f"{path}, row 3" in str(e.value) and "column 'qid'" in str(e.value)


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "num_0,cat_0,label,row_id\n1,a,0,1\n")
    with pytest.raises(DataValidationError, match=r"d\.csv: missing column \['num_1'\]"):
        _ingest(SourceConfig(path), BINARY, FAIL, tmp_path)


def test_unexpected_column_when_strict(tmp_path: Path) -> None:
    path = _csv(
        tmp_path, "num_0,num_1,cat_0,label,row_id,extra\n1,2,a,0,1,x\n3,4,b,1,2,y\n5,6,a,0,3,z\n"
    )
    strict = DataSchema(**{**BINARY.__dict__, "unexpected_columns": "fail"})
    with pytest.raises(DataValidationError, match=r"unexpected column \['extra'\]"):
        _ingest(SourceConfig(path), strict, FAIL, tmp_path)
    assert _ingest(SourceConfig(path), BINARY, FAIL, tmp_path).rows_used == 3


def test_empty_input(tmp_path: Path) -> None:
    path = _csv(tmp_path, "num_0,num_1,cat_0,label,row_id\n")
    with pytest.raises(DataValidationError, match="no rows"):
        _ingest(SourceConfig(path), BINARY, FAIL, tmp_path)


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"broken\.parquet"):
        _ingest(SourceConfig(str(bad)), BINARY, FAIL, tmp_path)


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nowhere"):
        _ingest(SourceConfig(str(tmp_path / "nowhere" / "*.csv")), BINARY, FAIL, tmp_path)


def test_quarantine_keeps_every_row_accounted(tmp_path: Path) -> None:
    text = GOOD_CSV + "7,x,a,1,4\n8,9,b,,5\n9,9,c,3,6\n"
    res = _ingest(SourceConfig(_csv(tmp_path, text)), BINARY, QUARANTINE, tmp_path)
    assert (res.rows_read, res.rows_used, res.rows_quarantined) == (6, 3, 3)
    assert res.by_rule == {"wrong_type": 1, "null_label": 1, "label_out_of_range": 1}
    assert res.quarantine_path is not None
    q = pd.read_parquet(res.quarantine_path).sort_values("_source_row")
    assert q["_source_row"].tolist() == [5, 6, 7]
    assert q["_rule"].tolist() == ["wrong_type", "null_label", "label_out_of_range"]
    assert q["_reason"].str.contains("column").all()
    assert sorted(res.dataset.to_pandas()["row_id"].astype(int)) == [1, 2, 3]


def test_quarantining_everything_is_an_error(tmp_path: Path) -> None:
    path = _csv(tmp_path, "num_0,num_1,cat_0,label,row_id\n1,2,a,9,1\n")
    with pytest.raises(DataValidationError, match="every one of the 1 rows was quarantined"):
        _ingest(SourceConfig(path), BINARY, QUARANTINE, tmp_path)


def test_libsvm_with_query_file(tmp_path: Path) -> None:
    lines = ["2 0:1.5 3:0.2", "0 1:0.7", "1 0:0.1 2:2.0 # a comment", "4 3:1.0"]
    (tmp_path / "r.svm").write_text("\n".join(lines) + "\n")
    (tmp_path / "r.svm.query").write_text("3\n1\n")
    schema = DataSchema(
        task="ranking", numeric=("f0", "f1", "f2", "f3"), categorical=(), label="label", group="qid"
    )
    src = SourceConfig(str(tmp_path / "r.svm"), format="libsvm", read_options={"num_features": 4})
    df = _ingest(src, schema, FAIL, tmp_path).dataset.to_pandas().sort_values("_source_row")
    assert df["qid"].tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(df["f0"], [1.5, 0.0, 0.1, 0.0])
    assert df["label"].tolist() == [2, 0, 1, 4]


def test_sidecar_queries_of_different_files_stay_apart(tmp_path: Path) -> None:
    for name in ("a.svm", "b.svm"):
        (tmp_path / name).write_text("1 0:1.0\n0 0:2.0\n")
        (tmp_path / f"{name}.query").write_text("2\n")
    schema = DataSchema(task="ranking", numeric=("f0",), categorical=(), label="label", group="qid")
    src = SourceConfig(str(tmp_path), format="libsvm", read_options={"num_features": 1})
    df = _ingest(src, schema, FAIL, tmp_path).dataset.to_pandas()
    assert df.groupby("_source_file")["_group"].nunique().tolist() == [1, 1]
    assert df["_group"].nunique() == 2


def test_tsv_is_tab_separated_by_default(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD_CSV.replace(",", "\t"), name="d.tsv")
    opts = {"delimiter": None}
    assert _ingest(SourceConfig(path, read_options=opts), BINARY, FAIL, tmp_path).rows_used == 3


def test_carve_valid_out_of_the_train_source() -> None:
    """Explicit train and test sources without a valid one: valid is held out of train (whole
    queries, or rows stratified by label); test is taken whole; no row is lost."""
    import ray.data

    from components.splits import carve_plan
    from components.steps.prepare import carve_valid
    from components.validation import row_keys

    rng = np.random.default_rng(0)
    n = 2000
    train = pd.DataFrame(
        {
            "_row_key": row_keys(pd.Series(["t.parquet"] * n), pd.Series(np.arange(n))),
            "_group": np.repeat(np.arange(n // 5), 5),
            "label": (rng.random(n) < 0.2).astype(float),
        }
    )
    test = train.iloc[:300].assign(_group=lambda f: f["_group"] + 10_000)
    parts = {"train": ray.data.from_pandas(train), "test": ray.data.from_pandas(test)}

    by_query = carve_valid(parts, carve_plan("group", 0, 0.2), has_group=True, stratify=False)
    tr, va = by_query.train.to_pandas(), by_query.valid.to_pandas()
    assert by_query.rows == {"train": len(tr), "valid": len(va), "test": 300}
    assert len(tr) + len(va) == n and not set(tr["_group"]) & set(va["_group"])
    assert by_query.groups == {
        "train": tr["_group"].nunique(),
        "valid": va["_group"].nunique(),
        "test": 60,
    }
    assert 0.15 < va["_group"].nunique() / 400 < 0.25
    assert "_bucket" in by_query.test.columns()

    rows = carve_valid(parts, carve_plan("random", 0, 0.25), has_group=False, stratify=True)
    va = rows.valid.to_pandas()
    for cls in (0.0, 1.0):
        k = int((train["label"] == cls).sum())
        assert (va["label"] == cls).sum() == k - int(k * 0.75)  # exact per class
    assert rows.rows["train"] + rows.rows["valid"] == n

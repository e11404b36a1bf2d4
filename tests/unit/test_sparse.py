"""Sparse columns: Arrow list<struct<index, value>> <-> CSR, request forms, validation, and the
one CSR matrix XGBoost reads (dense columns with the sparse ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse

from components import sparse


def random_csr(rows: int, cols: int, density: float, seed: int) -> scipy.sparse.csr_matrix:
    m = scipy.sparse.random(rows, cols, density=density, format="csr", random_state=seed)
    return scipy.sparse.csr_matrix(m.astype(np.float32))


def test_csr_round_trip_through_arrow_pandas_and_slices() -> None:
    m = random_csr(50, 40, 0.1, seed=0)
    column = sparse.from_csr(m)
    assert column.type == sparse.SPARSE_TYPE and len(column) == 50
    back = sparse.to_csr(column, 40)
    assert (back != m).nnz == 0 and back.shape == (50, 40)
    # two chunks in a pandas Series (a Ray Data batch), then a row selection (a split)
    s = sparse.series(pa.chunked_array([column.slice(0, 20), column.slice(20)]))
    assert isinstance(s.dtype, pd.ArrowDtype)
    assert (sparse.to_csr(s, 40) != m).nnz == 0
    picked = s.iloc[[3, 30, 7]]
    expected = m[[3, 30, 7]]
    assert (sparse.to_csr(picked, 40) != expected).nnz == 0
    # Parquet-like types (int64 index, double value) are cast to the canonical type
    wide = column.cast(
        pa.list_(pa.struct([pa.field("index", pa.int64()), pa.field("value", pa.float64())]))
    )
    assert (sparse.to_csr(wide, 40) != m).nnz == 0


def test_null_rows_are_empty_and_explicit_zeros_are_kept() -> None:
    column = pa.array(
        [[{"index": 2, "value": 0.0}], None, [], [{"index": 0, "value": 1.5}]],
        sparse.SPARSE_TYPE,
    )
    indptr, indices, values = sparse.csr_arrays(column)
    assert indptr.tolist() == [0, 1, 1, 1, 2]
    assert indices.tolist() == [2, 0] and values.tolist() == [0.0, 1.5]
    m = sparse.to_csr(column, 3)
    assert m.nnz == 2  # the stored 0.0 is a present value (XGBoost: not missing)


def test_indices_at_or_above_dim_are_dropped() -> None:
    column = sparse.from_csr_arrays(
        np.array([0, 2, 3, 3, 5]), np.array([1, 9, 4, 0, 12]), np.arange(5.0)
    )
    m = sparse.to_csr(column, 5)
    assert m.shape == (4, 5)
    assert m.toarray().tolist() == [
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 2],
        [0, 0, 0, 0, 0],
        [3, 0, 0, 0, 0],
    ]
    assert m.indptr.tolist() == [0, 1, 2, 2, 3]  # row 0 kept index 1 (value 0.0)
    assert sparse.max_index(column) == 12


def test_request_forms() -> None:
    rows = [
        {"indices": [3, 1], "values": [0.5, 2.0]},
        {"indices": [4]},  # a bag of ids: every value 1
        None,
        [{"index": 0, "value": -1.0}],
    ]
    m = sparse.to_csr(np.array(rows, dtype=object), 5, "x")
    assert m.toarray().tolist() == [
        [0, 2.0, 0, 0.5, 0],
        [0, 0, 0, 0, 1.0],
        [0, 0, 0, 0, 0],
        [-1.0, 0, 0, 0, 0],
    ]
    with pytest.raises(ValueError, match=r"x: row 0 has 2 indices but 1 values"):
        sparse.to_arrow([{"indices": [1, 2], "values": [1.0]}], "x")
    with pytest.raises(ValueError, match=r"x: sparse indices must be in 0\.\.2147483646"):
        sparse.to_arrow([{"indices": [-1]}], "x")
    with pytest.raises(ValueError, match=r"x: row 1: a sparse value is"):
        sparse.to_arrow([None, "3:1"], "x")
    with pytest.raises(ValueError, match=r"x: sparse indices must be integers"):
        sparse.to_arrow([{"indices": ["a"]}], "x")
    with pytest.raises(ValueError, match=r"x: a sparse column is list<struct<index, value>>"):
        sparse.to_arrow(pa.array([[1, 2]]), "x")


def test_model_matrix_puts_dense_columns_first_and_drops_nan() -> None:
    dense = np.array([[1.0, np.nan], [np.nan, 3.0], [0.0, 2.0]], dtype=np.float32)
    frame = {"x": sparse.from_csr_arrays(np.array([0, 1, 1, 3]), np.array([2, 0, 1]), [5, 6, 7])}
    m = sparse.model_matrix(dense, frame, [sparse.SparseParams("x", 3)])
    assert m.shape == (3, 5) and m.dtype == np.float32
    full = np.full((3, 5), np.nan, dtype=np.float32)
    coo = m.tocoo()
    full[coo.row, coo.col] = coo.data
    np.testing.assert_array_equal(
        full,
        [[1, np.nan, np.nan, np.nan, 5], [np.nan, 3, np.nan, np.nan, np.nan], [0, 2, 6, 7, np.nan]],
    )
    assert sparse.SparseParams("x", 3).feature_names() == ["x:0", "x:1", "x:2"]


def test_bad_rows_name_the_column_and_index() -> None:
    column = pa.array(
        [
            [{"index": 1, "value": 1.0}],
            [{"index": -3, "value": 1.0}],
            [{"index": 7, "value": 1.0}],
            [{"index": 2, "value": float("inf")}],
            [{"index": 4, "value": 1.0}, {"index": 0, "value": 1.0}, {"index": 4, "value": 2.0}],
        ],
        sparse.SPARSE_TYPE,
    )
    mask, reasons = sparse.bad_rows(column, "x", dim=5)
    assert mask.tolist() == [False, True, True, True, True]
    assert reasons == [
        "column 'x': index -3 is below 0",
        "column 'x': index 7 is at or above features.sparse dim 5",
        "column 'x': index 2 holds inf, not a finite number",
        "column 'x': index 4 is given more than once",
    ]
    mask, reasons = sparse.bad_rows(column, "x", dim=None)
    assert mask.tolist() == [False, True, False, True, True] and len(reasons) == 3


# --- XGBoost on the CSR path -------------------------------------------------------------------


def _sparse_frame(rows: int, seed: int) -> tuple[pd.DataFrame, scipy.sparse.csr_matrix]:
    """age (some missing), country (some missing) and a sparse ``ids`` column of dim 12 whose
    index 3 carries the signal; plus the sparse part as CSR."""
    rng = np.random.default_rng(seed)
    m = random_csr(rows, 12, 0.25, seed)
    age = rng.uniform(10, 70, rows)
    age[::13] = np.nan
    country = rng.choice(np.array(["us", "ca", "de", None], dtype=object), rows)
    hit = m[:, 3].toarray().ravel() > 0
    label = ((hit * 2 + (country == "us") - np.nan_to_num(age, nan=40) / 40) > 0.5).astype(int)
    frame = pd.DataFrame({"age": age, "country": country, "label": label})
    frame["ids"] = sparse.series(sparse.from_csr(m))
    return frame, m


def test_xgboost_on_csr_predicts_as_on_the_equivalent_dense_matrix(tmp_path: Path) -> None:
    import xgboost

    from components import model_bundle, xgboost_model
    from components.features import CategoricalConfig, FeatureConfig, fit_transform, partial_stats
    from components.predictor import Predictor
    from components.validation import DataSchema

    frame, m = _sparse_frame(400, seed=3)
    config = FeatureConfig(
        numeric=("age",),
        categorical=(CategoricalConfig("country"),),
        sparse=(sparse.SparseConfig("ids"),),
    )
    halves = [frame.iloc[:150], frame.iloc[150:]]  # two batches' statistics, merged
    transform = fit_transform([partial_stats(h, config) for h in halves], config)
    assert transform.sparse == (sparse.SparseParams("ids", 12),)
    assert transform.input_columns == ["age", "country", "ids"]
    assert transform.feature_names[:3] == ["age", "country", "ids:0"]
    assert len(transform.feature_names) == len(transform.feature_types) == 14
    params = xgboost_model.build_params("binary", {"max_depth": 3}, "auc", None, False, 1)

    dtrain = xgboost_model.dmatrix(frame, transform, "binary", "label")
    assert (dtrain.num_row(), dtrain.num_col()) == (400, 14)
    booster = xgboost_model.train(params, dtrain, None, 15, None)

    # the same rows as one dense matrix: age imputed, country codes (missing -> NaN), and the
    # sparse part with NaN where an entry is absent (XGBoost's sparse semantics)
    dense = np.full((400, 14), np.nan, dtype=np.float32)
    dense[:, :2] = xgboost_model.mark_missing_categories(transform.transform(frame), transform)
    coo = m.tocoo()
    dense[coo.row, 2 + coo.col] = coo.data
    reference = xgboost.train(
        params,
        xgboost.DMatrix(
            dense,
            label=frame["label"].to_numpy(),
            feature_names=transform.feature_names,
            feature_types=transform.feature_types,
            enable_categorical=True,
            missing=np.nan,
        ),
        num_boost_round=15,
        evals=[],
    )
    got = xgboost_model.predict(booster, transform.transform(frame), transform, frame)
    want = reference.inplace_predict(dense, missing=np.nan)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert 0.2 < got.mean() < 0.8 and np.corrcoef(got, frame["label"])[0, 1] > 0.5

    # a bundle trained on sparse input predicts on sparse input (frames and request rows)
    schema = DataSchema(
        task="binary", numeric=("age",), categorical=("country",), sparse={"ids": None}
    )
    path = tmp_path / "bundle"
    model_bundle.write_model_bundle(
        path,
        model_bundle.BundleContents(
            kind="xgboost",
            name="xgb",
            task="binary",
            label="label",
            transform=transform,
            schema=schema,
            model=xgboost_model.to_bytes(booster),
            params={},
        ),
    )
    predictor = Predictor.load(path)
    assert predictor.transform == transform and predictor.schema.sparse == {"ids": None}
    np.testing.assert_allclose(predictor.predict(frame), got, rtol=0, atol=1e-7)
    rows = {  # what serving builds from two request rows
        "age": np.array([30.0, np.nan]),
        "country": np.array(["us", None], dtype=object),
        "ids": np.array([{"indices": [3], "values": [0.7]}, None], dtype=object),
    }
    expected = np.full((2, 14), np.nan, dtype=np.float32)
    expected[:, :2] = xgboost_model.mark_missing_categories(transform.transform(rows), transform)
    expected[0, 2 + 3] = 0.7
    np.testing.assert_allclose(
        predictor.predict(rows), reference.inplace_predict(expected, missing=np.nan), atol=1e-7
    )
    assert len(predictor.predict(frame.iloc[:0])) == 0
    with pytest.raises(ValueError, match=r"missing feature column\(s\) \['ids'\]"):
        predictor.predict(frame.drop(columns=["ids"]))


def test_ingest_validates_a_sparse_column_and_marks_bad_rows(tmp_path: Path) -> None:
    from components.steps.ingest import load_one
    from components.validation import DataSchema, DataValidationError, coerce_frame

    path = tmp_path / "r.svm"
    path.write_text("1 0:1 5:2\n0 2:inf\n1 9:1\n0\n")
    schema = DataSchema(task="binary", numeric=(), categorical=(), sparse={"x": 8})
    task = {"path": str(path), "format": "libsvm", "index": 0}
    out = load_one(task, schema, {"sparse": "x"})
    assert out["_ok"].tolist() == [True, False, False, True]
    assert out["_reason"].tolist()[1:3] == [
        "column 'x': index 2 holds inf, not a finite number",
        "column 'x': index 9 is at or above features.sparse dim 8",
    ]
    assert out["_rule"].tolist()[1] == "wrong_type"
    assert isinstance(out["x"].dtype, pd.ArrowDtype) and out["x"].dtype.pyarrow_dtype == (
        sparse.SPARSE_TYPE
    )
    # the frame travels into Arrow (a Ray Data block) and back without losing the entries
    table = pa.Table.from_pandas(out)
    assert table.schema.field("x").type == sparse.SPARSE_TYPE
    assert sparse.to_csr(table.column("x"), 8).toarray()[0].tolist() == [1, 0, 0, 0, 0, 2, 0, 0]
    frame = pd.DataFrame({"label": [1, 0], "x": [1.0, 2.0]})
    with pytest.raises(DataValidationError, match=r"f\.csv: column 'x' is not a sparse column"):
        coerce_frame(frame, schema, source="f.csv")


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_sparse_column_stored_in_parquet_or_jsonl_is_read_as_it_is(
    tmp_path: Path, fmt: str
) -> None:
    """pandas holds such a column read without Arrow types as arrays of {index, value} dicts."""
    from components.steps.ingest import load_one
    from components.validation import DataSchema

    column = sparse.from_csr_arrays(np.array([0, 2, 2, 3]), np.array([3, 7, 5]), [1.0, 0.5, 2.0])
    table = pa.table({"x": column, "label": [0, 1, 0]})
    path = tmp_path / f"s.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        path.write_text(table.to_pandas().to_json(orient="records", lines=True))
    schema = DataSchema(task="binary", numeric=(), categorical=(), sparse={"x": 8})
    out = load_one({"path": str(path), "format": fmt, "index": 0}, schema, {})
    assert out["_ok"].tolist() == [True, True, True]
    indptr, indices, values = sparse.csr_arrays(out["x"])
    assert indptr.tolist() == [0, 2, 2, 3] and indices.tolist() == [3, 7, 5]
    assert values.tolist() == [1.0, 0.5, 2.0]


def test_predict_request_with_a_sparse_feature(tmp_path: Path) -> None:
    from components import model_bundle, xgboost_model
    from components.features import FeatureConfig, fit_transform, partial_stats
    from components.predictor import Predictor
    from components.validation import DataSchema
    from serve.schemas import PredictRequest
    from serve.scoring import Limits, ModelScorer, RequestError

    frame, _ = _sparse_frame(300, seed=4)
    config = FeatureConfig(numeric=("age",), categorical=(), sparse=(sparse.SparseConfig("ids"),))
    transform = fit_transform([partial_stats(frame, config)], config)
    params = xgboost_model.build_params("binary", {"max_depth": 3}, "auc", None, False, 1)
    dtrain = xgboost_model.dmatrix(frame, transform, "binary", "label")
    booster = xgboost_model.train(params, dtrain, None, 10, None)
    path = tmp_path / "b"
    model_bundle.write_model_bundle(
        path,
        model_bundle.BundleContents(
            kind="xgboost",
            name="xgb",
            task="binary",
            label="label",
            transform=transform,
            schema=DataSchema(
                task="binary", numeric=("age",), categorical=(), sparse={"ids": None}
            ),
            model=xgboost_model.to_bytes(booster),
            params={},
        ),
    )
    scorer = ModelScorer(Predictor.load(path), "m", 1, Limits())
    body = PredictRequest.model_validate_json(
        '{"rows": [{"age": 40, "ids": {"indices": [3, 7], "values": [0.9, 0.1]}},'
        ' {"age": null, "ids": {"indices": [3]}}, {"age": 20, "ids": null}]}'
    )
    columns = scorer.frame(body.rows, "rows", 10)
    got = scorer.predictor.predict(columns)
    same = pd.DataFrame({"age": [40.0, np.nan, 20.0]})
    same["ids"] = sparse.series(sparse.from_csr_arrays([0, 2, 3, 3], [3, 7, 3], [0.9, 0.1, 1.0]))
    np.testing.assert_allclose(got, scorer.predictor.predict(same), atol=1e-7)
    assert [f.type for f in scorer.info().features] == ["numeric", "sparse"]

    with pytest.raises(RequestError) as e:
        scorer.frame(
            PredictRequest.model_validate({"rows": [{"age": 1, "ids": 3}]}).rows, "rows", 10
        )
    assert e.value.status == 422
    assert e.value.detail[0]["loc"] == ["body", "rows", 0, "ids"]
    assert e.value.detail[0]["msg"].startswith("feature 'ids' is sparse: give {\"indices\"")
    with pytest.raises(RequestError) as e:
        scorer.frame(
            PredictRequest.model_validate({"rows": [{"age": {"indices": [1]}, "ids": None}]}).rows,
            "rows",
            10,
        )
    assert e.value.detail[0]["loc"] == ["body", "rows", 0, "age"]
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="2 indices but 1 values"):
        PredictRequest.model_validate({"rows": [{"ids": {"indices": [1, 2], "values": [1.0]}}]})
    with pytest.raises(ValidationError):
        PredictRequest.model_validate({"rows": [{"ids": {"indices": [-1]}}]})


def test_spec_sparse_fields() -> None:
    from pipelines import translate
    from pipelines.spec import SpecError, spec_from_dict

    doc = {
        "name": "sparse",
        "task": "binary",
        "data": {
            "source": {"uri": "d.ffm", "format": "libfm", "libsvm": {"sparse": "ids"}},
        },
        "features": {"sparse": ["ids"]},
        "models": [{"name": "gbdt"}],
    }
    spec = spec_from_dict(doc)
    assert [f.name for f in spec.features.sparse_features()] == ["ids"]
    assert translate.data_schema(spec).sparse == {"ids": None}
    assert translate.data_schema(spec).required_columns() == ["ids", "label"]
    assert translate.feature_config(spec).sparse == (sparse.SparseConfig("ids"),)
    src = spec.data.source
    assert src is not None and translate.source_config(src).read_options["sparse"] == "ids"
    torch = {**doc, "models": [{"name": "mlp", "kind": "torch.mlp"}]}
    assert spec_from_dict(torch).models[0].kind == "torch.mlp"  # torch takes them too
    twice = {**doc, "features": {"numeric": ["ids"], "sparse": [{"name": "ids", "dim": 9}]}}
    with pytest.raises(SpecError, match=r"features listed more than once: \['ids'\]"):
        spec_from_dict(twice)
    with pytest.raises(SpecError, match=r"features\.sparse\.0\.SparseFeature\.dim|dim"):
        spec_from_dict({**doc, "features": {"sparse": [{"name": "ids", "dim": 0}]}})


def test_a_repeated_index_is_refused_in_requests_as_at_ingest() -> None:
    from pydantic import ValidationError

    from serve.schemas import SparseValue

    with pytest.raises(ValidationError, match="index 4 is given more than once"):
        SparseValue(indices=[1, 4, 4])
    with pytest.raises(ValueError, match="x: row 1 gives index 3 more than once"):
        sparse.to_arrow([{"indices": [1, 2]}, {"indices": [3, 3], "values": [1, 2]}], "x")

"""The compact encoded form: per-value categorical codes equal the row-by-row transform."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from components.encoded import encode_table, encoded_matrix
from components.features import (
    CategoricalConfig,
    FeatureConfig,
    FeatureTransform,
    fit_transform,
    partial_stats,
)

CONFIG = FeatureConfig(
    numeric=("a", "b"),
    categorical=(
        CategoricalConfig("s", min_frequency=2),  # strings with nulls, vocabulary
        CategoricalConfig("h", encoding="hash", hash_buckets=64),  # strings, hashed
        CategoricalConfig("i"),  # integers with nulls (a float64 column in pandas)
        CategoricalConfig("f", encoding="hash", hash_buckets=16),  # floats, NaN and integral
        CategoricalConfig("t"),  # booleans
        CategoricalConfig("z"),  # no value at all
    ),
    impute="median",
    standardize=True,
    log1p=("b",),
)


def table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    a = rng.normal(5, 2, n)
    a[::7] = np.nan
    s = rng.choice(["x", "y", "z", "rare", None], n, p=[0.4, 0.3, 0.2, 0.001, 0.099])
    ints = rng.integers(0, 50, n)
    floats = rng.choice([1.0, 2.5, 3.0, np.nan], n)
    return pa.table(
        {
            "a": a,
            "b": rng.exponential(3, n),
            "s": pa.array(list(s), pa.large_string()),
            "h": pa.array([f"id{v}" for v in rng.integers(0, 500, n)], pa.string()),
            "i": pa.array([None if v % 9 == 0 else int(v) for v in ints], pa.int64()),
            "f": pa.array(floats, pa.float64()),
            "t": pa.array(rng.integers(0, 2, n).astype(bool)),
            "z": pa.nulls(n),
            "label": rng.integers(0, 2, n).astype(np.float64),
            "_bucket": np.arange(n, dtype=np.int64),
            "path": pa.array(["/data/part-0.parquet"] * n),
        }
    )


@pytest.fixture(scope="module")
def transform() -> FeatureTransform:
    frame = table(4000, 0).to_pandas()
    return fit_transform([partial_stats(frame, CONFIG)], CONFIG)


def test_encoded_columns_give_exactly_the_transform_matrix(transform: FeatureTransform) -> None:
    raw = table(3000, 1)
    # several chunks, as a Ray Data block may hold: the codes must not depend on the cut
    chunked = pa.concat_tables([raw.slice(0, 1000), raw.slice(1000, 1500), raw.slice(2500)])
    out = encode_table(chunked, transform, keep=["label", "_bucket", "_group"])
    assert out.column_names == ["a", "b", "s", "h", "i", "f", "t", "z", "label", "_bucket"]
    assert out.schema.field("a").type == pa.float32()
    assert all(out.schema.field(c).type == pa.int32() for c in "shiftz")
    expected = transform.transform(raw.to_pandas())
    np.testing.assert_array_equal(encoded_matrix(out.to_pandas(), transform), expected)
    np.testing.assert_array_equal(out.column("label").to_numpy(), raw.column("label").to_numpy())
    # every kind of value reached a code, and missing ones code 0
    codes = out.to_pandas()
    assert (codes["z"] == 0).all()
    assert (codes["s"][raw.column("s").is_null().to_numpy()] == 0).all()
    assert (codes["i"][raw.column("i").is_null().to_numpy()] == 0).all()
    assert codes["i"].nunique() > 40 and codes["t"].nunique() == 2


def test_unseen_values_code_as_the_transform_does(transform: FeatureTransform) -> None:
    raw = pa.table(
        {
            "a": [1.0, None],
            "b": [0.0, 2.0],
            "s": ["never-seen", "x"],
            "h": ["new-id", "id3"],
            "i": pa.array([10_000, 3], pa.int64()),
            "f": [7.0, None],
            "t": [True, None],
            "z": pa.nulls(2),
        }
    )
    out = encode_table(raw, transform, keep=[])
    np.testing.assert_array_equal(
        encoded_matrix(out.to_pandas(), transform), transform.transform(raw.to_pandas())
    )
    assert out.column("s").to_pylist()[0] == 0  # out of vocabulary


def test_raw_columns_are_dropped_and_empty_batches_keep_the_schema(
    transform: FeatureTransform,
) -> None:
    raw = table(100, 2)
    out = encode_table(raw, transform, keep=["label"])
    assert "path" not in out.column_names and "_bucket" not in out.column_names
    assert out.nbytes < raw.nbytes / 2
    empty = encode_table(raw.slice(0, 0), transform, keep=["label"])
    assert empty.num_rows == 0 and empty.schema == out.schema


def test_large_integer_ids_with_nulls_code_as_the_transform_reads_them() -> None:
    """pandas reads an int64 column with nulls as float64: the encoded path must agree with
    the transform fitted and applied on that reading, also beyond 2**53."""
    config = FeatureConfig(
        numeric=(),
        categorical=(CategoricalConfig("uid"), CategoricalConfig("hid", "hash", hash_buckets=97)),
    )
    ids = [2**60 + 1, None, 2**60 + 1, 7, 2**53 + 1]
    raw = pa.table({"uid": pa.array(ids, pa.int64()), "hid": pa.array(ids, pa.int64())})
    t = fit_transform([partial_stats(raw.to_pandas(), config)], config)
    out = encode_table(raw, t, keep=[]).to_pandas()
    np.testing.assert_array_equal(encoded_matrix(out, t), t.transform(raw.to_pandas()))
    assert out["uid"].tolist()[0] > 0  # in the vocabulary, as fitted


def test_a_missing_feature_column_is_named(transform: FeatureTransform) -> None:
    with pytest.raises(KeyError, match=r"\['h'\]"):
        encode_table(table(10, 3).drop_columns(["h"]), transform, keep=[])


def test_encoded_matrix_reads_a_mapping_of_arrays(transform: FeatureTransform) -> None:
    out = encode_table(table(50, 4), transform, keep=[]).to_pandas()
    as_dict = {c: out[c].to_numpy() for c in out.columns}
    np.testing.assert_array_equal(
        encoded_matrix(as_dict, transform), encoded_matrix(out, transform)
    )
    assert encoded_matrix(pd.DataFrame(as_dict), transform).dtype == np.float32

"""The compact form training reads: every feature encoded once, one narrow column each.

``encode_table`` maps a batch of raw rows (an Arrow table) to the transform's features as
columns named after them: float32 for a numeric feature (already logged, imputed,
standardised), int32 for a categorical code (0 = missing or out of vocabulary). The columns a
trainer needs besides the features (label, weight, query, bucket, sparse columns) pass through;
everything else (keys, raw strings, the source file path) is dropped. A CTR row of 13 numeric and
26 string categoricals shrinks from ~630 bytes to ~170.

Categorical values are encoded per distinct value: each column is dictionary-encoded in Arrow and
only its dictionary goes through ``FeatureTransform.codes``, the same function serving uses, so a
code is exactly what ``FeatureTransform.transform`` gives that value (tests compare the two).
``encoded_matrix`` turns the encoded columns back into ``transform``'s float32 matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.features import CategoricalParams, FeatureTransform


def encode_table(table: pa.Table, transform: FeatureTransform, keep: Sequence[str]) -> pa.Table:
    """``table``'s rows encoded (see the module doc), then the ``keep`` columns it holds, as
    they are. A KeyError names a feature column the table lacks."""
    missing = [c for c in transform.input_columns if c not in table.column_names]
    if missing:
        raise KeyError(f"missing feature column(s) {missing}")
    columns: dict[str, pa.Array] = {}
    if transform.numeric:
        names = [p.name for p in transform.numeric]
        # without the schema's pandas metadata, which may describe columns not selected
        numeric = table.select(names).replace_schema_metadata()
        values = transform.numeric_matrix(numeric.to_pandas())
        for j, name in enumerate(names):
            columns[name] = pa.array(values[:, j].astype(np.float32))
    for p in transform.categorical:
        columns[p.name] = pa.array(column_codes(transform, p, table.column(p.name)))
    dense = set(columns)
    for name in keep:
        if name in table.column_names and name not in dense:
            columns[name] = table.column(name)
    return pa.table(columns)


def column_codes(
    transform: FeatureTransform, p: CategoricalParams, column: pa.ChunkedArray | pa.Array
) -> np.ndarray:
    """int32 codes of one categorical column: each distinct value encoded once."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_null(array.type):
        return np.zeros(len(array), np.int32)
    try:
        encoded = pc.dictionary_encode(array)
    except pa.ArrowNotImplementedError:  # a type Arrow cannot hash: value by value
        return transform.codes(p, as_pandas(array)).astype(np.int32)
    values = encoded.dictionary
    if pa.types.is_integer(values.type) and array.null_count:
        # pandas reads an integer column with nulls as float64 (beyond 2**53 rounded); the
        # transform was fitted, and rows are transformed, on what pandas reads
        values = values.cast(pa.float64(), safe=False)
    # otherwise the dictionary keeps the column's type, so its values read as the column's do
    per_value = transform.codes(p, as_pandas(values)).astype(np.int32)
    index = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.zeros(len(array), np.int32)
    present = index >= 0
    out[present] = per_value[index[present]]
    return out


def as_pandas(array: pa.Array) -> pd.Series:
    """An Arrow array as pandas reads the same column of a batch (``Table.to_pandas``)."""
    return pa.table({"v": array}).to_pandas()["v"]


def encoded_matrix(frame: pd.DataFrame | dict[str, Any], transform: FeatureTransform) -> np.ndarray:
    """The float32 matrix ``transform.transform`` gives the raw rows, from their encoded columns
    (numeric features, then categorical codes)."""
    names = [p.name for p in transform.numeric] + [p.name for p in transform.categorical]
    n = len(frame) if isinstance(frame, pd.DataFrame) else len(next(iter(frame.values())))
    out = np.empty((n, len(names)), np.float32)
    for j, name in enumerate(names):
        out[:, j] = np.asarray(frame[name])
    return out

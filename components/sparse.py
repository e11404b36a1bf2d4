"""Sparse feature columns and the CSR matrices built from them (pure: numpy, pyarrow, scipy).

A sparse feature (LibSVM/libFM features, one-hot fields, bags of ids) is ONE column whose rows
are lists of ``{index, value}`` entries: the Arrow type ``list<struct<index: int32, value:
float32>>`` (``SPARSE_TYPE``). One column rather than two aligned ``<name>.indices`` /
``<name>.values`` list columns: the entries of a row cannot come apart (one offsets buffer, no
second column to keep in step through filters, splits and shards), the feature keeps one name
in the schema and the spec, and the struct's two children are already the ``indices`` and
``data`` arrays of a CSR matrix, so turning a block into CSR copies nothing but the offsets.
In pandas the column is a ``pd.ArrowDtype`` Series (Ray Data's batches keep the Arrow data).

Absent entries are missing values (XGBoost's own sparse semantics), not zeros; an entry whose
value is 0 is a present zero. A null row is a row without entries. Indices at or above a
feature's ``dim`` (the training split's largest index + 1, or the spec's ``dim``) are dropped
when a matrix is built: no tree can split on a column training never saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse

INDEX = "index"
VALUE = "value"
ENTRY_TYPE = pa.struct([pa.field(INDEX, pa.int32()), pa.field(VALUE, pa.float32())])
SPARSE_TYPE = pa.list_(ENTRY_TYPE)
MAX_INDEX = 2**31 - 2  # int32 indices; dim = MAX_INDEX + 1 still fits an int32


@dataclass(frozen=True)
class SparseConfig:
    """How to fit one sparse feature: ``dim`` fixed, or None to take the training split's
    largest index + 1."""

    name: str
    dim: int | None = None


@dataclass(frozen=True)
class SparseParams:
    """A fitted sparse feature: its column and its width (model columns ``name:0 .. name:dim-1``)."""

    name: str
    dim: int

    def feature_names(self) -> list[str]:
        """XGBoost's names for this feature's columns (``[``, ``]`` and ``<`` are not allowed)."""
        return [f"{self.name}:{j}" for j in range(self.dim)]


def is_sparse_type(typ: pa.DataType) -> bool:
    """Whether ``typ`` is a list of ``{index, value}`` structs (of any integer/float types)."""
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
        return False
    item = typ.value_type
    if not pa.types.is_struct(item) or item.num_fields != 2:
        return False
    names = {item.field(i).name for i in range(2)}
    if names != {INDEX, VALUE}:
        return False
    return pa.types.is_integer(item.field(INDEX).type) and (
        pa.types.is_floating(item.field(VALUE).type) or pa.types.is_integer(item.field(VALUE).type)
    )


def from_csr_arrays(
    indptr: npt.ArrayLike, indices: npt.ArrayLike, values: npt.ArrayLike
) -> pa.ListArray:
    """A sparse column from CSR arrays (row ``i`` holds entries ``indptr[i]:indptr[i+1]``)."""
    entries = pa.StructArray.from_arrays(
        [
            pa.array(np.asarray(indices, dtype=np.int32)),
            pa.array(np.asarray(values, dtype=np.float32)),
        ],
        fields=list(ENTRY_TYPE),
    )
    return pa.ListArray.from_arrays(pa.array(np.asarray(indptr, dtype=np.int32)), entries)


def from_csr(matrix: scipy.sparse.csr_matrix | scipy.sparse.csr_array) -> pa.ListArray:
    """A sparse column holding the stored entries of a CSR matrix, row by row."""
    m = scipy.sparse.csr_matrix(matrix)
    return from_csr_arrays(m.indptr, m.indices, m.data)


def series(column: pa.Array | pa.ChunkedArray) -> pd.Series:
    """The column as a pandas Series that keeps the Arrow data (``pd.ArrowDtype``)."""
    return pd.Series(pd.arrays.ArrowExtensionArray(column))


def _request_column(values: Sequence[Any], name: str) -> pa.Array:
    """Python values (serving requests, tests) -> a sparse column.

    Each row is None (no entries), ``{"indices": [...], "values": [...]}`` (``values`` may be
    left out: every value 1, a bag of ids) or a list of ``{"index": i, "value": v}``."""
    indptr = np.zeros(len(values) + 1, dtype=np.int64)
    idx: list[Any] = []
    val: list[Any] = []
    for i, row in enumerate(values):
        if row is None:
            pass
        elif isinstance(row, Mapping) and "indices" in row:
            ids = list(row["indices"])
            vs = list(row["values"]) if row.get("values") is not None else [1.0] * len(ids)
            if len(vs) != len(ids):
                raise ValueError(f"{name}: row {i} has {len(ids)} indices but {len(vs)} values")
            idx += ids
            val += vs
        elif isinstance(row, float) and row != row:  # NaN: pandas' missing value
            pass
        elif isinstance(row, (Sequence, np.ndarray)) and not isinstance(row, (str, bytes)):
            # a list of entries; an ndarray of them is how pandas holds a list<struct> column
            # read without Arrow types (Parquet, JSON lines)
            for entry in row:
                if not isinstance(entry, Mapping) or INDEX not in entry:
                    raise ValueError(f"{name}: row {i}: expected {{index, value}} entries")
                idx.append(entry[INDEX])
                val.append(entry.get(VALUE, 1.0))
        else:
            raise ValueError(
                f"{name}: row {i}: a sparse value is {{'indices': [...], 'values': [...]}}, "
                f"got {type(row).__name__}"
            )
        indptr[i + 1] = len(idx)
    try:
        ind = np.asarray(idx, dtype=np.int64)
        vals = np.asarray(val, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: sparse indices must be integers and values numbers") from None
    if len(ind) and (ind.min() < 0 or ind.max() > MAX_INDEX):
        raise ValueError(f"{name}: sparse indices must be in 0..{MAX_INDEX}")
    rows = np.repeat(np.arange(len(values)), np.diff(indptr))
    order = np.lexsort((ind, rows))
    repeated = (np.diff(rows[order]) == 0) & (np.diff(ind[order]) == 0)
    if repeated.any():  # as at ingest: XGBoost would keep one value, an EmbeddingBag sum both
        at = order[int(np.argmax(repeated))]
        raise ValueError(f"{name}: row {int(rows[at])} gives index {int(ind[at])} more than once")
    return from_csr_arrays(indptr, ind, vals)


def to_arrow(column: Any, name: str = "sparse") -> pa.Array:
    """Any form of a sparse column as one Arrow array of ``SPARSE_TYPE``: a pandas Series
    (Arrow-backed or of Python values), an Arrow (chunked) array, or a sequence of Python rows
    (see ``_request_column``)."""
    arr: Any = column
    if isinstance(arr, pd.Series):
        # an Arrow-backed Series gives its own Arrow data (a ChunkedArray), not a copy
        arrow = isinstance(arr.dtype, pd.ArrowDtype)
        arr = pa.array(arr) if arrow else arr.to_numpy(dtype=object)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if isinstance(arr, pa.Array):
        if not is_sparse_type(arr.type):
            raise ValueError(
                f"{name}: a sparse column is list<struct<index, value>>, got {arr.type}"
            )
        return arr if arr.type == SPARSE_TYPE else arr.cast(SPARSE_TYPE)
    return _request_column(list(arr), name)


def csr_arrays(column: Any, name: str = "sparse") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr int64, indices int32, values float32)`` of a sparse column: the struct's
    children, without copies where the column is one plain chunk; null rows are empty."""
    arr = to_arrow(column, name)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    indptr = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    entries = pc.list_flatten(arr)  # the entries of the valid rows, in order
    indices = entries.field(INDEX).to_numpy(zero_copy_only=False)
    values = entries.field(VALUE).to_numpy(zero_copy_only=False)
    if entries.null_count:  # a null entry holds nothing
        raise ValueError(f"{name}: a sparse row holds a null entry")
    return indptr, indices.astype(np.int32, copy=False), values.astype(np.float32, copy=False)


def to_csr(column: Any, dim: int, name: str = "sparse") -> scipy.sparse.csr_matrix:
    """The column as an ``n x dim`` CSR matrix; entries with an index >= ``dim`` are dropped."""
    indptr, indices, values = csr_arrays(column, name)
    if len(indices) and int(indices.min()) < 0:
        raise ValueError(f"{name}: sparse index {int(indices.min())} is below 0")
    if len(indices) and int(indices.max()) >= dim:
        keep = indices < dim
        n = len(indptr) - 1
        row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        kept = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(row_of[keep], minlength=n), out=kept[1:])
        indptr, indices, values = kept, indices[keep], values[keep]
    return scipy.sparse.csr_matrix((values, indices, indptr), shape=(len(indptr) - 1, dim))


def dense_to_csr(x: np.ndarray) -> scipy.sparse.csr_matrix:
    """A dense matrix's present values (NaN = missing, not stored) as CSR."""
    present = ~np.isnan(x)
    indptr = np.zeros(x.shape[0] + 1, dtype=np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    indices = np.nonzero(present)[1].astype(np.int32)
    return scipy.sparse.csr_matrix((x[present], indices, indptr), shape=x.shape)


def model_matrix(
    dense: np.ndarray, frame: Any, params: Sequence[SparseParams]
) -> scipy.sparse.csr_matrix:
    """One CSR matrix per batch: the dense columns (numeric, categorical codes; NaN = missing),
    then each sparse feature's ``dim`` columns, in ``params`` order."""
    parts = [dense_to_csr(np.asarray(dense, dtype=np.float32))]
    parts += [to_csr(frame[p.name], p.dim, p.name) for p in params]
    out = scipy.sparse.hstack(parts, format="csr", dtype=np.float32)
    return scipy.sparse.csr_matrix(out)


def max_index(column: Any, name: str = "sparse") -> int:
    """The largest index in the column, -1 without entries (a feature's ``dim`` is this + 1)."""
    _, indices, _ = csr_arrays(column, name)
    return int(indices.max()) if len(indices) else -1


def bad_rows(column: Any, name: str, dim: int | None) -> tuple[np.ndarray, list[str]]:
    """Rows breaking the column's rules and why (for validation): a negative index, one at or
    above ``dim`` (when the spec fixes it), an infinite value, an index given twice in a row.

    Returns a boolean mask over the rows and one reason per marked row, in row order."""
    indptr, indices, values = csr_arrays(column, name)
    n = len(indptr) - 1
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    problem = (indices < 0) | np.isinf(values)
    if dim is not None:
        problem |= indices >= dim
    # repeats: entries are not necessarily sorted within a row
    key = row_of * (int(indices.max(initial=0)) + 2) + indices.astype(np.int64)
    order = np.argsort(key, kind="stable")
    twice = np.zeros(len(key), dtype=bool)
    twice[order[1:][key[order][1:] == key[order][:-1]]] = True
    problem |= twice
    mask = np.zeros(n, dtype=bool)
    if not problem.any():
        return mask, []
    reasons: dict[int, str] = {}
    for k in np.flatnonzero(problem):  # only the bad entries: a handful in real data
        r = int(row_of[k])
        if r in reasons:
            continue
        i, v = int(indices[k]), float(values[k])
        if i < 0:
            why = f"index {i} is below 0"
        elif dim is not None and i >= dim:
            why = f"index {i} is at or above features.sparse dim {dim}"
        elif np.isinf(v):
            why = f"index {i} holds {v}, not a finite number"
        else:
            why = f"index {i} is given more than once"
        reasons[r] = f"column {name!r}: {why}"
    mask[list(reasons)] = True
    return mask, [reasons[r] for r in sorted(reasons)]

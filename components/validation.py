"""Schema checks and type coercion for raw rows, one frame (one file or block) at a time.

``coerce_frame`` turns whatever a reader produced into the typed frame the pipeline uses and
marks each bad row with the rule it broke and a reason that names the column and the value.
Nothing is dropped here: the caller decides per rule whether a bad row fails the run or is
quarantined, so rows in = rows used + rows quarantined always holds.

Columns added: ``_group`` (int64 key of the query id), ``_row_key`` (int64, stable per
file+row), ``_ts`` (float64 epoch seconds, when a timestamp column is declared), ``_rule``
and ``_reason`` (null for good rows).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from components import sparse
from components.features import categorical_strings
from components.hashing import hash_strings, mix64, to_int63
from components.tasks import task_info

ROW_RULES = (
    "wrong_type",
    "null_label",
    "label_out_of_range",
    "missing_group",
    "missing_timestamp",
    "bad_weight",
)
WEIGHT = "_weight"  # the sample weight of each row (float64), when the schema names a column
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
INTERNAL = (
    "_group",
    "_row_key",
    "_ts",
    WEIGHT,
    "_rule",
    "_reason",
    "_split",
    "_bucket",
    SOURCE_FILE,
    SOURCE_ROW,
)


class DataValidationError(Exception):
    """Bad input data; the message names the file, the column and the row where known."""


@dataclass(frozen=True)
class DataSchema:
    """What the rows must hold: feature, label, group, timestamp and key columns."""

    task: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    label: str = "label"
    group: str | None = None
    timestamp: str | None = None
    keys: tuple[str, ...] = ()
    weight: str | None = None
    label_mapping: dict[str, int] | None = None
    # A label derived from the column ``label_source`` (data.label_from): 1 where the value is
    # >= ``label_threshold`` (else 0), or the value plus ``label_offset``.
    label_source: str | None = None
    label_threshold: float | None = None
    label_offset: int | None = None
    num_classes: int | None = None
    max_relevance: int = 4
    unexpected_columns: str = "ignore"
    require_label: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # sparse feature columns (components.sparse) -> the spec's dim, or None (fitted)
    sparse: dict[str, int | None] = field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical + tuple(self.sparse)

    def required_columns(self) -> list[str]:
        cols = list(self.features)
        if self.require_label:
            cols.append(self.label_source or self.label)
        cols += [c for c in (self.group, self.timestamp) if c and c not in cols]
        if self.weight and self.require_label:  # scoring needs no weights
            cols.append(self.weight)
        cols += [k for k in self.keys if k not in cols]
        return cols

    def unlabeled(self, keys: tuple[str, ...] = ()) -> DataSchema:
        """The same schema for scoring: no label, group or timestamp; ``keys`` carried along."""
        return DataSchema(
            task=self.task,
            numeric=self.numeric,
            categorical=self.categorical,
            label=self.label,
            keys=keys,
            label_mapping=self.label_mapping,
            num_classes=self.num_classes,
            max_relevance=self.max_relevance,
            unexpected_columns="ignore",
            require_label=False,
            sparse=dict(self.sparse),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DataSchema:
        d = json.loads(text)
        for k in ("numeric", "categorical", "keys"):
            d[k] = tuple(d[k])
        return cls(**d)


def check_columns(columns: list[str], schema: DataSchema, source: str) -> list[str]:
    """Fail on missing columns; return (or, by policy, fail on) unexpected ones."""
    present = set(columns)
    missing = [c for c in schema.required_columns() if c not in present]
    if missing:
        have = [c for c in columns if not c.startswith("_source_")]
        raise DataValidationError(
            f"{source}: missing column{'s' * (len(missing) > 1)} {missing}; the file has {have}"
        )
    expected = set(schema.required_columns())
    unexpected = [c for c in columns if c not in expected and not c.startswith("_source_")]
    if unexpected and schema.unexpected_columns == "fail":
        raise DataValidationError(
            f"{source}: unexpected column{'s' * (len(unexpected) > 1)} {unexpected} "
            "(data.validation.unexpected_columns is 'fail'; set it to 'ignore' to drop them)"
        )
    return unexpected


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Marks:
    """First rule broken per row, with its reason (earlier marks win)."""

    def __init__(self, n: int) -> None:
        self.rule = np.full(n, None, dtype=object)
        self.reason = np.full(n, None, dtype=object)

    def mark(
        self, mask: np.ndarray, rule: str, reason: str | Callable[[Any], str], values: Any = None
    ) -> None:
        """Mark rows in ``mask``; ``reason`` is text, or a function of the row's value."""
        new = mask & (self.rule == None)  # noqa: E711 - elementwise on an object array
        if not new.any():
            return
        idx = np.flatnonzero(new)
        self.rule[idx] = rule
        if callable(reason):
            # Built only for bad rows: formatting a message per good row would dominate the cost.
            vals = np.asarray(values, dtype=object)[idx]
            self.reason[idx] = [reason(v) for v in vals]
        else:
            self.reason[idx] = reason


def _as_numeric(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and a mask of values that were present but are not finite numbers."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.astype("float64").to_numpy()
    else:
        values = pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy(na_value=np.nan)
    present = raw.notna().to_numpy().copy()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        present &= raw.astype(str).str.strip().ne("").to_numpy()
    bad = present & ~np.isfinite(values)
    return values, bad


def _label_values(raw: pd.Series, schema: DataSchema, marks: _Marks) -> np.ndarray:
    col = schema.label_source or schema.label
    if schema.label_mapping:
        text = (
            raw.astype(object)
            .where(raw.notna(), None)
            .map(lambda v: v if v is None else str(v).strip())
        )
        mapping = schema.label_mapping
        mapped = pd.Series(
            [mapping.get(v) if v is not None else None for v in text], dtype="float64"
        )
        unmapped = text.notna().to_numpy() & mapped.isna().to_numpy()
        known = sorted(schema.label_mapping)
        marks.mark(
            unmapped,
            "label_out_of_range",
            lambda v: f"column {col!r}: {_short(v)} is not in data.label_mapping {known}",
            text.to_numpy(),
        )
        return pd.to_numeric(mapped, errors="coerce").astype("float64").to_numpy(na_value=np.nan)
    values, bad = _as_numeric(raw)
    marks.mark(
        bad, "wrong_type", lambda v: f"column {col!r}: {_short(v)} is not a number", raw.to_numpy()
    )
    if schema.label_threshold is not None:  # NaN (missing) stays missing: a null_label
        values = np.where(np.isnan(values), np.nan, (values >= schema.label_threshold) * 1.0)
    elif schema.label_offset is not None:
        values = values + schema.label_offset
    return values


def _check_label_range(values: np.ndarray, schema: DataSchema, marks: _Marks) -> None:
    col = schema.label_source or schema.label
    # an offset label names the value it came from: "label 5 (value 6 - 1) is not ..."
    offset = schema.label_offset if schema.label_source else None

    def label(v: float) -> str:
        if offset is None:
            return f"label {v:g}"
        return f"label {v:g} (value {v - offset:g} {'+' if offset >= 0 else '-'} {abs(offset)})"

    marks.mark(np.isnan(values), "null_label", f"column {col!r}: label is missing")
    finite = ~np.isnan(values)
    labels = task_info(schema.task).labels
    if labels == "real":  # any finite number
        marks.mark(
            finite & ~np.isfinite(values),
            "label_out_of_range",
            lambda v: f"column {col!r}: {label(v)} is not a finite number",
            values,
        )
        return
    integral = finite & (np.mod(np.where(finite, values, 0), 1) == 0)
    if labels == "binary":
        hi, what = 1, "0 or 1"
    elif labels == "class":
        hi, what = (
            (schema.num_classes or 2) - 1,
            f"an integer class id 0..{(schema.num_classes or 2) - 1}",
        )
    else:  # relevance
        hi, what = schema.max_relevance, f"an integer relevance 0..{schema.max_relevance}"
    bad = finite & (~integral | (values < 0) | (values > hi))
    marks.mark(
        bad, "label_out_of_range", lambda v: f"column {col!r}: {label(v)} is not {what}", values
    )


def _group_keys(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """int64 group keys and a mask of missing group ids."""
    missing = raw.isna().to_numpy()
    if pd.api.types.is_integer_dtype(raw.dtype):
        return raw.astype("int64").to_numpy(), missing
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().sum() == (~missing).sum() and (numeric.dropna() % 1 == 0).all():
        return numeric.fillna(0).astype("int64").to_numpy(), missing
    return to_int63(hash_strings(raw.to_numpy())), missing


def _weights(raw: pd.Series, col: str, marks: _Marks) -> np.ndarray:
    """Sample weights as float64; a missing, non-finite or negative weight breaks ``bad_weight``
    (its value becomes 0, so a quarantined row could not weigh anything anyway)."""
    values, not_number = _as_numeric(raw)
    values = np.where(not_number, np.nan, values)
    with np.errstate(invalid="ignore"):
        negative = values < 0
    missing = np.isnan(values) & ~not_number
    marks.mark(not_number, "bad_weight", _not_a_number(col), raw.to_numpy())
    marks.mark(missing, "bad_weight", f"column {col!r}: weight is missing")
    marks.mark(
        negative,
        "bad_weight",
        lambda v: f"column {col!r}: weight {v:g} is negative",
        values,
    )
    return np.where(not_number | missing | negative, 0.0, values)


def _check_query_weights(
    keys: np.ndarray, weights: np.ndarray, ids: pd.Series, schema: DataSchema, marks: _Marks
) -> None:
    """Ranking weights are per query: every row of a query whose rows (in this block) carry
    different weights breaks ``bad_weight``, with the query id and two of its weights."""
    frame = pd.DataFrame({"k": keys, "w": weights})
    spread = frame.groupby("k", sort=False)["w"].agg(["min", "max"])
    mixed = spread.index[spread["min"] != spread["max"]]
    if len(mixed) == 0:
        return
    rows = np.isin(keys, mixed.to_numpy())
    lo, hi = spread["min"].to_dict(), spread["max"].to_dict()
    reasons = np.full(len(keys), None, dtype=object)
    reasons[rows] = [
        f"column {schema.weight!r}: query {_short(q)} ({schema.group}) has rows weighted "
        f"{lo[k]:g} and {hi[k]:g}; ranking weights are per query"
        for q, k in zip(ids.to_numpy()[rows], keys[rows], strict=True)
    ]
    marks.mark(rows, "bad_weight", str, reasons)


def _timestamps(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds (float64) and a mask of values present but not parseable."""
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        ts = pd.to_datetime(raw, utc=True)
        secs = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(na_value=np.nan)
        return secs.astype("float64"), np.zeros(len(raw), dtype=bool)
    values, bad = _as_numeric(raw)
    values = values.copy()
    if bad.any():
        parsed = pd.to_datetime(raw[bad], utc=True, errors="coerce", format="mixed")
        secs = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(na_value=np.nan)
        values[bad] = secs
        bad = bad & np.isnan(values)
    return values, bad


def _not_a_number(col: str) -> Callable[[Any], str]:
    def reason(value: Any) -> str:
        return f"column {col!r}: {_short(value)} is not a finite number"

    return reason


def row_keys(source_file: pd.Series, source_row: pd.Series) -> np.ndarray:
    """A stable int64 key per row from its file name and row number (used by random splits)."""
    names = source_file.astype(str).str.rsplit("/", n=1).str[-1]
    with np.errstate(over="ignore"):
        mixed = hash_strings(names.to_numpy()) ^ mix64(source_row.to_numpy().astype(np.uint64))
    return to_int63(mix64(mixed))


def coerce_frame(frame: pd.DataFrame, schema: DataSchema, source: str) -> pd.DataFrame:
    """Check columns, coerce types and mark bad rows (see the module docstring)."""
    check_columns(list(frame.columns), schema, source)
    n = len(frame)
    marks = _Marks(n)
    out: dict[str, Any] = {}
    for col in schema.numeric:
        values, bad = _as_numeric(frame[col])
        marks.mark(bad, "wrong_type", _not_a_number(col), frame[col].to_numpy())
        out[col] = np.where(bad, np.nan, values)
    for col in schema.categorical:
        out[col] = categorical_strings(frame[col])
    for col, dim in schema.sparse.items():
        out[col] = _sparse_column(frame[col], col, dim, marks, source)
    if schema.require_label:
        label = _label_values(frame[schema.label_source or schema.label], schema, marks)
        _check_label_range(label, schema, marks)
        out[schema.label] = label
    if schema.group:
        keys, missing = _group_keys(frame[schema.group])
        marks.mark(missing, "missing_group", f"column {schema.group!r}: query id is missing")
        if schema.group not in out:  # a group listed as a feature keeps its feature values
            out[schema.group] = frame[schema.group].to_numpy()
        out["_group"] = keys
    if schema.timestamp:
        ts, bad = _timestamps(frame[schema.timestamp])
        marks.mark(bad, "wrong_type", f"column {schema.timestamp!r}: not a timestamp")
        marks.mark(
            np.isnan(ts) & ~bad,
            "missing_timestamp",
            f"column {schema.timestamp!r}: timestamp is missing",
        )
        out["_ts"] = ts
    if schema.weight and schema.require_label:
        out[WEIGHT] = _weights(frame[schema.weight], schema.weight, marks)
        if schema.group and task_info(schema.task).grouped:
            _check_query_weights(out["_group"], out[WEIGHT], frame[schema.group], schema, marks)
    for key in schema.keys:
        if key not in out:
            out[key] = frame[key].to_numpy()
    src_file = frame[SOURCE_FILE] if SOURCE_FILE in frame else pd.Series([source] * n)
    src_row = frame[SOURCE_ROW] if SOURCE_ROW in frame else pd.Series(np.arange(1, n + 1))
    out[SOURCE_FILE] = src_file.astype(str).to_numpy()
    out[SOURCE_ROW] = src_row.astype("int64").to_numpy()
    out["_row_key"] = row_keys(src_file.reset_index(drop=True), src_row.reset_index(drop=True))
    out["_rule"] = marks.rule
    out["_reason"] = marks.reason
    result = pd.DataFrame(out)
    # Arrow-backed strings: an all-null object column would otherwise reach Ray Data as
    # pickled Python objects, which Arrow can neither group nor filter on.
    for col in [*schema.categorical, "_rule", "_reason", SOURCE_FILE]:
        result[col] = result[col].astype("string[pyarrow]")
    return result


def _sparse_column(
    raw: pd.Series, col: str, dim: int | None, marks: _Marks, source: str
) -> pd.Series:
    """A sparse column in the canonical Arrow type (components.sparse); a row with a negative
    index, one at or above ``dim``, an infinite value or a repeated index breaks wrong_type."""
    try:
        arr = sparse.to_arrow(raw, col)
        bad, reasons = sparse.bad_rows(arr, col, dim)
    except (ValueError, pa.ArrowInvalid) as e:  # the whole column has the wrong type
        raise DataValidationError(f"{source}: column {col!r} is not a sparse column: {e}") from None
    if bad.any():
        marks.mark(bad, "wrong_type", lambda r: r, np.array(_spread(bad, reasons), dtype=object))
    return sparse.series(arr)


def _spread(mask: np.ndarray, values: list[str]) -> list[str | None]:
    """``values`` (one per True of ``mask``) at their rows, None elsewhere."""
    out: list[str | None] = [None] * len(mask)
    for i, v in zip(np.flatnonzero(mask), values, strict=True):
        out[int(i)] = v
    return out


def describe_bad_rows(bad: pd.DataFrame, limit: int = 5) -> str:
    """Human-readable lines 'file, row N: reason' for the first bad rows."""
    lines = []
    for d in bad.head(limit).to_dict("records"):
        lines.append(f"  {d[SOURCE_FILE]}, row {d[SOURCE_ROW]}: {d['_reason']} [rule {d['_rule']}]")
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)

"""Feature transforms fitted on the training split only and stored as JSON (never pickle).

Fitting is split in two so it runs in parallel over Ray Data blocks without importing Ray here:
``partial_stats`` summarises one batch into a small JSON-able dict, ``fit_transform`` merges
the summaries into a ``FeatureTransform``. ``FeatureTransform.transform`` is the only path from
raw columns to model inputs, used by training, evaluation, batch inference and serving.

Numeric columns: median imputation (optional) and standardisation (optional). The median is
exact while the training split has at most ``SAMPLE_PER_BATCH`` values per batch and
``MAX_SAMPLE`` in all; beyond that it is the median of a deterministic, evenly spaced sample.
Categorical columns: a vocabulary (values seen at least ``min_frequency`` times, the most frequent
``max_vocab_size``, ties by value) whose codes 1..N follow the values' sorted order as strings
("10" before "2", the order pandas gives the categories of string values), with code 0 for
out-of-vocabulary and missing values; or hashing into ``hash_buckets`` buckets (codes 1..N, 0 for
missing) for high-cardinality columns. Code 0 is an embedding row of its own for torch; XGBoost sees it as missing (NaN, see
``components.xgboost_model.mark_missing_categories``), so an unseen value is not a category.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from components import sparse
from components.hashing import hash_strings
from components.sparse import SparseConfig, SparseParams

SAMPLE_PER_BATCH = 100_000
SMALL_BATCH = 256  # below this many rows, categorical lookups use a dict (serving path)
MAX_SAMPLE = 1_000_000
FORMAT_VERSION = 1


@dataclass(frozen=True)
class NumericParams:
    name: str
    median: float  # statistics of the values after log1p, when log1p is set
    mean: float
    std: float
    log1p: bool = False


@dataclass(frozen=True)
class CategoricalParams:
    name: str
    encoding: Literal["vocab", "hash"]
    vocabulary: tuple[str, ...] = ()
    hash_buckets: int = 0

    @property
    def cardinality(self) -> int:
        """Number of codes including the out-of-vocabulary/missing code 0."""
        return (len(self.vocabulary) if self.encoding == "vocab" else self.hash_buckets) + 1


@dataclass(frozen=True)
class CategoricalConfig:
    """How to fit one categorical column (mirrors the spec's ``features.categorical``)."""

    name: str
    encoding: Literal["vocab", "hash"] = "vocab"
    min_frequency: int = 1
    max_vocab_size: int = 100_000
    hash_buckets: int = 1 << 18


@dataclass(frozen=True)
class FeatureConfig:
    numeric: tuple[str, ...]
    categorical: tuple[CategoricalConfig, ...]
    impute: Literal["median", "none"] = "median"
    standardize: bool = False
    log1p: tuple[str, ...] = ()  # numeric columns mapped through signed_log1p first
    sparse: tuple[SparseConfig, ...] = ()  # sparse columns (components.sparse)


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log(1 + |x|)``: compresses heavy tails, defined for every real (NaN stays NaN)."""
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class FeatureTransform:
    """Fitted parameters; ``transform`` maps a raw frame to a float32 matrix."""

    numeric: tuple[NumericParams, ...]
    categorical: tuple[CategoricalParams, ...]
    impute: Literal["median", "none"] = "median"
    standardize: bool = False
    rows_fitted: int = 0
    # Sparse columns: not part of ``transform``'s dense matrix; components.sparse.model_matrix
    # appends their ``dim`` columns each after it (names ``<name>:<index>``).
    sparse: tuple[SparseParams, ...] = ()
    _indexes: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def feature_names(self) -> list[str]:
        dense = [p.name for p in self.numeric] + [p.name for p in self.categorical]
        return dense + [n for p in self.sparse for n in p.feature_names()]

    @property
    def feature_types(self) -> list[str]:
        """XGBoost feature types: 'q' numeric, 'c' categorical codes."""
        width = sum(p.dim for p in self.sparse)
        return ["q"] * len(self.numeric) + ["c"] * len(self.categorical) + ["q"] * width

    @property
    def input_columns(self) -> list[str]:
        """The raw columns a frame must hold (one per sparse feature, not one per index)."""
        dense = [p.name for p in self.numeric] + [p.name for p in self.categorical]
        return dense + [p.name for p in self.sparse]

    def _index(self, p: CategoricalParams) -> pd.Index:
        idx = self._indexes.get(p.name)
        if idx is None:
            idx = pd.Index(p.vocabulary, dtype=object)
            self._indexes[p.name] = idx
        return idx

    def _lookup(self, p: CategoricalParams) -> dict[str, int]:
        key = "dict:" + p.name
        lookup: dict[str, int] | None = self._indexes.get(key)
        if lookup is None:
            lookup = {v: i + 1 for i, v in enumerate(p.vocabulary)}
            self._indexes[key] = lookup
        return lookup

    def transform(self, frame: pd.DataFrame | Columns) -> np.ndarray:
        """Raw columns -> float32 matrix (numeric columns, then categorical codes).

        ``frame`` is a DataFrame, or a mapping of column name -> 1-D array (what serving builds
        from request rows: no DataFrame to construct and index for a few rows)."""
        present = frame.columns if isinstance(frame, pd.DataFrame) else frame.keys()
        missing = [c for c in self.input_columns if c not in present]
        if missing:
            raise KeyError(f"missing feature column(s) {missing}")
        n = num_rows(frame)
        out = np.empty((n, len(self.numeric) + len(self.categorical)), dtype=np.float32)
        if self.numeric:
            # One block conversion for all numeric columns (a per-column loop dominates small
            # requests); columns holding non-numbers take the slow, coercing path.
            names = [p.name for p in self.numeric]
            try:
                if isinstance(frame, pd.DataFrame):
                    values = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)
                else:  # None -> NaN
                    values = np.column_stack(
                        [np.asarray(frame[c], dtype=np.float64) for c in names]
                    )
            except (TypeError, ValueError):
                values = np.column_stack(
                    [
                        pd.to_numeric(pd.Series(frame[c]), errors="coerce").to_numpy(
                            dtype=np.float64, na_value=np.nan
                        )
                        for c in names
                    ]
                )
            logged = [j for j, p in enumerate(self.numeric) if p.log1p]
            if logged:  # a copy: to_numpy may return a view of the caller's frame
                values = values.copy()
                values[:, logged] = signed_log1p(values[:, logged])
            median = np.array([p.median for p in self.numeric])
            if self.impute == "median":
                values = np.where(np.isnan(values), median, values)
            if self.standardize:
                mean = np.array([p.mean for p in self.numeric])
                std = np.array([p.std if p.std > 0 else 1.0 for p in self.numeric])
                values = (values - mean) / std
            out[:, : len(names)] = values
        base = len(self.numeric)
        for j, c in enumerate(self.categorical):
            out[:, base + j] = self.codes(c, frame[c.name])
        return out

    def codes(self, p: CategoricalParams, values: pd.Series | np.ndarray) -> np.ndarray:
        """Integer codes of one categorical column (0 = missing or out of vocabulary)."""
        small = len(values) <= SMALL_BATCH
        if small and not isinstance(values, pd.Series):
            raw = strings_of(values)  # serving: plain Python beats pandas' per-call overhead
        else:
            raw = categorical_strings(as_series(values))
        if p.encoding == "vocab" and small:
            lookup = self._lookup(p)
            return np.fromiter(
                (lookup.get(v, 0) if v is not None else 0 for v in raw),
                dtype=np.int64,
                count=len(values),
            )
        missing = pd.isna(raw)
        text = np.where(missing, "", raw).astype(object)
        if p.encoding == "vocab":
            codes = self._index(p).get_indexer(pd.Index(text, dtype=object)) + 1
        else:
            codes = (hash_strings(text) % np.uint64(p.hash_buckets)).astype(np.int64) + 1
        codes[missing] = 0
        return codes.astype(np.int64)

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("_indexes")
        d["format"] = FORMAT_VERSION
        d["hash"] = "siphash-2-4 (pandas.util.hash_array, key in components/hashing.py)"
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureTransform:
        d = json.loads(text)
        if d.pop("format", None) != FORMAT_VERSION:
            raise ValueError("features.json: unsupported format version")
        d.pop("hash", None)
        return cls(
            numeric=tuple(NumericParams(**p) for p in d["numeric"]),
            categorical=tuple(
                CategoricalParams(
                    name=p["name"],
                    encoding=p["encoding"],
                    vocabulary=tuple(p["vocabulary"]),
                    hash_buckets=p["hash_buckets"],
                )
                for p in d["categorical"]
            ),
            impute=d["impute"],
            standardize=d["standardize"],
            rows_fitted=d["rows_fitted"],
            sparse=tuple(SparseParams(**p) for p in d.get("sparse", ())),
        )


Columns = Mapping[str, np.ndarray]
"""Column name -> 1-D array of raw values: numbers (None for missing) or categorical values."""


def num_rows(frame: pd.DataFrame | Columns) -> int:
    if isinstance(frame, pd.DataFrame):
        return len(frame)
    return len(next(iter(frame.values()))) if frame else 0


def as_series(values: pd.Series | np.ndarray) -> pd.Series:
    """A column as a Series (object dtype for a plain array, as a request's values are)."""
    return values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)


def categorical_strings(raw: pd.Series) -> np.ndarray:
    """Categorical values as strings, the same at ingest and at serving time.

    Integral floats print like integers (3.0 -> "3": a CSV or JSON reader may have parsed an id
    as a float); nulls stay None.
    """
    missing = raw.isna().to_numpy()
    if pd.api.types.is_float_dtype(raw.dtype):
        vals = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        integral = ~missing & np.isfinite(vals) & (np.mod(np.nan_to_num(vals), 1) == 0)
        text = vals.astype(str).astype(object)
        text[integral] = vals[integral].astype(np.int64).astype(str)
    else:
        values = raw.to_numpy(dtype=object)
        text = raw.astype(str).to_numpy(dtype=object)
        if raw.dtype == object:  # mixed values
            for i in np.flatnonzero([isinstance(v, float) and v.is_integer() for v in values]):
                text[i] = str(int(values[i]))
    text[missing] = None
    return text


def strings_of(values: np.ndarray) -> np.ndarray:
    """``categorical_strings`` for a small object array of request values, in plain Python
    (the same text: integral floats as integers, None and NaN as None)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values.tolist()):
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            out[i] = None
        elif isinstance(v, float) and v.is_integer():
            out[i] = str(int(v))
        else:
            out[i] = str(v)
    return out


def _even_sample(values: np.ndarray, limit: int) -> np.ndarray:
    if len(values) <= limit:
        return values
    return values[np.linspace(0, len(values) - 1, limit).astype(np.int64)]


def partial_stats(frame: pd.DataFrame, config: FeatureConfig) -> dict[str, Any]:
    """Mergeable statistics of one batch (JSON-able)."""
    stats: dict[str, Any] = {"rows": len(frame), "numeric": {}, "categorical": {}}
    for name in config.numeric:
        col = pd.to_numeric(frame[name], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        if name in config.log1p:
            col = signed_log1p(col)
        ok = col[np.isfinite(col)]
        stats["numeric"][name] = {
            "count": int(ok.size),
            "sum": float(ok.sum()),
            "sumsq": float(np.square(ok).sum()),
            "sample": _even_sample(np.sort(ok), SAMPLE_PER_BATCH).tolist(),
        }
    for c in config.categorical:
        if c.encoding == "vocab":
            counts = pd.Series(categorical_strings(frame[c.name])).dropna().value_counts()
            stats["categorical"][c.name] = {str(k): int(v) for k, v in counts.items()}
    if config.sparse:
        stats["sparse"] = {c.name: sparse.max_index(frame[c.name], c.name) for c in config.sparse}
    return stats


def fit_transform(parts: list[dict[str, Any]], config: FeatureConfig) -> FeatureTransform:
    """Merge ``partial_stats`` of every training batch into a fitted transform."""
    rows = sum(int(p["rows"]) for p in parts)
    if rows == 0:
        raise ValueError("cannot fit features on an empty training split")
    numeric = []
    for name in config.numeric:
        ss = [p["numeric"][name] for p in parts]
        count = sum(s["count"] for s in ss)
        if count == 0:
            raise ValueError(f"feature {name!r}: no numeric value in the training split")
        mean = sum(s["sum"] for s in ss) / count
        var = max(sum(s["sumsq"] for s in ss) / count - mean * mean, 0.0)
        sample = np.concatenate([np.asarray(s["sample"], dtype=np.float64) for s in ss])
        sample = _even_sample(np.sort(sample), MAX_SAMPLE)
        numeric.append(
            NumericParams(
                name=name,
                median=float(np.median(sample)),
                mean=mean,
                std=float(np.sqrt(var)),
                log1p=name in config.log1p,
            )
        )
    categorical = []
    for c in config.categorical:
        if c.encoding == "hash":
            categorical.append(
                CategoricalParams(name=c.name, encoding="hash", hash_buckets=c.hash_buckets)
            )
            continue
        total: Counter[str] = Counter()
        for p in parts:
            total.update(p["categorical"][c.name])
        kept = [(v, n) for v, n in total.items() if n >= c.min_frequency]
        # The cut keeps the most frequent values (ties by value); the codes then follow the sorted
        # values, so they do not depend on the training rows' order or on small count changes.
        kept.sort(key=lambda vn: (-vn[1], vn[0]))
        vocab = tuple(sorted(v for v, _ in kept[: c.max_vocab_size]))
        categorical.append(CategoricalParams(name=c.name, encoding="vocab", vocabulary=vocab))
    return FeatureTransform(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        impute=config.impute,
        standardize=config.standardize,
        rows_fitted=rows,
        sparse=tuple(_fit_sparse(parts, c) for c in config.sparse),
    )


def _fit_sparse(parts: list[dict[str, Any]], c: SparseConfig) -> SparseParams:
    """The spec's ``dim``, or the training split's largest index + 1."""
    if c.dim is not None:
        return SparseParams(c.name, c.dim)
    top = max(int(p["sparse"][c.name]) for p in parts)
    if top < 0:
        raise ValueError(f"sparse feature {c.name!r}: no entry in the training split")
    return SparseParams(c.name, top + 1)

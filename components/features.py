"""Feature transforms fitted on the training split only and stored as JSON (never pickle).

Fitting is split in two so it runs in parallel over Ray Data blocks without importing Ray here:
``partial_stats`` summarises one batch into a small JSON-able dict, ``fit_transform`` merges
the summaries into a ``FeatureTransform``. ``FeatureTransform.transform`` is the only path from
raw columns to model inputs, used by training, evaluation, batch inference and serving.

Numeric columns: median imputation (optional) and standardisation (optional). Mean and standard
deviation come from exact mergeable moments; the median from a KLL quantile sketch
(``components.sketches``): exact while a column has fewer than ``SKETCH_K`` finite values, beyond
that within the sketch's rank error (below 2e-3 of the rows, measured about a third of that), in
memory that does not grow with the rows. NaN and infinite values are ignored by both.
Categorical columns: a vocabulary (values seen at least ``min_frequency`` times, the most frequent
``max_vocab_size``, ties by value) whose codes 1..N follow the values' sorted order as strings
("10" before "2", the order pandas gives the categories of string values), with code 0 for
out-of-vocabulary and missing values; or hashing into ``hash_buckets`` buckets (codes 1..N, 0 for
missing) for high-cardinality columns. Code 0 is an embedding row of its own for torch; XGBoost sees it as missing (NaN, see
``components.xgboost_model.mark_missing_categories``), so an unseen value is not a category.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from components import sparse
from components.hashing import hash_strings
from components.sketches import NumericSummary
from components.sparse import SparseConfig, SparseParams

SMALL_BATCH = 256  # below this many rows, categorical lookups use a dict (serving path)
SKETCH_K = 4096  # KLL sketch size: exact medians below this many values (components.sketches)
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
            out[:, : len(self.numeric)] = self.numeric_matrix(frame)
        base = len(self.numeric)
        for j, c in enumerate(self.categorical):
            out[:, base + j] = self.codes(c, frame[c.name])
        return out

    def numeric_matrix(self, frame: pd.DataFrame | Columns) -> np.ndarray:
        """The numeric columns after the transform (logged, imputed, standardised), float64
        (rows, numeric columns); the first columns of ``transform``'s matrix."""
        if not self.numeric:
            return np.empty((num_rows(frame), 0), np.float64)
        # One block conversion for all numeric columns (a per-column loop dominates small
        # requests); columns holding non-numbers take the slow, coercing path.
        names = [p.name for p in self.numeric]
        try:
            if isinstance(frame, pd.DataFrame):
                values = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)
            else:  # None -> NaN
                values = np.column_stack([np.asarray(frame[c], dtype=np.float64) for c in names])
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
        return values

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


def numeric_values(frame: pd.DataFrame, name: str, config: FeatureConfig) -> np.ndarray:
    """One numeric column as its statistics see it: float64, non-numbers as NaN, logged first
    when the spec says so."""
    col = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return signed_log1p(col) if name in config.log1p else col


def _encode_summary(summary: NumericSummary) -> str:
    return base64.b64encode(summary.to_bytes()).decode("ascii")


def _decode_summary(text: str) -> NumericSummary:
    return NumericSummary.from_bytes(base64.b64decode(text))


def partial_stats(
    frame: pd.DataFrame, config: FeatureConfig, *, vocabularies: bool = True
) -> dict[str, Any]:
    """Mergeable statistics of one batch (JSON-able).

    Numeric columns: exact moments and a KLL sketch (``components.sketches``, a few ten KB per
    column whatever the rows). Vocabulary columns: the value counts, unless ``vocabularies`` is
    False (the Ray path counts them in a distributed aggregation instead, ``value_counts_long``).
    Sparse columns: the largest index."""
    stats: dict[str, Any] = {"rows": len(frame), "numeric": {}}
    for name in config.numeric:
        summary = NumericSummary.of(numeric_values(frame, name, config), k=SKETCH_K)
        stats["numeric"][name] = _encode_summary(summary)
    if vocabularies:
        stats["categorical"] = {}
        for c in config.categorical:
            if c.encoding == "vocab":
                counts = pd.Series(categorical_strings(frame[c.name])).dropna().value_counts()
                stats["categorical"][c.name] = {str(k): int(v) for k, v in counts.items()}
    if config.sparse:
        stats["sparse"] = {c.name: sparse.max_index(frame[c.name], c.name) for c in config.sparse}
    return stats


def merge_partials(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``partial_stats`` of several batches as one, merged in the order given (a sketch depends
    on the order of its merges: callers that want reproducible results fix the order)."""
    if not parts:
        raise ValueError("merge_partials: nothing to merge")
    out: dict[str, Any] = {"rows": sum(int(p["rows"]) for p in parts), "numeric": {}}
    for name in parts[0]["numeric"]:
        merged = _decode_summary(parts[0]["numeric"][name])
        for p in parts[1:]:
            merged.merge(_decode_summary(p["numeric"][name]))
        out["numeric"][name] = _encode_summary(merged)
    if all("categorical" in p for p in parts):
        out["categorical"] = {}
        for name in parts[0]["categorical"]:
            total: Counter[str] = Counter()
            for p in parts:
                total.update(p["categorical"][name])
            out["categorical"][name] = dict(total)
    if "sparse" in parts[0]:
        out["sparse"] = {n: max(int(p["sparse"][n]) for p in parts) for n in parts[0]["sparse"]}
    return out


# Long-format value counts: one row per (vocabulary column, value), the column given by its index
# in ``FeatureConfig.categorical``; every vocabulary column of a batch in one frame, so a single
# distributed aggregation counts them all.
COLUMN, VALUE, COUNT = "_col", "_value", "_count"


def value_counts_long(frame: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """Counts of every vocabulary column's values in one batch (missing values not counted)."""
    parts = [
        pd.DataFrame(
            {
                COLUMN: np.full(len(counts), j, dtype=np.int32),
                VALUE: counts.index.to_numpy(dtype=object),
                COUNT: counts.to_numpy(dtype=np.int64),
            }
        )
        for j, c in enumerate(config.categorical)
        if c.encoding == "vocab"
        for counts in [pd.Series(categorical_strings(frame[c.name])).dropna().value_counts()]
    ]
    return pd.concat(parts, ignore_index=True) if parts else empty_counts()


def empty_counts() -> pd.DataFrame:
    """Long-format value counts without a row."""
    return pd.DataFrame(
        {COLUMN: np.empty(0, np.int32), VALUE: np.empty(0, object), COUNT: np.empty(0, np.int64)}
    )


def cut_vocabularies(counts: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """The rows of long-format counts (each (column, value) once) that the vocabularies keep.

    Per column: values seen at least ``min_frequency`` times, then the ``max_vocab_size`` most
    frequent, ties by value. Cutting a part of the values keeps every value the whole would keep
    that lies in the part, so the cut can run per partition of a distributed count and again on
    the union of the results."""
    vocab = [c if c.encoding == "vocab" else None for c in config.categorical]
    min_freq = np.array([c.min_frequency if c else 0 for c in vocab], dtype=np.int64)
    max_size = np.array([c.max_vocab_size if c else 0 for c in vocab], dtype=np.int64)
    cols = counts[COLUMN].to_numpy(dtype=np.int64)
    kept = counts[counts[COUNT].to_numpy(dtype=np.int64) >= min_freq[cols]]
    # Most frequent first, ties by value (str order: code points, as Python's sorted()).
    kept = kept.sort_values(
        [COLUMN, COUNT, VALUE], ascending=[True, False, True], kind="stable", ignore_index=True
    )
    rank = kept.groupby(COLUMN, sort=False).cumcount().to_numpy()
    return kept[rank < max_size[kept[COLUMN].to_numpy(dtype=np.int64)]].reset_index(drop=True)


def vocabularies_of(kept: pd.DataFrame, config: FeatureConfig) -> dict[str, tuple[str, ...]]:
    """Each vocabulary column's kept values (``cut_vocabularies``) in code order: sorted as
    strings, so the codes do not depend on the training rows' order or small count changes."""
    out: dict[str, tuple[str, ...]] = {}
    cols = kept[COLUMN].to_numpy(dtype=np.int64)
    values = kept[VALUE].to_numpy(dtype=object)
    for j, c in enumerate(config.categorical):
        if c.encoding == "vocab":
            out[c.name] = tuple(sorted(str(v) for v in values[cols == j]))
    return out


def _counted_vocabularies(
    parts: Sequence[Mapping[str, Any]], config: FeatureConfig
) -> dict[str, tuple[str, ...]]:
    frames = []
    for j, c in enumerate(config.categorical):
        if c.encoding != "vocab":
            continue
        total: Counter[str] = Counter()
        for p in parts:
            if "categorical" not in p:
                raise ValueError(
                    f"categorical feature {c.name!r}: no value counts in the statistics "
                    "(partial_stats(..., vocabularies=False) needs vocabularies= given)"
                )
            total.update(p["categorical"][c.name])
        frames.append(
            pd.DataFrame(
                {
                    COLUMN: np.full(len(total), j, dtype=np.int32),
                    VALUE: np.array(list(total), dtype=object),
                    COUNT: np.fromiter(total.values(), dtype=np.int64, count=len(total)),
                }
            )
        )
    if not frames:
        return {}
    return vocabularies_of(cut_vocabularies(pd.concat(frames, ignore_index=True), config), config)


def numeric_params(name: str, summary: NumericSummary, config: FeatureConfig) -> NumericParams:
    """Median (from the sketch), mean and population std (exact) of one numeric column."""
    if summary.moments.count == 0:
        raise ValueError(f"feature {name!r}: no numeric value in the training split")
    return NumericParams(
        name=name,
        median=summary.sketch.median(),
        mean=summary.moments.mean,
        std=summary.moments.std,
        log1p=name in config.log1p,
    )


def fit_transform(
    parts: Sequence[Mapping[str, Any]],
    config: FeatureConfig,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
) -> FeatureTransform:
    """Merge ``partial_stats`` of every training batch into a fitted transform.

    ``vocabularies`` (column -> kept values, e.g. counted and cut in Ray Data) replaces counting
    the parts' value counts; either way the codes follow the values' sorted order."""
    if not parts:
        raise ValueError("cannot fit features on an empty training split")
    merged = merge_partials(parts)
    rows = int(merged["rows"])
    if rows == 0:
        raise ValueError("cannot fit features on an empty training split")
    numeric = [
        numeric_params(name, _decode_summary(merged["numeric"][name]), config)
        for name in config.numeric
    ]
    vocabs = (
        {name: tuple(sorted(vs)) for name, vs in vocabularies.items()}
        if vocabularies is not None
        else _counted_vocabularies([merged], config)
    )
    categorical = []
    for c in config.categorical:
        if c.encoding == "hash":
            categorical.append(
                CategoricalParams(name=c.name, encoding="hash", hash_buckets=c.hash_buckets)
            )
        elif c.name not in vocabs:
            raise ValueError(f"categorical feature {c.name!r}: no vocabulary given")
        else:
            categorical.append(
                CategoricalParams(name=c.name, encoding="vocab", vocabulary=vocabs[c.name])
            )
    return FeatureTransform(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        impute=config.impute,
        standardize=config.standardize,
        rows_fitted=rows,
        sparse=tuple(_fit_sparse([merged], c) for c in config.sparse),
    )


def _fit_sparse(parts: Sequence[Mapping[str, Any]], c: SparseConfig) -> SparseParams:
    """The spec's ``dim``, or the training split's largest index + 1."""
    if c.dim is not None:
        return SparseParams(c.name, c.dim)
    top = max(int(p["sparse"][c.name]) for p in parts)
    if top < 0:
        raise ValueError(f"sparse feature {c.name!r}: no entry in the training split")
    return SparseParams(c.name, top + 1)

"""Feature drift between the training split and live traffic, on the encoded features
(components.encoded: what the model sees), without Ray.

A ``FeatureProfile`` summarises one feature of the training split in bins: a numeric feature by
``NUMERIC_BINS`` quantile bins (cut points from the training values) plus a missing bin; a
categorical feature by its most frequent codes (at most ``TOP_CODES``), the rest pooled, and code
0 (missing or out of vocabulary: the unseen rate) on its own. ``compare`` bins live values the
same way and gives the population stability index (PSI, with shares floored at ``FLOOR``), a
chi-square test of the live counts against the training shares, and the missing / unseen rates
of both. Profiles are JSON-able, so a bundle can carry them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from components.features import COLUMN, COUNT, VALUE, FeatureTransform
from components.sketches import KLLSketch, NumericSummary

NUMERIC_BINS = 10
TOP_CODES = 20
FLOOR = 1e-4  # shares below this count as this in PSI (an empty bin would be infinite)


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's training distribution over fixed bins (see the module doc)."""

    name: str
    kind: Literal["numeric", "categorical"]
    edges: tuple[float, ...]  # numeric: inner cut points; categorical: the top codes
    shares: tuple[float, ...]  # per bin, summing to 1: numeric bins + missing; codes + rest + 0
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureProfile:
        return cls(
            name=d["name"],
            kind=d["kind"],
            edges=tuple(d["edges"]),
            shares=tuple(d["shares"]),
            rows=int(d["rows"]),
        )


def profile(
    name: str, values: np.ndarray, kind: Literal["numeric", "categorical"]
) -> FeatureProfile:
    """The training split's profile of one encoded feature (float32 values, NaN missing; or
    int32 codes, 0 missing or unseen). A ValueError when there are no values."""
    values = np.asarray(values)
    if not len(values):
        raise ValueError(f"feature {name!r}: no training values to profile")
    if kind == "numeric":
        finite = values[np.isfinite(values)]
        qs = np.quantile(finite, QUANTILES) if len(finite) else []
        return numeric_profile(
            name, numeric_edges(qs), counts(values, "numeric", numeric_edges(qs))
        )
    codes, n = np.unique(values, return_counts=True)
    return categorical_profile(name, codes, n)


QUANTILES = np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]
"""The inner quantiles whose values cut a numeric feature's bins (deciles)."""


def numeric_edges(quantiles: np.ndarray | list[float]) -> tuple[float, ...]:
    """Bin cut points from a feature's ``QUANTILES`` values (exact, or a sketch's): the
    distinct finite ones, in order."""
    q = np.asarray(quantiles, np.float64)
    return tuple(float(e) for e in np.unique(q[np.isfinite(q)]))


def numeric_profile(name: str, edges: tuple[float, ...], bin_counts: np.ndarray) -> FeatureProfile:
    """A numeric profile from its ``edges`` and the training split's counts per bin
    (``counts(values, "numeric", edges)`` summed over blocks: bins, then missing)."""
    c = np.asarray(bin_counts, np.float64)
    if len(c) != len(edges) + 2:
        raise ValueError(f"feature {name!r}: {len(c)} counts for {len(edges) + 2} bins")
    total = c.sum()
    if total <= 0:
        raise ValueError(f"feature {name!r}: no training values to profile")
    return FeatureProfile(name, "numeric", edges, tuple(float(x) for x in c / total), int(total))


def sketch_profile(name: str, sketch: KLLSketch, rows: int) -> FeatureProfile:
    """A numeric profile from the training split's KLL sketch of the feature's finite values
    (components.sketches, as feature fitting merges it) and the split's ``rows``: edges at the
    sketch's deciles, shares from its ranks (each within the sketch's ``rank_error()``), the
    rest of ``rows`` missing. No pass over the data beyond the one fitting already made."""
    if rows <= 0 or sketch.n > rows:
        raise ValueError(f"feature {name!r}: a sketch of {sketch.n} values for {rows} rows")
    if sketch.n == 0:
        return numeric_profile(name, (), np.array([0.0, float(rows)]))
    edges = numeric_edges(sketch.quantiles(QUANTILES))
    # counts() puts v in bin searchsorted(edges, v, "right"): bin j holds edges[j-1] <= v <
    # edges[j], so its share is rank(< edges[j]) - rank(< edges[j-1]); rank(< e) is the rank of
    # the float just below e.
    below = [sketch.rank(float(np.nextafter(e, -np.inf))) for e in edges]
    cuts = np.array([0.0, *below, 1.0])
    finite = np.maximum(np.diff(cuts), 0.0) * sketch.n
    return numeric_profile(name, edges, np.append(finite, float(rows - sketch.n)))


def categorical_profile(name: str, codes: np.ndarray, code_counts: np.ndarray) -> FeatureProfile:
    """A categorical profile from the training split's count of every code (``codes`` and
    their ``code_counts``, e.g. merged from blocks; code 0: missing or out of vocabulary): the
    ``TOP_CODES`` most frequent non-zero codes (ties: the smaller code), the rest, code 0."""
    codes = np.asarray(codes, np.int64)
    n = np.asarray(code_counts, np.float64)
    total = n.sum()
    if total <= 0:
        raise ValueError(f"feature {name!r}: no training values to profile")
    kept = codes != 0
    order = np.lexsort((codes[kept], -n[kept]))
    top = np.sort(codes[kept][order][:TOP_CODES])
    edges = tuple(float(c) for c in top)
    in_top = np.isin(codes, top) & kept
    by_code = dict(zip(codes[in_top].tolist(), n[in_top].tolist(), strict=True))
    binned = np.array(
        [by_code[c] for c in top.tolist()] + [n[kept & ~in_top].sum(), n[~kept].sum()]
    )
    return FeatureProfile(
        name, "categorical", edges, tuple(float(x) for x in binned / total), int(total)
    )


def counts(values: np.ndarray, kind: str, edges: tuple[float, ...]) -> np.ndarray:
    """Counts per bin of ``values`` for a profile with these ``edges`` (mergeable: sum them
    over blocks): numeric bins then missing; categorical top codes, the rest, then code 0."""
    values = np.asarray(values)
    if kind == "numeric":
        missing = ~np.isfinite(values)  # NaN or infinite, as the fitting sketch counts them
        bins = np.searchsorted(np.asarray(edges), values[~missing], side="right")
        counts = np.bincount(bins, minlength=len(edges) + 1).astype(np.float64)
        return np.append(counts, float(missing.sum()))
    codes = np.asarray(edges)
    zero = values == 0
    pos = np.searchsorted(codes, values[~zero])
    found = (pos < len(codes)) & (codes[np.minimum(pos, len(codes) - 1)] == values[~zero])
    counts = np.bincount(pos[found], minlength=len(codes)).astype(np.float64)
    return np.concatenate([counts, [float((~found).sum()), float(zero.sum())]])


@dataclass(frozen=True)
class Drift:
    """One feature, live against training."""

    name: str
    psi: float
    chi2_pvalue: float  # live counts against the training shares; small: the shapes differ
    missing_train: float  # numeric: NaN share; categorical: code-0 share (missing or unseen)
    missing_live: float
    rows_live: int


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = FLOOR) -> float:
    """Population stability index of two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, np.float64), floor)
    a = np.maximum(np.asarray(actual, np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def compare(p: FeatureProfile, live: np.ndarray) -> Drift:
    """``live`` values of the feature (encoded like the training split's) against profile
    ``p``. A ValueError when there are no live values."""
    live = np.asarray(live)
    if not len(live):
        raise ValueError(f"feature {p.name!r}: no live values to compare")
    return compare_counts(p, counts(live, p.kind, p.edges))


def compare_counts(p: FeatureProfile, live_counts: np.ndarray) -> Drift:
    """``compare`` from the live values' counts per bin of ``p`` (``counts`` summed over
    blocks). A ValueError when they are empty or not ``p``'s bins."""
    counts = np.asarray(live_counts, np.float64)
    if len(counts) != len(p.shares):
        raise ValueError(f"feature {p.name!r}: {len(counts)} live counts for {len(p.shares)} bins")
    if counts.sum() <= 0:
        raise ValueError(f"feature {p.name!r}: no live values to compare")
    expected = np.asarray(p.shares)
    shares = counts / counts.sum()
    kept = expected > 0  # bins training never saw are in the PSI (floored), not the test
    if kept.sum() > 1:
        exp_counts = expected[kept] / expected[kept].sum() * counts[kept].sum()
        pvalue = float(stats.chisquare(counts[kept], exp_counts).pvalue)
    else:
        pvalue = 1.0
    return Drift(
        name=p.name,
        psi=psi(expected, shares),
        chi2_pvalue=pvalue,
        missing_train=float(expected[-1]),
        missing_live=float(shares[-1]),
        rows_live=int(counts.sum()),
    )


PROFILE_JSON = "profile.json"
"""The bundle file holding the training split's profiles (a JSON list of FeatureProfile)."""


def training_profiles(
    transform: FeatureTransform,
    summaries: dict[str, NumericSummary],
    rows: int,
    kept_counts: Any,
) -> list[FeatureProfile]:
    """The profiles of the training split from what feature fitting already computed: each
    numeric feature's merged summary (``summaries``, by name; its sketch, as ``sketch_profile``)
    and the vocabulary columns' kept value counts (``kept_counts``: components.features' long
    format, one row per (column index, value) with its count; code 0, missing or cut, is the
    rest of ``rows``). Hashed categoricals are not profiled (their codes were never counted)."""
    out = [sketch_profile(p.name, summaries[p.name].sketch, rows) for p in transform.numeric]
    cols = np.asarray(kept_counts[COLUMN], np.int64)
    values = np.asarray(kept_counts[VALUE], dtype=object)
    n = np.asarray(kept_counts[COUNT], np.float64)
    for j, c in enumerate(transform.categorical):
        if c.encoding != "vocab":
            continue
        mine = cols == j
        code = {v: i + 1 for i, v in enumerate(c.vocabulary)}
        codes = np.array([code.get(str(v), 0) for v in values[mine]], np.int64)
        counted = n[mine][codes > 0]
        zero = max(0.0, rows - counted.sum())
        out.append(
            categorical_profile(c.name, np.append(codes[codes > 0], 0), np.append(counted, zero))
        )
    return out

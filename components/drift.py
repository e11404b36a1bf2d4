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
        finite = values[~np.isnan(values)]
        qs = np.quantile(finite, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]) if len(finite) else []
        edges = tuple(float(e) for e in np.unique(qs))
    else:
        codes, counts = np.unique(values[values != 0], return_counts=True)
        top = codes[np.argsort(-counts, kind="stable")[:TOP_CODES]]
        edges = tuple(float(c) for c in np.sort(top))
    shares = _counts(values, kind, edges) / len(values)
    return FeatureProfile(name, kind, edges, tuple(float(s) for s in shares), len(values))


def _counts(values: np.ndarray, kind: str, edges: tuple[float, ...]) -> np.ndarray:
    """Counts per bin of ``values`` for a profile with these ``edges``."""
    values = np.asarray(values)
    if kind == "numeric":
        missing = np.isnan(values)
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
    counts = _counts(live, p.kind, p.edges)
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
        rows_live=len(live),
    )

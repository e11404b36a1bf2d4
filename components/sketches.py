"""Bounded, mergeable summaries of numeric columns (pure numpy, no Ray).

Feature fitting summarises every block of the training split in a task and merges the summaries,
so what a summary holds must not grow with the rows it has seen:

- ``Moments``: count, mean, sum of squared deviations (``m2``), min and max of the finite values.
  Exact; merged with Chan et al.'s pairwise update, which does not lose precision to cancellation
  the way ``sum(x**2)/n - mean**2`` does for columns with a large mean.
- ``KLLSketch``: a KLL quantile sketch (Karnin, Lang and Liberty, "Optimal quantile approximation
  in streams", FOCS 2016). Items live in levels; an item of level ``h`` stands for ``2**h`` input
  values. When a level outgrows its capacity it is sorted and every other item (from a
  pseudo-random offset) moves up a level with twice the weight. Capacities shrink by 2/3 per level
  below the top one (``k`` at the top, at least ``MIN_CAPACITY``), so a sketch holds at most about
  ``3k`` items plus ``MIN_CAPACITY`` per level, ``O(k + log n)`` floats, whatever ``n`` is.

Rank error. One compaction at level ``h`` moves the estimated rank of any value by 0 or
``2**h``, up or down with equal chance (the offset); nothing else loses information, merges
included. The sketch adds up ``2**h`` (the worst case) and ``4**h`` (the variance) of every
compaction, so it knows its own error: ``max_rank_error`` is the deterministic bound and
``rank_error()`` the bound that holds with probability at least ``1 - 2 exp(-z**2 / 2)`` for one
query (Hoeffding; ``z = 5`` by default: ``1 - 7.5e-6``), both as a fraction of ``n`` and the
smaller of the two. A sketch that has never compacted is exact (``rank_error() == 0``) and its
quantiles are numpy's (``np.quantile``, linear interpolation), so small columns get the exact
median. With the default ``k = 4096`` that is any column of fewer than 4,096 finite values; on
10**5-10**6 values, whole or merged from many small sketches, ``rank_error()`` is below 2e-3
(tests/unit/test_sketches.py) and the measured error at most about 7e-4.

Offsets come from a keyed hash of the compacted items, so a sketch is a pure function of its
inputs and of the order of updates and merges: the same seed and the same order give the same
bytes. NaN and infinite values are ignored (they are counted nowhere), as feature fitting ignores
them.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numpy as np

DEFAULT_K = 4096
MIN_CAPACITY = 8
DEFAULT_Z = 5.0  # the rank_error() bound fails with probability <= 2 exp(-z**2 / 2) per query

_KLL_MAGIC = b"KLL1"
_NUM_MAGIC = b"NUM1"
_KLL_HEAD = struct.Struct("<4sqqqqdd")  # magic, k, seed, n, levels, worst-case sum, variance sum
_NUM_HEAD = struct.Struct("<4sqdddd")  # magic, count, mean, m2, min, max


def finite(values: np.ndarray) -> np.ndarray:
    """The finite values of a 1-D array as float64 (NaN and +-inf dropped)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


@dataclass(frozen=True)
class Moments:
    """Exact count, mean, sum of squared deviations, min and max of finite values."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """Moments of the finite values of ``values`` (two passes: mean, then deviations)."""
        x = finite(values)
        if x.size == 0:
            return cls()
        mean = float(x.mean())
        return cls(
            count=int(x.size),
            mean=mean,
            m2=float(np.square(x - mean).sum()),
            min=float(x.min()),
            max=float(x.max()),
        )

    def merge(self, other: Moments) -> Moments:
        """The moments of both inputs together (Chan, Golub and LeVeque's pairwise update)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        return Moments(
            count=n,
            mean=self.mean + delta * (other.count / n),
            m2=self.m2 + other.m2 + delta * delta * (self.count * other.count / n),
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    @property
    def variance(self) -> float:
        """Population variance (ddof=0); 0.0 without values."""
        return max(self.m2 / self.count, 0.0) if self.count else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)


class KLLSketch:
    """A mergeable quantile sketch of finite float values with a self-reported rank error."""

    def __init__(self, k: int = DEFAULT_K, seed: int = 0) -> None:
        if k < MIN_CAPACITY:
            raise ValueError(f"KLL sketch: k must be at least {MIN_CAPACITY}, got {k}")
        self.k = int(k)
        self.seed = int(seed)
        self.n = 0
        self._levels: list[np.ndarray] = [np.empty(0, dtype=np.float64)]
        self._worst = 0.0  # sum of 2**h over compactions: the deterministic rank error bound
        self._var = 0.0  # sum of 4**h over compactions: the variance bound of the rank error

    @classmethod
    def of(cls, values: np.ndarray, k: int = DEFAULT_K, seed: int = 0) -> KLLSketch:
        """A sketch of the finite values of ``values``."""
        s = cls(k, seed)
        s.update(values)
        return s

    # -- building ---------------------------------------------------------------------------

    def update(self, values: np.ndarray) -> None:
        """Add the finite values of ``values`` (NaN and +-inf are ignored)."""
        x = finite(values)
        if x.size == 0:
            return
        self.n += int(x.size)
        self._levels[0] = _merge_sorted(self._levels[0], np.sort(x, kind="stable"))
        self._compress()

    def merge(self, other: KLLSketch) -> None:
        """Add every value ``other`` summarises (``other`` is left as it is)."""
        if other.k != self.k:
            raise ValueError(f"KLL sketch: cannot merge k={other.k} into k={self.k}")
        if other.n == 0:
            return
        while len(self._levels) < len(other._levels):
            self._levels.append(np.empty(0, dtype=np.float64))
        for h, items in enumerate(other._levels):
            if items.size:
                self._levels[h] = _merge_sorted(self._levels[h], items)
        self.n += other.n
        self._worst += other._worst
        self._var += other._var
        self._compress()

    def _capacity(self, h: int) -> int:
        depth = len(self._levels) - 1 - h
        return max(MIN_CAPACITY, math.ceil(self.k * (2.0 / 3.0) ** depth))

    def _compress(self) -> None:
        # Compact the lowest level over its capacity, until every level fits. Capacities depend on
        # the number of levels, so they are re-read after a level is added.
        h = 0
        while h < len(self._levels):
            if self._levels[h].size >= self._capacity(h):
                if h + 1 == len(self._levels):
                    self._levels.append(np.empty(0, dtype=np.float64))
                self._compact(h)
                h = 0
            else:
                h += 1

    def _compact(self, h: int) -> None:
        items = self._levels[h]
        keep = items[-1:] if items.size % 2 else items[:0]  # an odd one out stays at level h
        pairs = items[: items.size - keep.size]
        up = pairs[self._offset(h, pairs) :: 2]
        self._levels[h] = keep.copy()
        self._levels[h + 1] = _merge_sorted(self._levels[h + 1], up)
        self._worst += 2.0**h
        self._var += 4.0**h

    def _offset(self, h: int, items: np.ndarray) -> int:
        # A pseudo-random bit from the items themselves: reproducible, and independent enough of
        # the query for the rank error's zero mean (not meant to resist adversarial input).
        key = struct.pack("<qq", self.seed, h)
        return hashlib.blake2b(items.tobytes(), digest_size=1, key=key).digest()[0] & 1

    # -- queries ----------------------------------------------------------------------------

    @property
    def is_exact(self) -> bool:
        """True while nothing was compacted: every value is held with weight 1."""
        return self._worst == 0.0

    @property
    def size(self) -> int:
        """Number of items held (what the sketch costs in memory, 8 bytes each)."""
        return sum(int(level.size) for level in self._levels)

    @property
    def max_rank_error(self) -> float:
        """Deterministic bound on the rank error, as a fraction of ``n``."""
        return self._worst / self.n if self.n else 0.0

    def rank_error(self, z: float = DEFAULT_Z) -> float:
        """Rank error bound (fraction of ``n``) that one query exceeds with probability at most
        ``2 exp(-z**2 / 2)``; never above ``max_rank_error``."""
        if not self.n:
            return 0.0
        return min(z * math.sqrt(self._var), self._worst) / self.n

    def _weighted(self) -> tuple[np.ndarray, np.ndarray]:
        items = np.concatenate(self._levels)
        weights = np.concatenate(
            [np.full(level.size, 2.0**h) for h, level in enumerate(self._levels)]
        )
        order = np.argsort(items, kind="stable")
        return items[order], np.cumsum(weights[order])

    def quantiles(self, qs: np.ndarray | list[float]) -> np.ndarray:
        """Values at quantiles ``qs`` (each in [0, 1]): numpy's when exact, else the smallest
        item whose estimated rank reaches ``q * n``."""
        q = np.asarray(qs, dtype=np.float64)
        if np.any((q < 0) | (q > 1)) or np.any(np.isnan(q)):
            raise ValueError(f"KLL sketch: quantiles must lie in [0, 1], got {q.tolist()}")
        if self.n == 0:
            raise ValueError("KLL sketch: no values to take a quantile of")
        if self.is_exact:
            return np.asarray(np.quantile(self._levels[0], q), dtype=np.float64)
        items, cum = self._weighted()
        idx = np.searchsorted(cum, np.maximum(q * self.n, 1.0), side="left")
        return np.asarray(items[np.minimum(idx, items.size - 1)], dtype=np.float64)

    def quantile(self, q: float) -> float:
        return float(self.quantiles([q])[0])

    def median(self) -> float:
        """The median: exact (numpy's, the mean of the middle two) while ``is_exact``."""
        return self.quantile(0.5)

    def rank(self, value: float) -> float:
        """Estimated fraction of the values that are <= ``value``."""
        if self.n == 0:
            return 0.0
        items, cum = self._weighted()
        i = int(np.searchsorted(items, value, side="right"))
        return float(cum[i - 1]) / self.n if i else 0.0

    # -- bytes ------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact little-endian form: a header, the level lengths, then the items (float64)."""
        lengths = np.array([level.size for level in self._levels], dtype="<i8")
        head = _KLL_HEAD.pack(
            _KLL_MAGIC, self.k, self.seed, self.n, len(self._levels), self._worst, self._var
        )
        items = np.concatenate(self._levels).astype("<f8", copy=False)
        return head + lengths.tobytes() + items.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> KLLSketch:
        """Inverse of ``to_bytes``; a truncated or foreign payload is refused."""
        if len(data) < _KLL_HEAD.size:
            raise ValueError("KLL sketch: payload too short")
        magic, k, seed, n, levels, worst, var = _KLL_HEAD.unpack_from(data)
        if magic != _KLL_MAGIC or levels < 1:
            raise ValueError("KLL sketch: not a sketch payload")
        pos = _KLL_HEAD.size
        lengths = np.frombuffer(data, dtype="<i8", count=levels, offset=pos)
        pos += 8 * levels
        total = int(lengths.sum())
        if len(data) != pos + 8 * total or (lengths < 0).any():
            raise ValueError("KLL sketch: payload length does not match its header")
        items = np.frombuffer(data, dtype="<f8", count=total, offset=pos).astype(np.float64)
        s = cls(k, seed)
        s.n, s._worst, s._var = int(n), float(worst), float(var)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        s._levels = [items[bounds[i] : bounds[i + 1]].copy() for i in range(levels)]
        return s


@dataclass
class NumericSummary:
    """Exact moments and a quantile sketch of one numeric column, mergeable and compact."""

    moments: Moments
    sketch: KLLSketch

    @classmethod
    def of(cls, values: np.ndarray, k: int = DEFAULT_K, seed: int = 0) -> NumericSummary:
        x = finite(values)
        return cls(Moments.of(x), KLLSketch.of(x, k, seed))

    @classmethod
    def empty(cls, k: int = DEFAULT_K, seed: int = 0) -> NumericSummary:
        return cls(Moments(), KLLSketch(k, seed))

    def merge(self, other: NumericSummary) -> None:
        """Add ``other``'s values to this summary (in place; ``other`` is left as it is)."""
        self.moments = self.moments.merge(other.moments)
        self.sketch.merge(other.sketch)

    def to_bytes(self) -> bytes:
        m = self.moments
        return _NUM_HEAD.pack(_NUM_MAGIC, m.count, m.mean, m.m2, m.min, m.max) + (
            self.sketch.to_bytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> NumericSummary:
        if len(data) < _NUM_HEAD.size or data[:4] != _NUM_MAGIC:
            raise ValueError("numeric summary: not a summary payload")
        _, count, mean, m2, lo, hi = _NUM_HEAD.unpack_from(data)
        sketch = KLLSketch.from_bytes(data[_NUM_HEAD.size :])
        return cls(Moments(int(count), mean, m2, lo, hi), sketch)


def _merge_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two sorted arrays as one sorted array (timsort finds the two runs: linear time)."""
    if a.size == 0:
        return b.copy()
    if b.size == 0:
        return a
    return np.sort(np.concatenate([a, b]), kind="stable")

"""The training split's label statistics (count, mean, sample std, minimum; a weighted mean with
sample weights) from per-block moments merged exactly: what the train step needs for a
featureless baseline, label standardization and label checks, without a Ray Data aggregation.

Moments merge by Chan et al.'s parallel update (count, mean, sum of squared deviations), so the
result does not lose precision to a sum of squares over many rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelMoments:
    """Moments of the non-missing labels of some rows, and their weighted sums."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    lowest: float = math.inf
    weight_sum: float = 0.0
    weighted_label_sum: float = 0.0

    @classmethod
    def of(cls, labels: np.ndarray, weights: np.ndarray | None = None) -> LabelMoments:
        """The moments of ``labels`` (NaN = missing, skipped as Ray Data's aggregations skip
        nulls); with ``weights``, their weighted sums over every row."""
        y = np.asarray(labels, dtype=np.float64)
        w_sum = wy_sum = 0.0
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            w_sum, wy_sum = float(w.sum()), float((w * y).sum())
        y = y[~np.isnan(y)]
        if y.size == 0:
            return cls(weight_sum=w_sum, weighted_label_sum=wy_sum)
        mean = float(y.mean())
        return cls(int(y.size), mean, float(((y - mean) ** 2).sum()), float(y.min()), w_sum, wy_sum)

    def merge(self, other: LabelMoments) -> LabelMoments:
        n = self.count + other.count
        if n == 0:
            mean, m2 = 0.0, 0.0
        else:
            delta = other.mean - self.mean
            mean = self.mean + delta * other.count / n
            m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return LabelMoments(
            n,
            mean,
            m2,
            min(self.lowest, other.lowest),
            self.weight_sum + other.weight_sum,
            self.weighted_label_sum + other.weighted_label_sum,
        )

    @property
    def std(self) -> float | None:
        """The sample standard deviation (ddof 1, as Ray Data's ``std``); None below 2 rows."""
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else None

    @property
    def weighted_mean(self) -> float | None:
        """The weighted label mean; None when the weights sum to 0."""
        return self.weighted_label_sum / self.weight_sum if self.weight_sum > 0 else None


def merge_all(parts: Iterable[LabelMoments]) -> LabelMoments:
    """The moments of all the parts' rows together."""
    total = LabelMoments()
    for p in parts:
        total = total.merge(p)
    return total

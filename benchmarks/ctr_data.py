"""Criteo-like click data for the torch benchmarks: the built-in generator and a feature config."""

from __future__ import annotations

import pandas as pd

from components import generators
from components.features import CategoricalConfig, FeatureConfig


def ctr_frame(rows: int, seed: int) -> pd.DataFrame:
    """``rows`` rows of ``synthetic:ctr`` (13 count features, 26 categoricals, click label)."""
    params = {"rows": rows, "seed": seed, "block_rows": 100_000}
    blocks = [generators.generate_block(t) for t in generators.plan_blocks("ctr", params)]
    return pd.concat(blocks, ignore_index=True)


def ctr_features(hash_buckets: int = 1 << 12, log_counts: bool = True) -> FeatureConfig:
    """Categoricals hashed into ``hash_buckets``; counts through log1p (the usual DLRM
    preprocessing; trees do not care) and standardized."""
    cols = generators.columns("ctr", {})
    return FeatureConfig(
        numeric=tuple(cols["numeric"]),
        categorical=tuple(
            CategoricalConfig(c, encoding="hash", hash_buckets=hash_buckets)
            for c in cols["categorical"]
        ),
        standardize=True,
        log1p=tuple(cols["numeric"]) if log_counts else (),
    )

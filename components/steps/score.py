"""Batch scoring with Ray Data: an actor pool, each actor loading the bundle once.

Used by evaluation (scores for the whole test split) and by batch inference. Each actor calls
``Predictor.predict`` — the same code serving uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import ray.data

from components.predictor import Predictor


class ScoreBatch:
    """Ray Data callable class: load the bundle once per actor, score each batch."""

    def __init__(self, bundle_path: str, keep: Sequence[str]) -> None:
        self.predictor = Predictor.load(bundle_path)
        self.keep = list(keep)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        scores = self.predictor.predict_frame(batch)
        kept = batch[[c for c in self.keep if c in batch.columns]].reset_index(drop=True)
        return pd.concat([kept, scores.reset_index(drop=True)], axis=1)


def score_dataset(
    ds: ray.data.Dataset,
    bundle_path: str,
    keep: Sequence[str],
    actors: int = 1,
    batch_size: int = 4096,
    cpus_per_actor: float = 0.5,
) -> ray.data.Dataset:
    """Scores (and the ``keep`` columns) for every row of ``ds``; lazy."""
    return ds.map_batches(
        ScoreBatch,
        fn_constructor_kwargs={"bundle_path": bundle_path, "keep": list(keep)},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, actors)),
        batch_size=batch_size,
        batch_format="pandas",
        num_cpus=cpus_per_actor,
    )

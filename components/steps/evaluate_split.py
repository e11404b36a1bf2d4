"""Score a split and evaluate it inside Ray Data tasks: the driver receives one small part per
block (components.split_evaluation), never the rows.

``score_split`` scores every row with the winner's bundle (and the production version's, for
the gate, in the same pass: both outputs on the same rows) in an actor pool and materializes the
narrow result (kept columns + outputs) in the object store; ranking rows are then grouped by
query (a hash repartition on ``_group``) so every block holds whole queries. ``map_blocks`` runs a
function on each block and streams its results to the driver.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd
import ray.data

from components.predictor import Predictor
from components.split_evaluation import CHAMPION


class ScoreWith:
    """Ray Data callable class: the winner's outputs (and the champion's, prefixed) beside the
    kept columns; each bundle loaded once per actor."""

    def __init__(self, bundle_path: str, keep: Sequence[str], champion_path: str | None) -> None:
        self.ours = Predictor.load(bundle_path)
        self.theirs = Predictor.load(champion_path) if champion_path else None
        self.keep = list(keep)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        kept = batch[[c for c in self.keep if c in batch.columns]].reset_index(drop=True)
        frames = [kept, self.ours.predict_frame(batch).reset_index(drop=True)]
        if self.theirs is not None:
            theirs = self.theirs.predict_frame(batch).reset_index(drop=True)
            frames.append(theirs.add_prefix(CHAMPION))
        return pd.concat(frames, axis=1)


def score_split(
    ds: ray.data.Dataset,
    bundle_path: str,
    keep: Sequence[str],
    champion_path: str | None = None,
    group: str | None = None,
    actors: int = 1,
    batch_size: int = 4096,
    cpus_per_actor: float = 0.5,
) -> ray.data.Dataset:
    """Every row's outputs (and ``keep`` columns), materialized; with ``group``, blocks hold
    whole queries."""
    scored = ds.map_batches(
        ScoreWith,
        fn_constructor_kwargs={
            "bundle_path": bundle_path,
            "keep": list(keep),
            "champion_path": champion_path,
        },
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, actors)),
        batch_size=batch_size,
        batch_format="pandas",
        num_cpus=cpus_per_actor,
    ).materialize()
    if group is not None:
        scored = scored.repartition(max(1, scored.num_blocks()), keys=[group]).materialize()
    return scored


def _one_part(batch: pd.DataFrame, fn: Callable[[pd.DataFrame], Any]) -> pd.DataFrame:
    # pickle carries a computed part between rayline's own processes (never a model artifact)
    return pd.DataFrame({"part": [pickle.dumps(fn(batch))]})


def map_blocks(ds: ray.data.Dataset, fn: Callable[[pd.DataFrame], Any]) -> Iterator[Any]:
    """``fn(block)`` for every block of ``ds`` (one batch per block), in tasks; the results
    stream to the driver one at a time."""
    parts = ds.map_batches(
        _one_part, batch_format="pandas", batch_size=None, fn_kwargs={"fn": fn}, num_cpus=0.5
    )
    for row in parts.iter_rows():
        yield pickle.loads(row["part"])


def drop_champion(ds: ray.data.Dataset) -> ray.data.Dataset:
    """The scored split without the champion's columns (what the predictions file holds)."""
    theirs = [c for c in ds.columns() if c.startswith(CHAMPION)]
    return ds.drop_columns(theirs) if theirs else ds

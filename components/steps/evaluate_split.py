"""Score a split and evaluate it inside Ray Data tasks: the driver receives one small part per
block (components.split_evaluation), never the rows.

``score_split`` scores every row with the winner's bundle (and the production version's, for
the gate, in the same pass: both outputs on the same rows) in tasks and materializes the narrow
result (kept columns + outputs) in the object store; ranking rows are then grouped by query (a
hash repartition on ``_group``) so every block holds whole queries. ``map_blocks`` runs a
function on each block and streams its results to the driver.
"""

from __future__ import annotations

import functools
import pickle
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd
import ray.data

from components.predictor import Predictor
from components.split_evaluation import CHAMPION


class ScoreWith:
    """The winner's outputs (and the champion's, prefixed) beside the kept columns."""

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


@functools.lru_cache(maxsize=2)
def _scorer(
    call: str, bundle_path: str, keep: tuple[str, ...], champion_path: str | None
) -> ScoreWith:
    """The bundles loaded once per worker process and ``score_split`` call (``call`` is new for
    every call, so a bundle rewritten at the same path is never scored from a stale copy)."""
    return ScoreWith(bundle_path, keep, champion_path)


def _score_batch(
    batch: pd.DataFrame,
    call: str,
    bundle_path: str,
    keep: tuple[str, ...],
    champion_path: str | None,
) -> pd.DataFrame:
    return _scorer(call, bundle_path, keep, champion_path)(batch)


def score_split(
    ds: ray.data.Dataset,
    bundle_path: str,
    keep: Sequence[str],
    champion_path: str | None = None,
    group: str | None = None,
    tasks: int = 1,
    batch_size: int = 4096,
    cpus_per_task: float = 0.5,
) -> ray.data.Dataset:
    """Every row's outputs (and ``keep`` columns), materialized; with ``group``, blocks hold
    whole queries. Up to ``tasks`` tasks at a time; tasks rather than an actor pool, since Ray
    reuses the processes that ran earlier tasks, where a pool starts new ones on every call
    (seconds here, whatever the split's size)."""
    scored = ds.map_batches(
        _score_batch,
        fn_kwargs={
            "call": uuid.uuid4().hex,
            "bundle_path": bundle_path,
            "keep": tuple(keep),
            "champion_path": champion_path,
        },
        compute=ray.data.TaskPoolStrategy(size=max(1, tasks)),
        batch_size=batch_size,
        batch_format="pandas",
        num_cpus=cpus_per_task,
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

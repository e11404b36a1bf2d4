"""A training shard as a stream of frames: re-cut at query boundaries, gathered into windows.

Pure pandas (no Ray): the adapters feed these the batches of a Ray Data shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd


def whole_queries(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Re-cut a stream of frames sorted by ``_group`` so that no query spans two of them (the
    last query of each batch is held back and leads the next); a ValueError if the stream is not
    sorted (its rows would not form contiguous queries)."""
    held: pd.DataFrame | None = None
    for batch in batches:
        frame = batch if held is None else pd.concat([held, batch], ignore_index=True)
        g = frame["_group"].to_numpy()
        if (g[1:] < g[:-1]).any():
            raise ValueError("training rows are not sorted by query (_group)")
        cut = int(np.searchsorted(g, g[-1], side="left"))  # the last query's first row
        if cut > 0:
            yield frame.iloc[:cut]
        held = frame.iloc[cut:]
    if held is not None and len(held):
        yield held


def windows(frames: Iterable[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """Consecutive frames joined into windows of at least ``rows`` rows (the last may hold
    fewer); no frame is cut, so whole-query frames make whole-query windows."""
    pending: list[pd.DataFrame] = []
    size = 0
    for frame in frames:
        if not len(frame):
            continue
        pending.append(frame)
        size += len(frame)
        if size >= rows:
            yield pending[0] if len(pending) == 1 else pd.concat(pending, ignore_index=True)
            pending, size = [], 0
    if pending:
        yield pd.concat(pending, ignore_index=True)

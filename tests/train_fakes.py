"""Stand-ins for what ``ray.train`` hands a worker function, to run one without Ray."""

from __future__ import annotations

import pandas as pd


class Shard:
    """A dataset shard: ``materialize().to_pandas()`` gives the frame."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def materialize(self) -> Shard:
        return self

    def to_pandas(self) -> pd.DataFrame:
        return self.frame


class Context:
    """``ray.train.get_context()``: this worker's rank in a group of ``world``."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    def get_world_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world

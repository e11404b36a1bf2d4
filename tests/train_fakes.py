"""Stand-ins for what ``ray.train`` hands a worker function, to run one without Ray."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pyarrow as pa

from components.encoded import encode_table
from components.features import FeatureTransform
from components.validation import WEIGHT


class Shard:
    """A dataset shard: ``materialize().to_pandas()`` gives the frame, ``iter_batches`` its
    rows in order."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def materialize(self) -> Shard:
        return self

    def to_pandas(self) -> pd.DataFrame:
        return self.frame

    def iter_batches(self, *, batch_size: int, batch_format: str) -> Iterator[pd.DataFrame]:
        assert batch_format == "pandas"
        for i in range(0, len(self.frame), batch_size):
            yield self.frame.iloc[i : i + batch_size].reset_index(drop=True)


class Context:
    """``ray.train.get_context()``: this worker's rank in a group of ``world``."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    def get_world_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world


def encoded_shard(frame: pd.DataFrame, transform: FeatureTransform, label: str = "label") -> Shard:
    """The shard a worker gets of ``frame``: encoded as ``train_common.encode_splits`` encodes
    it (label, query, weight, row key and sparse columns kept), the sparse columns Arrow-backed
    as Ray Data's pandas batches give them."""
    keep = [label, "_group", WEIGHT, "_row_key"] + [p.name for p in transform.sparse]
    out = encode_table(pa.Table.from_pandas(frame), transform, keep).to_pandas()
    for p in transform.sparse:
        out[p.name] = frame[p.name].reset_index(drop=True)
    return Shard(out)

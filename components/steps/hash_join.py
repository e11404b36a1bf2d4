"""An inner join of two Ray datasets in plain tasks, hash-partitioned on the join keys.

A round of tasks cuts every block of both sides into ``partitions`` parts by a hash of its key
columns; one task per partition joins its parts (pyarrow's hash join); with ``regroup``, a second
round moves the joined rows so each output block holds all rows of a ``regroup`` value (e.g.
whole queries). One partition: a single task joins everything. No Ray Data shuffle: its
aggregator actors take seconds to start on every call, whatever the data's size, and no row
reaches the driver (it holds a reference per block and partition).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import ray.data


def _partition_of(table: pa.Table, on: Sequence[str], partitions: int) -> np.ndarray:
    keys = table.select(list(on)).to_pandas()
    return pd.util.hash_pandas_object(keys, index=False).to_numpy() % np.uint64(partitions)


@ray.remote
def _cut(table: pa.Table, on: list[str], partitions: int) -> tuple[pa.Table, ...]:
    """The block's rows in ``partitions`` parts by the hash of ``on``, one object each."""
    part = _partition_of(table, on, partitions)
    return tuple(table.filter(pa.array(part == j)) for j in range(partitions))


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="default")


@ray.remote
def _join(on: list[str], n_left: int, *tables: pa.Table) -> pa.Table:
    """The first ``n_left`` tables (the left side) joined with the rest on ``on``."""
    left, right = _concat(tables[:n_left]), _concat(tables[n_left:])
    return left.join(right, keys=list(on), join_type="inner")


@ray.remote
def _gather(*tables: pa.Table) -> pa.Table:
    return _concat(tables)


def check_keys(left: Any, right: Any, on: Sequence[str], names: tuple[str, str]) -> None:
    """Refuse keys missing on a side or typed differently on the two sides, naming them
    (``left``, ``right``: a pyarrow or Ray Data schema)."""
    types = [dict(zip(side.names, side.types, strict=True)) for side in (left, right)]
    for key in on:
        for typed, name in zip(types, names, strict=True):
            if key not in typed:
                raise ValueError(f"{name}: no join key column {key!r}")
        lt, rt = types[0][key], types[1][key]
        if lt != rt:
            raise ValueError(
                f"join key {key!r} is {lt} in the {names[0]} but {rt} in the {names[1]}"
            )


def _split_all(refs: list[Any], on: list[str], partitions: int) -> list[list[Any]]:
    """Each partition's parts, one per block."""
    outs: list[Any] = [_cut.options(num_returns=partitions).remote(r, on, partitions) for r in refs]
    return [[o[j] for o in outs] for j in range(partitions)]


def hash_join(
    left: ray.data.Dataset,
    right: ray.data.Dataset,
    on: Sequence[str],
    partitions: int = 1,
    regroup: str | None = None,
) -> ray.data.Dataset:
    """``left`` inner-joined with ``right`` on ``on`` (both datasets run to their blocks here),
    materialized in the object store; with ``regroup``, each block holds every row of its
    ``regroup`` values."""
    keys = list(on)
    lrefs, rrefs = left.to_arrow_refs(), right.to_arrow_refs()
    if partitions <= 1 or not lrefs or not rrefs:
        joined = [_join.remote(keys, len(lrefs), *lrefs, *rrefs)]
    else:
        lparts, rparts = _split_all(lrefs, keys, partitions), _split_all(rrefs, keys, partitions)
        joined = [
            _join.remote(keys, len(lp), *lp, *rp) for lp, rp in zip(lparts, rparts, strict=True)
        ]
        if regroup is not None:
            joined = [_gather.remote(*p) for p in _split_all(joined, [regroup], partitions)]
    return ray.data.from_arrow_refs(joined)

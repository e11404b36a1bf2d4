"""The task-based hash join (components.steps.hash_join): the rows pandas' inner merge gives,
in one partition or several, and with ``regroup`` every group's rows in one block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import ray.data

from components.steps.hash_join import check_keys, hash_join

pytestmark = pytest.mark.usefixtures("ray_session")


def _sides() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 3000
    left = pd.DataFrame(
        {
            "request_id": [f"r{i // 3}" for i in range(n)],
            "row": np.arange(n) % 3,
            "_group": [f"q{i // 7}" for i in range(n)],
            "score": rng.random(n),
        }
    )
    picked = rng.choice(n, 2000, replace=False)  # a third of the rows have no label
    right = left.iloc[picked][["request_id", "row"]].assign(label=rng.integers(0, 2, 2000))
    right = pd.concat([right, pd.DataFrame({"request_id": ["nope"], "row": [0], "label": [1]})])
    return left, right.reset_index(drop=True)


def _blocks(frame: pd.DataFrame, n: int) -> ray.data.Dataset:
    parts = [frame.iloc[i] for i in np.array_split(np.arange(len(frame)), n)]
    return ray.data.from_arrow([pa.Table.from_pandas(p, preserve_index=False) for p in parts])


@pytest.mark.parametrize("partitions", [1, 3])
def test_the_join_equals_pandas_inner_merge(partitions: int) -> None:
    left, right = _sides()
    joined = hash_join(
        _blocks(left, 5), _blocks(right, 4), ["request_id", "row"], partitions, "_group"
    )
    got = joined.to_pandas().sort_values(["request_id", "row"], ignore_index=True)
    want = left.merge(right, on=["request_id", "row"]).sort_values(
        ["request_id", "row"], ignore_index=True
    )
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)
    groups = [set(b["_group"]) for b in joined.iter_batches(batch_size=None, batch_format="pandas")]
    assert len(groups) == partitions
    for i, g in enumerate(groups):  # whole queries: no group in two blocks
        assert not any(g & h for h in groups[i + 1 :])


def test_keys_missing_or_typed_differently_are_named() -> None:
    log = pa.schema([("request_id", pa.string()), ("row", pa.int64())])
    with pytest.raises(ValueError, match="labels: no join key column 'row'"):
        check_keys(
            log, pa.schema([("request_id", pa.string())]), ["request_id", "row"], ("log", "labels")
        )
    typed = pa.schema([("request_id", pa.string()), ("row", pa.string())])
    with pytest.raises(
        ValueError, match="join key 'row' is int64 in the log but string in the labels"
    ):
        check_keys(log, typed, ["request_id", "row"], ("log", "labels"))

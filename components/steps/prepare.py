"""Split a materialized dataset and fit the feature transform on the training split."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import ray.data
from ray.data.expressions import col

from components import splits
from components.features import FeatureConfig, FeatureTransform, fit_transform, partial_stats

# Training shards are assigned by `_bucket % num_workers`; 1,024 buckets keep shards even for
# any worker count up to a few hundred while a query (ranking) stays in one bucket.
NUM_BUCKETS = 1024


@dataclass
class Splits:
    train: ray.data.Dataset
    valid: ray.data.Dataset
    test: ray.data.Dataset
    rows: dict[str, int]
    groups: dict[str, int]


def _add_split_columns(batch: pd.DataFrame, plan: splits.SplitPlan, shard_key: str) -> pd.DataFrame:
    batch = batch.copy()
    batch["_split"] = splits.assign_splits(batch, plan)
    batch["_bucket"] = (batch[shard_key].to_numpy() % NUM_BUCKETS).astype(np.int64)
    return batch


def _add_bucket(batch: pd.DataFrame, shard_key: str) -> pd.DataFrame:
    batch = batch.copy()
    batch["_bucket"] = (batch[shard_key].to_numpy() % NUM_BUCKETS).astype(np.int64)
    return batch


def _count_groups(ds: ray.data.Dataset, has_group: bool) -> int:
    return len(ds.unique("_group")) if has_group else 0


def split_dataset(
    ds: ray.data.Dataset, plan: splits.SplitPlan, has_group: bool, stratify: bool
) -> Splits:
    """Assign every row to train/valid/test (see components.splits) and materialize each part."""
    shard_key = "_group" if has_group else "_row_key"
    if plan.method == "random" and stratify:
        keys = ds.select_columns(["_row_key", plan.label]).to_pandas()
        u = splits.split_unit(keys, plan)
        cuts = splits.stratified_cuts(
            u, keys[plan.label].to_numpy(dtype=np.float64), plan.train, plan.valid
        )
        plan = replace(plan, class_cuts=cuts)
    tagged = ds.map_batches(
        _add_split_columns, batch_format="pandas", fn_kwargs={"plan": plan, "shard_key": shard_key}
    ).materialize()
    parts = {
        name: tagged.filter(expr=col("_split") == i).drop_columns(["_split"]).materialize()
        for i, name in enumerate(splits.SPLIT_NAMES)
    }
    rows = {name: part.count() for name, part in parts.items()}
    groups = dict.fromkeys(splits.SPLIT_NAMES, 0)
    if has_group:  # one pass over two narrow columns (each Ray Data execution has a fixed cost)
        keys = tagged.select_columns(["_split", "_group"]).to_pandas()
        counts = keys.groupby("_split")["_group"].nunique()
        groups = {name: int(counts.get(i, 0)) for i, name in enumerate(splits.SPLIT_NAMES)}
    return Splits(parts["train"], parts["valid"], parts["test"], rows, groups)


def explicit_splits(parts: dict[str, ray.data.Dataset], has_group: bool) -> Splits:
    """Separate train/valid/test sources: add shard buckets and count."""
    shard_key = "_group" if has_group else "_row_key"
    tagged = {
        name: ds.map_batches(
            _add_bucket, batch_format="pandas", fn_kwargs={"shard_key": shard_key}
        ).materialize()
        for name, ds in parts.items()
    }
    rows = {name: d.count() for name, d in tagged.items()}
    groups = {name: _count_groups(d, has_group) for name, d in tagged.items()}
    return Splits(tagged["train"], tagged["valid"], tagged["test"], rows, groups)


def carve_valid(
    parts: dict[str, ray.data.Dataset], plan: splits.SplitPlan, has_group: bool, stratify: bool
) -> Splits:
    """Explicit train and test sources without a valid one: ``plan`` (components.splits
    ``carve_plan``) holds the valid split out of train; test is taken as it is."""
    carved = split_dataset(parts["train"], plan, has_group, stratify)
    shard_key = "_group" if has_group else "_row_key"
    test = (
        parts["test"]
        .map_batches(_add_bucket, batch_format="pandas", fn_kwargs={"shard_key": shard_key})
        .materialize()
    )
    rows = {"train": carved.rows["train"], "valid": carved.rows["valid"], "test": test.count()}
    groups = {
        "train": carved.groups["train"],
        "valid": carved.groups["valid"],
        "test": _count_groups(test, has_group),
    }
    return Splits(carved.train, carved.valid, test, rows, groups)


def _stats_batch(batch: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    return pd.DataFrame({"stats": [json.dumps(partial_stats(batch, config))]})


def fit_features(train: ray.data.Dataset, config: FeatureConfig) -> FeatureTransform:
    """Per-block statistics in parallel, merged on the driver into one fitted transform."""
    rows: list[dict[str, Any]] = train.map_batches(
        _stats_batch, batch_format="pandas", batch_size=None, fn_kwargs={"config": config}
    ).take_all()
    return fit_transform([json.loads(r["stats"]) for r in rows], config)

"""Split a materialized dataset and fit the feature transform on the training split."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import ray.data

from components import drift, label_stats, splits
from components.features import (
    COLUMN,
    COUNT,
    VALUE,
    FeatureConfig,
    FeatureTransform,
    cut_vocabularies,
    empty_counts,
    fit_transform,
    merge_partials,
    partial_stats,
    value_counts_long,
    vocabularies_of,
)
from components.hashing import mix64
from components.sketches import NumericSummary

# Training shards are assigned by `_bucket % num_workers`; 1,024 buckets keep shards even for
# any worker count up to a few hundred while a query (ranking) stays in one bucket.
NUM_BUCKETS = 1024


@dataclass
class Splits:
    """The three splits (materialized) and what the tasks counted in them."""

    train: ray.data.Dataset
    valid: ray.data.Dataset
    test: ray.data.Dataset
    rows: dict[str, int]
    groups: dict[str, int]
    # rows per class in each split (stratified splits): split name -> {class label: rows}
    classes: dict[str, dict[float, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def class_line(self) -> str | None:
        """Rows per class in each split, as the split step prints them (None: not stratified)."""
        if not self.classes:
            return None
        shown = "; ".join(
            f"{name} " + ", ".join(f"{cls:g}: {n:,}" for cls, n in counts.items())
            for name, counts in self.classes.items()
        )
        return f"rows per class: {shown}"


# The split step runs plain Ray tasks over the dataset's blocks: a Ray Data pass costs ~0.2-0.3 s
# of fixed overhead here whatever the data's size (the split took five of them), a round of
# tasks over the same blocks ~0.03 s. Small task results wait in the memory of the process that
# submitted the task until they are fetched, so the summaries streamed to the driver are
# submitted IN_FLIGHT at a time, and the group ids are counted under a task of their own.
IN_FLIGHT = 64

# What a task counted in the rows it made: (rows, rows per class).
Counts = tuple[int, dict[float, int]]


def _columns(table: pa.Table, names: list[str]) -> pd.DataFrame:
    """Only the named columns of a block as numpy-backed pandas (the rest is never converted)."""
    return pd.DataFrame({name: table.column(name).to_numpy() for name in names})


def _counted(table: pa.Table, label: str | None, shard_key: str) -> tuple[pa.Table, Counts]:
    """The table with its shard bucket, and its rows and rows per class (with a label)."""
    if "_bucket" in table.column_names:
        table = table.drop_columns(["_bucket"])
    bucket = (table.column(shard_key).to_numpy() % NUM_BUCKETS).astype(np.int64)
    classes: dict[float, int] = {}
    if label is not None:
        values, n = np.unique(table.column(label).to_numpy().astype(np.float64), return_counts=True)
        classes = {float(v): int(c) for v, c in zip(values, n, strict=True)}
    return table.append_column("_bucket", pa.array(bucket)), (table.num_rows, classes)


def _assign_columns(plan: splits.SplitPlan) -> list[str]:
    """The columns ``splits.assign_splits`` reads under ``plan``."""
    if plan.method == "time":
        return ["_ts"]
    key = ["_group" if plan.method == "group" else "_row_key"]
    return [*key, plan.label] if plan.class_cuts else key


@ray.remote(num_returns=4)
def _split_block(
    block: pa.Table, plan: splits.SplitPlan, shard_key: str, label: str | None
) -> tuple[pa.Table, pa.Table, pa.Table, list[Counts]]:
    """A block's train, valid and test rows, each with its shard bucket, and what each holds."""
    assigned = splits.assign_splits(_columns(block, _assign_columns(plan)), plan)
    made = [_counted(block.filter(pa.array(assigned == i)), label, shard_key) for i in range(3)]
    return made[0][0], made[1][0], made[2][0], [counts for _, counts in made]


@ray.remote(num_returns=2)
def _bucket_block(block: pa.Table, shard_key: str, label: str | None) -> tuple[pa.Table, Counts]:
    return _counted(block, label, shard_key)


@ray.remote
def _summarize_block(
    block: pa.Table, plan: splits.SplitPlan, windows: list[splits.Window]
) -> pd.DataFrame:
    """A block's share of one pass of the stratified cut search (bounded, see components.splits)."""
    frame = _columns(block, [*_assign_columns(plan), plan.label])
    return splits.stratify_summary(frame, plan, windows)


def _stream(fn: Any, blocks: list[ray.ObjectRef], *args: Any) -> Iterator[Any]:
    """``fn(block, *args)`` over every block, IN_FLIGHT tasks at a time, results as they end."""
    pending: list[ray.ObjectRef] = []
    for block in blocks:
        pending.append(fn.remote(block, *args))
        if len(pending) >= IN_FLIGHT:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


@ray.remote
def _group_ids(block: pa.Table, group: str, partitions: int) -> tuple[np.ndarray, ...]:
    """A block's distinct group ids in ``partitions`` hash partitions, one object each."""
    ids = np.unique(block.column(group).to_numpy())
    part = mix64(ids) % np.uint64(partitions)
    return tuple(ids[part == j] for j in range(partitions))


@ray.remote
def _distinct(*chunks: np.ndarray) -> int:
    """Distinct ids of one hash partition, over the chunks every block sent it."""
    return len(np.unique(np.concatenate(chunks))) if chunks else 0


@ray.remote
def _distinct_in_blocks(group: str, *blocks: pa.Table) -> int:
    """Distinct group ids of a few blocks, read in one task."""
    ids = [np.unique(b.column(group).to_numpy()) for b in blocks]
    return len(np.unique(np.concatenate(ids))) if ids else 0


@ray.remote(num_cpus=0)
def _distinct_partitioned(blocks: list[ray.ObjectRef], group: str, partitions: int) -> int:
    """Distinct group ids of many blocks: a map over the blocks and a reduce per hash partition
    of the ids, so no task holds every id (and, the map's results waiting in this task's
    memory, the driver none)."""
    outs: list[Any] = [
        _group_ids.options(num_returns=partitions).remote(b, group, partitions) for b in blocks
    ]
    return sum(ray.get([_distinct.remote(*[o[j] for o in outs]) for j in range(partitions)]))


# A part of up to this many blocks has its group ids counted by one task; above, by one reducer
# per this many blocks (at most 64), each holding one hash partition of the ids.
BLOCKS_PER_REDUCER = 16


def _count_groups(blocks: list[ray.ObjectRef], group: str) -> ray.ObjectRef:
    """The number of distinct group ids in the blocks, counted in tasks (a reference to it)."""
    partitions = min(len(blocks) // BLOCKS_PER_REDUCER, 64)
    if partitions < 2:
        return _distinct_in_blocks.remote(group, *blocks)
    return _distinct_partitioned.remote(blocks, group, partitions)


def _stratified(
    blocks: list[ray.ObjectRef], plan: splits.SplitPlan
) -> tuple[splits.SplitPlan, dict[float, tuple[int, int, int]]]:
    """The plan with its per-class cut points (``splits.StratifiedCutFinder``: two rounds of
    tasks up to 67M rows per class) and the (train, valid, test) rows they give each class."""
    finder = splits.StratifiedCutFinder(plan.train, plan.valid)
    finder.run(lambda windows: _stream(_summarize_block, blocks, plan, windows))
    return replace(plan, class_cuts=finder.cuts()), finder.planned()


# Each split as its blocks (made by tasks) and what the tasks counted in each block.
Parts = dict[str, tuple[list[ray.ObjectRef], list[Counts]]]


def _assign(
    blocks: list[ray.ObjectRef], plan: splits.SplitPlan, has_group: bool, label: str | None
) -> Parts:
    """Every block cut into its train, valid and test rows in one round of tasks."""
    shard_key = "_group" if has_group else "_row_key"
    outs: list[Any] = [_split_block.remote(b, plan, shard_key, label) for b in blocks]
    counts = ray.get([o[3] for o in outs])  # a few numbers per block
    return {
        name: ([o[i] for o in outs], [c[i] for c in counts])
        for i, name in enumerate(splits.SPLIT_NAMES)
    }


def _with_buckets(
    ds: ray.data.Dataset, has_group: bool, label: str | None = None
) -> tuple[list[ray.ObjectRef], list[Counts]]:
    shard_key = "_group" if has_group else "_row_key"
    outs: list[Any] = [_bucket_block.remote(b, shard_key, label) for b in ds.to_arrow_refs()]
    return [o[0] for o in outs], ray.get([o[1] for o in outs])


def _assigned_names(plan: splits.SplitPlan) -> list[str]:
    """The splits a plan gives rows to (a carve-out gives none to test)."""
    fractions = (plan.train, plan.valid, 1.0 - plan.train - plan.valid)
    return [n for n, f in zip(splits.SPLIT_NAMES, fractions, strict=True) if f > 1e-9]


def _check_stratified(
    classes: dict[str, dict[float, int]],
    planned: dict[float, tuple[int, int, int]],
    names: list[str],
) -> list[str]:
    """The realised rows per class must be what the cut points give; warnings for classes some
    split got none of (too few rows to stratify)."""
    warnings = []
    for cls, rows in planned.items():
        want = {n: r for n, r in zip(splits.SPLIT_NAMES, rows, strict=True) if n in names}
        got = {n: classes[n].get(cls, 0) for n in want}
        if got != want:
            raise RuntimeError(
                f"stratified split: class {cls:g} has rows {got} where its cut points give "
                f"{want}: the data changed between passes"
            )
        missing = [n for n, r in want.items() if r == 0]
        if missing:
            shown = ", ".join(f"{n} {r:,}" for n, r in want.items())
            warnings.append(
                f"class {cls:g} has {sum(rows):,} row(s), none in {' or '.join(missing)} "
                f"({shown}): too few to stratify across every split"
            )
    return warnings


def _result(
    parts: Parts,
    has_group: bool,
    plan: splits.SplitPlan | None = None,
    planned: dict[float, tuple[int, int, int]] | None = None,
) -> Splits:
    """Splits (one materialized dataset each, over the blocks the tasks made) with the tasks'
    counts; with a stratified ``plan``, its realised rows per class checked."""
    rows, classes = {}, {}
    for name, (_, counts) in parts.items():
        rows[name] = sum(n for n, _ in counts)
        merged: dict[float, int] = {}
        for _, per_class in counts:
            for cls, n in per_class.items():
                merged[cls] = merged.get(cls, 0) + n
        classes[name] = dict(sorted(merged.items()))
    groups = dict.fromkeys(parts, 0)
    if has_group:
        names = list(parts)
        counted = ray.get([_count_groups(parts[n][0], "_group") for n in names])
        groups = dict(zip(names, counted, strict=True))
    warnings: list[str] = []
    if plan is not None and planned is not None:
        warnings = _check_stratified(classes, planned, _assigned_names(plan))
    else:
        classes = {}
    data = {name: ray.data.from_arrow_refs(blocks) for name, (blocks, _) in parts.items()}
    return Splits(data["train"], data["valid"], data["test"], rows, groups, classes, warnings)


def split_dataset(
    ds: ray.data.Dataset, plan: splits.SplitPlan, has_group: bool, stratify: bool
) -> Splits:
    """Assign every row to train/valid/test in tasks over the dataset's blocks (see
    components.splits), each split materialized once, and count rows, queries and (stratified)
    rows per class in those tasks: nothing per row reaches the driver."""
    blocks = ds.to_arrow_refs()
    planned = None
    if plan.method == "random" and stratify:
        plan, planned = _stratified(blocks, plan)
    label = plan.label if planned is not None else None
    return _result(_assign(blocks, plan, has_group, label), has_group, plan, planned)


def explicit_splits(parts: dict[str, ray.data.Dataset], has_group: bool) -> Splits:
    """Separate train/valid/test sources: add shard buckets and count."""
    return _result({name: _with_buckets(ds, has_group) for name, ds in parts.items()}, has_group)


def carve_valid(
    parts: dict[str, ray.data.Dataset], plan: splits.SplitPlan, has_group: bool, stratify: bool
) -> Splits:
    """Explicit train and test sources without a valid one: ``plan`` (components.splits
    ``carve_plan``) holds the valid split out of train; test is taken as it is."""
    blocks = parts["train"].to_arrow_refs()
    planned = None
    if plan.method == "random" and stratify:
        plan, planned = _stratified(blocks, plan)
    label = plan.label if planned is not None else None
    held = _assign(blocks, plan, has_group, label)
    held["test"] = _with_buckets(parts["test"], has_group, label)  # the carve's own is empty
    return _result(held, has_group, plan, planned)


# Feature fitting keeps the driver's memory flat (DESIGN.md, principle 9): per-block statistics
# are merged in tasks, vocabularies are counted and cut in a hash-partitioned count in tasks, and
# the driver receives one merged summary and the kept values only. Plain tasks over the split's
# blocks, as the split step runs: a Ray Data hash shuffle starts its aggregator actors on every
# run (~4 s here, whatever the data's size), a round of tasks over the same blocks ~0.05 s.
MERGE_FAN_IN = 64  # per-block summaries merged by one task (two levels of merging beyond this)


def _frame(block: pa.Table, names: list[str]) -> pd.DataFrame:
    """Only the named columns of a block as pandas (the rest is never converted)."""
    return block.select(names).to_pandas()


def _stats_columns(config: FeatureConfig) -> list[str]:
    """The columns the statistics read (one categorical for the row count when nothing else)."""
    needed = [*config.numeric, *(c.name for c in config.sparse)]
    return needed or [c.name for c in config.categorical[:1]]


@ray.remote(num_returns=2)
def _block_stats(block: pa.Table, config: FeatureConfig, names: list[str]) -> tuple[int, bytes]:
    """One block's bounded statistics and a key from their content (the merge order is by key,
    so the result does not depend on the blocks' order)."""
    frame = _frame(block, names) if names else block.to_pandas()
    stats = json.dumps(partial_stats(frame, config, vocabularies=False)).encode()
    key = int.from_bytes(hashlib.blake2b(stats, digest_size=8).digest(), "little", signed=True)
    return key, stats


@ray.remote
def _merge_stats(keys: list[int], *stats: bytes) -> bytes:
    """Statistics merged in key order (a sketch's merge is not order-free)."""
    ordered = sorted(zip(keys, stats, strict=True), key=lambda kv: kv[0])
    return json.dumps(merge_partials([json.loads(s) for _, s in ordered])).encode()


def _merged_statistics(train: ray.data.Dataset, config: FeatureConfig) -> dict[str, Any]:
    """Numeric summaries, row count and sparse maxima of the whole split, merged in tasks: up to
    ``MERGE_FAN_IN`` blocks in one task, else about sqrt(blocks) groups of blocks (by their
    content key), then one. The driver holds a key and a reference per block."""
    names = _stats_columns(config)
    outs: list[Any] = [_block_stats.remote(b, config, names) for b in train.to_arrow_refs()]
    if not outs:
        raise ValueError("cannot fit features on an empty training split")
    keys = [int(k) for k in ray.get([o[0] for o in outs])]
    refs = [o[1] for o in outs]
    if len(refs) > MERGE_FAN_IN:
        groups = math.isqrt(len(refs) - 1) + 1
        members: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            members.setdefault(k % groups, []).append(i)
        firsts = sorted(members)
        refs = [
            _merge_stats.remote([keys[i] for i in members[g]], *[refs[i] for i in members[g]])
            for g in firsts
        ]
        keys = firsts
    result: dict[str, Any] = json.loads(ray.get(_merge_stats.remote(keys, *refs)))
    return result


def _summed(counts: list[pd.DataFrame]) -> pd.DataFrame:
    """Long-format value counts with each (column, value) once, its counts summed."""
    frames = [c for c in counts if len(c)]
    if not frames:
        return empty_counts()
    whole = pd.concat(frames, ignore_index=True)
    summed = whole.groupby([COLUMN, VALUE], sort=False)[COUNT].sum().reset_index()
    return pd.DataFrame(
        {
            COLUMN: summed[COLUMN].to_numpy(dtype=np.int32),
            VALUE: summed[VALUE].to_numpy(dtype=object),
            COUNT: summed[COUNT].to_numpy(dtype=np.int64),
        }
    )


@ray.remote
def _kept_in_blocks(config: FeatureConfig, names: list[str], *blocks: pa.Table) -> pd.DataFrame:
    """The vocabularies' kept values of a few blocks, counted and cut in one task."""
    return cut_vocabularies(
        _summed([value_counts_long(_frame(b, names), config) for b in blocks]), config
    )


@ray.remote
def _value_counts_partitioned(
    block: pa.Table, config: FeatureConfig, names: list[str], partitions: int
) -> tuple[pd.DataFrame, ...]:
    """A block's value counts in ``partitions`` hash partitions of the values, one object each."""
    counts = value_counts_long(_frame(block, names), config)
    values = counts[VALUE].to_numpy(dtype=object)
    part = pd.util.hash_array(values) % np.uint64(partitions) if len(values) else values
    return tuple(counts[part == j].reset_index(drop=True) for j in range(partitions))


@ray.remote
def _kept_in_partition(config: FeatureConfig, *chunks: pd.DataFrame) -> pd.DataFrame:
    """One hash partition's values summed over the chunks every block sent it, then cut: each
    value's whole count is in one partition, so the cut keeps what the whole would keep."""
    return cut_vocabularies(_summed(list(chunks)), config)


@ray.remote(num_cpus=0)
def _kept_partitioned(
    blocks: list[ray.ObjectRef], config: FeatureConfig, names: list[str], partitions: int
) -> pd.DataFrame:
    """Many blocks' kept values: a map over the blocks and a count per hash partition of the
    values, so no task holds every distinct value (and, the map's results waiting in this
    task's memory, the driver none); the partitions' cuts are cut again."""
    outs: list[Any] = [
        _value_counts_partitioned.options(num_returns=partitions).remote(
            b, config, names, partitions
        )
        for b in blocks
    ]
    kept = ray.get(
        [_kept_in_partition.remote(config, *[o[j] for o in outs]) for j in range(partitions)]
    )
    return cut_vocabularies(pd.concat(kept, ignore_index=True), config)


def _kept_counts(train: ray.data.Dataset, config: FeatureConfig) -> pd.DataFrame:
    """Every vocabulary column counted in tasks (per-block value counts summed per (column,
    value): in one task below ``BLOCKS_PER_REDUCER`` * 2 blocks, else in hash partitions
    of the values, one reducer per ``BLOCKS_PER_REDUCER`` blocks, at most 64), cut by
    min_frequency and max_vocab_size before anything reaches the driver. The driver holds
    O(max_vocab_size) values per column, whatever the rows or cardinality."""
    if not any(c.encoding == "vocab" for c in config.categorical):
        return empty_counts()
    names = [c.name for c in config.categorical]
    blocks = train.to_arrow_refs()
    partitions = min(len(blocks) // BLOCKS_PER_REDUCER, 64)
    if partitions < 2:
        kept: pd.DataFrame = ray.get(_kept_in_blocks.remote(config, names, *blocks))
    else:
        kept = ray.get(_kept_partitioned.remote(blocks, config, names, partitions))
    return kept


@ray.remote
def _block_label_moments(
    block: pa.Table, label: str, weight: str | None
) -> label_stats.LabelMoments:
    y = block.column(label).to_numpy(zero_copy_only=False).astype(np.float64)
    w = block.column(weight).to_numpy(zero_copy_only=False) if weight else None
    return label_stats.LabelMoments.of(y, w)


def label_moments(
    ds: ray.data.Dataset, label: str, weight: str | None = None
) -> label_stats.LabelMoments:
    """The split's label moments (components.label_stats), one task per block, merged on the
    driver in block order (a few numbers per block)."""
    refs = [_block_label_moments.remote(b, label, weight) for b in ds.to_arrow_refs()]
    return label_stats.merge_all(ray.get(refs))


def fit_features(train: ray.data.Dataset, config: FeatureConfig) -> FeatureTransform:
    """Fit the transform on the training split without collecting it: bounded per-block
    statistics merged in tasks, vocabularies counted and cut in Ray Data (see above)."""
    return fit_features_and_profiles(train, config)[0]


def fit_features_and_profiles(
    train: ray.data.Dataset, config: FeatureConfig
) -> tuple[FeatureTransform, list[drift.FeatureProfile]]:
    """``fit_features``, and the training split's feature profiles (components.drift) from the
    same statistics: no further pass over the rows."""
    from ray.data.dataset import MaterializedDataset

    # Empty blocks would merge into statistics of no rows: say what is wrong instead.
    if isinstance(train, MaterializedDataset) and train.count() == 0:
        raise ValueError("cannot fit features on an empty training split")
    statistics = _merged_statistics(train, config)
    kept = _kept_counts(train, config)
    transform = fit_transform([statistics], config, vocabularies_of(kept, config))
    summaries = {
        name: NumericSummary.from_bytes(base64.b64decode(text))
        for name, text in statistics["numeric"].items()
    }
    profiles = drift.training_profiles(transform, summaries, int(statistics["rows"]), kept)
    return transform, profiles

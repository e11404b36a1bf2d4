"""A model's prediction log and its labels as Ray datasets, for ``rayline monitor``.

The log's Parquet files (``<storage>/logs/<model>/date=<day>/``) of the days asked for are
listed once; every read, explosion into scored rows (components.online.logged_rows) and
summary (components.monitoring) runs in Ray Data tasks, one part per block back to the driver
(components.steps.evaluate_split.map_blocks). The labels are joined in tasks too (a hash join
on the request id and row, components.steps.hash_join), so no row reaches the driver.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data

from components import monitoring, online, uris
from components.prediction_log import log_folder
from components.steps.hash_join import check_keys, hash_join

DAY = "date="


PARTITION_BYTES = 128 * 2**20  # of log Parquet per join partition


def log_files(
    storage: str, model: str, since: dt.datetime | None, until: dt.datetime | None
) -> tuple[pafs.FileSystem, list[str], int]:
    """The filesystem, the log files of ``model`` whose day overlaps ``[since, until)`` and
    their total size in bytes."""
    fs, root = uris.filesystem(log_folder(storage, model))
    try:
        days = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError as e:
        raise FileNotFoundError(f"{uris.display(log_folder(storage, model))}: {e}") from None
    first = since.date().isoformat() if since else ""
    last = until.date().isoformat() if until else "9999"
    files: list[str] = []
    size = 0
    for d in sorted(days, key=lambda i: i.path):
        name = d.base_name
        if d.type != pafs.FileType.Directory or not name.startswith(DAY):
            continue
        if not first <= name.removeprefix(DAY) <= last:
            continue
        inside = [
            f
            for f in fs.get_file_info(pafs.FileSelector(d.path))
            if f.base_name.endswith(".parquet")
        ]
        files += sorted(f.path for f in inside)
        size += sum(f.size or 0 for f in inside)
    return fs, files, size


def _micros(t: dt.datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1e6)


def _period(batch: pa.Table, since: int | None, until: int | None) -> pa.Table:
    """The block's records within the period (microseconds since the epoch, UTC)."""
    ts = batch.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    keep = pd.Series(True, index=range(len(ts)))
    if since is not None:
        keep &= ts >= since
    if until is not None:
        keep &= ts < until
    return batch.filter(pa.array(keep.to_numpy()))


def _traffic_part(
    batch: pa.Table, plan: monitoring.MonitorPlan, since: int | None, until: int | None
) -> pd.DataFrame:
    """One pickled traffic part per block (the bundles re-scored for skew are loaded once per
    process, components.monitoring)."""
    import pickle

    table = _period(batch, since, until)
    failed = online.failed_requests(table)
    rows = online.logged_rows(table, plan.task, features=True)
    part = monitoring.traffic_block(rows, plan, failed)
    # pickle carries a computed part between rayline's own processes (never a model artifact)
    return pd.DataFrame({"part": [pickle.dumps(part)]})


def narrow_schema(task: str, num_classes: int | None) -> pa.Schema:
    """The columns of ``monitoring.narrow``'s frames, typed."""
    fields = [
        ("request_id", pa.string()),
        ("row", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("version", pa.int64()),
        ("answered_by", pa.string()),
        ("latency_ms", pa.float64()),
        ("_group", pa.string()),
        ("filtered", pa.bool_()),
        ("other_version", pa.float64()),
        ("other_error", pa.string()),
    ]
    for name in monitoring.output_names(task, num_classes):
        fields += [(name, pa.float64()), (online.OTHER + name, pa.float64())]
    return pa.schema(fields)


def _narrow(
    batch: pa.Table, task: str, num_classes: int | None, since: int | None, until: int | None
) -> pa.Table:
    """The block's scored rows within the period, without features, in a fixed schema."""
    rows = online.logged_rows(_period(batch, since, until), task, features=False)
    frame = monitoring.narrow(rows, task, num_classes)
    return pa.Table.from_pandas(
        frame, schema=narrow_schema(task, num_classes), preserve_index=False
    )


READ_BYTES = 64 * 2**20  # of log Parquet per read task (and block)


@ray.remote(num_cpus=0.5)
def _read_log_files(fs: pafs.FileSystem, paths: list[str]) -> pa.Table:
    tables = [pq.read_table(p, filesystem=fs) for p in paths]
    # a log from before a column was logged lacks it: filled with nulls
    return pa.concat_tables(tables, promote_options="permissive")


def read_log(fs: pafs.FileSystem, files: Sequence[str], log_bytes: int = 0) -> ray.data.Dataset:
    """The log files as a dataset of records, a block per ``READ_BYTES`` of files (in order).
    Read by plain tasks: Ray Data's Parquet reader spends ~3-4 s listing the files on every call
    here, whatever their size."""
    chunks = max(1, min(len(files), log_bytes // READ_BYTES + 1))
    groups = [list(g) for g in np.array_split(np.array(files, dtype=object), chunks) if len(g)]
    refs: list[Any] = [_read_log_files.remote(fs, g) for g in groups]
    return ray.data.from_arrow_refs(refs)


def traffic(
    fs: pafs.FileSystem,
    files: Sequence[str],
    plan: monitoring.MonitorPlan,
    since: dt.datetime | None,
    until: dt.datetime | None,
    log_bytes: int = 0,
) -> monitoring.TrafficPart:
    """Every logged row's traffic part, merged (one part per block reaches the driver)."""
    import pickle

    parts = read_log(fs, files, log_bytes).map_batches(
        _traffic_part,
        fn_args=(plan, _micros(since), _micros(until)),
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=0.5,
    )
    return monitoring.merge_traffic(pickle.loads(r["part"]) for r in parts.iter_rows())


def read_labels(uri: str, keys: Sequence[str], label: str) -> tuple[ray.data.Dataset, int]:
    """The labels at ``uri`` (Parquet, or CSV by extension): the key columns and the label, and
    how many rows (Parquet: from the files' metadata)."""
    fs, inner = uris.filesystem(uri)
    if inner.endswith((".csv", ".csv.gz")):
        ds = ray.data.read_csv(inner, filesystem=fs)
    else:
        ds = ray.data.read_parquet(inner, filesystem=fs)
    missing = [c for c in (*keys, label) if c not in ds.columns()]
    if missing:
        raise ValueError(f"labels {uris.display(uri)}: no column(s) {missing}")
    types = {"request_id": pa.string(), "row": pa.int64()}

    def select(batch: pa.Table) -> pa.Table:
        cols = {c: batch.column(c) for c in (*keys, label)}
        for c, t in types.items():
            if c in cols:
                cols[c] = cols[c].cast(t)
        cols[label] = cols[label].cast(pa.float64())
        return pa.table(cols)

    given = int(ds.count())
    return ds.map_batches(select, batch_format="pyarrow", batch_size=None, num_cpus=0.25), given


def labelled(
    fs: pafs.FileSystem,
    files: Sequence[str],
    labels: ray.data.Dataset,
    task: str,
    num_classes: int | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    keys: Sequence[str] = online.KEYS,
    grouped: bool = False,
    log_bytes: int = 0,
) -> ray.data.Dataset:
    """The logged rows that have a label, materialized in the object store (a hash join in
    tasks, components.steps.hash_join); with ``grouped`` every block holds whole queries."""
    rows = read_log(fs, files, log_bytes).map_batches(
        _narrow,
        fn_args=(task, num_classes, _micros(since), _micros(until)),
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=0.5,
    )
    parts = max(1, min(512, log_bytes // PARTITION_BYTES + 1))  # a partition per 128 MiB
    check_keys(narrow_schema(task, num_classes), labels.schema(), keys, ("log", "labels"))
    return hash_join(rows, labels, keys, parts, regroup="_group" if grouped else None)


def count(ds: Any) -> int:
    """Rows of a dataset."""
    return int(ds.count())

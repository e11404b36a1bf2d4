"""Ingest with Ray Data: one read task per file (or generator block), validated as it is read.

Each task reads a whole file (so every row keeps its file and row number), coerces types and
marks bad rows (components.validation). The driver then counts bad rows per rule and either
fails with the first bad rows named, or writes them to a quarantine Parquet folder in the run
directory. rows read = rows used + rows quarantined, always.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.data
from ray.data.expressions import col

from components import generators, readers, uris
from components.columns import reader_options
from components.steps import parquet_io
from components.validation import DataSchema, DataValidationError, coerce_frame, describe_bad_rows

DROP_AFTER_CHECK = ["_rule", "_reason", "_ok"]
QID_FILE_STRIDE = 1_000_000_000


def _exists(path: str) -> bool:
    import pyarrow.fs

    fs, inner = uris.filesystem(path)
    return bool(fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound)


@dataclass(frozen=True)
class SourceConfig:
    """A data source as the ingest step needs it (built from the spec's SourceSpec)."""

    uri: str
    format: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    read_options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_synthetic(self) -> bool:
        return self.uri.startswith("synthetic:")


@dataclass
class IngestResult:
    dataset: ray.data.Dataset
    rows_read: int
    rows_used: int
    rows_quarantined: int
    by_rule: dict[str, int]
    inputs: int
    fingerprint: str
    quarantine_path: str | None = None
    # files of the input folder that were not read, "<name> (<reason>)" (readers.Listing)
    skipped: list[str] = field(default_factory=list)


def read_tasks(source: SourceConfig) -> list[dict[str, Any]]:
    """One task per input file or generator block (JSON-able dicts)."""
    return list_tasks(source)[0]


def list_tasks(source: SourceConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """``read_tasks``, and the files of the input folder that are not read (with the reason)."""
    if source.is_synthetic:
        kind = source.uri.split(":", 1)[1]
        blocks = generators.plan_blocks(kind, source.params)
        return [{"block": dataclasses.asdict(t)} for t in blocks], []
    suffix = source.read_options.get("query_file_suffix", ".query")
    listing = readers.list_inputs(source.uri, source.format, query_file_suffix=suffix)
    tasks = [{"path": p, "format": f, "index": i} for i, (p, f) in enumerate(listing.files)]
    return tasks, listing.skipped


def fingerprint(source: SourceConfig, tasks: list[dict[str, Any]]) -> str:
    """Identity of the input: generator params, or file paths with sizes and mtimes."""
    # URIs without their endpoint options: the same bucket reached another way is the same data
    h = hashlib.sha256(
        json.dumps([uris.display(source.uri), source.params], sort_keys=True, default=str).encode()
    )
    for t in tasks:
        if "path" in t and "://" not in t["path"]:
            st = os.stat(t["path"])
            h.update(f"{t['path']}|{st.st_size}|{st.st_mtime_ns}".encode())
        elif "path" in t:  # an object: its size and modification time as the store reports them
            fs, inner = uris.filesystem(t["path"])
            info = fs.get_file_info(inner)
            h.update(f"{uris.display(t['path'])}|{info.size}|{info.mtime_ns}".encode())
        else:
            h.update(json.dumps(t, sort_keys=True, default=str).encode())
    return h.hexdigest()


def load_one(
    task: dict[str, Any], schema: DataSchema, read_options: dict[str, Any]
) -> pd.DataFrame:
    """Read one file or generate one block, then coerce and mark bad rows (pure, no Ray)."""
    if "block" in task:
        b = dict(task["block"])
        frame = generators.generate_block(generators.BlockTask(**b))
        name = f"synthetic:{b['kind']}#block{b['index']}"
        frame["_source_file"] = name
        frame["_source_row"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    else:
        name = task["path"]
        # a csv delimiter left unset: tab for .tsv, else comma
        frame = readers.read_file(name, reader_options(name, task["format"], read_options))
        suffix = read_options.get("query_file_suffix", ".query")
        if (
            task["format"] in ("libsvm", "libfm")
            and suffix
            and "qid" in frame
            and _exists(name + suffix)
        ):
            # Sidecar query files number queries from 0 in every file: keep them apart.
            frame["qid"] = frame["qid"] + task["index"] * QID_FILE_STRIDE
    out = coerce_frame(frame, schema, source=name)
    out["_ok"] = out["_rule"].isna()
    return out


def _load_batch(
    batch: pd.DataFrame, schema: DataSchema, read_options: dict[str, Any]
) -> pd.DataFrame:
    frames = [load_one(json.loads(t), schema, read_options) for t in batch["task"]]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def read_dataset(
    source: SourceConfig, schema: DataSchema, skipped: list[str] | None = None
) -> tuple[ray.data.Dataset, int, str]:
    """A lazy dataset of coerced, marked rows; plus the number of inputs and their fingerprint.

    The files of the input folder that are not read are appended to ``skipped`` when given."""
    tasks, passed_over = list_tasks(source)
    if skipped is not None:
        skipped.extend(passed_over)
    # Raise SourceError/DataValidationError themselves from read tasks (not a UserCodeException
    # whose cause is lost on the way back), so the CLI can print their message as it is.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    items = [{"task": json.dumps(t)} for t in tasks]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _load_batch,
        batch_size=1,
        batch_format="pandas",
        fn_kwargs={"schema": schema, "read_options": source.read_options},
    )
    return ds, len(tasks), fingerprint(source, tasks)


def ingest(
    source: SourceConfig,
    schema: DataSchema,
    policies: dict[str, str],
    run_dir: str,
    label: str = "data",
) -> IngestResult:
    """Read, validate and (by policy) fail on or quarantine bad rows; materialize good rows."""
    skipped: list[str] = []
    ds, inputs, fp = read_dataset(source, schema, skipped)
    marked = ds.materialize()
    rows_read = marked.count()
    if rows_read == 0:
        raise DataValidationError(f"{source.uri}: no rows (the input is empty)")
    bad = marked.filter(expr=col("_ok") == False).materialize()  # noqa: E712 - a Ray expression
    n_bad = bad.count()
    by_rule: dict[str, int] = {}
    quarantine_path = None
    if n_bad:
        # One narrow column to the driver (cheaper here than a distributed group-by).
        counts = bad.select_columns(["_rule"]).to_pandas()["_rule"].value_counts()
        by_rule = {str(rule): int(n) for rule, n in counts.items()}
        failing = sorted(r for r in by_rule if policies.get(r, "fail") == "fail")
        if failing:
            sample = bad.filter(expr=col("_rule").is_in(failing)).take(5)
            raise DataValidationError(
                f"{source.uri}: {sum(by_rule[r] for r in failing)} bad row(s) under rules set to 'fail' "
                f"({', '.join(f'{r}: {by_rule[r]}' for r in failing)}):\n"
                + describe_bad_rows(pd.DataFrame(sample))
                + "\nFix the data, or set data.validation.<rule>: quarantine to set such rows aside."
            )
        quarantine_path = write_quarantine(bad, uris.join(run_dir, f"quarantine_{label}"))
    good = marked.filter(expr=col("_ok") == True).drop_columns(DROP_AFTER_CHECK).materialize()  # noqa: E712
    rows_used = good.count()
    if rows_used + n_bad != rows_read:  # an invariant, not input validation
        raise RuntimeError(
            f"row accounting broke: {rows_read} read != {rows_used} used + {n_bad} quarantined"
        )
    if rows_used == 0:
        raise DataValidationError(
            f"{source.uri}: every one of the {rows_read} rows was quarantined"
        )
    return IngestResult(
        good, rows_read, rows_used, n_bad, by_rule, inputs, fp, quarantine_path, skipped
    )


def write_quarantine(bad: ray.data.Dataset, path: str) -> str:
    """Bad rows with their rule and reason, as Parquet, replacing an earlier attempt's."""
    return parquet_io.write_fresh(bad.drop_columns(["_ok"]), path)

"""Batch inference: read any supported input with Ray Data, score it with a bundle, write Parquet."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

from components.predictor import Predictor
from components.validation import SOURCE_FILE, SOURCE_ROW


def predict(
    bundle_path: str,
    input_uri: str,
    output: str,
    fmt: str | None = None,
    keys: Sequence[str] = (),
    concurrency: int = 2,
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Score every input row; the output has the scores, ``keys`` and the source file and row.

    Input rows are checked like training data (missing feature columns or values of the wrong
    type fail with the file, row and column). Rows in = rows out; the output is keyed by
    (``_source_file``, ``_source_row``) so order never matters. Written aside, then renamed.
    """
    from components.steps.ingest import SourceConfig, ingest
    from components.steps.score import score_dataset

    started = time.time()
    predictor = Predictor.load(bundle_path)
    schema = predictor.schema.unlabeled(keys=tuple(keys))
    with tempfile.TemporaryDirectory(prefix="rayline-predict-") as scratch:
        data = ingest(SourceConfig(uri=input_uri, format=fmt), schema, {}, scratch, label="input")
    keep = [*keys, SOURCE_FILE, SOURCE_ROW]
    scored = score_dataset(
        data.dataset, bundle_path, keep, actors=concurrency, batch_size=batch_size
    )
    parent = os.path.dirname(os.path.abspath(output)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(output)}.tmp-{uuid.uuid4().hex[:8]}")
    scored.write_parquet(tmp)
    import ray.data

    rows_out = ray.data.read_parquet(tmp).count()
    if rows_out != data.rows_read:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"scored {rows_out} rows but read {data.rows_read}; nothing was written")
    if os.path.exists(output):
        shutil.rmtree(output) if os.path.isdir(output) else os.remove(output)
    os.replace(tmp, output)
    return {"rows_in": data.rows_read, "rows_out": rows_out, "seconds": time.time() - started}

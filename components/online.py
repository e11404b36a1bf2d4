"""Prediction logs as rows to evaluate: what each logged request was answered, row by row,
joined with labels that arrive later (no Ray: a monitor runs these per block of the log).

``logged_rows`` turns log records (components.prediction_log's columns) into one row per scored
row: the request's id and the row's position in it (its ``rows`` for /predict, ``candidates``
for /rank), when, which model version answered, the model's output as components.evaluation
reads it (``score``, or ``proba_0..`` for a multiclass model, ``value`` as ``score`` for
regression) and the row's features (a /rank request's ``query`` features on every candidate).
A /rank request is one query: ``_group`` is its request id, and candidates a guardrail filtered
out rank below every kept one, as they were never shown. ``join_labels`` matches labels by
request id and row and counts what did not match; ``metrics_by`` computes the task's metrics
per version (or any other columns).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from components import evaluation
from components.tasks import task_info

KEYS = ("request_id", "row")
META = ("request_id", "row", "ts", "model", "version", "answered_by", "route", "latency_ms")
OTHER = "other:"
"""Prefix of the other version's outputs (``other:score``...): a shadow's beside production, or
production's beside a canary, on the same row (``other_version``; ``other_error`` when it failed)."""


FAILED = ("request_id", "ts", "version", "answered_by", "route", "status", "error")


def _answered(frame: pd.DataFrame) -> pd.Series:
    """Which records were answered (200; files from before ``status`` was logged: all)."""
    if "status" not in frame:
        return pd.Series(True, index=frame.index)
    return frame["status"].isna() | (frame["status"] == 200)


def failed_requests(log: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """The records of requests a version refused or failed on (``FAILED`` columns): one row
    each, none of them scored."""
    frame = log.to_pandas() if isinstance(log, pa.Table) else log
    if "status" not in frame:
        return pd.DataFrame({c: [] for c in FAILED})
    failed = frame[~_answered(frame)]
    return failed[list(FAILED)].reset_index(drop=True)


def logged_rows(log: pa.Table | pd.DataFrame, task: str, features: bool = True) -> pd.DataFrame:
    """One row per scored row of every answered record in ``log`` (see the module doc; failed
    requests are ``failed_requests``). A record whose bodies cannot be read raises a ValueError
    naming its request id."""
    frame = log.to_pandas() if isinstance(log, pa.Table) else log
    frame = frame[_answered(frame)]
    out: list[dict[str, Any]] = []
    for rec in frame.itertuples(index=False):
        try:
            out.extend(_rows_of(rec, task, features))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ValueError(
                f"prediction log record {rec.request_id!r}: cannot read its bodies ({e})"
            ) from None
    if not out:
        return pd.DataFrame({c: [] for c in (*META, "score")})
    return pd.DataFrame(out)


def _outputs(answer: Any, route: str, field: str, n: int) -> list[dict[str, float]]:
    """Each row's outputs in a response body (a /rank response: candidates it did not return
    rank below every returned one)."""
    if route == "rank":
        scores = {int(r["index"]): float(r["score"]) for r in answer["ranked"]}
        floor = min(scores.values(), default=0.0) - 1.0  # filtered: below every shown one
        return [{"score": scores.get(i, floor)} for i in range(n)]
    out = []
    for pred in answer["predictions"]:
        if field == "probabilities":
            out.append({f"proba_{k}": float(p) for k, p in enumerate(pred["probabilities"])})
        else:
            out.append({"score": float(pred[field])})
    if len(out) != n:
        raise ValueError(f"{len(out)} predictions for {n} rows")
    return out


def _rows_of(rec: Any, task: str, features: bool) -> Iterable[dict[str, Any]]:
    body = json.loads(rec.features) if rec.features is not None else {}
    meta = {k: getattr(rec, k) for k in META if k not in ("row",)}
    field = task_info(task).response_field
    n = int(rec.rows)
    own = _outputs(json.loads(rec.outputs), rec.route, field, n)
    other_version = getattr(rec, "shadow_version", None)
    other_outputs = getattr(rec, "shadow_outputs", None)
    if other_version is not None and not pd.isna(other_version):
        meta["other_version"] = int(other_version)
        meta["other_error"] = getattr(rec, "shadow_error", None)
    other = (
        _outputs(json.loads(other_outputs), rec.route, field, n)
        if isinstance(other_outputs, str)
        else None
    )
    if rec.route == "rank":
        query = body.get("query") or {}
        candidates = body.get("candidates") or [{} for _ in range(n)]
        answer = json.loads(rec.outputs)
        dropped = {int(r["index"]) for r in answer.get("filtered") or []}
        for i, cand in enumerate(candidates):
            row = {**meta, "row": i, "_group": rec.request_id, "filtered": i in dropped}
            row.update(own[i])
            if other is not None:
                row.update({OTHER + k: v for k, v in other[i].items()})
            if features:
                row.update({**query, **cand})
            yield row
        return
    rows = body.get("rows") or [{} for _ in range(n)]
    if len(rows) != n:
        raise ValueError(f"{len(rows)} feature rows for {n} rows")
    for i, feats in enumerate(rows):
        row = {**meta, "row": i, **own[i]}
        if other is not None:
            row.update({OTHER + k: v for k, v in other[i].items()})
        if features:
            row.update(feats)
        yield row


@dataclass(frozen=True)
class JoinCounts:
    """How logged rows and labels matched."""

    logged: int  # logged rows
    labelled: int  # of those, with a label
    labels: int  # label rows given
    labels_unmatched: int  # labels for no logged row (not logged, not sampled, or a wrong key)


def join_labels(
    rows: pd.DataFrame, labels: pd.DataFrame, label: str, keys: Sequence[str] = KEYS
) -> tuple[pd.DataFrame, JoinCounts]:
    """The logged rows that have a label (column ``label`` of ``labels``, matched on
    ``keys``), and the counts. A ValueError names a missing key or label column, or a key
    labelled twice."""
    keys = list(keys)
    for name, frame, needed in (("labels", labels, [*keys, label]), ("logged rows", rows, keys)):
        missing = [c for c in needed if c not in frame]
        if missing:
            raise ValueError(f"{name}: no column(s) {missing}")
    twice = labels.duplicated(keys, keep=False)
    if twice.any():
        first = labels.loc[twice, keys].iloc[0].to_dict()
        raise ValueError(f"labels: the key {first} is labelled more than once")
    given = labels[[*keys, label]]
    joined = rows.drop(columns=[label], errors="ignore").merge(given, on=keys, how="inner")
    counts = JoinCounts(
        logged=len(rows),
        labelled=len(joined),
        labels=len(labels),
        labels_unmatched=len(labels) - len(joined),
    )
    return joined, counts


def metrics_by(
    joined: pd.DataFrame,
    task: str,
    label: str,
    by: Sequence[str] = ("version",),
    **eval_kwargs: Any,
) -> dict[tuple[Any, ...], dict[str, float]]:
    """The task's metrics (components.evaluation.evaluate) of each group of ``joined`` by the
    ``by`` columns, e.g. per version, or per version and day."""
    out: dict[tuple[Any, ...], dict[str, float]] = {}
    for key, part in joined.groupby(list(by), sort=True):
        k = key if isinstance(key, tuple) else (key,)
        out[k] = evaluation.evaluate(task, part, label, **eval_kwargs)
    return out

"""Request rows -> a frame the Predictor scores -> response bodies. No Ray here.

Every problem with a request becomes a ``RequestError`` with FastAPI's error layout
(``detail: [{"loc": [...], "msg": ..., "type": ...}]``) and a 4xx status, naming the row and
the feature. Categorical values never seen in training are not errors: the feature transform
maps them to the out-of-vocabulary code, exactly as in offline evaluation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic_core

from components import bundle
from components.features import Columns, num_rows
from components.predictor import Predictor, Scored
from components.tasks import task_info
from serve.schemas import FeatureInfo, ModelInfo, Row, SparseValue

# A response body as plain lists and dicts with the shape of serve.schemas' PredictResponse or
# RankResponse, absent fields left out. Building and serialising pydantic objects per row cost
# ~150 us for 100 candidates, more than the transform; tests validate these bodies against
# the schemas, which still document the endpoints in OpenAPI.
Body = dict[str, Any]


def body_json(body: Body) -> bytes:
    """A body as JSON in one call; NaN and infinity become null, as pydantic writes them."""
    return pydantic_core.to_json(body, inf_nan_mode="null")


def _put(item: dict[str, Any], key: str, values: list[Any] | None, i: int) -> None:
    """``item[key] = values[i]`` unless there are no values or the value is None."""
    if values is not None and values[i] is not None:
        item[key] = values[i]


@dataclass(frozen=True)
class Limits:
    max_rows: int = 1000
    max_candidates: int = 1000
    max_body_bytes: int = 4 * 1024 * 1024


class RequestError(Exception):
    """A bad request: ``status`` (4xx) and FastAPI-style ``detail`` entries."""

    def __init__(self, status: int, detail: list[dict[str, Any]]) -> None:
        super().__init__(detail[0]["msg"] if detail else "bad request")
        self.status = status
        self.detail = detail


def _error(loc: list[str | int], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


MAX_ERRORS = 20  # error entries listed in one response; then one "... and N more" entry
_FLOAT_MAX = int(sys.float_info.max)  # integers beyond it do not fit a float64


def _short(text: str, limit: int = 60) -> str:
    """A client's name or value for an error message, cut to ``limit`` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _value(v: Any) -> str:
    """A value for an error message: never a whole long string or a 300-digit number."""
    if type(v) is int and abs(v) >= 10**20:
        return f"an integer of about {int(v.bit_length() * 0.30103) + 1} digits"
    return _short(repr(v))


class _Errors:
    """Error entries for one response, at most MAX_ERRORS, counting (not listing) the rest, so a
    request with a million problems costs no more than one with twenty to check and answer."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.entries: list[dict[str, Any]] = []
        self.more = 0  # problems found but not listed
        self.unchecked = ""  # what was not checked once the list was full

    @property
    def room(self) -> int:
        return MAX_ERRORS - len(self.entries)

    def add(self, loc: list[str | int], msg: str, kind: str) -> None:
        if self.room > 0:
            self.entries.append(_error(loc, msg, kind))
        else:
            self.more += 1

    def raise_any(self) -> None:
        if not self.entries:
            return
        entries = self.entries
        if self.more or self.unchecked:
            more = f"... and {self.more} more problem(s) not listed" if self.more else "..."
            rest = f"; {self.unchecked} not checked" if self.unchecked else ""
            entries = [
                *entries,
                _error(
                    ["body", self.where],
                    f"{more}{rest} (at most {MAX_ERRORS} are listed)",
                    "too_many_errors",
                ),
            ]
        raise RequestError(422, entries)


class ModelScorer:
    """A loaded bundle plus the request checks and response building around it."""

    def __init__(self, predictor: Predictor, model: str, version: int, limits: Limits) -> None:
        self.predictor = predictor
        self.model = model
        self.version = version
        self.limits = limits
        t = predictor.transform
        self.numeric = [p.name for p in t.numeric]
        self.categorical = [p.name for p in t.categorical]
        self.sparse = [p.name for p in t.sparse]
        self.features = self.numeric + self.categorical + self.sparse
        self._feature_set = set(self.features)
        self._info = self._describe()  # once per load: the bundle hash, metrics, lineage

    @classmethod
    def load(
        cls, bundle_path: str, model: str, version: int, limits: Limits, threads: int | None = None
    ) -> ModelScorer:
        return cls(Predictor.load(bundle_path, threads=threads), model, version, limits)

    # -- request checks ----------------------------------------------------------------------
    def frame(self, rows: list[Row], where: str, limit: int) -> dict[str, np.ndarray]:
        """Check rows (limit, missing and unknown features, types) and build the columns."""
        if len(rows) > limit:
            raise RequestError(
                413,
                [
                    _error(
                        ["body", where],
                        f"{len(rows)} {where} is more than the limit of {limit}",
                        "too_long",
                    )
                ],
            )
        errors = _Errors(where)
        features, known, n = self.features, self._feature_set, len(self.features)
        for i, row in enumerate(rows):
            if len(row) == n and row.keys() == known:
                continue
            if errors.room <= 0:  # full: stop scanning (a body can hold ~10^6 problems)
                errors.unchecked = f"{where} {i} to {len(rows) - 1}"
                break
            missing = [f for f in features if f not in row]
            if missing:
                shown = sorted(missing[:MAX_ERRORS])
                extra = (
                    f" and {len(missing) - len(shown)} more" if len(missing) > len(shown) else ""
                )
                errors.add(["body", where, i], f"missing feature(s) {shown}{extra}", "missing")
            unknown = len(row) - (n - len(missing))
            if unknown:
                # the first few unknown names in request order; the rest only counted
                names = itertools.islice((k for k in row if k not in known), max(errors.room, 0))
                listed = 0
                for name in names:
                    listed += 1
                    errors.add(
                        ["body", where, i, _short(name, 200)],
                        f"unknown feature {_short(name)!r}",
                        "extra_forbidden",
                    )
                errors.more += unknown - listed
        errors.raise_any()
        # Column arrays straight from the rows: no DataFrame to build for a few rows. Numeric
        # columns become float64 (None -> NaN) once every value is checked to be a number that
        # fits one (JSON integers have no size limit).
        # (at most max rows x features values: every problem is counted, the first few listed)
        frame: dict[str, np.ndarray] = {}
        for name in self.numeric:
            values = [row[name] for row in rows]
            for i, v in enumerate(values):
                if v is None or type(v) is float:
                    continue
                if type(v) is int:
                    if -_FLOAT_MAX <= v <= _FLOAT_MAX:
                        continue
                    errors.add(
                        ["body", where, i, name],
                        f"feature {name!r} is out of range for a 64-bit float, got {_value(v)}",
                        "float_out_of_range",
                    )
                else:  # a string or a boolean (JSON true is not a number here)
                    errors.add(
                        ["body", where, i, name],
                        f"feature {name!r} is numeric, got {_value(v)}",
                        "float_type",
                    )
            if not errors.entries:
                frame[name] = np.asarray(values, dtype=np.float64)
        for name in self.categorical:
            column = np.empty(len(rows), dtype=object)
            column[:] = [row[name] for row in rows]
            for j in np.flatnonzero([type(v) is SparseValue for v in column]).tolist():
                errors.add(
                    ["body", where, j, name],
                    f"feature {name!r} is categorical, got {{indices, values}}",
                    "string_type",
                )
            frame[name] = column
        for name in self.sparse:  # {indices, values} or null (no entries)
            entries = np.empty(len(rows), dtype=object)
            for i, row in enumerate(rows):
                v = row[name]
                if type(v) is SparseValue:
                    entries[i] = {"indices": v.indices, "values": v.values}
                elif v is not None:
                    errors.add(
                        ["body", where, i, name],
                        f'feature {name!r} is sparse: give {{"indices": [...], "values": '
                        f"[...]}} or null, got {_value(v)}",
                        "model_type",
                    )
            frame[name] = entries
        errors.raise_any()
        return frame

    def merge_query(self, query: Row | None, candidates: list[Row]) -> list[Row]:
        """Query/context features apply to every candidate; a feature may not be in both."""
        if not query:
            return candidates
        known = self._feature_set
        present = sum(1 for f in self.features if f in query)
        if present < len(query):  # unknown query features, checked once (not per candidate)
            errors = _Errors("query")
            names = itertools.islice((k for k in query if k not in known), MAX_ERRORS)
            for name in names:
                errors.add(
                    ["body", "query", _short(name, 200)],
                    f"unknown feature {_short(name)!r}",
                    "extra_forbidden",
                )
            errors.more = len(query) - present - len(errors.entries)
            errors.raise_any()
        merged = []
        for i, cand in enumerate(candidates):
            both = sorted(k for k in query if k in cand)  # the query holds model features only
            if both:
                raise RequestError(
                    422,
                    [
                        _error(
                            ["body", "candidates", i],
                            f"feature(s) {both} given in both query and candidate",
                            "value_error",
                        )
                    ],
                )
            merged.append({**query, **cand})
        return merged

    # -- responses ---------------------------------------------------------------------------
    def predict_response(self, scored: Scored) -> Body:
        """A ``PredictResponse`` body as plain lists and dicts (see ``Body``)."""
        field = task_info(self.predictor.task).response_field  # score, probabilities, value
        values = scored.output.tolist()
        labels = self.predictor.predicted_labels(scored.output)  # None: not a classifier
        preds: list[dict[str, Any]]
        if labels is None:
            preds = [{field: v} for v in values]
        else:
            preds = [{field: v, "label": k} for v, k in zip(values, labels.tolist(), strict=True)]
        if scored.rule is not None or scored.fired is not None:  # only for such bundles
            filtered = scored.filtered.tolist() if scored.filtered is not None else None
            for i, p in enumerate(preds):
                _put(p, "rule", scored.rule, i)
                _put(p, "guardrails", scored.fired, i)
                _put(p, "filtered", filtered, i)
        return {"model": self.model, "version": self.version, "predictions": preds}

    def rank_response(self, scored: Scored, top_k: int | None) -> Body:
        """A ``RankResponse`` body as plain lists and dicts (see ``Body``)."""
        scores = scored.output
        if scores.ndim != 1:
            raise RequestError(
                400,
                [_error(["body"], "a multiclass model cannot rank; use /predict", "value_error")],
            )
        # Highest score first; equal scores keep request order (stable sort on -score).
        order = np.argsort(-scores, kind="stable")
        filtered = None
        if scored.filtered is not None:
            fired = scored.fired or []
            filtered = [
                {"index": i, "guardrails": fired[i]}
                for i in np.flatnonzero(scored.filtered).tolist()
            ]
            order = order[~scored.filtered[order]]
        if top_k is not None:
            order = order[:top_k]
        index = order.tolist()
        ranked = [
            {"index": i, "score": v} for i, v in zip(index, scores[order].tolist(), strict=True)
        ]
        if scored.rule is not None or scored.fired is not None:
            for c in ranked:
                _put(c, "rule", scored.rule, c["index"])
                _put(c, "guardrails", scored.fired, c["index"])
        body: Body = {"model": self.model, "version": self.version, "ranked": ranked}
        if filtered is not None:
            body["filtered"] = filtered  # field order as in RankResponse
        return body

    def info(self) -> ModelInfo:
        """What GET /model answers: built when the bundle was loaded (nothing is read or hashed
        per call), with the current limits. The caller adds the replica's batching stats."""
        limits = {
            "max_rows": self.limits.max_rows,
            "max_candidates": self.limits.max_candidates,
            "max_body_bytes": self.limits.max_body_bytes,
        }
        return self._info.model_copy(update={"limits": limits})

    def _describe(self) -> ModelInfo:
        path = self.predictor.path
        # Predictor.load checked every file against MANIFEST.json (and its signature, with a
        # bundle key set); the manifest lists each file's sha256, so its own sha256 names the
        # whole bundle. Right after that check, files are read as Predictor.load reads its own
        # (not hashed again).
        manifest = bundle.Storage(path).read_bytes(bundle.MANIFEST)
        listed = json.loads(manifest)["files"]
        docs = {
            name: json.loads(bundle.read_bundle_file(path, name, verify=False))
            for name in ("metrics.json", "lineage.json")
            if name in listed
        }
        feats = (
            [FeatureInfo(name=n, type="numeric") for n in self.numeric]
            + [FeatureInfo(name=n, type="categorical") for n in self.categorical]
            + [FeatureInfo(name=n, type="sparse") for n in self.sparse]
        )
        return ModelInfo(
            model=self.model,
            version=self.version,
            task=self.predictor.task,
            kind=str(self.predictor.meta.get("kind")),
            bundle_sha256=hashlib.sha256(manifest).hexdigest(),
            features=feats,
            metrics=client_metrics(docs.get("metrics.json", {})),
            lineage=client_lineage(docs.get("lineage.json", {})),
            guardrails=list(self.predictor.guardrails.names if self.predictor.guardrails else []),
            limits={},  # filled in by info()
        )


# What GET /model tells a client about where the model came from: identifiers and hashes.
# Left out: the run folder and any other path, the command line (overrides may carry
# credentials), package versions and the Ray job id.
LINEAGE_FIELDS = (
    "pipeline",
    "run_id",
    "created_at",
    "spec_sha256",
    "data_fingerprints",
    "git_commit",
)
# metrics.json's "data" summary, counts only (it also names quarantine and skipped files).
DATA_FIELDS = ("rows_read", "rows_used", "rows_quarantined", "by_rule", "inputs")


def client_lineage(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in LINEAGE_FIELDS if k in doc}


def client_metrics(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    data = doc.get("data")
    if isinstance(data, dict):
        out["data"] = {k: data[k] for k in DATA_FIELDS if k in data}
    return out


def score_frames(predictor: Predictor, frames: list[Columns]) -> list[Scored]:
    """One vectorised predict for a batch of requests, split back per request."""
    if len(frames) == 1:
        batch = frames[0]
    else:
        batch = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
    scored = predictor.score(batch)
    bounds = np.cumsum([0] + [num_rows(f) for f in frames]).tolist()
    return [scored.part(a, b) for a, b in itertools.pairwise(bounds)]

"""Request rows -> a frame the Predictor scores -> response bodies. No Ray here.

Every problem with a request becomes a ``RequestError`` with FastAPI's error layout
(``detail: [{"loc": [...], "msg": ..., "type": ...}]``) and a 4xx status, naming the row and
the feature. Categorical values never seen in training are not errors: the feature transform
maps them to the out-of-vocabulary code, exactly as in offline evaluation.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic_core

from components import bundle
from components.features import Columns, num_rows
from components.predictor import Predictor, Scored
from components.tasks import task_info
from serve.schemas import FeatureInfo, ModelInfo, Row

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
        self.features = self.numeric + self.categorical
        self._feature_set = set(self.features)

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
        errors = []
        for i, row in enumerate(rows):
            keys = row.keys()
            if keys != self._feature_set:
                missing = sorted(self._feature_set - keys)
                unknown = sorted(keys - self._feature_set)
                if missing:
                    errors.append(
                        _error(["body", where, i], f"missing feature(s) {missing}", "missing")
                    )
                for name in unknown:
                    errors.append(
                        _error(
                            ["body", where, i, name], f"unknown feature {name!r}", "extra_forbidden"
                        )
                    )
            if len(errors) >= 20:
                break
        if errors:
            raise RequestError(422, errors)
        # Column arrays straight from the rows: no DataFrame to build for a few rows. Numeric
        # columns become float64 (None -> NaN) once every value is checked to be a number.
        frame: dict[str, np.ndarray] = {}
        for name in self.numeric:
            values = [row[name] for row in rows]
            for i, v in enumerate(values):
                # a string or a boolean (JSON true is not a number here)
                if v is not None and (type(v) is bool or not isinstance(v, (int, float))):
                    errors.append(
                        _error(
                            ["body", where, i, name],
                            f"feature {name!r} is numeric, got {v!r}",
                            "float_type",
                        )
                    )
            if len(errors) >= 20:
                break
            frame[name] = np.asarray(values, dtype=np.float64) if not errors else np.empty(0)
        if errors:
            raise RequestError(422, errors)
        for name in self.categorical:
            column = np.empty(len(rows), dtype=object)
            column[:] = [row[name] for row in rows]
            frame[name] = column
        return frame

    def merge_query(self, query: Row | None, candidates: list[Row]) -> list[Row]:
        """Query/context features apply to every candidate; a feature may not be in both."""
        if not query:
            return candidates
        merged = []
        for i, cand in enumerate(candidates):
            both = sorted(query.keys() & cand.keys())
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
        path = self.predictor.path
        manifest = bundle.verify_bundle(path)
        docs = {
            name: json.loads(bundle.read_bundle_file(path, name, verify=False))
            for name in ("metrics.json", "lineage.json")
            if name in manifest["files"]
        }
        feats = [FeatureInfo(name=n, type="numeric") for n in self.numeric] + [
            FeatureInfo(name=n, type="categorical") for n in self.categorical
        ]
        return ModelInfo(
            model=self.model,
            version=self.version,
            task=self.predictor.task,
            kind=str(self.predictor.meta.get("kind")),
            features=feats,
            metrics=docs.get("metrics.json", {}),
            lineage=docs.get("lineage.json", {}),
            guardrails=list(self.predictor.guardrails.names if self.predictor.guardrails else []),
            limits={
                "max_rows": self.limits.max_rows,
                "max_candidates": self.limits.max_candidates,
                "max_body_bytes": self.limits.max_body_bytes,
            },
        )


def score_frames(predictor: Predictor, frames: list[Columns]) -> list[Scored]:
    """One vectorised predict for a batch of requests, split back per request."""
    if len(frames) == 1:
        batch = frames[0]
    else:
        batch = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
    scored = predictor.score(batch)
    bounds = np.cumsum([0] + [num_rows(f) for f in frames]).tolist()
    return [scored.part(a, b) for a, b in itertools.pairwise(bounds)]

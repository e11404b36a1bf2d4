"""The model bundle format in one place: its file names and the one writer.

``write_model_bundle(directory, BundleContents(...))`` writes what ``Predictor.load`` reads
(components.predictor); the pipeline's register stage and every test that needs a bundle call
it. The bytes go through :func:`components.bundle.write_bundle` (atomic, MANIFEST.json with a
sha256 per file), which stays the storage layer and knows nothing about models.

Files of a model bundle:

* ``model.json``: kind, name, task, num_classes, threshold, label, label_mapping, features,
  best_iteration, rounds, params (the model spec) and guardrails (their names);
* ``features.json`` (FeatureTransform) and ``schema.json`` (DataSchema);
* the model: ``model.ubj`` (XGBoost, plus ``feature_importance.json``), ``model.pt`` and
  ``architecture.json`` (torch), or ``rules.json`` (a rule model's spec);
* ``guardrails.json``, only when there are guardrails;
* anything in ``extra`` (the pipeline adds ``metrics.json``, ``lineage.json`` and
  ``profile.json``, the training split's feature profiles: components.drift).

Plain Python: no Ray, no pipelines import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components import bundle, xgboost_model
from components.features import FeatureTransform
from components.validation import DataSchema

MODEL_JSON = "model.json"
FEATURES_JSON = "features.json"
SCHEMA_JSON = "schema.json"
ARCHITECTURE_JSON = "architecture.json"
RULES_JSON = "rules.json"
FEATURE_IMPORTANCE_JSON = "feature_importance.json"
METRICS_JSON = "metrics.json"
LINEAGE_JSON = "lineage.json"
GUARDRAILS_FILE = "guardrails.json"

# kind -> the file holding the model itself
MODEL_FILES = {
    "xgboost": "model.ubj",
    "torch.mlp": "model.pt",
    "torch.dlrm": "model.pt",
    "rules": RULES_JSON,
}
TORCH_KINDS = ("torch.mlp", "torch.dlrm")


@dataclass(frozen=True)
class BundleContents:
    """Everything a model bundle holds, before it is serialised."""

    kind: str  # "xgboost" | "torch.mlp" | "torch.dlrm" | "rules"
    name: str  # the model spec's name
    task: str
    label: str
    transform: FeatureTransform
    schema: DataSchema
    model: bytes  # XGBoost UBJ bytes, torch state_dict bytes, or the rule model spec JSON bytes
    params: dict[str, Any]  # the model spec as JSON
    num_classes: int | None = None
    threshold: float = 0.5  # the spec's evaluation.threshold default
    label_mapping: dict[str, Any] | None = None
    best_iteration: int = 0
    rounds: int = 0
    architecture: str = ""  # torch: ArchitectureSpec JSON
    guardrails: tuple[dict[str, Any], ...] = ()  # each guardrail spec as JSON
    extra: Mapping[str, bytes] = field(default_factory=dict)  # e.g. metrics.json, lineage.json


def model_meta(contents: BundleContents) -> dict[str, Any]:
    """The ``model.json`` document (keys in the order they are written)."""
    return {
        "kind": contents.kind,
        "name": contents.name,
        "task": contents.task,
        "num_classes": contents.num_classes,
        "threshold": contents.threshold,
        "label": contents.label,
        "label_mapping": contents.label_mapping,
        "features": contents.transform.feature_names,
        "best_iteration": contents.best_iteration,
        "rounds": contents.rounds,
        "params": contents.params,
        "guardrails": [g["name"] for g in contents.guardrails],
    }


def bundle_files(contents: BundleContents) -> dict[str, bytes]:
    """Every file of the bundle, name -> bytes (what :func:`write_model_bundle` writes).

    Raises ValueError for an unknown kind, a torch model without its architecture, or an
    ``extra`` file that would replace one of the format's own files."""
    kind = contents.kind
    if kind not in MODEL_FILES:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_FILES)}")
    if kind in TORCH_KINDS and not contents.architecture:
        raise ValueError(f"a {kind} bundle needs its architecture (ArchitectureSpec JSON)")
    reserved = {MODEL_JSON, FEATURES_JSON, SCHEMA_JSON, GUARDRAILS_FILE, MODEL_FILES[kind]}
    if kind in TORCH_KINDS:
        reserved.add(ARCHITECTURE_JSON)
    if kind == "xgboost":
        reserved.add(FEATURE_IMPORTANCE_JSON)
    clash = sorted(reserved & set(contents.extra))
    if clash:
        raise ValueError(f"extra bundle file(s) {clash} are written by the bundle format itself")
    for i, g in enumerate(contents.guardrails):
        if not isinstance(g, Mapping) or not isinstance(g.get("name"), str):
            raise ValueError(f"guardrails[{i}] needs a 'name' (a guardrail spec as JSON)")

    files = {
        MODEL_JSON: json.dumps(model_meta(contents), indent=1, default=str).encode(),
        FEATURES_JSON: contents.transform.to_json().encode(),
        SCHEMA_JSON: contents.schema.to_json().encode(),
        **contents.extra,
    }
    if contents.guardrails:
        files[GUARDRAILS_FILE] = json.dumps(list(contents.guardrails), indent=1).encode()
    if kind == "rules":
        files[RULES_JSON] = contents.model
    elif kind in TORCH_KINDS:
        files[MODEL_FILES[kind]] = contents.model
        files[ARCHITECTURE_JSON] = contents.architecture.encode()
    else:
        booster = xgboost_model.load_booster(contents.model)
        files[MODEL_FILES[kind]] = contents.model
        importance = xgboost_model.feature_importance(booster)
        files[FEATURE_IMPORTANCE_JSON] = json.dumps(importance, indent=1).encode()
    return files


def write_model_bundle(directory: str | Path, contents: BundleContents) -> Path | str:
    """Write a complete model bundle (atomically, through components.bundle.write_bundle).

    ``directory`` must not exist. Returns what ``bundle.write_bundle`` returns: an absolute
    ``Path`` for a local path, the URI string for a URI."""
    return bundle.write_bundle(directory, bundle_files(contents))

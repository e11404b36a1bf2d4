"""The one scoring path: ``Predictor.load(bundle).predict(frame)``.

Evaluation, batch inference (Ray Data ``map_batches``) and serving all call this class, so the
same rows give the same scores everywhere. Loading verifies every file's sha256 against the
bundle's MANIFEST and refuses a tampered or half-written bundle.

Bundle files: model.json (kind, task, classes, ...), features.json (FeatureTransform),
schema.json (DataSchema), the model file (model.ubj for XGBoost), metrics.json, lineage.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components import bundle, xgboost_model
from components.features import FeatureTransform
from components.validation import DataSchema

MODEL_FILES = {"xgboost": "model.ubj", "torch.mlp": "model.pt", "torch.dlrm": "model.pt"}


@dataclass
class Predictor:
    """A loaded model bundle: metadata, feature transform, schema and the model itself."""

    path: str
    meta: dict[str, Any]
    transform: FeatureTransform
    schema: DataSchema
    model: Any

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        """Load and verify a bundle directory (raises bundle.BundleError on any mismatch)."""
        path = str(path)
        bundle.verify_bundle(path)
        meta = json.loads(bundle.read_bundle_file(path, "model.json", verify=False))
        kind = meta.get("kind")
        if kind not in MODEL_FILES:
            raise bundle.BundleError(
                f"{path}: model kind {kind!r} is not supported by this rayline"
            )
        transform = FeatureTransform.from_json(
            bundle.read_bundle_file(path, "features.json", verify=False).decode()
        )
        schema = DataSchema.from_json(
            bundle.read_bundle_file(path, "schema.json", verify=False).decode()
        )
        raw = bundle.read_bundle_file(path, MODEL_FILES[kind], verify=False)
        if kind == "xgboost":
            model: Any = xgboost_model.load_booster(raw)
        else:  # torch is imported only for torch bundles
            from components.torch_models import ArchitectureSpec
            from components.torch_training import load_state

            arch = ArchitectureSpec.from_json(
                bundle.read_bundle_file(path, "architecture.json", verify=False).decode()
            )
            model = load_state(arch, raw)
        return cls(path=path, meta=meta, transform=transform, schema=schema, model=model)

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def feature_columns(self) -> list[str]:
        return self.transform.input_columns

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(class 1) for binary, (n, K) probabilities for multiclass, a score for ranking."""
        missing = [c for c in self.feature_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"missing feature column(s) {missing}")
        if len(frame) == 0:
            k = int(self.meta.get("num_classes") or 0)
            return np.zeros((0, k)) if self.task == "multiclass" else np.zeros(0)
        x = self.transform.transform(frame)
        if self.meta["kind"] == "xgboost":
            return xgboost_model.predict(self.model, x, self.transform)
        from components.torch_training import predict

        return predict(self.model, x, self.task)  # type: ignore[arg-type]

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Scores as columns: ``score`` (+ ``label_pred``), or ``proba_<k>`` + ``label_pred``."""
        out = self.predict(frame)
        if self.task == "multiclass":
            cols = {f"proba_{k}": out[:, k] for k in range(out.shape[1])}
            cols["label_pred"] = out.argmax(axis=1) if len(out) else np.zeros(0, dtype=np.int64)
            return pd.DataFrame(cols, index=frame.index)
        result = pd.DataFrame({"score": out}, index=frame.index)
        if self.task == "binary":
            result["label_pred"] = (out >= float(self.meta.get("threshold", 0.5))).astype(np.int64)
        return result

"""The one scoring path: ``Predictor.load(bundle).predict(frame)``.

Evaluation, batch inference (Ray Data ``map_batches``) and serving all call this class, so the
same rows give the same scores everywhere. Loading verifies every file's sha256 against the
bundle's MANIFEST and refuses a corrupted or half-written bundle (and symbolic links in it); the
sha256s do not stop a malicious writer, who can rewrite the MANIFEST too. With
``RAYLINE_BUNDLE_KEY`` set, loading also refuses a bundle that is unsigned or signed with another
key (components.bundle).

Bundle files: model.json (kind, task, classes, ...), features.json (FeatureTransform),
schema.json (DataSchema), the model file (model.ubj for XGBoost, model.pt + architecture.json
for torch, rules.json for a rule model), guardrails.json (optional), metrics.json, lineage.json.

Guardrails (components.rule_models) run inside ``score``/``predict`` after the model, so every
path that scores through this class applies them identically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components import bundle, rule_models, rules, xgboost_model
from components.features import Columns, FeatureTransform, num_rows
from components.model_bundle import GUARDRAILS_FILE, MODEL_FILES
from components.tasks import task_info
from components.validation import DataSchema


@dataclass(frozen=True)
class Scored:
    """A model's output for some rows: ``output`` after guardrails (what is served), ``raw``
    before them, the deciding rule of a rule model, and the guardrails that fired per row."""

    output: np.ndarray
    raw: np.ndarray
    rule: list[str] | None = None
    fired: list[list[str]] | None = None  # None: the bundle has no guardrails
    filtered: np.ndarray | None = None  # ranking filters: True where dropped

    def __len__(self) -> int:
        return len(self.output)

    def part(self, start: int, stop: int) -> Scored:
        """Rows ``start:stop`` (one request of a batch)."""
        return Scored(
            self.output[start:stop],
            self.raw[start:stop],
            None if self.rule is None else self.rule[start:stop],
            None if self.fired is None else self.fired[start:stop],
            None if self.filtered is None else self.filtered[start:stop],
        )


@dataclass
class Predictor:
    """A loaded model bundle: metadata, feature transform, schema and the model itself."""

    path: str
    meta: dict[str, Any]
    transform: FeatureTransform
    schema: DataSchema
    model: Any
    guardrails: rule_models.Guardrails | None = field(default=None)

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> Predictor:
        """Load and verify a bundle directory (raises bundle.BundleError on any mismatch, a
        symbolic link in the bundle, or, with ``RAYLINE_BUNDLE_KEY`` set, a missing or wrong
        signature; unset, a signed bundle loads without its signature being checked).

        ``threads`` caps XGBoost's prediction threads (a serving replica with one CPU: more
        threads than cores only add contention to small requests)."""
        path = str(path)
        files = bundle.verify_bundle(path)["files"]
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
        kinds = rules.feature_kinds(
            [p.name for p in transform.numeric], [p.name for p in transform.categorical]
        )
        task, k = str(meta["task"]), meta.get("num_classes")
        guardrails = None
        name = GUARDRAILS_FILE  # the file being parsed, for the error
        try:
            if GUARDRAILS_FILE in files:
                items = json.loads(bundle.read_bundle_file(path, GUARDRAILS_FILE, verify=False))
                compiled = rule_models.compile_guardrails(task, items, kinds, k)
                guardrails = compiled if compiled.items else None
            if kind == "rules":
                name = MODEL_FILES[kind]
                model: Any = rule_models.compile_rule_model(task, json.loads(raw), kinds, k)
        except rule_models.RulesConfigError as e:
            raise bundle.BundleError(f"{path}: {name}: {e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            raise bundle.BundleError(f"{path}: {name}: not valid JSON ({why})") from None
        if kind == "xgboost":
            model = xgboost_model.load_booster(raw)
            try:
                xgboost_model.check_feature_names(model, transform)
            except ValueError as e:
                raise bundle.BundleError(f"{path}: {e}") from None
            if threads:
                model.set_param({"nthread": int(threads)})
        elif kind != "rules":  # torch is imported only for torch bundles
            from components.torch_models import ArchitectureSpec
            from components.torch_training import load_state

            arch = ArchitectureSpec.from_json(
                bundle.read_bundle_file(path, "architecture.json", verify=False).decode()
            )
            fitted = tuple((p.name, p.dim) for p in transform.sparse)
            if arch.sparse != fitted:  # each EmbeddingBag is as wide as its column's dim
                raise bundle.BundleError(
                    f"{path}: architecture.json has sparse columns {list(arch.sparse)}, "
                    f"features.json {list(fitted)}"
                )
            model = load_state(arch, raw)
        return cls(
            path=path,
            meta=meta,
            transform=transform,
            schema=schema,
            model=model,
            guardrails=guardrails,
        )

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def feature_columns(self) -> list[str]:
        return self.transform.input_columns

    def _model_output(self, frame: pd.DataFrame | Columns) -> tuple[np.ndarray, list[str] | None]:
        if self.meta["kind"] == "rules":
            values, which = self.model.predict(frame)
            return values, self.model.rule_names(which)
        x = self.transform.transform(frame)
        if self.meta["kind"] == "xgboost":
            out = xgboost_model.predict(self.model, x, self.transform, frame, checked=True)
            return out, None
        from components.torch_training import predict, sparse_matrices

        # sparse columns (DataFrame Arrow columns or request values) as CSR, one per column
        bags = sparse_matrices(frame, self.model.spec) if self.transform.sparse else []
        return predict(self.model, x, self.task, sparse=bags), None  # type: ignore[arg-type]

    def score(self, frame: pd.DataFrame | Columns) -> Scored:
        """The model's output for every row, then the guardrails (see ``Scored``). ``frame`` is
        a DataFrame or a mapping of column -> array (see FeatureTransform.transform)."""
        present = frame.columns if isinstance(frame, pd.DataFrame) else frame.keys()
        missing = [c for c in self.feature_columns if c not in present]
        if missing:
            raise ValueError(f"missing feature column(s) {missing}")
        if num_rows(frame) == 0:
            k = int(self.meta.get("num_classes") or 0)
            empty = np.zeros((0, k)) if task_info(self.task).proba else np.zeros(0)
            return Scored(empty, empty, [] if self.meta["kind"] == "rules" else None)
        raw, rule = self._model_output(frame)
        if self.guardrails is None:
            return Scored(raw, raw, rule)
        applied = self.guardrails.apply(frame, raw)
        return Scored(
            applied.output,
            raw,
            rule,
            applied.fired_names(),
            applied.filtered if task_info(self.task).grouped else None,
        )

    def predict(self, frame: pd.DataFrame | Columns) -> np.ndarray:
        """P(class 1) for binary, (n, K) probabilities for multiclass, a score for ranking, the
        value for regression; guardrails applied."""
        return self.score(frame).output

    def predicted_labels(self, output: np.ndarray) -> np.ndarray | None:
        """The predicted class of each row of ``output`` (``predict``'s array) when the task's
        labels are classes: the argmax of the probabilities, or ``P(1) >= threshold`` (the
        bundle's ``threshold``, default 0.5); None for the other tasks."""
        info = task_info(self.task)
        if not info.classes:
            return None
        if info.proba:
            return output.argmax(axis=1) if len(output) else np.zeros(0, dtype=np.int64)
        return (output >= float(self.meta.get("threshold", 0.5))).astype(np.int64)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Scores as columns: ``score`` (+ ``label_pred`` for binary), or ``proba_<k>`` +
        ``label_pred``; with guardrails also the output before them (``raw_score`` or
        ``raw_proba_<k>``), ``guardrails`` (the names that fired, comma-separated) and, for
        ranking, ``filtered``; a rule model adds ``rule`` (the rule that decided)."""
        scored = self.score(frame)
        out = scored.output
        proba = task_info(self.task).proba
        cols = {f"proba_{k}": out[:, k] for k in range(out.shape[1])} if proba else {"score": out}
        labels = self.predicted_labels(out)
        if labels is not None:
            cols["label_pred"] = labels
        result = pd.DataFrame(cols, index=frame.index)
        if scored.fired is not None:
            if proba:
                for k in range(scored.raw.shape[1]):
                    result[f"raw_proba_{k}"] = scored.raw[:, k]
            else:
                result["raw_score"] = scored.raw
            result["guardrails"] = [",".join(names) for names in scored.fired]
            if scored.filtered is not None:
                result["filtered"] = scored.filtered
        if scored.rule is not None:
            result["rule"] = scored.rule
        return result

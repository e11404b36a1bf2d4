"""Walk a validated spec through the steps: ingest, split, features, train, evaluate, register.

Each step prints a line when it starts and when it ends, with its elapsed time. The run leaves
``<storage>/runs/<pipeline>/<run_id>/`` (the resolved spec, quarantined rows, Ray Train
checkpoints, the bundle, report.md and report.json) and a new version in the registry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from components import bundle, evaluation, rule_models, xgboost_model
from components import predictor as predictor_mod
from components.features import CategoricalConfig, FeatureConfig, FeatureTransform
from components.metrics import LOWER_IS_BETTER
from components.registry import Registry, RegistryError
from components.rule_models import filtered_scores
from components.splits import SplitPlan
from components.steps.train_common import TrainOutcome
from components.validation import DataSchema
from pipelines import report, trainers
from pipelines import resume as resume_mod
from pipelines.spec import (
    PipelineSpec,
    RulesModelSpec,
    SourceSpec,
    TorchModelSpec,
    XGBoostModelSpec,
    parse_model,
)

Printer = Callable[[str], None]


class PipelineError(Exception):
    """A run that cannot go on; the message says why and what to change."""


@dataclass
class StepTimer:
    out: Printer
    total: int
    index: int = 0
    times: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        self.index += 1
        self.out(f"[{self.index}/{self.total}] {name}: {what}")
        start = time.time()
        yield
        self.times[name] = round(time.time() - start, 2)
        self.out(f"[{self.index}/{self.total}] {name}: done in {self.times[name]:.1f}s")

    def skip(self, name: str, why: str) -> None:
        self.index += 1
        self.times[name] = 0.0
        self.out(f"[{self.index}/{self.total}] {name}: {why}")


def new_run_id() -> str:
    """Sortable by start time (to the millisecond), unique by a random suffix."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S.") + f"{now.microsecond // 1000:03d}-" + uuid.uuid4().hex[:4]


def schema_from_spec(spec: PipelineSpec) -> DataSchema:
    d = spec.data
    return DataSchema(
        task=spec.task,
        numeric=tuple(spec.features.numeric),
        categorical=tuple(c.name for c in spec.features.categorical_features()),
        label=d.label,
        group=d.group,
        timestamp=d.timestamp,
        keys=tuple(d.keys),
        label_mapping=d.label_mapping,
        num_classes=d.num_classes,
        max_relevance=d.max_relevance,
        unexpected_columns=d.validation.unexpected_columns,
    )


def _outputs(scored: pd.DataFrame, task: str) -> np.ndarray:
    """A scored frame's model output: P(1) or score ``(n,)``, or class probabilities ``(n, K)``."""
    if task == "multiclass":
        cols = sorted(
            (c for c in scored.columns if c.startswith("proba_")),
            key=lambda c: int(c.removeprefix("proba_")),
        )
        return scored[cols].to_numpy(dtype=np.float64)
    scores = scored["score"].to_numpy(dtype=np.float64)
    if "filtered" in scored:  # as evaluation ranks them: below every kept row
        scores = filtered_scores(scores, scored["filtered"].to_numpy(dtype=bool))
    return scores


def _unit(m: Any) -> str:
    return "epochs" if isinstance(m, TorchModelSpec) else "rounds"


def feature_config(spec: PipelineSpec) -> FeatureConfig:
    return FeatureConfig(
        numeric=tuple(spec.features.numeric),
        categorical=tuple(
            CategoricalConfig(c.name, c.encoding, c.min_frequency, c.max_vocab_size, c.hash_buckets)
            for c in spec.features.categorical_features()
        ),
        impute=spec.features.impute,
        standardize=spec.features.standardize,
        log1p=tuple(spec.features.log1p),
    )


def _timestamp(value: float | str | None) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    ts = dt.datetime.fromisoformat(value)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return ts.timestamp()


def split_plan(spec: PipelineSpec) -> SplitPlan:
    s = spec.split
    return SplitPlan(
        method=s.method,
        seed=s.seed,
        train=s.train,
        valid=s.valid,
        label=spec.data.label,
        valid_from=_timestamp(s.valid_from),
        test_from=_timestamp(s.test_from),
    )


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in ("rayline", "ray", "xgboost", "numpy", "pandas", "pyarrow", "pydantic"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "unknown"
    return versions


def source_config(src: SourceSpec) -> Any:
    from components.steps.ingest import SourceConfig

    opts: dict[str, Any] = {}
    if not src.is_synthetic:
        c, lib = src.csv, src.libsvm
        opts = {
            "header": c.header,
            "column_names": tuple(c.column_names) if c.column_names else None,
            "delimiter": c.delimiter,
            "null_values": tuple(c.null_values),
            "skip_initial_space": c.skip_initial_space,
            "num_features": lib.num_features,
            "zero_based": lib.zero_based,
            "feature_prefix": lib.feature_prefix,
            "query_file_suffix": lib.query_file_suffix,
        }
    return SourceConfig(uri=src.uri, format=src.format, params=dict(src.params), read_options=opts)


class Runner:
    """Runs one pipeline spec on the connected Ray cluster."""

    def __init__(
        self,
        spec: PipelineSpec,
        out: Printer = print,
        run_id: str | None = None,
        storage: str | None = None,
        resume: bool = False,
    ) -> None:
        self.spec = spec
        self.out = out
        self.storage = os.path.abspath(storage or spec.storage_root())
        self.resume = resume
        self.reused: list[str] = []
        previous = (
            resume_mod.unfinished_run(os.path.join(self.storage, "runs", spec.name))
            if resume and run_id is None
            else None
        )
        self.run_id = run_id or (previous.name if previous else new_run_id())
        self.run_dir = os.path.join(self.storage, "runs", spec.name, self.run_id)
        self.schema = schema_from_spec(spec)
        self.report: dict[str, Any] = {
            "pipeline": spec.name,
            "run_id": self.run_id,
            "task": spec.task,
            "label": spec.data.label,
            "run_dir": self.run_dir,
            "status": "running",
        }

    # -- steps -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from components.steps import errors

        os.makedirs(self.run_dir, exist_ok=True)
        Path(self.run_dir, "spec.yaml").write_text(
            yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False)
        )
        serving = self.spec.serve.enabled
        timer = StepTimer(self.out, total=7 if serving else 6)
        self.out(
            f"rayline run {self.spec.name} ({self.spec.task}), run {self.run_id}\n  run dir: {self.run_dir}"
        )
        if self.resume:
            resumed = Path(self.run_dir, "prepared").exists()
            self.out(
                "  resuming this unfinished run: finished steps with unchanged inputs are reused"
                if resumed
                else "  --resume: no unfinished run of this pipeline; starting a new one"
            )
        started = time.time()
        try:
            prep_key = self._prepared_key()
            prep_dir = os.path.join(self.run_dir, "prepared")
            done = resume_mod.matches(prep_dir, prep_key) if self.resume else None
            if done is not None:
                with timer.step("ingest", "reusing the ingested, split data of this run"):
                    sp, data = self._load_prepared(prep_dir, done)
                timer.skip("split", "reused with the ingested data")
            else:
                with timer.step("ingest", "reading and validating with Ray Data"):
                    parts, data = self._ingest()
                with timer.step("split", f"{self.spec.split.method} split"):
                    sp = self._split(parts)
                    self._save_prepared(prep_dir, prep_key, sp, data)
            feat_key = resume_mod.key(prep_key, self.spec.features.model_dump(mode="json"))
            feat_dir = os.path.join(self.run_dir, "prepared", "features")
            if self.resume and resume_mod.matches(feat_dir, feat_key):
                with timer.step("features", "reusing the fitted feature transform"):
                    transform = FeatureTransform.from_json(
                        Path(feat_dir, "features.json").read_text()
                    )
                    self._note_features(transform)
                    self.reused.append("features")
            else:
                with timer.step("features", "fitting the feature transform on the training split"):
                    transform = self._fit_features(sp.train)
                    Path(feat_dir).mkdir(parents=True, exist_ok=True)
                    Path(feat_dir, "features.json").write_text(transform.to_json())
                    resume_mod.mark_done(feat_dir, feat_key)
            self._feat_key = feat_key
            self._features_json = transform.to_json()
            with timer.step("train", f"{len(self.spec.models)} model(s) on Ray Train"):
                trained = self._train_all(transform, sp)
            with timer.step("evaluate", "scoring the whole test split with the winner's bundle"):
                winner = self._evaluate(trained, sp)
            with timer.step(
                "register", f"publishing to the registry as {self.spec.model_name()!r}"
            ):
                version = self._register(winner, data, transform, sp)
            if serving:
                self._serve_production(timer, version)
        except Exception as e:
            user = errors.find_user_error(e)
            self.report.update(status="failed", error=str(user or e), step_seconds=timer.times)
            report.write(self.run_dir, self.report)
            if user is not None:
                raise PipelineError(str(user)) from None
            raise
        self.report.update(
            status="succeeded",
            reused=self.reused,
            step_seconds=timer.times,
            seconds=round(time.time() - started, 1),
            model={
                "name": self.spec.model_name(),
                "version": version.version,
                "path": version.path,
                "aliases": list(version.aliases),
            },
        )
        paths = report.write(self.run_dir, self.report)
        if self.spec.tracking.mlflow_uri:
            self._track(version)
            paths = report.write(self.run_dir, self.report)
        self.out(report.summary(self.report))
        self.out(f"  report: {paths[0]}  (html: {paths[0][:-2]}html)")
        return self.report

    def _track(self, version: Any) -> None:
        """Log to MLflow; a tracking failure is reported, not fatal: the model is registered."""
        from pipelines import tracking

        t = self.spec.tracking
        assert t.mlflow_uri
        winner = next((m for m in self.spec.models if m.name == self.report.get("winner")), None)
        tuned = (self.report.get("tuning") or {}).get(self.report.get("winner") or "") or {}
        params = {
            "model": winner.model_dump(mode="json", exclude={"search"}) if winner else {},
            "tuned": (tuned.get("best") or {}).get("config") or {},
            "spec_sha256": self.spec.fingerprint(),
        }
        try:
            info = tracking.log_run(
                t.mlflow_uri,
                t.experiment or self.spec.name,
                self.report,
                params,
                version.path,
                self.spec.model_name(),
                version.version,
                promoted="production" in version.aliases,
                artifact_location=t.artifact_location,
            )
            self.report["tracking"] = {"mlflow_uri": t.mlflow_uri, **info}
            self.out(f"    MLflow: run {info['run_id']} at {t.mlflow_uri}")
        except Exception as e:  # the run itself succeeded
            self.report["tracking"] = {
                "mlflow_uri": t.mlflow_uri,
                "error": f"{type(e).__name__}: {e}",
            }
            self.out(f"    MLflow logging failed ({type(e).__name__}: {e}); the run is registered")

    # -- reuse on --resume ----------------------------------------------------------------
    def _prepared_key(self) -> str:
        """Inputs of ingest + split: the data's identity (files' sizes/mtimes or generator
        params, read without reading the data), the data and split sections, the schema."""
        from components.steps.ingest import fingerprint, read_tasks

        d = self.spec.data
        sources = {"all": d.source} if d.source is not None else dict(d.sources or {})
        prints = {}
        for name, src in sources.items():
            assert src is not None
            cfg = source_config(src)
            prints[name] = fingerprint(cfg, read_tasks(cfg))
        return resume_mod.key(
            "prepared",
            prints,
            d.model_dump(mode="json"),
            self.spec.split.model_dump(mode="json"),
            self.spec.task,
        )

    def _save_prepared(self, folder: str, k: str, sp: Any, data: dict[str, Any]) -> None:
        for name in ("train", "valid", "test"):
            getattr(sp, name).write_parquet(os.path.join(folder, name))
        resume_mod.mark_done(
            folder,
            k,
            data=data,
            rows=sp.rows,
            groups=sp.groups,
            splits=self.report.get("splits"),
        )

    def _load_prepared(self, folder: str, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        import ray.data

        from components.steps.prepare import Splits

        parts = {
            name: ray.data.read_parquet(os.path.join(folder, name)).materialize()
            for name in ("train", "valid", "test")
        }
        sp = Splits(**parts, rows=doc["rows"], groups=doc["groups"])
        data = doc["data"]
        self.report["data"] = data
        self.report["splits"] = doc.get("splits")
        self.reused += ["ingest", "split"]
        self.out(f"    reused: {data['rows_used']:,} rows, splits {sp.rows}")
        return sp, data

    def _candidate_key(self, m: Any) -> str:
        tune = self.spec.tune.model_dump(mode="json") if getattr(m, "search", None) else None
        return resume_mod.key(
            self._feat_key,
            m.model_dump(mode="json"),
            tune,
            [g.model_dump(mode="json") for g in self.spec.guardrails],  # inside every bundle
            self.spec.selection_metric(),
            self.spec.evaluation.model_dump(mode="json"),
        )

    def _serve_production(self, timer: StepTimer, new: Any) -> None:
        """Serve whatever is in production now: the new version if the gate promoted it."""
        name = self.spec.model_name()
        try:
            production = Registry(self.storage).resolve(name)
        except RegistryError:
            self.out(
                f"    not serving: {name} has no production version (registry.promote is false)"
            )
            return
        with timer.step("serve", f"deploying production v{production.version} on Ray Serve"):
            if production.version != new.version:
                self.out(
                    f"    v{new.version} is a candidate: serving production v{production.version} "
                    f"(promote it with `rayline promote {name} {new.version}`)"
                )
            self._serve(production)

    def _serve(self, version: Any) -> None:
        from pipelines.deploy import deploy

        args = self.spec.serve_args(self.storage, version.version)
        self.report["endpoint"] = deploy(args, out=self.out)

    def _ingest(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from components.steps.ingest import ingest

        d = self.spec.data
        policies = d.validation.model_dump()
        sources = {"all": d.source} if d.source is not None else dict(d.sources or {})
        parts: dict[str, Any] = {}
        data: dict[str, Any] = {
            "rows_read": 0,
            "rows_used": 0,
            "rows_quarantined": 0,
            "by_rule": {},
            "quarantine": [],
            "fingerprints": {},
            "inputs": 0,
        }
        for name, src in sources.items():
            assert src is not None
            res = ingest(source_config(src), self.schema, policies, self.run_dir, label=name)
            parts[name] = res.dataset
            data["rows_read"] += res.rows_read
            data["rows_used"] += res.rows_used
            data["rows_quarantined"] += res.rows_quarantined
            data["inputs"] += res.inputs
            data["fingerprints"][name] = res.fingerprint
            for rule, n in res.by_rule.items():
                data["by_rule"][rule] = data["by_rule"].get(rule, 0) + n
            if res.quarantine_path:
                data["quarantine"].append(res.quarantine_path)
            self.out(
                f"    {name}: {res.rows_read:,} rows read from {res.inputs} input(s) = {res.rows_used:,} used "
                f"+ {res.rows_quarantined:,} quarantined"
            )
        self.report["data"] = data
        return parts, data

    def _split(self, parts: dict[str, Any]) -> Any:
        from components.steps.prepare import explicit_splits, split_dataset

        has_group = self.spec.data.group is not None
        if "all" in parts:
            stratify = self.spec.split.stratify and self.spec.task in ("binary", "multiclass")
            sp = split_dataset(parts["all"], split_plan(self.spec), has_group, stratify)
        else:
            sp = explicit_splits(parts, has_group)
        for name in ("train", "valid", "test"):
            if sp.rows[name] == 0:
                raise PipelineError(
                    f"split {name!r} is empty ({sp.rows}); check split fractions or time cut-offs"
                )
        self.report["splits"] = {"rows": sp.rows, "groups": sp.groups}
        q = f", queries {sp.groups}" if has_group else ""
        self.out(f"    rows {sp.rows}{q}")
        return sp

    def _fit_features(self, train: Any) -> FeatureTransform:
        from components.steps.prepare import fit_features

        transform = fit_features(train, feature_config(self.spec))
        self._note_features(transform)
        return transform

    def _note_features(self, transform: FeatureTransform) -> None:
        cats = {c.name: c.cardinality for c in transform.categorical}
        self.report["features"] = {
            "numeric": len(transform.numeric),
            "categorical": cats,
            "rows_fitted": transform.rows_fitted,
        }
        self.out(
            f"    {len(transform.feature_names)} features ({len(transform.numeric)} numeric, "
            f"{len(transform.categorical)} categorical)"
        )

    def _train_all(self, transform: FeatureTransform, sp: Any) -> list[dict[str, Any]]:
        metric = self.spec.selection_metric()
        trained = []
        label = self.spec.data.label
        label_mean = float(sp.train.mean(label))
        if self.spec.task == "regression":
            self._label_std = float(sp.train.std(label) or 1.0)
            self._check_regression_labels(float(sp.train.min(label)))
        ctx = self._context(transform, label_mean)
        for i, m in enumerate(self.spec.models):
            k = self._candidate_key(m)
            key_dir = os.path.join(self.run_dir, "candidates", ".done", m.name)
            done = resume_mod.matches(key_dir, k) if self.resume else None
            if done is not None:
                entry = self._reuse_candidate(i, m, done, label_mean)
                trained.append(entry)
                self.reused.append(f"models.{i} {m.name}")
                continue
            if isinstance(m, RulesModelSpec):
                outcome = TrainOutcome(
                    model=m.model_dump_json().encode(),
                    history=[],
                    best_iteration=0,
                    rounds=0,
                    seconds=0.0,
                    checkpoint_path=None,
                )
            elif m.search:
                m, outcome = self._tune(i, m, ctx, sp)
            else:
                outcome = self._fit(i, m, ctx, sp)
            bundle_dir = os.path.join(self.run_dir, "candidates", m.name)
            self._write_bundle(bundle_dir, m, transform, outcome, extra={})
            valid_scores = self._score(sp.valid, bundle_dir)
            valid_metrics = evaluation.evaluate(
                self.spec.task, valid_scores, self.spec.data.label, **self._eval_kwargs()
            )
            if metric not in valid_metrics:  # mape without a positive label
                raise PipelineError(
                    f"evaluation.metric {metric} cannot be computed on the validation split "
                    f"(for mape, no row has a positive {self.spec.data.label!r}); choose "
                    f"another metric"
                )
            trained.append(
                {
                    "index": i,
                    "spec": m,
                    "outcome": outcome,
                    "bundle": bundle_dir,
                    "valid": valid_metrics,
                    "valid_scored": valid_scores,  # kept for the rule-baseline gate
                    "label_mean": label_mean,
                }
            )
            resume_mod.mark_done(
                key_dir,
                k,
                spec=m.model_dump(mode="json"),
                valid=valid_metrics,
                outcome={f: v for f, v in dataclasses.asdict(outcome).items() if f != "model"},
                tuning=(self.report.get("tuning") or {}).get(m.name),
            )
            done_text = (
                f"{len(m.rules)} rule(s), no training"
                if isinstance(m, RulesModelSpec)
                else f"{outcome.rounds} {_unit(m)} (best {outcome.best_iteration + 1}) in "
                f"{outcome.seconds:.1f}s"
            )
            self.out(
                f"    models.{i} {m.name}: {done_text}; valid {metric} = {valid_metrics[metric]:.4f}"
                + (
                    f" (restarted after a failure, resumed at {outcome.resumed_from})"
                    if outcome.resumed_from
                    else ""
                )
            )
        return trained

    def _reuse_candidate(
        self, i: int, m: Any, done: dict[str, Any], label_mean: float
    ) -> dict[str, Any]:
        """A candidate trained before the driver stopped: its bundle and what was reported."""
        spec = parse_model(done["spec"])
        bundle_dir = os.path.join(self.run_dir, "candidates", m.name)
        bundle.verify_bundle(bundle_dir)
        name = predictor_mod.MODEL_FILES[spec.kind]
        fields = dict(done["outcome"])
        outcome = TrainOutcome(model=Path(bundle_dir, name).read_bytes(), **fields)
        if done.get("tuning"):
            self.report.setdefault("tuning", {})[m.name] = done["tuning"]
        self.out(
            f"    models.{i} {m.name}: reused (trained before the run stopped; valid "
            f"{self.spec.selection_metric()} = {done['valid'][self.spec.selection_metric()]:.4f})"
        )
        return {
            "index": i,
            "spec": spec,
            "outcome": outcome,
            "bundle": bundle_dir,
            "valid": done["valid"],
            "label_mean": label_mean,
        }

    def _context(self, transform: FeatureTransform, label_mean: float) -> trainers.TrainContext:
        return trainers.TrainContext(
            task=self.spec.task,
            label=self.spec.data.label,
            metric=self.spec.selection_metric(),
            num_classes=self.spec.data.num_classes,
            features_json=transform.to_json(),
            eval_kwargs=self._eval_kwargs(),
            label_mean=label_mean,
            label_std=getattr(self, "_label_std", 1.0),
        )

    def _check_regression_labels(self, lowest: float) -> None:
        """reg:tweedie fails deep inside XGBoost on a negative label; say so before training."""
        label = self.spec.data.label
        for i, m in enumerate(self.spec.models):
            objective = m.params.get("objective") if isinstance(m, XGBoostModelSpec) else None
            if objective == "reg:tweedie" and lowest < 0:
                raise PipelineError(
                    f"models.{i}.params.objective reg:tweedie needs labels >= 0, but column "
                    f"{label!r} holds {lowest:g} in the training split; use reg:squarederror or "
                    "reg:absoluteerror"
                )

    def _tune(
        self, i: int, m: Any, ctx: trainers.TrainContext, sp: Any
    ) -> tuple[Any, TrainOutcome]:
        """Search model ``m``'s space; the best finished trial's spec and trained model."""
        from pipelines import tuning

        t = self.spec.tune
        self.out(
            f"    models.{i} {m.name}: tuning {len(m.search or {})} parameter(s), "
            f"{t.num_samples} sample(s), {t.searcher} search, {t.scheduler} scheduler, "
            f"{t.max_concurrent_trials} at a time"
            + (f", budget {t.time_budget_s:g}s" if t.time_budget_s else "")
        )
        started = time.time()
        result = tuning.search(
            ctx,
            m,
            t,
            sp.train,
            sp.valid,
            os.path.join(self.run_dir, "tune"),
            name=m.name,
            restore=self.resume,
        )
        trials = [dataclasses.asdict(tr) for tr in result.trials]
        self.report.setdefault("tuning", {})[m.name] = {
            "metric": result.metric,
            "mode": result.mode,
            "trials": trials,
            "best": dataclasses.asdict(result.best) if result.best else None,
            "seconds": round(time.time() - started, 1),
            "path": result.path,
            "winner_from": "the best trial's own model (trained on the training split)",
            "restored": result.extra.get("restored", False),
        }
        if result.extra.get("restored"):
            self.out(
                f"    models.{i} {m.name}: continued the interrupted Tune run (finished trials kept)"
            )
        if result.best is None or result.best_outcome is None:
            states = ", ".join(
                f"{tr.trial_id}: {tr.status} {tr.error}".strip() for tr in result.trials
            )
            raise PipelineError(
                f"models.{i} {m.name}: no trial finished ({states or 'no trials ran'}); "
                "raise tune.time_budget_s or lower the search's cost"
            )
        counts = Counter(tr.status for tr in result.trials)
        self.out(
            f"    models.{i} {m.name}: {len(result.trials)} trials ("
            + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            + f") in {time.time() - started:.1f}s; best {result.metric} {result.best.value:.4f} "
            f"with {result.best.config}"
        )
        return tuning.trial_model(m.model_dump_json(), result.best.config), result.best_outcome

    def _fit(self, i: int, m: Any, ctx: trainers.TrainContext, sp: Any) -> TrainOutcome:
        job = trainers.make_job(ctx, m)
        self.out(f"    models.{i} {m.name}: {trainers.describe(m, job)}")
        return trainers.fit_job(
            job,
            sp.train,
            sp.valid,
            os.path.join(self.run_dir, "train"),
            run_name=f"{m.name}-{self.run_id}",
        )

    def _eval_kwargs(self) -> dict[str, Any]:
        e = self.spec.evaluation
        if self.spec.task == "ranking":
            return {"ks": e.ks, "relevance_threshold": e.relevance_threshold}
        if self.spec.task == "binary":
            return {"threshold": e.threshold}
        return {}

    def _score(self, ds: Any, bundle_dir: str) -> Any:
        import ray

        from components.steps.score import score_dataset

        keep = [self.spec.data.label, "_row_key", *self.spec.data.keys] + (
            ["_group"] if self.spec.data.group else []
        )
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // 2))
        return score_dataset(ds, bundle_dir, keep, actors=actors).to_pandas()

    def _refit(self, winner: dict[str, Any], sp: Any) -> dict[str, Any]:
        """Train the winning configuration again on train + valid, for as many rounds/epochs as
        its best one (nothing is left to early-stop on)."""
        import ray.data

        m, o = winner["spec"], winner["outcome"]
        n = o.best_iteration + 1
        if isinstance(m, TorchModelSpec):
            update: dict[str, Any] = {"epochs": n, "early_stopping_epochs": None}
        else:
            update = {"num_boost_round": n, "early_stopping_rounds": None}
        doc = {**m.model_dump(mode="json"), **update, "search": None}
        refit_spec = type(m).model_validate(doc)
        ctx = self._context(FeatureTransform.from_json(self._features_json), winner["label_mean"])
        job = trainers.make_job(ctx, refit_spec)
        both = ray.data.Dataset.union(sp.train, sp.valid).materialize()
        self.out(f"    refitting {m.name} on train + valid for {n} {_unit(m)}")
        outcome = trainers.fit_job(
            job,
            both,
            sp.valid,
            os.path.join(self.run_dir, "train"),
            f"{m.name}-refit-{self.run_id}",
        )
        bundle_dir = os.path.join(self.run_dir, "candidates", f"{m.name}-refit")
        self._write_bundle(bundle_dir, refit_spec, ctx.transform, outcome, extra={})
        self.report["final_model"] = (
            f"{m.name} refit on train + valid for {n} {_unit(m)} (tune.winner: refit)"
        )
        return {**winner, "spec": refit_spec, "outcome": outcome, "bundle": bundle_dir}

    def _evaluate(self, trained: list[dict[str, Any]], sp: Any) -> dict[str, Any]:
        metric = self.spec.selection_metric()
        sign = -1 if metric in LOWER_IS_BETTER else 1

        def best(entries: list[dict[str, Any]]) -> dict[str, Any]:
            return max(entries, key=lambda t: sign * t["valid"][metric])

        def is_baseline(t: dict[str, Any]) -> bool:
            return isinstance(t["spec"], RulesModelSpec) and t["spec"].baseline

        baselines = [t for t in trained if is_baseline(t)]
        pool = [t for t in trained if not is_baseline(t)]
        winner = best(pool or baselines)
        if pool and baselines:  # the best of the others must beat the best baseline by the gate
            winner = self._beat_baseline(winner, best(baselines), sp)
        if isinstance(winner["spec"], RulesModelSpec):
            self.report["final_model"] = f"the rule model {winner['spec'].name} (no training)"
        elif self.spec.tune.winner == "refit":
            winner = self._refit(winner, sp)
        else:
            self.report["final_model"] = (
                f"{winner['spec'].name} as trained on the training split (its best "
                f"{_unit(winner['spec'])[:-1]} by validation)"
            )
        scored = self._score(sp.test, winner["bundle"])
        if len(scored) != sp.rows["test"]:
            raise RuntimeError(f"scored {len(scored)} test rows, expected {sp.rows['test']}")
        predictions = os.path.join(self.run_dir, "predictions_test.parquet")
        scored.to_parquet(predictions + ".tmp", index=False)
        os.replace(predictions + ".tmp", predictions)
        test = evaluation.evaluate(
            self.spec.task, scored, self.spec.data.label, **self._eval_kwargs()
        )
        if self.spec.guardrails:
            self._note_guardrails(scored)
        base = evaluation.baseline(
            self.spec.task,
            scored,
            self.spec.data.label,
            winner["label_mean"],
            self.spec.data.num_classes,
            **self._eval_kwargs(),
        )
        winner["test"], winner["baseline"] = test, base
        self.report["models"] = [
            {
                "name": t["spec"].name,
                "kind": t["spec"].kind,
                "valid": t["valid"],
                "rounds": t["outcome"].rounds,
                "best_iteration": t["outcome"].best_iteration,
                "train_seconds": round(t["outcome"].seconds, 1),
                # > 0 when a worker or node died and the worker group resumed from a checkpoint
                "resumed_from": t["outcome"].resumed_from,
                "trained_on": t["outcome"].node,
                "history": t["outcome"].history,
            }
            for t in trained
        ]
        self.report["winner"] = winner["spec"].name
        self.report["selection_metric"] = metric
        self.report["test"] = test
        self.report["baseline"] = base
        self.report["predictions"] = predictions
        winner["scored"] = scored
        return winner

    def _gate_settings(self) -> dict[str, Any]:
        """gate.decide's keyword arguments from registry.gate and evaluation."""
        g, e = self.spec.registry.gate, self.spec.evaluation
        return {
            "min_improvement": g.min_improvement,
            "resamples": g.resamples,
            "confidence": g.confidence,
            "seed": g.seed,
            "relevance_threshold": e.relevance_threshold,
            "threshold": e.threshold,
        }

    def _beat_baseline(
        self, winner: dict[str, Any], baseline: dict[str, Any], sp: Any
    ) -> dict[str, Any]:
        """A trained winner replaces a rule baseline only when the gate (on the validation split:
        this is selection, the test split stays for the final check) says it is better."""
        from components import gate

        metric, label = self.spec.selection_metric(), self.spec.data.label

        def valid_scores(t: dict[str, Any]) -> pd.DataFrame:
            scored = t.get("valid_scored")  # absent for a candidate reused by --resume
            if scored is None:
                scored = self._score(sp.valid, t["bundle"])
            return scored.sort_values("_row_key", kind="stable")

        ours, theirs = valid_scores(winner), valid_scores(baseline)
        groups = ours["_group"].to_numpy() if "_group" in ours else None
        name = baseline["spec"].name
        decision = gate.decide(
            self.spec.task,
            metric,
            ours[label].to_numpy(),
            _outputs(ours, self.spec.task),
            _outputs(theirs, self.spec.task),
            groups,
            champion_name=f"the rule baseline {name!r}",
            **self._gate_settings(),
        ).to_dict()
        decision.update(challenger_name=winner["spec"].name, baseline=name, split="valid")
        self.report["baseline_gate"] = decision
        verdict = (
            f"{winner['spec'].name} beats"
            if decision["promote"]
            else f"{name} stays the winner over"
        )
        self.out(
            f"    baseline {name}: {verdict} "
            f"{name if decision['promote'] else winner['spec'].name} on validation: {decision['reason']}"
        )
        return winner if decision["promote"] else baseline

    def _note_guardrails(self, scored: pd.DataFrame) -> None:
        """Test metrics without the guardrails, and how often each fired."""
        plain = evaluation.without_guardrails(scored)
        if plain is not None:
            self.report["test_without_guardrails"] = evaluation.evaluate(
                self.spec.task, plain, self.spec.data.label, **self._eval_kwargs()
            )
        fired = scored["guardrails"].fillna("").str.split(",")
        counts = {g.name: 0 for g in self.spec.guardrails}
        for names in fired:
            for n in names:
                if n:
                    counts[n] += 1
        self.report["guardrails"] = [
            {
                "name": g.name,
                "action": next(a for a in rule_models.ACTIONS if getattr(g, a)),
                "when": g.when,
                "fired": counts[g.name],
                "share": counts[g.name] / max(len(scored), 1),
            }
            for g in self.spec.guardrails
        ]

    def _write_bundle(
        self,
        directory: str,
        m: Any,
        transform: FeatureTransform,
        outcome: Any,
        extra: dict[str, bytes],
    ) -> None:
        meta = {
            "kind": m.kind,
            "name": m.name,
            "task": self.spec.task,
            "num_classes": self.spec.data.num_classes,
            "threshold": self.spec.evaluation.threshold,
            "label": self.spec.data.label,
            "label_mapping": self.spec.data.label_mapping,
            "features": transform.feature_names,
            "best_iteration": outcome.best_iteration,
            "rounds": outcome.rounds,
            "params": m.model_dump(mode="json", exclude={"scaling"}),
            "guardrails": [g.name for g in self.spec.guardrails],
        }
        files = {
            "model.json": json.dumps(meta, indent=1, default=str).encode(),
            "features.json": transform.to_json().encode(),
            "schema.json": self.schema.to_json().encode(),
            **extra,
        }
        if self.spec.guardrails:
            items = [g.model_dump(mode="json", exclude_none=True) for g in self.spec.guardrails]
            files[predictor_mod.GUARDRAILS_FILE] = json.dumps(items, indent=1).encode()
        if isinstance(m, RulesModelSpec):
            files["rules.json"] = outcome.model
        elif isinstance(m, TorchModelSpec):
            files["model.pt"] = outcome.model
            files["architecture.json"] = outcome.architecture.encode()
        else:
            booster = xgboost_model.load_booster(outcome.model)
            files["model.ubj"] = outcome.model
            importance = xgboost_model.feature_importance(booster)
            files["feature_importance.json"] = json.dumps(importance, indent=1).encode()
        bundle.write_bundle(directory, files)

    def _register(
        self,
        winner: dict[str, Any],
        data: dict[str, Any],
        transform: FeatureTransform,
        sp: Any,
    ) -> Any:
        import ray

        m = winner["spec"]
        metrics_doc = {
            "selection_metric": self.spec.selection_metric(),
            "test": winner["test"],
            **(
                {"test_without_guardrails": self.report["test_without_guardrails"]}
                if "test_without_guardrails" in self.report
                else {}
            ),
            "valid": winner["valid"],
            "baseline": winner["baseline"],
            "splits": self.report.get("splits"),
            "data": {k: v for k, v in data.items() if k != "quarantine"},
        }
        lineage = {
            "pipeline": self.spec.name,
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "data_fingerprints": data["fingerprints"],
            "spec_sha256": self.spec.fingerprint(),
            "git_commit": git_commit(),
            "packages": package_versions(),
            "ray_job_id": ray.get_runtime_context().get_job_id(),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        final_dir = os.path.join(self.run_dir, "bundle")
        self._write_bundle(
            final_dir,
            m,
            transform,
            winner["outcome"],
            extra={
                "metrics.json": json.dumps(metrics_doc, indent=1).encode(),
                "lineage.json": json.dumps(lineage, indent=1).encode(),
            },
        )
        registry = Registry(self.storage)
        decision = self._gate(registry, winner, sp)
        self.report["gate"] = decision
        promote = self.spec.registry.promote and decision["promote"]
        if not self.spec.registry.promote:
            decision["reason"] += "; registry.promote is false: never promoted automatically"
        version = registry.publish(
            self.spec.model_name(),
            final_dir,
            aliases=["production"] if promote else ["candidate"],
            note=f"run {self.run_id}: {decision['reason']}",
        )
        self.out(
            f"    {'promoted to production' if promote else 'registered as candidate'}: "
            f"{decision['reason']}"
        )
        self.report["lineage"] = lineage
        return version

    def _gate(self, registry: Registry, winner: dict[str, Any], sp: Any) -> dict[str, Any]:
        """Compare the winner with the production version on the same test rows."""
        from components import gate

        metric = self.spec.selection_metric()
        scored = winner["scored"].sort_values("_row_key", kind="stable").reset_index(drop=True)
        label = self.spec.data.label
        groups = scored["_group"].to_numpy() if "_group" in scored else None
        y, challenger = scored[label].to_numpy(), _outputs(scored, self.spec.task)

        def decide(champion: np.ndarray | None) -> dict[str, Any]:
            return gate.decide(
                self.spec.task,
                metric,
                y,
                challenger,
                champion,
                groups,
                **self._gate_settings(),
            ).to_dict()

        try:
            champion_mv = registry.resolve(self.spec.model_name())
        except RegistryError:
            return decide(None)
        try:
            theirs = self._score(sp.test, champion_mv.path)
            theirs = theirs.sort_values("_row_key", kind="stable").reset_index(drop=True)
            if not theirs["_row_key"].equals(scored["_row_key"]):
                raise ValueError("it scored different rows")
            champion = _outputs(theirs, self.spec.task)
        except Exception as exc:  # any failure means "cannot compare"
            reason = (
                f"production v{champion_mv.version} could not score this test split "
                f"({type(exc).__name__}: {exc}); promote by hand with `rayline promote` if intended"
            )
            return {
                "metric": metric,
                "promote": False,
                "reason": reason,
                "champion_version": champion_mv.version,
            }
        return {**decide(champion), "champion_version": champion_mv.version}

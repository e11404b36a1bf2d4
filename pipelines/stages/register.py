"""Stage 6: write the final bundle (with metrics and lineage), gate it against the production
version on the same test rows, and publish it: promoted to production when the gate says so
(and ``registry.promote`` allows), else as the candidate."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from components.drift import PROFILE_JSON
from components.evaluation import conventions
from components.registry import ModelVersion, Registry
from pipelines.stages.common import RunContext, json_bytes, write_bundle
from pipelines.stages.evaluate import Evaluation
from pipelines.stages.features import Features
from pipelines.stages.prepare import Prepared
from pipelines.stages.select import Selection


@dataclass(frozen=True)
class Registration:
    version: ModelVersion
    gate: dict[str, Any]  # the decision: promote, reason, interval, champion_version
    lineage: dict[str, Any]
    promoted: bool


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


def lineage(
    ctx: RunContext, fingerprints: dict[str, str], ray_job_id: str | None
) -> dict[str, Any]:
    """Where the model came from: run, data, spec, code, packages, job."""
    return {
        "pipeline": ctx.spec.name,
        "run_id": ctx.paths.run_id,
        "run_dir": ctx.paths.root,
        "data_fingerprints": fingerprints,
        "spec_sha256": ctx.spec.fingerprint(),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "ray_job_id": ray_job_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


def metrics_doc(
    ctx: RunContext, selection: Selection, evaluation: Evaluation, prepared: Prepared
) -> dict[str, Any]:
    """The bundle's metrics.json."""
    data = {k: v for k, v in prepared.data.to_dict().items() if k != "quarantine"}
    plain = evaluation.test_without_guardrails
    return {
        "selection_metric": ctx.metric,
        "test": evaluation.test,
        **({"test_without_guardrails": plain} if plain is not None else {}),
        "valid": selection.winner.valid,
        "baseline": evaluation.baseline,
        "metric_conventions": metric_conventions(ctx),
        "splits": prepared.summary,
        "data": data,
    }


def metric_conventions(ctx: RunContext) -> dict[str, str]:
    """How the metrics were computed (ranking's no-relevant convention, the weight column by
    the spec's name), as report.json and the bundle's metrics.json say it."""
    kwargs = {**ctx.eval_kwargs, "weight": ctx.spec.data.weight}
    return conventions(ctx.task, **kwargs)


def register(
    ctx: RunContext,
    storage: str,
    selection: Selection,
    evaluation: Evaluation,
    prepared: Prepared,
    features: Features,
    ray_job_id: str | None,
) -> Registration:
    """Bundle, gate, publish."""
    winner = selection.winner
    origin = lineage(ctx, prepared.data.fingerprints, ray_job_id)
    final_dir = ctx.paths.bundle
    extra = {
        "metrics.json": json_bytes(metrics_doc(ctx, selection, evaluation, prepared)),
        "lineage.json": json_bytes(origin),
    }
    if features.profiles:  # what `rayline monitor` compares live features with
        extra[PROFILE_JSON] = features.profile_json()
    write_bundle(ctx, final_dir, winner.spec, features.transform, winner.outcome, extra)
    registry = Registry(storage)
    # decided in the evaluate stage, on the same scored blocks as the test metrics
    decision = dict(evaluation.gate or {})
    promote = ctx.spec.registry.promote and decision["promote"]
    if not ctx.spec.registry.promote:
        decision["reason"] += "; registry.promote is false: never promoted automatically"
    version = registry.publish(
        ctx.spec.model_name(),
        final_dir,
        aliases=["production"] if promote else ["candidate"],
        note=f"run {ctx.paths.run_id}: {decision['reason']}",
    )
    ctx.out(
        f"    {'promoted to production' if promote else 'registered as candidate'}: "
        f"{decision['reason']}"
    )
    return Registration(version, decision, origin, promote)

"""Optional MLflow tracking: a finished run's parameters, metrics, report and bundle.

Enabled by the spec's ``tracking.mlflow_uri``: a tracking server (``http://...``), or
``sqlite:////abs/path/mlflow.db`` for a local store that works offline (artifacts then go to
``mlartifacts/`` beside the database unless ``tracking.artifact_location`` says otherwise). The bundle is logged as the run's ``bundle/`` artifact and registered
as a version of the MLflow registered model of the same name; the ``production`` alias follows
the promotion gate's decision. The rayline registry stays the source of truth for serving.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from components import uris
from components.bundle import Storage

MAX_PARAM = 500  # MLflow's limit on a parameter value's length


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value, default=str)[:MAX_PARAM]


def local_copy(location: str, names: list[str] | None, scratch: str) -> str:
    """A local folder with ``names`` (files or folders; None: everything) of ``location``:
    the location itself when it is local, else a copy under ``scratch`` (MLflow logs local
    files)."""
    if not uris.is_uri(location):
        return location
    src = Storage(location)
    dest = os.path.join(scratch, uris.basename(location))
    for rel in src.walk_files():
        if names is None or rel.split("/")[0] in names:
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            with open(os.path.join(dest, rel), "wb") as fh:
                fh.write(src.read_bytes(rel))
    return dest


def _beside(uri: str) -> str | None:
    """For a local sqlite store: an artifact folder next to the database (not the cwd)."""
    if uri.startswith("sqlite:///"):
        db = uri.removeprefix("sqlite:///")
        return "file://" + os.path.join(os.path.dirname(os.path.abspath(db)), "mlartifacts")
    return None


def log_run(
    uri: str,
    experiment: str,
    report: dict[str, Any],
    winner_params: dict[str, Any],
    bundle_path: str | None,
    model_name: str,
    version: int | None,
    promoted: bool,
    artifact_location: str | None = None,
) -> dict[str, str]:
    """Log one rayline run; returns the MLflow run id and, when registered, the model version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=artifact_location or _beside(uri))
    mlflow.set_experiment(experiment)
    params: dict[str, str] = {}
    _flat("", winner_params, params)
    with (
        tempfile.TemporaryDirectory(prefix="rayline-mlflow-") as scratch,
        mlflow.start_run(run_name=str(report["run_id"])) as run,
    ):
        mlflow.log_params(params)
        mlflow.set_tags(
            {
                "rayline.pipeline": str(report["pipeline"]),
                "rayline.run_dir": str(report["run_dir"]),
                "rayline.winner": str(report.get("winner")),
                "rayline.gate": "promoted" if promoted else "not promoted",
                "rayline.gate_reason": str((report.get("gate") or {}).get("reason", ""))[:5000],
                "rayline.registry_version": str(version),
            }
        )
        metrics = {f"test_{k}": float(v) for k, v in (report.get("test") or {}).items()}
        metrics.update(
            {f"baseline_{k}": float(v) for k, v in (report.get("baseline") or {}).items()}
        )
        mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in metrics.items()})
        for m in report.get("models") or []:
            for step, row in enumerate(m.get("history") or []):
                mlflow.log_metrics(
                    {
                        f"{m['name']}.{k}".replace("@", "_at_"): float(v)
                        for k, v in row.items()
                        if isinstance(v, (int, float)) and k.startswith(("valid-", "train_loss"))
                    },
                    step=step + 1,
                )
        run_dir = local_copy(
            str(report["run_dir"]), ["report.html", "report.md", "report.json", "plots"], scratch
        )
        for name in ("report.html", "report.md", "report.json"):
            if os.path.exists(os.path.join(run_dir, name)):
                mlflow.log_artifact(os.path.join(run_dir, name))
        if os.path.isdir(os.path.join(run_dir, "plots")):
            mlflow.log_artifacts(os.path.join(run_dir, "plots"), artifact_path="plots")
        out = {"run_id": run.info.run_id}
        if bundle_path:
            mlflow.log_artifacts(local_copy(bundle_path, None, scratch), artifact_path="bundle")
            try:
                client.get_registered_model(model_name)
            except Exception:  # not registered yet (the error type varies by store)
                client.create_registered_model(model_name)
            mv = client.create_model_version(
                model_name,
                source=f"{run.info.artifact_uri}/bundle",
                run_id=run.info.run_id,
                tags={"rayline.version": str(version)},
            )
            if promoted:
                client.set_registered_model_alias(model_name, "production", mv.version)
            out["model_version"] = str(mv.version)
    return out


def track(
    spec: Any, report: dict[str, Any], bundle_path: str, version: int, promoted: bool, out: Any
) -> dict[str, Any]:
    """Log a finished run to the spec's MLflow (``spec.tracking``); the report's ``tracking``
    entry. A tracking failure is reported, not raised: the model is registered already."""
    t = spec.tracking
    winner = next((m for m in spec.models if m.name == report.get("winner")), None)
    tuned = (report.get("tuning") or {}).get(report.get("winner") or "") or {}
    params = {
        "model": winner.model_dump(mode="json", exclude={"search"}) if winner else {},
        "tuned": (tuned.get("best") or {}).get("config") or {},
        "spec_sha256": spec.fingerprint(),
    }
    try:
        info = log_run(
            t.mlflow_uri,
            t.experiment or spec.name,
            report,
            params,
            bundle_path,
            spec.model_name(),
            version,
            promoted=promoted,
            artifact_location=t.artifact_location,
        )
    except Exception as e:  # the run itself succeeded
        out(f"    MLflow logging failed ({type(e).__name__}: {e}); the run is registered")
        return {"mlflow_uri": t.mlflow_uri, "error": f"{type(e).__name__}: {e}"}
    out(f"    MLflow: run {info['run_id']} at {t.mlflow_uri}")
    return {"mlflow_uri": t.mlflow_uri, **info}

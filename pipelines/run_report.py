"""The run report as a typed record, assembled from the stages' results.

``RunReport.to_dict()`` is what report.json holds (and what ``Runner.run()`` returns): the
fields in this order, a field left ``None`` omitted (a failed run has only what finished).
``pipelines.report`` renders it as markdown and HTML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class RunReport:
    pipeline: str
    run_id: str
    task: str
    label: str
    run_dir: str
    status: str = "running"  # running | succeeded | failed | interrupted
    data: dict[str, Any] | None = None  # rows read = used + quarantined, by rule, inputs
    splits: dict[str, Any] | None = None  # rows and groups per split
    features: dict[str, Any] | None = None  # fitted transform: counts, cardinalities
    tuning: dict[str, Any] | None = None  # per tuned model: its trials and best trial
    baseline_gate: dict[str, Any] | None = None  # the winner vs the rule baseline (valid)
    final_model: str | None = None  # what the registered model is (as trained, refit, rules)
    test_without_guardrails: dict[str, float] | None = None
    guardrails: list[dict[str, Any]] | None = None  # how often each guardrail fired on test
    models: list[dict[str, Any]] | None = None  # every candidate's validation metrics, history
    winner: str | None = None
    selection_metric: str | None = None
    test: dict[str, float] | None = None  # the winner's metrics on the test split
    baseline: dict[str, float] | None = None  # the trivial baseline's, on the same rows
    # how the metrics were computed: ranking's no-relevant convention, the weight column
    metric_conventions: dict[str, str] | None = None
    predictions: str | None = None  # the test split's scores (Parquet)
    gate: dict[str, Any] | None = None  # the winner vs production on the test split
    lineage: dict[str, Any] | None = None
    endpoint: dict[str, Any] | None = None  # where the production version is served
    error: str | None = None
    reused: list[str] | None = None  # --resume: stages reused from the interrupted run
    step_seconds: dict[str, float] | None = None
    seconds: float | None = None
    model: dict[str, Any] | None = None  # the registered version: name, version, path, aliases
    tracking: dict[str, Any] | None = None  # MLflow run, or why logging failed

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

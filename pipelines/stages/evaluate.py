"""Stage 5: score the whole test split with the winner's bundle; its metrics, the trivial
baseline's on the same rows, and how often each guardrail fired."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from components import evaluation, rule_models, uris
from components.bundle import Storage
from pipelines.spec import GuardrailSpec
from pipelines.stages.common import RunContext, Scorer
from pipelines.stages.prepare import Prepared
from pipelines.stages.select import Selection


@dataclass(frozen=True)
class Evaluation:
    scored: pd.DataFrame  # every test row: kept columns + the winner's outputs
    test: dict[str, float]
    baseline: dict[str, float]
    predictions: str  # where ``scored`` was written (Parquet)
    test_without_guardrails: dict[str, float] | None = None
    guardrails: list[dict[str, Any]] | None = None  # per guardrail: action, fired, share


def guardrail_report(scored: pd.DataFrame, guardrails: list[GuardrailSpec]) -> list[dict[str, Any]]:
    """How often each guardrail fired on the scored rows."""
    counts = {g.name: 0 for g in guardrails}
    for names in scored["guardrails"].fillna("").str.split(","):
        for n in names:
            if n:
                counts[n] += 1
    return [
        {
            "name": g.name,
            "action": next(a for a in rule_models.ACTIONS if getattr(g, a)),
            "when": g.when,
            "fired": counts[g.name],
            "share": counts[g.name] / max(len(scored), 1),
        }
        for g in guardrails
    ]


def measure(ctx: RunContext, scored: pd.DataFrame, label_mean: float) -> Evaluation:
    """Metrics of a scored test split (no Ray): the model's, without guardrails, the baseline's."""
    spec, kwargs = ctx.spec, ctx.eval_kwargs
    test = evaluation.evaluate(ctx.task, scored, ctx.label, **kwargs)
    plain = guards = None
    if spec.guardrails:
        alone = evaluation.without_guardrails(scored)
        if alone is not None:
            plain = evaluation.evaluate(ctx.task, alone, ctx.label, **kwargs)
        guards = guardrail_report(scored, spec.guardrails)
    base = evaluation.baseline(
        ctx.task, scored, ctx.label, label_mean, spec.data.num_classes, **kwargs
    )
    return Evaluation(scored, test, base, ctx.paths.predictions, plain, guards)


def write_predictions(scored: pd.DataFrame, path: str) -> None:
    """The test split's scores as one Parquet file (atomically: a local file is renamed into
    place, an object is one PUT)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(scored, preserve_index=False), sink)
    Storage(uris.parent(path)).write_bytes(uris.basename(path), sink.getvalue().to_pybytes())


def evaluate(
    ctx: RunContext, selection: Selection, prepared: Prepared, label_mean: float, score: Scorer
) -> Evaluation:
    """Score every test row with the winner, write the predictions, measure."""
    scored = score(prepared.test, selection.winner.bundle)
    if len(scored) != prepared.rows["test"]:
        raise RuntimeError(f"scored {len(scored)} test rows, expected {prepared.rows['test']}")
    write_predictions(scored, ctx.paths.predictions)
    return measure(ctx, scored, label_mean)

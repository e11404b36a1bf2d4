"""Stage 5: score the whole test split with the winner's bundle (and the production version's,
for the gate, in the same pass); its metrics, the trivial baseline's on the same rows, how often
each guardrail fired, and the gate's paired bootstrap against production.

Everything is computed per block of scored rows and merged (components.split_evaluation): the
driver holds parts whose size does not grow with the rows. The predictions are written by the
scoring tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from components import rule_models, split_evaluation
from components.registry import Registry, RegistryError
from pipelines.spec import GuardrailSpec
from pipelines.stages.common import (
    RunContext,
    ScoredSplit,
    SplitScorer,
    gate_decision,
    parts_of,
    plan,
)
from pipelines.stages.prepare import Prepared
from pipelines.stages.select import Selection


@dataclass(frozen=True)
class Evaluation:
    test: dict[str, float]
    baseline: dict[str, float]
    predictions: str  # where the scored test rows were written (Parquet)
    test_without_guardrails: dict[str, float] | None = None
    guardrails: list[dict[str, Any]] | None = None  # per guardrail: action, fired, share
    rows: int = 0  # test rows scored
    # the gate against the production version on the same rows (register publishes by it)
    gate: dict[str, Any] | None = None


def guardrail_report(
    fired: dict[str, int], rows: int, guardrails: list[GuardrailSpec]
) -> list[dict[str, Any]]:
    """How often each guardrail fired on the scored rows (``fired``: rows per guardrail)."""
    return [
        {
            "name": g.name,
            "action": next(a for a in rule_models.ACTIONS if getattr(g, a)),
            "when": g.when,
            "fired": int(fired.get(g.name, 0)),
            "share": fired.get(g.name, 0) / max(rows, 1),
        }
        for g in guardrails
    ]


def production(ctx: RunContext) -> Any:
    """The production version of this pipeline's model, or None."""
    try:
        return Registry(ctx.paths.storage).resolve(ctx.spec.model_name())
    except RegistryError:
        return None


def cannot_compare(ctx: RunContext, version: int, exc: Exception) -> dict[str, Any]:
    """The gate's decision when production could not score the split: never promoted."""
    return {
        "metric": ctx.metric,
        "promote": False,
        "reason": (
            f"production v{version} could not score this test split "
            f"({type(exc).__name__}: {exc}); promote by hand with `rayline promote` if intended"
        ),
        "champion_version": version,
    }


def measure(
    ctx: RunContext,
    split: ScoredSplit,
    label_mean: float,
    champion_version: int | None = None,
) -> Evaluation:
    """Metrics of a scored test split: the model's, without guardrails, the baseline's, and
    the gate against ``champion_version`` when the split holds its outputs."""
    parts = parts_of(split, plan(ctx, label_mean, champion_version is not None))
    values = split_evaluation.finish_parts(parts)
    rows = int(values["rows"])
    guards = (
        guardrail_report(values.get("fired", {}), rows, ctx.spec.guardrails)
        if ctx.spec.guardrails
        else None
    )
    return Evaluation(
        test=values["test"],
        baseline=values["baseline"],
        predictions=ctx.paths.predictions,
        test_without_guardrails=values.get("plain"),
        guardrails=guards,
        rows=rows,
        gate=gate_decision(ctx, split, parts, champion_version),
    )


def evaluate(
    ctx: RunContext,
    selection: Selection,
    prepared: Prepared,
    label_mean: float,
    score: SplitScorer,
) -> Evaluation:
    """Score every test row with the winner (and production, for the gate), write the
    predictions, measure."""
    champion = production(ctx)
    split, failure = None, None
    if champion is not None:
        try:
            split = score(prepared.test, selection.winner.bundle, champion.path)
            if split.rows != prepared.rows["test"]:
                raise ValueError("it scored different rows")
        except Exception as exc:  # any failure of the production bundle means "cannot compare"
            split, failure = None, exc
    if split is None:
        split = score(prepared.test, selection.winner.bundle, None)
    if split.rows != prepared.rows["test"]:
        raise RuntimeError(f"scored {split.rows} test rows, expected {prepared.rows['test']}")
    split.write(ctx.paths.predictions)
    with_champion = champion is not None and failure is None
    ev = measure(ctx, split, label_mean, champion.version if with_champion else None)
    if failure is not None:
        ev = replace(ev, gate=cannot_compare(ctx, champion.version, failure))
    return ev

"""Stage 4: pick the winner on the validation split.

The best candidate by the selection metric wins; a trained winner replaces a rule baseline only
when the gate's paired bootstrap says it is confidently better (on validation: this is
selection, the test split stays for the final check); with ``tune.winner: refit`` the winning
configuration is trained again on train + valid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from components.metrics import LOWER_IS_BETTER
from pipelines import trainers
from pipelines.spec import RulesModelSpec, TrainedModelSpec
from pipelines.stages.common import (
    RunContext,
    SplitScorer,
    gate_decision,
    parts_of,
    plan,
    unit,
    write_bundle,
)
from pipelines.stages.features import Features
from pipelines.stages.prepare import Prepared
from pipelines.stages.train import Candidate


@dataclass(frozen=True)
class Selection:
    winner: Candidate  # the final model (after a refit, the refit one)
    final_model: str  # what it is, in words, for the report
    baseline_gate: dict[str, Any] | None = None  # the winner vs the best rule baseline


def best(candidates: list[Candidate], metric: str) -> Candidate:
    """The candidate with the best validation ``metric`` (the first of equals)."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return max(candidates, key=lambda c: sign * c.valid[metric])


def beat_baseline(
    ctx: RunContext, winner: Candidate, baseline: Candidate, prepared: Prepared, score: SplitScorer
) -> tuple[Candidate, dict[str, Any]]:
    """The winner if the gate prefers it over the rule baseline on validation, else the
    baseline; and the gate's decision (both scored in one pass, in tasks)."""
    split = score(prepared.valid, winner.bundle, baseline.bundle)
    parts = parts_of(split, plan(ctx, 0.0, champion=True))
    name = baseline.name
    decision = gate_decision(ctx, split, parts, 0, champion_name=f"the rule baseline {name!r}")
    decision.pop("champion_version")
    decision.update(challenger_name=winner.name, baseline=name, split="valid")
    promote = decision["promote"]
    verdict = f"{winner.name} beats" if promote else f"{name} stays the winner over"
    ctx.out(
        f"    baseline {name}: {verdict} "
        f"{name if promote else winner.name} on validation: {decision['reason']}"
    )
    return (winner if promote else baseline), decision


def refit(
    ctx: RunContext,
    winner: Candidate,
    prepared: Prepared,
    features: Features,
    tctx: trainers.TrainContext,
) -> Candidate:
    """Train the winning configuration again on train + valid, for as many rounds/epochs as its
    best one (nothing is left to early-stop on)."""
    import ray.data

    m = winner.spec
    assert not isinstance(m, RulesModelSpec)
    n = winner.outcome.best_iteration + 1
    doc = {**m.model_dump(mode="json"), **trainers.family(m).refit(n), "search": None}
    refit_spec: TrainedModelSpec = type(m).model_validate(doc)
    job = trainers.make_job(tctx, refit_spec)
    both = ray.data.Dataset.union(prepared.train, prepared.valid).materialize()
    ctx.out(f"    refitting {m.name} on train + valid for {n} {unit(m)}")
    outcome = trainers.fit_job(
        job, both, prepared.valid, ctx.paths.train, f"{m.name}-refit-{ctx.paths.run_id}"
    )
    bundle_dir = ctx.paths.candidate(f"{m.name}-refit")
    write_bundle(ctx, bundle_dir, refit_spec, features.transform, outcome)
    return dataclasses.replace(winner, spec=refit_spec, outcome=outcome, bundle=bundle_dir)


def select(
    ctx: RunContext,
    candidates: list[Candidate],
    prepared: Prepared,
    features: Features,
    tctx: trainers.TrainContext,
    score: SplitScorer,
) -> Selection:
    """The final model: the best candidate, gated against the rule baseline, maybe refit."""
    metric = ctx.metric
    baselines = [c for c in candidates if c.is_baseline]
    pool = [c for c in candidates if not c.is_baseline]
    winner = best(pool or baselines, metric)
    decision = None
    if pool and baselines:  # the best of the others must beat the best baseline by the gate
        winner, decision = beat_baseline(ctx, winner, best(baselines, metric), prepared, score)
    if isinstance(winner.spec, RulesModelSpec):
        final = f"the rule model {winner.name} (no training)"
    elif ctx.spec.tune.winner == "refit":
        n = winner.outcome.best_iteration + 1
        winner = refit(ctx, winner, prepared, features, tctx)
        final = (
            f"{winner.name} refit on train + valid for {n} {unit(winner.spec)} (tune.winner: refit)"
        )
    else:
        final = (
            f"{winner.name} as trained on the training split (its best "
            f"{unit(winner.spec)[:-1]} by validation)"
        )
    return Selection(winner, final, decision)

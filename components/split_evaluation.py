"""A scored split's evaluation and the gate's bootstrap, block by block (no Ray here).

What the evaluate stage computes over the test split (the winner's metrics, without its
guardrails, the featureless baseline's, how often each guardrail fired, the production
version's metrics on the same rows) is a small *part* per block of scored rows
(:func:`block_parts`), merged (:func:`merge_parts`) and finished (:func:`finish_parts`) on the
driver; the paired bootstrap of the gate is another pass (:func:`bootstrap_block`). A Ray Data
task runs these functions on each block (components/steps/evaluate_split.py); tests run them on
frames. Ranking blocks must hold whole queries (the adapter groups them by query first).

A block carries the winner's output columns (``score``, or ``proba_<k>``, plus ``raw_*``,
``filtered``, ``guardrails`` with guardrails) and, when there is a production version to gate
against, that version's with the :data:`CHAMPION` prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from components import evaluation, gate, metric_parts
from components.tasks import task_info

CHAMPION = "champion:"  # prefix of the production version's output columns in a scored block


@dataclass(frozen=True)
class EvalPlan:
    """What to compute per block: the task, label, evaluation options (``evaluate``'s keyword
    arguments), the baseline's training label mean, the guardrails' names, whether the block
    holds a champion's outputs, and the AUC grids of a refinement pass (by part name)."""

    task: str
    label: str
    eval_kwargs: Mapping[str, Any]
    label_mean: float
    num_classes: int | None = None
    guardrails: tuple[str, ...] = ()
    champion: bool = False
    grids: Mapping[str, metric_parts.AucGrid] = field(default_factory=dict)


def champion_frame(block: pd.DataFrame) -> pd.DataFrame:
    """The block as the champion scored it: its output columns under the winner's names."""
    theirs = {c: c.removeprefix(CHAMPION) for c in block.columns if str(c).startswith(CHAMPION)}
    own = [c for c in theirs.values() if c in block.columns]
    return block.drop(columns=own).rename(columns=theirs)


def _part(plan: EvalPlan, name: str, frame: pd.DataFrame) -> metric_parts.Part:
    return evaluation.partial(
        plan.task, frame, plan.label, grid=plan.grids.get(name), **plan.eval_kwargs
    )


def block_parts(block: pd.DataFrame, plan: EvalPlan) -> dict[str, Any]:
    """One block's parts: ``test``, ``baseline``, ``plain`` (without guardrails, when they ran),
    ``champion`` (when the block holds its outputs), ``fired`` (rows each guardrail fired on)
    and ``rows``."""
    parts: dict[str, Any] = {"rows": len(block), "test": _part(plan, "test", block)}
    base = evaluation.baseline_frame(
        plan.task, block, plan.label, plan.label_mean, plan.num_classes, **plan.eval_kwargs
    )
    parts["baseline"] = _part(plan, "baseline", base)
    if plan.guardrails:
        alone = evaluation.without_guardrails(block)
        if alone is not None:
            parts["plain"] = _part(plan, "plain", alone)
        fired = dict.fromkeys(plan.guardrails, 0)
        for names in block["guardrails"].fillna("").astype(str).str.split(","):
            for n in names:
                if n:
                    fired[n] = fired.get(n, 0) + 1
        parts["fired"] = fired
    if plan.champion:
        parts["champion"] = _part(plan, "champion", champion_frame(block))
    return parts


def merge_parts(blocks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The parts of several blocks as one (same names)."""
    merged: dict[str, Any] = {}
    pending: dict[str, list[Any]] = {}
    for parts in blocks:
        for name, value in parts.items():
            if name == "rows":
                merged["rows"] = merged.get("rows", 0) + value
            elif name == "fired":
                total = merged.setdefault("fired", {})
                for g, n in value.items():
                    total[g] = total.get(g, 0) + n
            else:
                pending.setdefault(name, []).append(value)
                if len(pending[name]) > 1:  # merged as they come: one part per name is held
                    pending[name] = [evaluation.merge(pending[name])]
    for name, values in pending.items():
        merged[name] = evaluation.merge(values)
    return merged


def refinements(
    parts: Mapping[str, Any], tolerance: float = metric_parts.AUC_TOLERANCE
) -> dict[str, metric_parts.AucGrid]:
    """The finer AUC grids a further pass needs (by part name; empty when every AUC is within
    ``tolerance``)."""
    out = {}
    for name, part in parts.items():
        if isinstance(part, metric_parts.BinaryPart):
            grid = metric_parts.refine(part, tolerance)
            if grid is not None:
                out[name] = grid
    return out


def with_refined(parts: dict[str, Any], refined: Mapping[str, Any]) -> dict[str, Any]:
    """``parts`` with the AUC histograms of a refinement pass (``refined``'s parts) swapped in."""
    out = dict(parts)
    for name, part in refined.items():
        if name in parts and isinstance(part, metric_parts.BinaryPart):
            out[name] = replace(parts[name], auc=part.auc)
    return out


def finish_parts(parts: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics of merged parts, by name (``fired`` and ``rows`` as they are)."""
    return {
        name: (part if name in ("fired", "rows") else evaluation.finish(part))
        for name, part in parts.items()
    }


def gate_plan(
    task: str, metric: str, parts: Mapping[str, Any], settings: Mapping[str, Any]
) -> gate.BootstrapPlan:
    """The bootstrap plan of the gate once both models' parts are merged (AUC needs their
    histograms; R^2 the label mean); ``settings``: translate.gate_settings."""
    auc = None
    if isinstance(parts.get("test"), metric_parts.BinaryPart):
        auc = (parts["test"].auc, parts["champion"].auc)
    mean = parts["test"].mean if isinstance(parts.get("test"), metric_parts.RegressionPart) else 0.0
    return gate.bootstrap_plan(
        task,
        metric,
        resamples=settings["resamples"],
        seed=settings["seed"],
        relevance_threshold=settings["relevance_threshold"],
        threshold=settings["threshold"],
        no_relevant=settings["no_relevant"],
        auc_parts=auc,
        label_mean=mean,
    )


def bootstrap_block(
    block: pd.DataFrame, plan: gate.BootstrapPlan, label: str, weight: str | None
) -> gate.BootstrapPart:
    """One block's per-resample sums for the winner and the champion (same rows)."""
    grouped = task_info(plan.task).grouped
    return gate.bootstrap_partial(
        plan,
        block[label].to_numpy(dtype=np.float64),
        evaluation.model_outputs(block, plan.task),
        evaluation.model_outputs(champion_frame(block), plan.task),
        block["_group"].to_numpy() if grouped else None,
        evaluation.weights_of(block, weight),
        keys=None if grouped else block["_row_key"].to_numpy(),
    )


def merge_bootstrap(parts: Iterable[gate.BootstrapPart]) -> gate.BootstrapPart | None:
    """The blocks' bootstrap parts merged as they come (at most two held at a time)."""
    total: gate.BootstrapPart | None = None
    for p in parts:
        total = p if total is None else gate.merge_bootstrap([total, p])
    return total

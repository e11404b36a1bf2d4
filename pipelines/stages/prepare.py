"""Stage 1: ingest every source with Ray Data (validated, bad rows quarantined) and split it.

``ingest`` reads; ``split`` assigns rows to train/valid/test (or takes the explicit sources);
``reusable`` keeps the result as Parquet for ``--resume``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from components.splits import SplitPlan
from components.steps.ingest import IngestResult
from components.tasks import task_info
from pipelines import resume, translate
from pipelines.errors import PipelineError
from pipelines.run_dir import SPLIT_NAMES
from pipelines.stages.common import RunContext


@dataclass(frozen=True)
class DataSummary:
    """What ingest saw, over every source: rows read = rows used + rows quarantined."""

    rows_read: int = 0
    rows_used: int = 0
    rows_quarantined: int = 0
    by_rule: dict[str, int] = dataclasses.field(default_factory=dict)
    quarantine: list[str] = dataclasses.field(default_factory=list)
    fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)
    inputs: int = 0
    # files of the input folders that were not read: "<source>: <name> (<reason>)"
    skipped: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(reads: dict[str, IngestResult]) -> DataSummary:
    """The run's data summary from each source's ingest counts (by source name)."""
    by_rule: dict[str, int] = {}
    for r in reads.values():
        for rule, n in r.by_rule.items():
            by_rule[rule] = by_rule.get(rule, 0) + n
    results = list(reads.values())
    return DataSummary(
        rows_read=sum(r.rows_read for r in results),
        rows_used=sum(r.rows_used for r in results),
        rows_quarantined=sum(r.rows_quarantined for r in results),
        by_rule=by_rule,
        quarantine=[r.quarantine_path for r in results if r.quarantine_path],
        fingerprints={name: r.fingerprint for name, r in reads.items()},
        inputs=sum(r.inputs for r in results),
        skipped=[f"{name}: {entry}" for name, r in reads.items() for entry in r.skipped],
    )


SKIPPED_SHOWN = 10  # names printed per source; the data summary keeps them all


def skipped_line(name: str, skipped: list[str]) -> str | None:
    """The ingest line naming the files of a source's folder that were not read, or None."""
    if not skipped:
        return None
    shown = ", ".join(skipped[:SKIPPED_SHOWN])
    more = f", and {len(skipped) - SKIPPED_SHOWN} more" if len(skipped) > SKIPPED_SHOWN else ""
    return f"    {name}: skipped {len(skipped)} file(s) in the folder: {shown}{more}"


@dataclass(frozen=True)
class Ingested:
    parts: dict[str, Any]  # Ray datasets by source name ("all", or train/valid/test)
    data: DataSummary


@dataclass(frozen=True)
class Prepared:
    """The three splits (materialized Ray datasets), their sizes, and what ingest saw."""

    train: Any
    valid: Any
    test: Any
    rows: dict[str, int]
    groups: dict[str, int]
    data: DataSummary

    @property
    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "groups": self.groups}


def input_key(ctx: RunContext) -> str:
    """Inputs of ingest + split: the data's identity (files' sizes/mtimes or generator params,
    read without reading the data), the data and split sections, the task."""
    from components.steps.ingest import fingerprint, read_tasks

    spec = ctx.spec
    prints = {}
    for name, src in translate.sources(spec).items():
        cfg = translate.source_config(src)
        prints[name] = fingerprint(cfg, read_tasks(cfg))
    return resume.key(
        "prepared",
        prints,
        spec.data.model_dump(mode="json"),
        spec.split.model_dump(mode="json"),
        spec.task,
    )


def ingest(ctx: RunContext) -> Ingested:
    """Read and validate every source (Ray Data), printing each source's row counts."""
    from components.steps.ingest import ingest as ingest_source

    for warning in ctx.spec.warnings():
        ctx.out(f"    warning: {warning}")
    policies = ctx.spec.data.validation.model_dump()
    reads: dict[str, IngestResult] = {}
    for name, src in translate.sources(ctx.spec).items():
        res = ingest_source(
            translate.source_config(src), ctx.schema, policies, ctx.paths.root, label=name
        )
        reads[name] = res
        ctx.out(
            f"    {name}: {res.rows_read:,} rows read from {res.inputs} input(s) = "
            f"{res.rows_used:,} used + {res.rows_quarantined:,} quarantined"
        )
        line = skipped_line(name, res.skipped)
        if line:
            ctx.out(line)
    parts = {name: res.dataset for name, res in reads.items()}
    return Ingested(parts, summarize(reads))


def carve_line(plan: SplitPlan, stratify: bool) -> str:
    """What the split step prints when it holds the valid split out of the train source."""
    how = (
        "whole queries"
        if plan.method == "group"
        else "rows, stratified by label"
        if stratify
        else "rows"
    )
    return f"valid: {plan.valid:g} of the train source held out ({how}; no valid source given)"


def check_not_empty(rows: dict[str, int]) -> None:
    """Training on an empty split fails late and obscurely: stop here instead."""
    for name in SPLIT_NAMES:
        if rows[name] == 0:
            raise PipelineError(
                f"split {name!r} is empty ({rows}); check split fractions or time cut-offs"
            )


def split(ctx: RunContext, ingested: Ingested) -> Prepared:
    """Assign rows to train/valid/test (seeded; whole queries), or take the explicit sources
    (holding split.valid of train out when there is no valid source)."""
    from components.steps.prepare import carve_valid, explicit_splits, split_dataset

    spec = ctx.spec
    has_group = spec.data.group is not None
    stratify = spec.split.stratify and task_info(spec.task).stratify
    carve = translate.valid_plan(spec)
    if "all" in ingested.parts:
        sp = split_dataset(ingested.parts["all"], translate.split_plan(spec), has_group, stratify)
    elif carve is not None:
        ctx.out(f"    {carve_line(carve, stratify)}")
        sp = carve_valid(ingested.parts, carve, has_group, stratify)
    else:
        sp = explicit_splits(ingested.parts, has_group)
    check_not_empty(sp.rows)
    q = f", queries {sp.groups}" if has_group else ""
    ctx.out(f"    rows {sp.rows}{q}")
    if sp.class_line():  # stratified: realised rows per class, and classes too small to split
        ctx.out(f"    {sp.class_line()}")
    for warning in sp.warnings:
        ctx.out(f"    warning: {warning}")
    return Prepared(sp.train, sp.valid, sp.test, sp.rows, sp.groups, ingested.data)


def reusable(ctx: RunContext, key: str) -> resume.Reusable[Prepared]:
    """The prepared splits as Parquet under the run's ``prepared/`` folder."""
    paths = ctx.paths

    def save(p: Prepared) -> dict[str, Any]:
        # Each split replaces what an interrupted save left (components.steps.parquet_io); the
        # key file, written after every split, marks the folder complete.
        from components.steps import parquet_io

        for name in SPLIT_NAMES:
            parquet_io.write_fresh(getattr(p, name), paths.prepared_split(name))
        return {"data": p.data.to_dict(), "rows": p.rows, "groups": p.groups, "splits": p.summary}

    def load(doc: dict[str, Any]) -> Prepared:
        from components.steps import parquet_io

        parts = {
            name: parquet_io.read(paths.prepared_split(name)).materialize() for name in SPLIT_NAMES
        }
        data = DataSummary(**doc["data"])
        ctx.out(f"    reused: {data.rows_used:,} rows, splits {doc['rows']}")
        return Prepared(**parts, rows=doc["rows"], groups=doc["groups"], data=data)

    return resume.Reusable(("ingest", "split"), paths.prepared, key, save, load)

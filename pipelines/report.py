"""The run report: report.json (everything) and report.md (what a person reads)."""

from __future__ import annotations

import json
import os
from typing import Any


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _metric_table(report: dict[str, Any]) -> list[str]:
    test, base = report.get("test") or {}, report.get("baseline") or {}
    lines = ["| metric | model (test) | trivial baseline (test) |", "| --- | --- | --- |"]
    for k, v in test.items():
        if k == "queries":
            continue
        lines.append(f"| {k} | {_fmt(v)} | {_fmt(base.get(k, ''))} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown."""
    out = [
        f"# rayline run `{report['pipeline']}` / `{report['run_id']}`",
        "",
        f"- task: {report['task']}",
        f"- status: **{report['status']}**",
    ]
    if report.get("error"):
        out += ["", "## Error", "", "```", report["error"], "```"]
    data = report.get("data")
    if data:
        out += [
            "",
            "## Data",
            "",
            f"- rows read: {data['rows_read']:,} = rows used {data['rows_used']:,} "
            f"+ rows quarantined {data['rows_quarantined']:,}",
            f"- inputs (files or generator blocks): {data['inputs']}",
        ]
        if data.get("by_rule"):
            out.append(
                "- bad rows by rule: "
                + ", ".join(f"{k}: {v:,}" for k, v in sorted(data["by_rule"].items()))
            )
        for q in data.get("quarantine") or []:
            out.append(f"- quarantined rows (with reasons): `{q}`")
    splits = report.get("splits")
    if splits:
        out += ["", "## Splits", "", "| split | rows | queries |", "| --- | --- | --- |"]
        for name in ("train", "valid", "test"):
            out.append(
                f"| {name} | {splits['rows'][name]:,} | {splits['groups'].get(name) or '-'} |"
            )
    models = report.get("models")
    if models:
        metric = report.get("selection_metric")
        out += [
            "",
            "## Models",
            "",
            f"| model | kind | rounds (best) | train s | valid {metric} |",
            "| --- | --- | --- | --- | --- |",
        ]
        for m in models:
            out.append(
                f"| {m['name']} | {m['kind']} | {m['rounds']} ({m['best_iteration'] + 1}) | "
                f"{m['train_seconds']} | {_fmt(m['valid'].get(metric))} |"
            )
        out += ["", f"Winner on the validation split: **{report.get('winner')}**"]
    if report.get("test"):
        out += ["", "## Test metrics (whole test split)", "", *_metric_table(report)]
    g = report.get("gate")
    if g:
        out += [
            "",
            "## Promotion gate",
            "",
            f"- decision: **{'promote' if g['promote'] else 'keep production'}**",
        ]
        out.append(f"- why: {g['reason']}")
        if g.get("low") is not None:
            out += [
                f"- {g['metric']}: new model {_fmt(g['challenger'])} vs production "
                f"v{g.get('champion_version')} {_fmt(g['champion'])} on the same "
                f"{g['units']:,} test {g['unit']}",
                f"- improvement {g['improvement']:+.4f}, {100 * g['confidence']:g}% paired-bootstrap "
                f"interval [{g['low']:+.4f}, {g['high']:+.4f}] ({g['resamples']} resamples); "
                f"required lower bound > {g['min_improvement']:g}",
            ]
    model = report.get("model")
    if model:
        out += [
            "",
            "## Registry",
            "",
            f"- `{model['name']}` version **{model['version']}** "
            f"(aliases: {', '.join(model['aliases']) or 'none'})",
            f"- bundle: `{model['path']}`",
        ]
    if report.get("step_seconds"):
        out += ["", "## Steps", "", "| step | seconds |", "| --- | --- |"]
        out += [f"| {k} | {v} |" for k, v in report["step_seconds"].items()]
    lineage = report.get("lineage")
    if lineage:
        out += ["", "## Lineage", "", "```json", json.dumps(lineage, indent=1), "```"]
    return "\n".join(out) + "\n"


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [f"\nrun {report['run_id']}: {report['status']} in {report.get('seconds', '?')}s"]
    data = report.get("data")
    if data:
        lines.append(
            f"  rows: {data['rows_read']:,} read = {data['rows_used']:,} used + "
            f"{data['rows_quarantined']:,} quarantined"
        )
    if report.get("test"):
        lines.append("  test metrics (model vs. trivial baseline):")
        for k, v in report["test"].items():
            if k != "queries":
                lines.append(
                    f"    {k:<10} {_fmt(v)}   (baseline {_fmt(report['baseline'].get(k))})"
                )
    model = report.get("model")
    if model:
        lines.append(
            f"  registered {model['name']} v{model['version']} "
            f"[{', '.join(model['aliases'])}] at {model['path']}"
        )
    g = report.get("gate")
    if g:
        lines.append(f"  gate: {'promoted' if g['promote'] else 'not promoted'}: {g['reason']}")
    if report.get("endpoint"):
        lines.append(f"  serving {report['endpoint']['url']} (v{report['endpoint']['version']})")
    return "\n".join(lines)


def write(run_dir: str, report: dict[str, Any]) -> tuple[str, str]:
    """Write report.md and report.json into the run directory (each via a temp file + rename)."""
    os.makedirs(run_dir, exist_ok=True)
    paths = (os.path.join(run_dir, "report.md"), os.path.join(run_dir, "report.json"))
    for path, text in zip(
        paths, (markdown(report), json.dumps(report, indent=1, default=str)), strict=True
    ):
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return paths

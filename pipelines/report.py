"""The run report: report.json (everything) and report.md (what a person reads)."""

from __future__ import annotations

import json
from typing import Any

from components import uris
from components.bundle import Storage


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


COUNTS = frozenset({"queries", "queries_no_relevant"})
"""Keys of a metrics block that are counts, not metrics: printed in the convention notes."""

_COUNTED = {"one": "1", "zero": "0", "skip": None}  # what a no-relevant query counts


def convention_notes(report: dict[str, Any]) -> list[str]:
    """How the test metrics were computed, one sentence each: for ranking, how a query without
    a relevant row counts (``evaluation.no_relevant``) and how many such queries there are; the
    weight column when the metrics are weighted. Empty without ``metric_conventions``."""
    conv = report.get("metric_conventions") or {}
    test = report.get("test") or {}
    notes = []
    if "ndcg_no_relevant" in conv:
        ndcg, rest = _COUNTED[conv["ndcg_no_relevant"]], _COUNTED[conv["map_no_relevant"]]
        if ndcg is None or rest is None:  # skip leaves them out of every ranking metric
            counted = "ndcg, map and mrr leave them out of the mean"
        else:
            counted = f"ndcg counts each {ndcg}, map and mrr {rest}"
        seen = ""
        if "queries_no_relevant" in test and "queries" in test:
            seen = (
                f" ({int(test['queries_no_relevant']):,} of {int(test['queries']):,} test queries)"
            )
        notes.append(
            f"no_relevant={conv['ndcg_no_relevant']}: queries without a relevant row{seen}: "
            f"{counted}"
        )
    if conv.get("weight"):
        notes.append(f"weighted by column {conv['weight']!r}")
    return notes


def _metric_table(report: dict[str, Any]) -> list[str]:
    test, base = report.get("test") or {}, report.get("baseline") or {}
    plain = report.get("test_without_guardrails")
    if plain is None:
        lines = ["| metric | model (test) | trivial baseline (test) |", "| --- | --- | --- |"]
    else:
        lines = [
            "| metric | model with guardrails (test) | model alone (test) | "
            "trivial baseline (test) |",
            "| --- | --- | --- | --- |",
        ]
    for k, v in test.items():
        if k in COUNTS:
            continue
        alone = "" if plain is None else f" {_fmt(plain.get(k, ''))} |"
        lines.append(f"| {k} | {_fmt(v)} |{alone} {_fmt(base.get(k, ''))} |")
    return lines


def _gate_lines(g: dict[str, Any], against: str) -> list[str]:
    lines = [f"- why: {g['reason']}"]
    if g.get("low") is not None:
        lines += [
            f"- {g['metric']}: {g.get('challenger_name') or 'new model'} "
            f"{_fmt(g['challenger'])} vs {against} {_fmt(g['champion'])} on the same "
            f"{g['units']:,} {g.get('split', 'test')} {g['unit']}",
            f"- improvement {g['improvement']:+.4f}, {100 * g['confidence']:g}% paired-bootstrap "
            f"interval [{g['low']:+.4f}, {g['high']:+.4f}] ({g['resamples']} resamples); "
            f"required lower bound > {g['min_improvement']:g}",
        ]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown."""
    out = [
        f"# rayline run `{report['pipeline']}` / `{report['run_id']}`",
        "",
        f"- task: {report['task']}",
        f"- status: **{report['status']}**",
    ]
    if report.get("reused"):
        out.append(
            "- resumed: reused from the interrupted run (inputs unchanged): "
            + ", ".join(report["reused"])
        )
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
        skipped = data.get("skipped") or []
        if skipped:
            shown = ", ".join(f"`{s}`" for s in skipped[:20])
            more = f", and {len(skipped) - 20} more" if len(skipped) > 20 else ""
            out.append(f"- files skipped in input folders ({len(skipped)}): {shown}{more}")
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
            rounds = "-" if m["kind"] == "rules" else f"{m['rounds']} ({m['best_iteration'] + 1})"
            out.append(
                f"| {m['name']} | {m['kind']} | {rounds} | "
                f"{m['train_seconds']} | {_fmt(m['valid'].get(metric))} |"
            )
        out += ["", f"Winner on the validation split: **{report.get('winner')}**"]
        if report.get("final_model"):
            out.append(f"Final model: {report['final_model']}")
    for name, t in (report.get("tuning") or {}).items():
        out += [
            "",
            f"## Tuning: {name}",
            "",
            f"{len(t['trials'])} trials in {t['seconds']} s, watching {t['metric']} ({t['mode']}); "
            f"the winner is {t['winner_from']}.",
            "",
            f"| trial | status | {t['metric']} | reached | seconds | parameters |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        best_id = (t.get("best") or {}).get("trial_id")
        for tr in t["trials"]:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in tr["config"].items())
            mark = " **best**" if tr["trial_id"] == best_id else ""
            status = tr["status"] + (f" ({tr['error']})" if tr.get("error") else "")
            out.append(
                f"| {tr['trial_id']}{mark} | {status} | {_fmt(tr['value'])} | {tr['reached']} | "
                f"{tr['seconds'] or 0:.1f} | {params} |"
            )
    if report.get("test"):
        out += ["", "## Test metrics (whole test split)", "", *_metric_table(report)]
        notes = convention_notes(report)
        if notes:
            out += ["", *(f"- {n}" for n in notes)]
    guards = report.get("guardrails")
    if guards:
        out += [
            "",
            "## Guardrails",
            "",
            "Applied in this order after the model, offline and online (test rows they changed):",
            "",
            "| guardrail | action | when | fired on | share |",
            "| --- | --- | --- | --- | --- |",
        ]
        out += [
            f"| {gr['name']} | {gr['action']} | `{gr['when'] or 'always'}` | "
            f"{gr['fired']:,} | {100 * gr['share']:.2f}% |"
            for gr in guards
        ]
    b = report.get("baseline_gate")
    if b:
        kept = not b["promote"]
        out += [
            "",
            "## Rule baseline",
            "",
            f"- decision: **{b['baseline'] if kept else b['challenger_name']}** "
            + (
                f"(the trained {b['challenger_name']} did not clearly beat the rules)"
                if kept
                else f"(clearly better than the rule baseline {b['baseline']})"
            ),
            *_gate_lines(b, f"the rule baseline {b['baseline']}"),
        ]
    g = report.get("gate")
    if g:
        out += [
            "",
            "## Promotion gate",
            "",
            f"- decision: **{'promote' if g['promote'] else 'keep production'}**",
            *_gate_lines(g, f"production v{g.get('champion_version')}"),
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
        lines.append(
            "  test metrics (model"
            + (" with guardrails" if report.get("test_without_guardrails") else "")
            + " vs. trivial baseline):"
        )
        for k, v in report["test"].items():
            if k not in COUNTS:
                lines.append(
                    f"    {k:<10} {_fmt(v)}   (baseline {_fmt(report['baseline'].get(k))})"
                )
        lines += [f"    {n}" for n in convention_notes(report)]
    model = report.get("model")
    if model:
        lines.append(
            f"  registered {model['name']} v{model['version']} "
            f"[{', '.join(model['aliases'])}] at {uris.display(model['path'])}"
        )
    g = report.get("gate")
    if g:
        lines.append(f"  gate: {'promoted' if g['promote'] else 'not promoted'}: {g['reason']}")
    if report.get("endpoint"):
        lines.append(f"  serving {report['endpoint']['url']} (v{report['endpoint']['version']})")
    return "\n".join(lines)


PLOT_ROWS = 200_000  # predictions read for the report's curves (ROC, PR, NDCG by k)


def figures(report: dict[str, Any]) -> dict[str, bytes]:
    """The run's plots as PNG bytes, by name (only those the run has data for)."""
    import numpy as np
    import pyarrow.dataset as pads

    from pipelines import plots

    out: dict[str, bytes] = {}
    metric = report.get("selection_metric") or ""
    if report.get("models"):
        png = plots.learning_curves(report["models"], metric)
        if png:
            out["learning_curves"] = png
    for name, t in (report.get("tuning") or {}).items():
        png = plots.trials(name, t["trials"], t["metric"])
        if png:
            out[f"trials_{name}"] = png
    predictions = report.get("predictions")
    if predictions and Storage(uris.parent(predictions)).exists(uris.basename(predictions)):
        fs, inner = uris.filesystem(predictions)
        # the curves need a sample, not every row: the first PLOT_ROWS rows of the predictions
        frame = pads.dataset(inner, filesystem=fs, format="parquet").head(PLOT_ROWS).to_pandas()
        label = report.get("label") or "label"
        if report["task"] == "binary" and label in frame and frame[label].nunique() == 2:
            out.update(
                plots.binary_curves(
                    frame[label].to_numpy(np.int64), frame["score"].to_numpy(np.float64)
                )
            )
        elif report["task"] == "regression" and label in frame:
            out.update(
                plots.regression_curves(
                    frame[label].to_numpy(np.float64), frame["score"].to_numpy(np.float64)
                )
            )
        elif report["task"] == "ranking" and "_group" in frame:
            out.update(
                plots.ranking_curves(
                    frame[label].to_numpy(np.float64),
                    frame["score"].to_numpy(np.float64),
                    frame["_group"].to_numpy(),
                )
            )
    path = (report.get("model") or {}).get("path")
    if path and Storage(path).is_file("feature_importance.json"):
        importance = json.loads(Storage(path).read_text("feature_importance.json"))
        png = plots.feature_importance(importance)
        if png:
            out["feature_importance"] = png
    if report.get("gate"):
        png = plots.gate_interval(report["gate"])
        if png:
            out["gate"] = png
    if report.get("baseline_gate"):
        png = plots.gate_interval(report["baseline_gate"])
        if png:
            out["baseline_gate"] = png
    return out


SECTION_FIGURES = {  # which figures go under which markdown section
    "## Models": ["learning_curves"],
    "## Test metrics (whole test split)": [
        "roc",
        "precision_recall",
        "calibration",
        "ndcg_by_k",
        "ndcg_per_query",
        "predicted_vs_actual",
        "residuals",
        "feature_importance",
    ],
    "## Rule baseline": ["baseline_gate"],
    "## Promotion gate": ["gate"],
}


def html(report: dict[str, Any], images: dict[str, bytes]) -> str:
    """The markdown report as one self-contained HTML page, figures embedded as PNG."""
    import base64

    placed: set[str] = set()
    body: list[str] = []
    lines = markdown(report).splitlines()
    i = 0
    section = ""
    while i < len(lines):
        line = lines[i]
        if line.startswith("## ") or line.startswith("# "):
            body += _figures_html(section, images, placed, base64)
            section = line
            level = 1 if line.startswith("# ") else 2
            body.append(f"<h{level}>{_inline(line.lstrip('# '))}</h{level}>")
        elif line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            head = _cells(line)
            body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                cells = _cells(lines[i])
                body.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
                i += 1
            body.append("</table>")
            continue
        elif line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            body.append("<pre>" + _escape("\n".join(block)) + "</pre>")
        elif line.startswith("- "):
            body.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                body.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("</ul>")
            continue
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    body += _figures_html(section, images, placed, base64)
    rest = [n for n in images if n not in placed]
    if rest:
        body.append("<h2>More figures</h2>")
        body += _figures_html("", {n: images[n] for n in rest}, placed, base64, all_=True)
    title = _escape(f"rayline {report['pipeline']} {report['run_id']}")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
    "padding:3px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}"
    "pre{background:#f7f7f7;padding:.7em;overflow:auto;font-size:12px}"
    "img{margin:.3em;border:1px solid #eee}"
)


def _figures_html(
    section: str, images: dict[str, bytes], placed: set[str], b64: Any, all_: bool = False
) -> list[str]:
    names = list(images) if all_ else [n for n in SECTION_FIGURES.get(section, []) if n in images]
    if section == "## Models":
        names += [n for n in images if n.startswith("trials_")]
    out = []
    for n in names:
        if n in placed:
            continue
        placed.add(n)
        data = b64.b64encode(images[n]).decode()
        out.append(f"<img alt='{n}' title='{n}' src='data:image/png;base64,{data}'>")
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _inline(text: str) -> str:
    """Escape, then **bold** and `code` (the only inline markup the markdown report uses)."""
    import re

    out = _escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def write(run_dir: str, report: dict[str, Any]) -> tuple[str, str]:
    """Write report.md, report.json and report.html (with its figures, also as plots/*.png)
    into the run directory (a folder or an object-store prefix), each file atomically. A figure
    that cannot be drawn is noted in the page, never a failed run."""
    store = Storage(run_dir)
    try:
        images = figures(report) if report.get("status") == "succeeded" else {}
    except Exception as e:  # the report must still be written
        images = {}
        report = {**report, "figures_error": f"{type(e).__name__}: {e}"}
    for name, png in images.items():
        store.write_bytes(f"plots/{name}.png", png)
    names = ("report.md", "report.json", "report.html")
    texts = (
        markdown(report),
        json.dumps(report, indent=1, default=str),
        html(report, images),
    )
    for name, text in zip(names, texts, strict=True):
        store.write_text(name, text)
    return uris.display(store.where(names[0])), uris.display(store.where(names[1]))

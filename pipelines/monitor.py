"""``rayline monitor``: a served model's prediction log, its delayed labels and its training
profile, read in Ray Data passes and summarised per version and time window.

One pass over every logged row (traffic, latency, drift against each version's profile.json,
shadow/canary agreement, and a re-scored sample for training-serving skew); with labels, the
logged rows joined with them (a Ray Data hash join) and the task's metrics per version and
window, refined until every AUC is within its bound, plus the gate's paired bootstrap for every
canary or shadow against production. The report (``monitor.json``, ``monitor.html``) goes to
``<storage>/monitor/<model>/<time>/`` unless ``--out`` says where; thresholds (the spec's
``monitor:`` section) turn findings into breaches, and ``--act`` ends a canary that the
thresholds of ``monitor.canary`` judge.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from components import bundle, drift, gate, metric_parts, monitoring, uris
from components.bundle import Storage
from components.features import FeatureTransform
from components.online import KEYS
from components.registry import Registry
from components.tasks import task_info
from pipelines.errors import PipelineError
from pipelines.spec import CanaryThresholds, EvaluationSpec, GateSpec, MonitorSpec
from pipelines.stages.common import BlockFn

Say = Callable[[str], None]


@dataclass(frozen=True)
class MonitorRequest:
    """What to read and check (the command line, with the spec's ``monitor:`` section)."""

    storage: str
    model: str
    labels: str | None = None
    label: str | None = None  # the labels' column (default: the bundle's label name)
    keys: tuple[str, ...] = KEYS
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    settings: MonitorSpec = field(default_factory=MonitorSpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    gate: GateSpec = field(default_factory=GateSpec)
    out: str | None = None
    act: bool = False


def parse_time(text: str | None, name: str) -> dt.datetime | None:
    """``--since``/``--until``: a day (``2026-12-03``) or an ISO time (UTC unless it says)."""
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise PipelineError(f"{name}: {text!r} is not a date or ISO time") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def thresholds(s: MonitorSpec) -> monitoring.Thresholds:
    return monitoring.Thresholds(
        max_psi=s.max_psi,
        max_unseen_rate=s.max_unseen_rate,
        min_metrics=dict(s.min_metrics),
        max_metrics=dict(s.max_metrics),
        max_skew=s.max_skew,
        max_error_rate=s.max_error_rate,
    )


def _version_features(path: str) -> monitoring.VersionFeatures | None:
    """A bundle's transform and training profiles (None: a bundle without profile.json)."""
    files = bundle.verify_bundle(path)["files"]
    if drift.PROFILE_JSON not in files:
        return None
    transform = FeatureTransform.from_json(
        bundle.read_bundle_file(path, "features.json", verify=False).decode()
    )
    docs = json.loads(bundle.read_bundle_file(path, drift.PROFILE_JSON, verify=False))
    return monitoring.VersionFeatures(
        transform, tuple(drift.FeatureProfile.from_dict(d) for d in docs)
    )


def monitor(req: MonitorRequest, say: Say) -> dict[str, Any]:
    """Read, summarise and check; the report (its ``breaches`` say what crossed a threshold).
    Needs a connected Ray."""
    from components.steps import monitor_log
    from components.steps.evaluate_split import map_blocks

    reg = Registry(req.storage)
    versions = reg.versions(req.model)  # a clear error for an unknown model
    production = reg.resolve(req.model)
    meta = bundle.read_json(production.path, "model.json")
    schema = json.loads(bundle.read_bundle_file(production.path, "schema.json"))
    task, k = str(meta["task"]), meta.get("num_classes")
    label = req.label or str(schema.get("label", "label"))
    fs, files, log_bytes = monitor_log.log_files(req.storage, req.model, req.since, req.until)
    period = _period(req)
    if not files:
        raise PipelineError(
            f"no prediction log for {req.model} {period} under "
            f"{uris.display(uris.join(req.storage, 'logs', req.model))}"
        )
    say(f"monitor {req.model}: {len(files)} log files {period}")
    features = {}
    for mv in versions:
        f = _version_features(mv.path)
        if f is not None:
            features[mv.version] = f
    s = req.settings
    plan = monitoring.MonitorPlan(
        task=task,
        label=label if req.labels else None,
        window=s.window,
        eval_kwargs=_eval_kwargs(task, req.evaluation),
        versions=features,
        bundles={mv.version: mv.path for mv in versions},
        skew_requests=s.skew_requests,
        skew_limit=s.max_skew,
    )
    traffic = monitor_log.traffic(fs, files, plan, req.since, req.until, log_bytes)
    logged = sum(traffic.rows.values())
    failed = sum(traffic.errors.values())
    say(
        f"  traffic: {logged:,} rows in {sum(traffic.requests.values()):,} answered requests"
        + (f", {failed:,} failed" if failed else "")
    )
    report: dict[str, Any] = {
        "model": req.model,
        "task": task,
        "period": {
            "since": req.since.isoformat() if req.since else None,
            "until": req.until.isoformat() if req.until else None,
            "window": s.window,
            "files": len(files),
        },
        "production_version": production.version,
        "traffic": _traffic_table(traffic),
        "latency_ms": _latency_table(traffic),
        "errors": monitoring.error_table(traffic),
        "drift": monitoring.drift_table(traffic, features),
        "unprofiled_versions": sorted({v for v, _, _ in traffic.rows} - set(features), key=int),
        "skew": {str(v): sk for v, sk in sorted(traffic.skew.items())},
        "agreement": {
            _pair_name(key): {
                **monitoring.agreement_summary(a),
                "other_errors": traffic.other_errors.get(key, 0),
                "first_error": traffic.first_error.get(key),
            }
            for key, a in sorted(traffic.agreement.items())
        },
        "metrics": {},
        "pairs": {},
        "labels": None,
    }
    for key, n in sorted(traffic.other_errors.items()):  # a shadow that failed on every row
        if key not in traffic.agreement:
            report["agreement"][_pair_name(key)] = {
                "rows": 0,
                "other_errors": n,
                "first_error": traffic.first_error.get(key),
            }
    drift_ = _drift_shares(traffic, features)
    if req.labels:
        say(f"  labels: {uris.display(req.labels)} joined on {', '.join(req.keys)}")
        labels_ds, given = monitor_log.read_labels(req.labels, req.keys, label)
        joined = monitor_log.labelled(
            fs, files, labels_ds, task, k, req.since, req.until, req.keys,
            grouped=task_info(task).grouped, log_bytes=log_bytes,
        )  # fmt: skip
        matched = monitor_log.count(joined)
        report["labels"] = {"given": given, "matched": matched, "logged_rows": logged}
        say(f"  {matched:,} logged rows have a label ({given:,} labels given)")
        if matched:
            parts = _label_parts(joined, plan, map_blocks)
            report["metrics"] = monitoring.metric_table(parts)
            report["calibration"] = {
                str(v): monitoring.calibration_table(c) for v, c in parts.calibration.items()
            }
            metric = req.evaluation.metric or task_info(task).default_metric
            plans, boots = _bootstraps(joined, parts, req, task, metric, label, map_blocks)
            report["intervals"] = monitoring.version_intervals(
                plans, boots, report["metrics"], metric, req.gate.confidence
            )
            report["pairs"] = _pairs(parts, plans, boots, req, metric)
    report["thresholds"] = s.model_dump()
    report["breaches"] = monitoring.breaches(report, thresholds(s))
    report["_drift_shares"] = drift_
    return report


def _period(req: MonitorRequest) -> str:
    since = req.since.isoformat() if req.since else "the first record"
    until = req.until.isoformat() if req.until else "the last"
    return f"from {since} to {until}"


def _eval_kwargs(task: str, e: EvaluationSpec) -> dict[str, Any]:
    return {name: getattr(e, name) for name in task_info(task).eval_options}


def _pair_name(key: monitoring.PairKey) -> str:
    kind, cand, prod = key
    return f"{kind} v{cand} vs production v{prod}"


def _traffic_table(t: monitoring.TrafficPart) -> list[dict[str, Any]]:
    return [
        {"version": v, "window": w, "answered_by": by, "rows": n, "requests": t.requests[key]}
        for key, n in sorted(t.rows.items())
        for v, w, by in [key]
    ]


def _latency_table(t: monitoring.TrafficPart) -> list[dict[str, Any]]:
    return [
        {
            "version": v,
            "answered_by": by,
            "requests": int(h.sum()),
            "p50": monitoring.latency_quantile(h, 0.5),
            "p99": monitoring.latency_quantile(h, 0.99),
        }
        for (v, by), h in sorted(t.latency.items())
    ]


def _drift_shares(
    t: monitoring.TrafficPart, features: dict[int, monitoring.VersionFeatures]
) -> dict[str, dict[str, Any]]:
    """Training and live shares per bin of every profiled feature (for the histograms)."""
    out: dict[str, dict[str, Any]] = {}
    for v, f in features.items():
        for p in f.profiles:
            live = monitoring.live_shares(t, v, p.name)
            if live is not None:
                out.setdefault(str(v), {})[p.name] = {
                    "kind": p.kind,
                    "edges": list(p.edges),
                    "train": list(p.shares),
                    "live": live.tolist(),
                }
    return out


def _label_parts(
    joined: Any, plan: monitoring.MonitorPlan, map_blocks: Callable[..., Any]
) -> monitoring.LabelPart:
    """The labelled rows' parts, with refinement passes until every AUC is within its bound."""
    parts = monitoring.merge_labels(map_blocks(joined, BlockFn(monitoring.label_block, plan)))
    for _ in range(metric_parts.REFINE_PASSES):
        grids = monitoring.refinements(parts)
        if not grids:
            break
        again = map_blocks(joined, BlockFn(monitoring.label_block, replace(plan, grids=grids)))
        parts = monitoring.with_refined(parts, monitoring.merge_labels(again))
    return parts


def _bootstraps(
    joined: Any,
    parts: monitoring.LabelPart,
    req: MonitorRequest,
    task: str,
    metric: str,
    label: str,
    map_blocks: Callable[..., Any],
) -> tuple[monitoring.BootstrapPlans, monitoring.Bootstraps]:
    """One more pass over the labelled rows: each version's bootstrap and each pair's."""
    settings = {
        "resamples": req.gate.resamples,
        "seed": req.gate.seed,
        "relevance_threshold": req.evaluation.relevance_threshold,
        "threshold": req.evaluation.threshold,
        "no_relevant": req.evaluation.no_relevant,
    }
    plans = monitoring.bootstrap_plans(task, metric, parts, settings, label)
    boots = monitoring.merge_bootstraps(
        map_blocks(joined, BlockFn(monitoring.bootstrap_block, plans))
    )
    return plans, boots


def _pairs(
    parts: monitoring.LabelPart,
    plans: monitoring.BootstrapPlans,
    boots: monitoring.Bootstraps,
    req: MonitorRequest,
    metric: str,
) -> dict[str, Any]:
    """Each canary or shadow against production on the same labelled rows: both metrics and
    the gate's decision (the canary thresholds' confidence and improvement)."""
    c = req.settings.canary
    out = {}
    for key, sides in sorted(parts.pairs.items()):
        cand = metric_parts.finish(sides["test"])
        prod = metric_parts.finish(sides["champion"])
        decision = gate.decide_from_parts(
            plans.pairs[key], boots.pairs.get(key), cand[metric], prod[metric],
            min_improvement=c.min_improvement, confidence=c.confidence,
        )  # fmt: skip
        out[_pair_name(key)] = {
            "kind": key[0],
            "candidate": key[1],
            "production": key[2],
            "metric": metric,
            "rows": decision.units,
            "candidate_metrics": cand,
            "production_metrics": prod,
            "decision": decision.to_dict(),
        }
    return out


# --------------------------------------------------------------------------------------------
# acting on a canary


@dataclass(frozen=True)
class CanaryVerdict:
    """What ``--act`` does with a canary: ``promote``, ``rollback`` or ``wait``, and why."""

    action: str
    reason: str


def judge_canary(
    report: dict[str, Any], canary: int, production: int, c: CanaryThresholds
) -> CanaryVerdict:
    """The canary thresholds applied to a finished report (no I/O): promote when the paired
    bootstrap says confidently better, roll back when its error rate, latency or metric is
    worse beyond the thresholds, else wait (too few labelled rows, or no confident difference)."""
    worse = _more_errors(report, canary, production, c)
    if worse is not None:
        return CanaryVerdict("rollback", worse)
    pair = report.get("pairs", {}).get(f"canary v{canary} vs production v{production}")
    lat = {(r["version"], r["answered_by"]): r for r in report.get("latency_ms", [])}
    mine, theirs = lat.get((canary, "canary")), lat.get((production, "production"))
    if c.max_latency_ratio is not None and mine and theirs and theirs["p99"] > 0:
        ratio = mine["p99"] / theirs["p99"]
        if ratio > c.max_latency_ratio:
            return CanaryVerdict(
                "rollback",
                f"latency p99 {mine['p99']:.1f} ms is {ratio:.1f}x production's "
                f"{theirs['p99']:.1f} ms (> {c.max_latency_ratio}x)",
            )
    if pair is None:
        return CanaryVerdict("wait", "no labelled rows that both versions scored yet")
    rows = pair["decision"].get("units") or 0
    if rows < c.min_labelled_rows:
        return CanaryVerdict(
            "wait", f"{rows} labelled {pair['decision'].get('unit', 'rows')} of the canary, "
            f"fewer than {c.min_labelled_rows}",
        )  # fmt: skip
    metric = pair["metric"]
    sign = -1.0 if metric in gate.LOWER_IS_BETTER else 1.0
    drop = sign * (pair["production_metrics"][metric] - pair["candidate_metrics"][metric])
    if drop > c.max_metric_drop:
        return CanaryVerdict(
            "rollback",
            f"online {metric} {pair['candidate_metrics'][metric]:.4f} against production's "
            f"{pair['production_metrics'][metric]:.4f} on the same {rows} rows: worse by "
            f"{drop:.4f} (> {c.max_metric_drop})",
        )
    d = pair["decision"]
    if d["promote"]:
        return CanaryVerdict("promote", str(d["reason"]))
    return CanaryVerdict("wait", str(d["reason"]))


def _more_errors(
    report: dict[str, Any], canary: int, production: int, c: CanaryThresholds
) -> str | None:
    """Why the canary fails too often (None: it does not): its share of failed requests is
    above production's plus ``max_error_rate_increase``, and an exact one-sided binomial test
    says so at ``confidence`` (the canary's failures against production's rate plus the
    allowance, production's rate taken as known: it has most of the traffic). One failure in a
    few requests is not evidence; the normal approximation would call it one."""
    from scipy.stats import binom

    if c.max_error_rate_increase is None:
        return None
    rates = {(r["version"], r["answered_by"]): r for r in report.get("errors", [])}
    mine, theirs = rates.get((canary, "canary")), rates.get((production, "production"))
    if not mine or not mine["errors"]:
        return None
    n1, e1 = int(mine["requests"]), int(mine["errors"])
    n2, e2 = (int(theirs["requests"]), int(theirs["errors"])) if theirs else (0, 0)
    p1, p2 = e1 / n1, (e2 / n2 if n2 else 0.0)
    allowed = min(1.0, p2 + c.max_error_rate_increase)
    if p1 <= allowed:
        return None
    p_value = float(binom.sf(e1 - 1, n1, allowed))  # P(at least e1 failures | allowed rate)
    if p_value > 1 - c.confidence:
        return None
    return (
        f"{e1} of its {n1} requests failed ({p1:.1%}) against production's {e2} of {n2} "
        f"({p2:.1%}): above the allowed {allowed:.1%} (p = {p_value:.2g}); first: "
        f"{mine['first_error']}"
    )


def act_on_canary(
    storage: str, model: str, verdict: CanaryVerdict, canary: int, say: Say
) -> dict[str, Any] | None:
    """Promote or roll back the canary (the alias history records the verdict as its evidence)
    and move the running deployment; None when the verdict is to wait."""
    from pipelines.deploy import end_canary, switch_running

    if verdict.action == "wait":
        return None
    reg = Registry(storage)
    before = reg.resolve(model).version
    end_canary(storage, model)
    if verdict.action == "promote":
        note = f"canary v{canary} promoted by rayline monitor: {verdict.reason}"
        reg.set_alias(model, "production", canary, note=note)
        new = canary
    else:
        note = f"canary v{canary} rolled back by rayline monitor: {verdict.reason}"
        reg.set_alias(model, "production", before, note=note)
        new = before
    say(f"  {note}")
    moved = switch_running(storage, model, new, out=say)
    say(
        f"  the running deployment now serves v{new} to every request"
        if moved
        else f"  {model} is not being served on this cluster: the registry alone changed"
    )
    return {"action": verdict.action, "canary": canary, "production_before": before,
            "production_after": new, "note": note, "deployment_moved": moved}  # fmt: skip


# --------------------------------------------------------------------------------------------
# writing the report


def report_location(req: MonitorRequest) -> str:
    """Where the report goes: ``--out``, else ``<storage>/monitor/<model>/<UTC time>``."""
    if req.out:
        return req.out
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return uris.join(req.storage, "monitor", req.model, stamp)


def write_report(location: str, report: dict[str, Any]) -> tuple[str, str]:
    """``monitor.json`` and ``monitor.html`` (with its figures) at ``location``; their paths."""
    from pipelines import monitor_report

    shares = report.pop("_drift_shares", {})
    store = Storage(location)
    store.write_text("monitor.json", json.dumps(report, indent=1, default=str, allow_nan=True))
    store.write_text("monitor.html", monitor_report.html(report, shares))
    return uris.join(location, "monitor.json"), uris.join(location, "monitor.html")

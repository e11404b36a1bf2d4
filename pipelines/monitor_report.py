"""``rayline monitor``'s report as one self-contained HTML page (tables, PNG figures inline)."""

from __future__ import annotations

import base64
import html as htmllib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from components.monitoring import ALL
from pipelines.plots import plt, to_png


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.4g}"
    return "-" if v is None else str(v)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{htmllib.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{htmllib.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    return f"<img alt='{htmllib.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def metric_over_time(
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]], name: str
) -> bytes | None:
    """One metric per window, a line per version."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    drawn = False
    for v, windows in sorted(metrics.items(), key=lambda kv: int(kv[0])):
        xs = sorted(w for w in windows if w != ALL and name in windows[w])
        if xs:
            ax.plot(xs, [windows[w][name] for w in xs], marker="o", label=f"v{v}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_ylabel(name)
    ax.set_title(f"Online {name} per window")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return to_png(fig)


def calibration(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes | None:
    """Observed rate against mean score per score bucket, a line per version."""
    if not tables:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
    for v, rows in sorted(tables.items(), key=lambda kv: int(kv[0])):
        ax.plot(
            [r["mean_score"] for r in rows],
            [r["observed"] for r in rows],
            marker="o",
            label=f"v{v}",
        )
    ax.set_xlabel("mean predicted")
    ax.set_ylabel("observed rate")
    ax.set_title("Calibration on logged labels")
    ax.legend(fontsize=8)
    return to_png(fig)


def psi_bars(feats: Mapping[str, Mapping[str, Any]], limit: float | None) -> bytes | None:
    """Each feature's PSI over the whole period, largest first, the threshold drawn."""
    if not feats:
        return None
    items = sorted(feats.items(), key=lambda kv: -kv[1]["psi"])[:25]
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(items) + 1.2))
    ax.barh([n for n, _ in items][::-1], [d["psi"] for _, d in items][::-1], color="#4a7")
    if limit is not None:
        ax.axvline(limit, color="#c33", lw=1, ls="--", label=f"max_psi {limit}")
        ax.legend(fontsize=8)
    ax.set_xlabel("PSI (live vs training)")
    ax.set_title("Drift per feature")
    return to_png(fig)


def histograms(shares: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> bytes | None:
    """Training and live shares per profile bin of the named features."""
    names = [n for n in names if n in shares]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.0), squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):
        d = shares[n]
        x = np.arange(len(d["train"]))
        ax.bar(x - 0.2, d["train"], width=0.4, label="training")
        ax.bar(x + 0.2, d["live"], width=0.4, label="live")
        ax.set_title(n, fontsize=9)
        ax.set_xlabel(
            "decile bin, then missing"
            if d["kind"] == "numeric"
            else "top codes, the rest, then unseen"
        )
    axes[0][0].legend(fontsize=7)
    return to_png(fig)


def html(report: Mapping[str, Any], shares: Mapping[str, Mapping[str, Any]]) -> str:
    """The whole report page."""
    r = report
    out = [f"<h1>rayline monitor {htmllib.escape(r['model'])}</h1>"]
    p = r["period"]
    out.append(
        f"<p>{htmllib.escape(r['task'])} model; log {_fmt(p['since'])} to {_fmt(p['until'])}, "
        f"{p['files']} files, by {p['window']}; production v{r['production_version']}</p>"
    )
    out.append("<h2>Breaches</h2>")
    if r["breaches"]:
        out.append(
            "<ul>" + "".join(f"<li>{htmllib.escape(b)}</li>" for b in r["breaches"]) + "</ul>"
        )
    else:
        out.append("<p>none: every threshold holds</p>")
    if r.get("actions"):
        out.append(
            "<h2>Actions</h2>"
            + _table(
                r["actions"], ["action", "canary", "production_before", "production_after", "note"]
            )
        )
    out.append(
        "<h2>Traffic</h2>"
        + _table(r["traffic"], ["version", "window", "answered_by", "requests", "rows"])
    )
    out.append(
        "<h2>Latency (ms)</h2>"
        + _table(r["latency_ms"], ["version", "answered_by", "requests", "p50", "p99"])
    )
    if r.get("labels"):
        lab = r["labels"]
        out.append(
            f"<h2>Online metrics</h2><p>{lab['matched']:,} of {lab['logged_rows']:,} logged rows labelled ({lab['given']:,} labels given)</p>"
        )
        rows = [
            {"version": v, "window": w, **m}
            for v, ws in r["metrics"].items()
            for w, m in ws.items()
        ]
        names = sorted({k for row in rows for k in row if k not in ("version", "window")})
        out.append(_table(rows, ["version", "window", *names]))
        if r.get("intervals"):
            rows = [{"version": v, **iv} for v, iv in r["intervals"].items()]
            out.append("<h3>Each version's metric over the period, bootstrap interval</h3>")
            out.append(
                _table(rows, ["version", "metric", "value", "low", "high", "confidence", "units"])
            )
        main = next(
            (n for n in ("auc", "ndcg@10", "rmse", "logloss") if n in names),
            names[0] if names else None,
        )
        if main:
            out.append(_img(metric_over_time(r["metrics"], main), main))
        out.append(_img(calibration(r.get("calibration") or {}), "calibration"))
    if r.get("pairs"):
        rows = [{"pair": k, "rows": v["rows"], "metric": v["metric"], "candidate": v["candidate_metrics"][v["metric"]],
                 "production": v["production_metrics"][v["metric"]], "promote": v["decision"]["promote"],
                 "reason": v["decision"]["reason"]} for k, v in r["pairs"].items()]  # fmt: skip
        out.append("<h2>Shadow and canary against production (labelled, paired)</h2>")
        out.append(
            _table(rows, ["pair", "rows", "metric", "candidate", "production", "promote", "reason"])
        )
    if r.get("agreement"):
        rows = [{"pair": k, **v} for k, v in r["agreement"].items()]
        out.append("<h2>Shadow and canary agreement (all logged rows)</h2>")
        out.append(
            _table(
                rows,
                [
                    "pair",
                    "rows",
                    "mean_abs_diff",
                    "max_abs_diff",
                    "correlation",
                    *(["queries", "kendall_tau"] if r["task"] == "ranking" else []),
                    "other_errors",
                    "first_error",
                ],
            )
        )
    out.append("<h2>Drift against the training profile</h2>")
    limit = r["thresholds"].get("max_psi")
    for v, windows in sorted(r["drift"].items(), key=lambda kv: int(kv[0])):
        whole = windows.get(ALL, {})
        rows = [{"feature": n, **d} for n, d in sorted(whole.items(), key=lambda kv: -kv[1]["psi"])]
        out.append(f"<h3>v{v}, the whole period</h3>")
        out.append(
            _table(
                rows,
                ["feature", "kind", "psi", "chi2_pvalue", "missing_train", "missing_live", "rows"],
            )
        )
        out.append(_img(psi_bars(whole, limit), f"PSI v{v}"))
        worst = [n for n, _ in sorted(whole.items(), key=lambda kv: -kv[1]["psi"])[:4]]
        out.append(_img(histograms(shares.get(v, {}), worst), f"histograms v{v}"))
    if r.get("unprofiled_versions"):
        out.append(
            f"<p>versions without a training profile (bundles from before profile.json): {r['unprofiled_versions']}</p>"
        )
    out.append("<h2>Training-serving skew (logged rows re-scored offline)</h2>")
    rows = [{"version": v, **s, "examples": ", ".join(s["examples"])} for v, s in r["skew"].items()]
    out.append(
        _table(rows, ["version", "rows", "max_abs_diff", "rows_over", "not_rescored", "examples"])
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>rayline monitor {htmllib.escape(r['model'])}</title><style>{_CSS}</style></head><body>"
        + "\n".join(out)
        + "</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
    "padding:3px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}"
    "img{margin:.3em;border:1px solid #eee}"
)

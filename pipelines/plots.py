"""The report's figures as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are written on headless cluster nodes

import matplotlib.pyplot as plt
import numpy as np

from components import curves, metrics


def to_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def learning_curves(models: Sequence[Mapping[str, Any]], metric: str) -> bytes | None:
    """The validation metric per round/epoch for every trained model (its best point marked)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    drawn = False
    for m in models:
        history = m.get("history") or []
        keys = [k for k in (history[-1] if history else {}) if k.startswith("valid-")]
        if not keys:
            continue
        key = f"valid-{metric}" if f"valid-{metric}" in keys else keys[-1]
        x_key = "epoch" if "epoch" in history[-1] else "round"
        x = [h.get(x_key, i + 1) for i, h in enumerate(history) if key in h]
        y = [h[key] for h in history if key in h]
        ax.plot(x, y, marker="." if len(x) < 40 else None, label=f"{m['name']} ({key})")
        best = m.get("best_iteration", -1)
        if 0 <= best < len(history) and key in history[best]:
            ax.scatter([history[best].get(x_key, best + 1)], [history[best][key]], zorder=3)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("round / epoch")
    ax.set_ylabel(metric)
    ax.set_title("Validation metric while training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def trials(name: str, table: Sequence[Mapping[str, Any]], metric: str) -> bytes | None:
    """Each trial's watched metric, finished trials solid, early-stopped ones hollow."""
    rows = [t for t in table if t.get("value") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    for i, t in enumerate(rows):
        done = t["status"] == "completed"
        ax.scatter([i], [t["value"]], facecolors="C0" if done else "none", edgecolors="C0")
    ax.set_xticks(range(len(rows)), [str(t["trial_id"])[-5:] for t in rows], rotation=45)
    ax.set_ylabel(metric)
    ax.set_title(f"{name}: trials (hollow = stopped early)")
    ax.grid(alpha=0.3)
    return to_png(fig)


def binary_curves(y: np.ndarray, p: np.ndarray) -> dict[str, bytes]:
    """ROC, precision-recall and calibration of the test predictions."""
    out = {}
    fpr, tpr = curves.roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {metrics.roc_auc(y, p):.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(loc="lower right")
    out["roc"] = to_png(fig)
    recall, precision = curves.pr_curve(y, p)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(recall, precision)
    ax.axhline(float(np.mean(y)), ls="--", color="grey", lw=1, label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)", ylim=(0, 1.02))
    ax.legend()
    out["precision_recall"] = to_png(fig)
    pred, obs, n = curves.calibration(y, p)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.plot(pred, obs, marker="o")
    for x, yy, c in zip(pred, obs, n, strict=True):
        ax.annotate(f"{c}", (x, yy), fontsize=7, xytext=(3, -8), textcoords="offset points")
    ax.set(xlabel="mean predicted", ylabel="observed rate", title="Calibration (test, 10 bins)")
    out["calibration"] = to_png(fig)
    return out


def ranking_curves(rel: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict[str, bytes]:
    """NDCG@k for k = 1..20 against a random order, and the per-query NDCG@10 distribution."""
    ks = list(range(1, 21))
    rng = np.random.default_rng(0)
    random_scores = rng.random(len(scores))
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(ks, curves.ndcg_by_k(rel, scores, groups, ks), marker=".", label="model")
    ax.plot(ks, curves.ndcg_by_k(rel, random_scores, groups, ks), marker=".", label="random order")
    ax.set(xlabel="k", ylabel="NDCG@k", title="NDCG@k on the test split", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    out = {"ndcg_by_k": to_png(fig)}
    per_query = metrics.per_query(rel, scores, groups, "ndcg@10")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.hist(per_query, bins=20, range=(0, 1))
    ax.axvline(float(per_query.mean()), color="C1", label=f"mean {per_query.mean():.4f}")
    ax.set(xlabel="NDCG@10 of one query", ylabel="queries", title="Per-query NDCG@10 (test)")
    ax.legend()
    out["ndcg_per_query"] = to_png(fig)
    return out


def regression_curves(y: np.ndarray, pred: np.ndarray) -> dict[str, bytes]:
    """Predicted against actual (density, with the diagonal), and residuals against predicted."""
    lo = float(min(np.min(y), np.min(pred)))
    hi = float(max(np.quantile(y, 0.995), np.quantile(pred, 0.995)))
    fig, ax = plt.subplots(figsize=(4.4, 4))
    hb = ax.hexbin(y, pred, gridsize=40, bins="log", extent=(lo, hi, lo, hi), mincnt=1)
    ax.plot([lo, hi], [lo, hi], "--", color="C3", lw=1, label="perfect")
    fig.colorbar(hb, ax=ax, label="rows (log)")
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (test)")
    ax.legend(loc="upper left")
    out = {"predicted_vs_actual": to_png(fig)}
    resid = y - pred
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
    r_lo, r_hi = np.quantile(resid, [0.005, 0.995])
    a1.hexbin(pred, resid, gridsize=40, bins="log", extent=(lo, hi, r_lo, r_hi), mincnt=1)
    a1.axhline(0, color="C3", lw=1)
    a1.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals (test)")
    a2.hist(np.clip(resid, r_lo, r_hi), bins=50)
    a2.axvline(float(np.mean(resid)), color="C1", label=f"mean {np.mean(resid):+.3g}")
    a2.set(xlabel="actual - predicted (0.5% tails piled at the ends)", ylabel="rows")
    a2.set_title("Residual distribution")
    a2.legend()
    out["residuals"] = to_png(fig)
    return out


def feature_importance(importance: Mapping[str, float], top: int = 20) -> bytes | None:
    if not importance:
        return None
    items = sorted(importance.items(), key=lambda kv: kv[1])[-top:]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="total gain", title=f"Feature importance (top {len(items)})")
    return to_png(fig)


def gate_interval(g: Mapping[str, Any]) -> bytes | None:
    """The improvement's interval against the required margin."""
    if g.get("low") is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.errorbar(
        [g["improvement"]],
        [0],
        xerr=[[g["improvement"] - g["low"]], [g["high"] - g["improvement"]]],
        fmt="o",
        capsize=6,
    )
    ax.axvline(0, color="grey", lw=1)
    ax.axvline(g["min_improvement"], color="C3", ls="--", label="required lower bound")
    ax.set_yticks([])
    ax.set_xlabel(f"improvement in {g['metric']} over {g.get('baseline') or 'production'}")
    ax.legend(fontsize=8, loc="upper left")
    return to_png(fig)

"""A served model watched through its prediction log, block by block (no Ray here).

The log's rows (components.online.logged_rows: one per scored row) are summarised in parts
that add up across blocks, as the evaluate stage's are (components.split_evaluation):

* ``traffic_block`` on every logged row, labelled or not: rows and requests per version, time
  window and who answered (production, canary), and the requests it refused or failed on
  (components.online.failed_requests); latency histograms; the drift counts of every
  profiled feature against the answering version's training profile (components.drift, the
  bundle's profile.json), encoded as that version's transform encodes it; and, where the other
  version of a shadow or a canary scored the same request, how far the two outputs agree.
* ``label_block`` on the rows that have a label: the task's metric parts per version and window
  (components.evaluation.partial), calibration by score bucket (binary), and for each shadow or
  canary the paired parts of the candidate and of production on the same rows.
* ``bootstrap_block``: each version's bootstrap (its metric's interval) and the gate's paired
  bootstrap (components.gate) of each pair, a further pass once the label parts are merged.

``merge`` adds parts up, the ``finish_*`` functions turn them into the report's numbers. A
*pair* is ``(kind, candidate, production)``: kind ``shadow`` (production answered, the
candidate scored beside it) or ``canary`` (the candidate answered, production scored beside).
Ranking blocks must hold whole queries (a /rank request is one query, so one log record).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from components import drift, evaluation, gate, metric_parts
from components.features import FeatureTransform, signed_log1p
from components.online import OTHER
from components.split_evaluation import CHAMPION, champion_frame
from components.tasks import task_info

ALL = "all"
"""The window that spans the whole period read."""
WINDOWS = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00"}
CALIBRATION_BUCKETS = 10
LATENCY_EDGES = np.geomspace(0.05, 120_000.0, 241)  # ms: 5% wide bins from 50 us to 2 minutes

GroupKey = tuple[int, str]  # (version, window)
PairKey = tuple[str, int, int]  # (shadow | canary, candidate version, production version)


@dataclass(frozen=True)
class VersionFeatures:
    """What drift needs of one version's bundle: its transform and training profiles."""

    transform: FeatureTransform
    profiles: tuple[drift.FeatureProfile, ...]


@dataclass(frozen=True)
class MonitorPlan:
    """What every block needs: the task, the label column (None without labels), the window
    (``WINDOWS``), ``evaluation.partial``'s options, each version's features for drift, and
    the AUC grids of a refinement pass (by ``grid_key``)."""

    task: str
    label: str | None
    window: str = "day"
    eval_kwargs: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[int, VersionFeatures] = field(default_factory=dict)
    grids: Mapping[str, metric_parts.AucGrid] = field(default_factory=dict)
    bundles: Mapping[int, str] = field(default_factory=dict)  # re-scored for skew
    skew_requests: int = 100  # re-scored per version and block
    skew_limit: float = 1e-6


def grid_key(key: Any, name: str = "") -> str:
    """The name of one metric part's AUC grid in ``MonitorPlan.grids``."""
    return f"{key!r}/{name}"


def window_of(ts: pd.Series, window: str) -> np.ndarray:
    """Each timestamp's window label (UTC): ``2026-12-03`` by day, ``2026-12-03T07:00`` by hour."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {sorted(WINDOWS)}, got {window!r}")
    stamps = pd.to_datetime(ts, utc=True)
    return stamps.dt.strftime(WINDOWS[window]).to_numpy(dtype=object)


def output_columns(task: str, frame: pd.DataFrame, prefix: str = "") -> list[str]:
    """The model-output columns of ``frame`` (``score`` or ``proba_<k>``), with ``prefix``."""
    if task_info(task).proba:
        return sorted(
            (c for c in frame.columns if str(c).startswith(prefix + "proba_")),
            key=lambda c: int(str(c).rsplit("_", 1)[1]),
        )
    return [prefix + "score"] if prefix + "score" in frame.columns else []


def output_names(task: str, num_classes: int | None) -> list[str]:
    """The output columns a logged row of ``task`` holds."""
    if task_info(task).proba:
        return [f"proba_{k}" for k in range(int(num_classes or 0))]
    return ["score"]


def narrow(rows: pd.DataFrame, task: str, num_classes: int | None) -> pd.DataFrame:
    """The logged rows' columns that the labelled passes read, with the same columns and types
    in every block (Ray Data joins and shuffles blocks whose schemas must agree)."""
    n = len(rows)

    def col(name: str, default: Any) -> pd.Series:
        return rows[name] if name in rows else pd.Series([default] * n, index=rows.index)

    out = pd.DataFrame(
        {
            "request_id": rows["request_id"].astype(str),
            "row": rows["row"].astype("int64"),
            "ts": pd.to_datetime(rows["ts"], utc=True),
            "version": rows["version"].astype("int64"),
            "answered_by": rows["answered_by"].astype(str),
            "latency_ms": rows["latency_ms"].astype("float64"),
            "_group": col("_group", None).where(col("_group", None).notna(), rows["request_id"]),
            "filtered": col("filtered", False).fillna(False).astype(bool),
            "other_version": pd.to_numeric(col("other_version", np.nan), errors="coerce"),
            "other_error": col("other_error", None).astype(object),
        },
        index=rows.index,
    )
    for name in output_names(task, num_classes):
        out[name] = pd.to_numeric(col(name, np.nan), errors="coerce").astype("float64")
        out[OTHER + name] = pd.to_numeric(col(OTHER + name, np.nan), errors="coerce")
    return out.reset_index(drop=True)


def groups(
    frame: pd.DataFrame, by: Sequence[str]
) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
    """``frame.groupby(by)`` in key order, every key a tuple."""
    for key, g in frame.groupby(list(by), sort=True):
        yield (key if isinstance(key, tuple) else (key,)), g


# --------------------------------------------------------------------------------------------
# traffic: every logged row


@dataclass
class TrafficPart:
    """Counts that add up over blocks (see the module doc)."""

    rows: dict[tuple[int, str, str], int] = field(default_factory=dict)  # (v, window, by)
    requests: dict[tuple[int, str, str], int] = field(default_factory=dict)
    latency: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # (v, by)
    drift: dict[tuple[int, str, str], np.ndarray] = field(default_factory=dict)  # (v, w, name)
    # per pair: rows, sum |d|, max |d|, sum x, sum y, sum x^2, sum y^2, sum xy (x: candidate),
    # and for ranking the sum and count of per-query Kendall taus (query_taus)
    agreement: dict[PairKey, np.ndarray] = field(default_factory=dict)
    other_errors: dict[PairKey, int] = field(default_factory=dict)  # rows the other failed on
    first_error: dict[PairKey, str] = field(default_factory=dict)
    # per version: re-scored rows, the largest |online - offline|, rows beyond the limit, the
    # first few of those (request id:row), rows whose logged features could not be re-scored
    skew: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: dict[tuple[int, str, str], int] = field(default_factory=dict)  # failed requests
    first_failure: dict[tuple[int, str], str] = field(default_factory=dict)  # (v, by)


def _failures(part: TrafficPart, failed: pd.DataFrame, window: str) -> None:
    """Count the failed requests (status and error of each version's first) into ``part``."""
    failed = failed.assign(_window=window_of(failed["ts"], window))
    for (v, w, by), g in groups(failed, ["version", "_window", "answered_by"]):
        part.errors[(int(v), str(w), str(by))] = len(g)
        first = g.iloc[0]
        part.first_failure.setdefault(
            (int(v), str(by)), f"{first['status']}: {first['error']}"[:300]
        )


def _live_values(rows: pd.DataFrame, f: VersionFeatures, p: drift.FeatureProfile) -> np.ndarray:
    """One profiled feature of ``rows`` as the training profile counted it."""
    col = rows[p.name] if p.name in rows else pd.Series(np.nan, index=rows.index)
    if p.kind == "numeric":
        params = next(q for q in f.transform.numeric if q.name == p.name)
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return signed_log1p(values) if params.log1p else values
    cat = next(q for q in f.transform.categorical if q.name == p.name)
    return f.transform.codes(cat, col.astype(object).where(col.notna(), None))


def pairs_of(rows: pd.DataFrame) -> Iterable[tuple[PairKey, pd.DataFrame]]:
    """The rows another version scored too, by pair."""
    if "other_version" not in rows:
        return
    has = rows["other_version"].notna()
    for (by, version, other), part in groups(
        rows[has], ["answered_by", "version", "other_version"]
    ):
        if by == "canary":
            yield ("canary", int(version), int(other)), part
        else:
            yield ("shadow", int(other), int(version)), part


def paired_frame(task: str, kind: str, part: pd.DataFrame) -> pd.DataFrame:
    """A pair's rows with the candidate's outputs under the plain names and production's under
    the ``CHAMPION`` prefix (as the gate reads a scored split); rows the other version failed
    on are left out."""
    own = output_columns(task, part)
    theirs = output_columns(task, part, OTHER)
    if not theirs:
        return part.iloc[0:0]
    part = part[part[theirs[0]].notna()]
    keep = [c for c in part.columns if c not in own and c not in theirs and c != "filtered"]
    base = part[keep]
    other = part[theirs].rename(columns=lambda c: c.removeprefix(OTHER))
    mine = part[own]
    cand, prod = (mine, other) if kind == "canary" else (other, mine)
    return pd.concat([base, cand, prod.add_prefix(CHAMPION)], axis=1)


def traffic_block(
    rows: pd.DataFrame, plan: MonitorPlan, failed: pd.DataFrame | None = None
) -> TrafficPart:
    """One block's traffic part (see the module doc): its answered ``rows`` and its ``failed``
    requests."""
    part = TrafficPart()
    if failed is not None and len(failed):
        _failures(part, failed, plan.window)
    if not len(rows):
        return part
    windows = window_of(rows["ts"], plan.window)
    rows = rows.assign(_window=windows)
    first = rows["row"].to_numpy() == 0  # one per request
    for (v, w, by), g in groups(rows, ["version", "_window", "answered_by"]):
        key = (int(v), str(w), str(by))
        part.rows[key] = len(g)
        part.requests[key] = int((g["row"] == 0).sum())
    for (v, by), g in groups(rows[first], ["version", "answered_by"]):
        ms = g["latency_ms"].to_numpy(dtype=np.float64)
        part.latency[(int(v), str(by))] = np.histogram(ms, bins=LATENCY_EDGES)[0].astype(float)
    for (v, w), g in groups(rows, ["version", "_window"]):
        f = plan.versions.get(int(v))
        for p in f.profiles if f is not None else ():
            counts = drift.counts(_live_values(g, f, p), p.kind, p.edges)  # type: ignore[arg-type]
            part.drift[(int(v), str(w), p.name)] = counts
    for pair, g in pairs_of(rows):
        errors = g["other_error"].dropna() if "other_error" in g else pd.Series([], dtype=object)
        if len(errors):
            part.other_errors[pair] = len(errors)
            part.first_error[pair] = str(errors.iloc[0])[:300]
        frame = paired_frame(plan.task, pair[0], g)
        if not len(frame):
            continue
        x = evaluation.model_outputs(frame, plan.task).astype(np.float64).ravel()
        y = evaluation.model_outputs(champion_frame(frame), plan.task).astype(np.float64).ravel()
        d = np.abs(x - y)
        taus = query_taus(frame["_group"].to_numpy(), x, y) if "_group" in frame else np.empty(0)
        part.agreement[pair] = np.array(
            [len(frame), d.sum(), d.max(initial=0.0), x.sum(), y.sum(), x @ x, y @ y, x @ y,
             taus.sum(), len(taus)]
        )  # fmt: skip
    for (v,), g in groups(rows, ["version"]):
        if int(v) in plan.bundles:
            part.skew[int(v)] = skew_of(g, plan.bundles[int(v)], plan)
    return part


_PREDICTORS: dict[str, Any] = {}  # bundles loaded in this process, by path


def _predictor(path: str) -> Any:
    from components.predictor import Predictor

    if path not in _PREDICTORS:
        _PREDICTORS.clear()  # one bundle at a time per process is enough for a block's versions
        _PREDICTORS[path] = Predictor.load(path)
    return _PREDICTORS[path]


def skew_of(rows: pd.DataFrame, bundle_path: str, plan: MonitorPlan) -> dict[str, Any]:
    """The first ``plan.skew_requests`` requests of one version's rows re-scored offline with
    its bundle, against what the endpoint answered (guardrail-filtered candidates left out)."""
    ids = pd.unique(rows["request_id"].to_numpy())[: max(1, plan.skew_requests)]
    sample = rows[rows["request_id"].isin(set(ids))]
    predictor = _predictor(bundle_path)
    cols = predictor.feature_columns
    if any(c not in sample for c in cols):  # the features were not logged
        return {"rows": 0, "max_abs_diff": 0.0, "rows_over": 0, "examples": [],
                "not_rescored": len(sample)}  # fmt: skip
    online_cols = output_columns(plan.task, sample)
    offline_parts, online_parts, names = [], [], []
    for rid, req in sample.groupby("request_id", sort=False):
        scored = predictor.predict_frame(req[cols].reset_index(drop=True))
        shown = ~req["filtered"].to_numpy(dtype=bool) if "filtered" in req else slice(None)
        offline_parts.append(scored[online_cols].to_numpy(dtype=np.float64)[shown])
        online_parts.append(req[online_cols].to_numpy(dtype=np.float64)[shown])
        names += [f"{rid}:{r}" for r in req["row"].to_numpy()[shown]]
    if not names:
        return {"rows": 0, "max_abs_diff": 0.0, "rows_over": 0, "examples": [],
                "not_rescored": 0}  # fmt: skip
    summary = skew_summary(
        np.concatenate(online_parts), np.concatenate(offline_parts), names, plan.skew_limit
    )
    return {**summary, "not_rescored": 0}


def _merge_skew(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "rows": a["rows"] + b["rows"],
        "max_abs_diff": max(a["max_abs_diff"], b["max_abs_diff"]),
        "rows_over": a["rows_over"] + b["rows_over"],
        "examples": (a["examples"] + b["examples"])[:5],
        "not_rescored": a["not_rescored"] + b["not_rescored"],
    }


def merge_traffic(parts: Iterable[TrafficPart]) -> TrafficPart:
    """The traffic parts of several blocks as one."""
    total = TrafficPart()
    for p in parts:
        for name in ("rows", "requests", "other_errors", "errors"):
            mine, theirs = getattr(total, name), getattr(p, name)
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n
        for name in ("latency", "drift"):
            mine, theirs = getattr(total, name), getattr(p, name)
            for k, a in theirs.items():
                mine[k] = mine[k] + a if k in mine else a.copy()
        for k, a in p.agreement.items():
            if k in total.agreement:
                b = total.agreement[k]
                merged = b + a
                merged[2] = max(a[2], b[2])
                total.agreement[k] = merged
            else:
                total.agreement[k] = a.copy()
        for k, e in p.first_error.items():
            total.first_error.setdefault(k, e)
        for k2, e in p.first_failure.items():
            total.first_failure.setdefault(k2, e)
        for v, sk in p.skew.items():
            total.skew[v] = _merge_skew(total.skew[v], sk) if v in total.skew else dict(sk)
    return total


def error_table(t: TrafficPart) -> list[dict[str, Any]]:
    """Per version and who answered: requests routed to it, how many it refused or failed on
    (any status but 200), their share, and the first failure."""
    routed: dict[tuple[int, str], list[int]] = {}
    for (v, _, by), n in t.requests.items():
        routed.setdefault((v, by), [0, 0])[0] += n
    for (v, _, by), n in t.errors.items():
        routed.setdefault((v, by), [0, 0])[1] += n
    return [
        {
            "version": v,
            "answered_by": by,
            "requests": ok + bad,
            "errors": bad,
            "error_rate": bad / (ok + bad),
            "first_error": t.first_failure.get((v, by)),
        }
        for (v, by), (ok, bad) in sorted(routed.items())
    ]


def latency_quantile(hist: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a ``LATENCY_EDGES`` histogram: the upper edge of its bin (ms)."""
    total = hist.sum()
    if total <= 0:
        return float("nan")
    i = int(np.searchsorted(np.cumsum(hist), q * total, side="left"))
    return float(LATENCY_EDGES[min(i + 1, len(LATENCY_EDGES) - 1)])


def query_taus(groups: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of the two versions' scores within each query (rows grouped by query,
    each query's rows together); queries of one row, or where a version scored every row the
    same, have no tau and are left out."""
    if not len(groups):
        return np.empty(0)
    starts = metric_parts.segments(groups)
    ends = np.append(starts[1:], len(groups))
    out = []
    for s, e in zip(starts, ends, strict=True):
        if e - s < 2:
            continue
        dx = np.sign(x[s:e, None] - x[None, s:e])
        dy = np.sign(y[s:e, None] - y[None, s:e])
        # over the ordered pairs each unordered pair counts twice, on every sum alike
        untied_x, untied_y = float((dx != 0).sum()), float((dy != 0).sum())
        if untied_x == 0 or untied_y == 0:
            continue
        out.append(float((dx * dy).sum()) / np.sqrt(untied_x * untied_y))
    return np.asarray(out, dtype=np.float64)


def agreement_summary(a: np.ndarray) -> dict[str, float]:
    """Rows, mean and max absolute difference, and the Pearson correlation of a pair; for
    ranking, the mean over queries of Kendall's tau-b of the two versions' scores."""
    n, sad, mad, sx, sy, sxx, syy, sxy = (float(v) for v in a[:8])
    vx, vy = sxx - sx * sx / n, syy - sy * sy / n
    corr = (sxy - sx * sy / n) / np.sqrt(vx * vy) if vx > 0 and vy > 0 else float("nan")
    out = {"rows": int(n), "mean_abs_diff": sad / n, "max_abs_diff": mad, "correlation": corr}
    if len(a) > 9 and a[9] > 0:
        out["kendall_tau"] = float(a[8] / a[9])
        out["queries"] = int(a[9])
    return out


# --------------------------------------------------------------------------------------------
# labelled rows


@dataclass
class LabelPart:
    """Metric parts that merge over blocks (see the module doc)."""

    metrics: dict[GroupKey, metric_parts.Part] = field(default_factory=dict)
    calibration: dict[int, np.ndarray] = field(default_factory=dict)  # (buckets, 3): n, p, y
    pairs: dict[PairKey, dict[str, metric_parts.Part]] = field(default_factory=dict)


def _partial(plan: MonitorPlan, frame: pd.DataFrame, key: Any, name: str) -> metric_parts.Part:
    assert plan.label is not None
    return evaluation.partial(
        plan.task,
        frame,
        plan.label,
        grid=plan.grids.get(grid_key(key, name)),
        **plan.eval_kwargs,
    )


def label_block(joined: pd.DataFrame, plan: MonitorPlan) -> LabelPart:
    """One block of labelled rows: parts per (version, window) and (version, ``ALL``),
    calibration per version, both sides of every pair."""
    part = LabelPart()
    if not len(joined):
        return part
    joined = joined.assign(_window=window_of(joined["ts"], plan.window))
    for (v,), g in groups(joined, ["version"]):
        part.metrics[(int(v), ALL)] = _partial(plan, g, (int(v), ALL), "")
        for (w,), gw in groups(g, ["_window"]):
            part.metrics[(int(v), str(w))] = _partial(plan, gw, (int(v), str(w)), "")
        if plan.task == "binary":
            assert plan.label is not None
            p = g["score"].to_numpy(dtype=np.float64)
            y = g[plan.label].to_numpy(dtype=np.float64)
            b = np.clip((p * CALIBRATION_BUCKETS).astype(int), 0, CALIBRATION_BUCKETS - 1)
            cal = np.zeros((CALIBRATION_BUCKETS, 3))
            np.add.at(cal, (b, 0), 1.0)
            np.add.at(cal, (b, 1), p)
            np.add.at(cal, (b, 2), y)
            part.calibration[int(v)] = cal
    for pair, g in pairs_of(joined):
        frame = paired_frame(plan.task, pair[0], g)
        if not len(frame):
            continue
        part.pairs[pair] = {
            "test": _partial(plan, frame, pair, "test"),
            "champion": _partial(plan, champion_frame(frame), pair, "champion"),
        }
    return part


def merge_labels(parts: Iterable[LabelPart]) -> LabelPart:
    """The label parts of several blocks as one (merged as they come)."""
    total = LabelPart()
    for p in parts:
        for k, m in p.metrics.items():
            total.metrics[k] = evaluation.merge([total.metrics[k], m]) if k in total.metrics else m
        for v, c in p.calibration.items():
            total.calibration[v] = total.calibration[v] + c if v in total.calibration else c
        for pair, sides in p.pairs.items():
            if pair in total.pairs:
                mine = total.pairs[pair]
                total.pairs[pair] = {n: evaluation.merge([mine[n], sides[n]]) for n in sides}
            else:
                total.pairs[pair] = dict(sides)
    return total


def refinements(
    part: LabelPart, tolerance: float = metric_parts.AUC_TOLERANCE
) -> dict[str, metric_parts.AucGrid]:
    """The finer AUC grids another pass needs (empty when every AUC is within ``tolerance``)."""
    named: list[tuple[str, Any]] = [(grid_key(k, ""), m) for k, m in part.metrics.items()]
    for pair, sides in part.pairs.items():
        named += [(grid_key(pair, n), m) for n, m in sides.items()]
    out = {}
    for name, m in named:
        if isinstance(m, metric_parts.BinaryPart):
            grid = metric_parts.refine(m, tolerance)
            if grid is not None:
                out[name] = grid
    return out


def with_refined(part: LabelPart, refined: LabelPart) -> LabelPart:
    """``part`` with the AUC histograms of a refinement pass swapped in."""

    def swap(old: Any, new: Any) -> Any:
        if isinstance(old, metric_parts.BinaryPart) and isinstance(new, metric_parts.BinaryPart):
            return replace(old, auc=new.auc)
        return old

    out = LabelPart(dict(part.metrics), dict(part.calibration), dict(part.pairs))
    for k, m in refined.metrics.items():
        if k in out.metrics:
            out.metrics[k] = swap(out.metrics[k], m)
    for pair, sides in refined.pairs.items():
        if pair in out.pairs:
            out.pairs[pair] = {n: swap(out.pairs[pair][n], sides[n]) for n in out.pairs[pair]}
    return out


def calibration_table(cal: np.ndarray) -> list[dict[str, float]]:
    """Per score bucket with rows: its range, rows, mean score and observed rate."""
    out = []
    for b, (n, p, y) in enumerate(cal):
        if n > 0:
            lo, hi = b / CALIBRATION_BUCKETS, (b + 1) / CALIBRATION_BUCKETS
            out.append({"bucket": f"{lo:.1f}-{hi:.1f}", "rows": int(n), "mean_score": p / n,
                        "observed": y / n})  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# the bootstrap of each version and the paired bootstrap of each pair


@dataclass(frozen=True)
class BootstrapPlans:
    """The bootstrap plan (``gate.bootstrap_plan``) of each version's own metric, over all its
    labelled rows, and of each pair, with the label column."""

    versions: Mapping[int, gate.BootstrapPlan]
    pairs: Mapping[PairKey, gate.BootstrapPlan]
    label: str
    weight: str | None = None


@dataclass
class Bootstraps:
    """Per-resample sums (``gate.BootstrapPart``) of each version and of each pair."""

    versions: dict[int, gate.BootstrapPart] = field(default_factory=dict)
    pairs: dict[PairKey, gate.BootstrapPart] = field(default_factory=dict)


def bootstrap_plans(
    task: str, metric: str, part: LabelPart, settings: Mapping[str, Any], label: str
) -> BootstrapPlans:
    """The plans from the merged label parts (``settings``: the gate's, as
    translate.gate_settings gives them). A version is bootstrapped as a pair of itself."""
    from components.split_evaluation import gate_plan

    def plan(sides: Mapping[str, metric_parts.Part]) -> gate.BootstrapPlan:
        return replace(gate_plan(task, metric, sides, settings), per_model=True)

    versions = {
        v: plan({"test": m, "champion": m}) for (v, w), m in part.metrics.items() if w == ALL
    }
    pairs = {k: plan(sides) for k, sides in part.pairs.items()}
    return BootstrapPlans(versions, pairs, label)


def bootstrap_block(joined: pd.DataFrame, plans: BootstrapPlans) -> Bootstraps:
    """One block's bootstrap sums: each version's on the labelled rows it answered, each
    pair's (the gate's) on the rows both versions scored."""
    from components.split_evaluation import bootstrap_block as pair_block

    out = Bootstraps()
    if not len(joined):
        return out
    for (v,), g in groups(joined, ["version"]):
        plan = plans.versions.get(int(v))
        if plan is None:
            continue
        grouped = task_info(plan.task).grouped
        outputs = evaluation.model_outputs(g, plan.task)
        out.versions[int(v)] = gate.bootstrap_partial(
            plan,
            g[plans.label].to_numpy(dtype=np.float64),
            outputs,
            outputs,
            g["_group"].to_numpy() if grouped else None,
            evaluation.weights_of(g, plans.weight),
            keys=None if grouped else row_keys(g),
        )
    for pair, g in pairs_of(joined):
        if pair not in plans.pairs:
            continue
        frame = paired_frame(plans.pairs[pair].task, pair[0], g)
        if not len(frame):
            continue
        frame = frame.assign(_row_key=row_keys(frame))
        out.pairs[pair] = pair_block(frame, plans.pairs[pair], plans.label, plans.weight)
    return out


def merge_bootstraps(parts: Iterable[Bootstraps]) -> Bootstraps:
    """The blocks' bootstrap sums, merged as they come."""
    total = Bootstraps()
    for p in parts:
        for v, b in p.versions.items():
            total.versions[v] = _add(total.versions.get(v), b)
        for pair, b in p.pairs.items():
            total.pairs[pair] = _add(total.pairs.get(pair), b)
    return total


def _add(total: gate.BootstrapPart | None, part: gate.BootstrapPart) -> gate.BootstrapPart:
    return part if total is None else gate.merge_bootstrap([total, part])


def version_intervals(
    plans: BootstrapPlans,
    boots: Bootstraps,
    table: Mapping[str, Mapping[str, Mapping[str, float]]],
    metric: str,
    confidence: float,
) -> dict[str, dict[str, Any]]:
    """Each version's metric over the whole period with its percentile bootstrap interval
    (``table``: ``metric_table``'s, whose ``ALL`` value is the point)."""
    out: dict[str, dict[str, Any]] = {}
    for v, part in sorted(boots.versions.items()):
        point = table.get(str(v), {}).get(ALL, {}).get(metric)
        plan = plans.versions[v]
        if point is None or not np.isfinite(point):
            continue
        try:
            low, high = gate.model_interval(plan, part, 0, float(point), confidence)
        except ValueError:  # undefined on every resample (e.g. AUC of one class)
            continue
        out[str(v)] = {
            "metric": metric, "value": float(point), "low": low, "high": high,
            "confidence": confidence, "resamples": plan.resamples, "units": part.units,
            "unit": plan.unit,
        }  # fmt: skip
    return out


def row_keys(frame: pd.DataFrame) -> np.ndarray:
    """A uint64 key per logged row (its request id and row), the bootstrap's unit."""
    ids = frame["request_id"].astype(str) + ":" + frame["row"].astype(str)
    return metric_parts.query_keys(ids.to_numpy(dtype=object))


# --------------------------------------------------------------------------------------------
# finishing


def metric_table(part: LabelPart) -> dict[str, dict[str, dict[str, float]]]:
    """``{version: {window: metrics}}`` (``ALL`` for the whole period), with the AUC bound
    where AUC is computed."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (v, w), m in sorted(part.metrics.items()):
        values = evaluation.finish(m)
        if isinstance(m, metric_parts.BinaryPart):
            values["auc_bound"] = metric_parts.auc_bound(m)
        out.setdefault(str(v), {})[w] = values
    return out


def drift_table(
    traffic: TrafficPart, versions: Mapping[int, VersionFeatures]
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{version: {window: {feature: drift}}}`` (PSI, chi-square p-value, missing or unseen
    share in training and live, live rows), plus each feature over the whole period."""
    by_period: dict[tuple[int, str], np.ndarray] = {}
    for (v, _, name), c in traffic.drift.items():
        by_period[(v, name)] = by_period[(v, name)] + c if (v, name) in by_period else c.copy()
    cells = [*traffic.drift.items(), *(((v, ALL, n), c) for (v, n), c in by_period.items())]
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (v, w, name), c in sorted(cells, key=lambda kv: kv[0]):
        profile = next(p for p in versions[v].profiles if p.name == name)
        if c.sum() <= 0:
            continue
        d = drift.compare_counts(profile, c)
        out.setdefault(str(v), {}).setdefault(w, {})[name] = {
            "kind": profile.kind,  # type: ignore[dict-item]
            "psi": d.psi,
            "chi2_pvalue": d.chi2_pvalue,
            "missing_train": d.missing_train,
            "missing_live": d.missing_live,
            "rows": d.rows_live,
        }
    return out


def live_shares(traffic: TrafficPart, version: int, name: str) -> np.ndarray | None:
    """A feature's live shares per profile bin over the whole period (for the histograms)."""
    cells = [c for (v, _, n), c in traffic.drift.items() if v == version and n == name]
    if not cells:
        return None
    total = np.sum(cells, axis=0)
    return total / total.sum() if total.sum() > 0 else None


@dataclass(frozen=True)
class Thresholds:
    """When ``rayline monitor`` exits 2: a feature's PSI above ``max_psi`` in a window, a
    categorical feature's live unseen-or-missing share above ``max_unseen_rate``, a metric below
    its ``min_metrics`` (above, for metrics where lower is better: ``max_metrics``) for a version
    over the period, online and offline scores apart by more than ``max_skew``, or a version
    refusing or failing more than ``max_error_rate`` of the requests routed to it."""

    max_psi: float | None = 0.25
    max_unseen_rate: float | None = None
    min_metrics: Mapping[str, float] = field(default_factory=dict)
    max_metrics: Mapping[str, float] = field(default_factory=dict)
    max_skew: float = 1e-6
    max_error_rate: float | None = None


def breaches(report: Mapping[str, Any], t: Thresholds) -> list[str]:
    """What in a finished report (``rayline monitor``'s JSON) breaches ``t``, one line each."""
    out = []
    for v, windows in report.get("drift", {}).items():
        for w, feats in windows.items():
            if w == ALL:
                continue
            for name, d in feats.items():
                if t.max_psi is not None and d["psi"] > t.max_psi:
                    out.append(
                        f"v{v} {w}: feature {name!r} drifted: PSI {d['psi']:.3f} > {t.max_psi}"
                    )
                if (
                    t.max_unseen_rate is not None
                    and d["kind"] == "categorical"
                    and d["missing_live"] > t.max_unseen_rate
                ):
                    out.append(
                        f"v{v} {w}: feature {name!r}: unseen or missing in "
                        f"{d['missing_live']:.1%} of rows > {t.max_unseen_rate:.1%}"
                    )
    for v, windows in report.get("metrics", {}).items():
        whole = windows.get(ALL, {})
        for name, low in t.min_metrics.items():
            if name in whole and whole[name] < low:
                out.append(f"v{v}: {name} {whole[name]:.4f} < {low}")
        for name, high in t.max_metrics.items():
            if name in whole and whole[name] > high:
                out.append(f"v{v}: {name} {whole[name]:.4f} > {high}")
    for e in report.get("errors", []):
        if t.max_error_rate is not None and e["error_rate"] > t.max_error_rate:
            out.append(
                f"v{e['version']} ({e['answered_by']}): {e['errors']} of {e['requests']} "
                f"requests failed ({e['error_rate']:.1%} > {t.max_error_rate:.1%}); first: "
                f"{e['first_error']}"
            )
    skew = report.get("skew", {})
    for v, s in skew.items():
        if s["max_abs_diff"] > t.max_skew:
            out.append(
                f"v{v}: online and offline scores differ by up to {s['max_abs_diff']:.3g} "
                f"(> {t.max_skew:g}) on {s['rows_over']} of {s['rows']} re-scored rows"
            )
    return out


def skew_summary(
    online: np.ndarray, offline: np.ndarray, ids: Sequence[str], limit: float
) -> dict[str, Any]:
    """How far re-scored outputs are from the logged ones: rows, the largest difference, how
    many exceed ``limit`` and the first of them (request id and row)."""
    d = np.abs(np.asarray(online, np.float64) - np.asarray(offline, np.float64))
    d = d.reshape(len(d), -1).max(axis=1) if d.ndim > 1 else d
    over = np.flatnonzero(~(d <= limit))  # NaN counts as a difference
    return {
        "rows": len(d),
        "max_abs_diff": float(np.nan_to_num(d, nan=np.inf).max(initial=0.0)),
        "rows_over": len(over),
        "examples": [str(ids[i]) for i in over[:5]],
    }

"""Monitoring parts from a prediction log, block by block: online metrics equal the offline
ones on the same rows, drift names the shifted feature, re-scoring finds a tampered score, and
a canary is compared with production on the same rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from components import drift, evaluation, gate, monitoring
from components.online import logged_rows
from components.prediction_log import Record, to_table
from components.predictor import Predictor
from tests import bundles

T0 = 1_764_633_600.0  # 2025-12-02 00:00 UTC


def _bundle(tmp_path: Path, name: str, rounds: int) -> tuple[str, pd.DataFrame]:
    frame = bundles.tiny_frame(600, seed=1)
    contents = bundles.xgboost_contents(frame, rounds=rounds)
    t = contents.transform
    profiles = [
        drift.profile(p.name, frame[p.name].to_numpy(np.float64), "numeric") for p in t.numeric
    ]
    profiles += [
        drift.profile(c.name, t.codes(c, frame[c.name]), "categorical") for c in t.categorical
    ]
    doc = json.dumps([p.to_dict() for p in profiles]).encode()
    contents = type(contents)(**{**contents.__dict__, "extra": {drift.PROFILE_JSON: doc}})
    return bundles.write(tmp_path / name, contents), frame


def _records(
    frame: pd.DataFrame, p: Predictor, version: int, by: str = "production",
    other: Predictor | None = None, other_version: int | None = None, shift: float = 0.0,
) -> list[Record]:  # fmt: skip
    feats = frame[["age", "clicks", "country"]].copy()
    feats["age"] = feats["age"] + shift
    scores = p.predict(feats)
    theirs = other.predict(feats) if other is not None else None
    out = []
    for i in range(0, len(frame), 3):  # requests of 3 rows
        rows = [
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in feats.iloc[i : i + 3].to_dict("records")
        ]
        preds = [{"score": float(s), "label": int(s >= 0.5)} for s in scores[i : i + 3]]
        shadow = None
        if theirs is not None:
            shadow = {"predictions": [{"score": float(s)} for s in theirs[i : i + 3]]}
        out.append(
            Record(
                request_id=f"{by}-{version}-{i}",
                ts=T0 + i,
                model="m",
                version=version,
                route="predict",
                rows=len(rows),
                features={"rows": rows},
                outputs={"predictions": preds},
                latency_ms=2.0 + (i % 7),
                answered_by=by,
                shadow_version=other_version,
                shadow_outputs=shadow,
            )
        )
    return out


def _blocks(records: list[Record], n: int = 3) -> list[pd.DataFrame]:
    cuts = np.array_split(np.arange(len(records)), n)
    return [logged_rows(to_table([records[i] for i in c]), "binary") for c in cuts if len(c)]


def _plan(paths: dict[int, str], label: str | None = None) -> monitoring.MonitorPlan:
    from pipelines.monitor import _version_features

    versions = {v: _version_features(p) for v, p in paths.items()}
    return monitoring.MonitorPlan(
        task="binary",
        label=label,
        versions={v: f for v, f in versions.items() if f is not None},
        bundles=paths,
        skew_requests=1000,
    )


def _joined(blocks: list[pd.DataFrame], frame: pd.DataFrame) -> list[pd.DataFrame]:
    labels = pd.DataFrame({"label": frame["label"].to_numpy()})
    out = []
    for b in blocks:
        # request "<by>-<v>-<i>" row j is frame row i + j
        pos = b["request_id"].str.rsplit("-", n=1).str[1].astype(int) + b["row"]
        out.append(
            monitoring.narrow(b, "binary", None).assign(label=labels["label"].to_numpy()[pos])
        )
    return out


def test_online_metrics_equal_offline_and_the_log_rescored_has_no_skew(tmp_path: Path) -> None:
    path, frame = _bundle(tmp_path, "v1", rounds=5)
    p = Predictor.load(path)
    blocks = _blocks(_records(frame, p, 1))
    plan = _plan({1: path}, label="label")
    traffic = monitoring.merge_traffic(monitoring.traffic_block(b, plan) for b in blocks)
    labels = monitoring.merge_labels(
        monitoring.label_block(j, plan) for j in _joined(blocks, frame)
    )
    online = monitoring.metric_table(labels)["1"][monitoring.ALL]
    offline = evaluation.evaluate(
        "binary", pd.DataFrame({"score": p.predict(frame), "label": frame["label"]}), "label"
    )
    for name in ("auc", "logloss", "accuracy"):
        assert online[name] == pytest.approx(offline[name], abs=1e-9), name
    assert online["auc_bound"] == 0.0
    assert sum(traffic.rows.values()) == 600 and sum(traffic.requests.values()) == 200
    assert traffic.skew[1]["rows"] == 600 and traffic.skew[1]["max_abs_diff"] <= 1e-6
    report = {
        "drift": monitoring.drift_table(traffic, plan.versions),
        "skew": {"1": traffic.skew[1]},
    }
    assert max(d["psi"] for d in report["drift"]["1"][monitoring.ALL].values()) < 0.01
    assert monitoring.breaches(report, monitoring.Thresholds()) == []
    cal = monitoring.calibration_table(labels.calibration[1])
    assert sum(r["rows"] for r in cal) == 600


def test_a_shifted_feature_and_a_tampered_score_are_breaches(tmp_path: Path) -> None:
    path, frame = _bundle(tmp_path, "v1", rounds=5)
    p = Predictor.load(path)
    records = _records(frame, p, 1, shift=35.0)
    tampered = records[4]
    body = tampered.outputs
    body["predictions"][1]["score"] += 0.01
    plan = _plan({1: path})
    traffic = monitoring.merge_traffic(monitoring.traffic_block(b, plan) for b in _blocks(records))
    report = {
        "drift": monitoring.drift_table(traffic, plan.versions),
        "skew": {"1": traffic.skew[1]},
    }
    found = monitoring.breaches(report, monitoring.Thresholds(max_psi=0.25))
    assert any("'age' drifted" in b for b in found), found
    assert not any("'clicks'" in b or "'country'" in b for b in found), found
    assert traffic.skew[1]["rows_over"] == 1 and traffic.skew[1]["examples"] == [
        f"{tampered.request_id}:1"
    ]
    assert any("differ by up to 0.01" in b for b in found), found


def test_a_canary_is_paired_with_production_on_the_same_rows(tmp_path: Path) -> None:
    weak, frame = _bundle(tmp_path, "v1", rounds=1)
    strong, _ = _bundle(tmp_path, "v2", rounds=30)
    p1, p2 = Predictor.load(weak), Predictor.load(strong)
    canary = _records(frame, p2, 2, by="canary", other=p1, other_version=1)
    blocks = _blocks(canary)
    plan = _plan({1: weak, 2: strong}, label="label")
    traffic = monitoring.merge_traffic(monitoring.traffic_block(b, plan) for b in blocks)
    agree = monitoring.agreement_summary(traffic.agreement[("canary", 2, 1)])
    assert agree["rows"] == 600 and agree["max_abs_diff"] > 0
    joined = _joined(blocks, frame)
    labels = monitoring.merge_labels(monitoring.label_block(j, plan) for j in joined)
    sides = labels.pairs[("canary", 2, 1)]
    both = pd.DataFrame(
        {"score": p2.predict(frame), "champion:score": p1.predict(frame), "label": frame["label"]}
    )
    assert evaluation.finish(sides["test"])["auc"] == pytest.approx(
        evaluation.evaluate("binary", both, "label")["auc"], abs=1e-9
    )
    settings = {"resamples": 200, "seed": 0, "relevance_threshold": 1.0, "threshold": 0.5,
                "no_relevant": "one"}  # fmt: skip
    plans = monitoring.bootstrap_plans("binary", "auc", labels, settings, "label")
    boot = monitoring.merge_bootstraps(monitoring.bootstrap_block(j, plans) for j in joined)
    assert boot.pairs[("canary", 2, 1)].units == 600
    # the canary's own interval, from the blocks: the one bootstrap of all its rows, and the
    # candidate side of its pair (the same rows, the same Poisson weights)
    table = monitoring.metric_table(labels)
    intervals = monitoring.version_intervals(plans, boot, table, "auc", 0.9)
    assert set(intervals) == {"2"}  # version 1 answered nothing: it scored beside the canary
    iv = intervals["2"]
    assert (
        iv["value"] == table["2"][monitoring.ALL]["auc"] and iv["low"] <= iv["value"] <= iv["high"]
    )
    assert iv["units"] == 600 and iv["confidence"] == 0.9
    whole = pd.concat(joined, ignore_index=True)
    one = monitoring.merge_bootstraps([monitoring.bootstrap_block(whole, plans)])
    assert monitoring.version_intervals(plans, one, table, "auc", 0.9)["2"] == pytest.approx(iv)
    key = ("canary", 2, 1)
    side = gate.model_interval(plans.pairs[key], boot.pairs[key], 0, iv["value"], 0.9)
    assert side == pytest.approx((iv["low"], iv["high"]), abs=1e-12)
    prod = evaluation.finish(sides["champion"])["auc"]
    weak_high = gate.model_interval(plans.pairs[key], boot.pairs[key], 1, prod, 0.9)[1]
    assert weak_high < iv["low"]  # the weak and the strong model apart


def test_failed_requests_are_counted_per_version_not_scored(tmp_path: Path) -> None:
    """A canary that refuses a third of its requests (a 422 with outputs null): its answered
    rows are scored as before, the failures are counted per version with the first one's
    status and error, and max_error_rate names the version."""
    from components.online import failed_requests

    path, frame = _bundle(tmp_path, "v1", rounds=3)
    p = Predictor.load(path)
    records = _records(frame, p, 1) + _records(frame, p, 2, by="canary")
    for r in records[200::3]:  # every third canary request
        r.status, r.error, r.outputs = 422, "rows.0.age: field required", None
    plan = _plan({1: path, 2: path})
    tables = [to_table(records[i::4]) for i in range(4)]
    parts = [
        monitoring.traffic_block(logged_rows(t, "binary"), plan, failed_requests(t)) for t in tables
    ]
    traffic = monitoring.merge_traffic(parts)
    errors = {(e["version"], e["answered_by"]): e for e in monitoring.error_table(traffic)}
    assert errors[(1, "production")]["errors"] == 0 and errors[(1, "production")]["requests"] == 200
    canary = errors[(2, "canary")]
    assert (canary["requests"], canary["errors"]) == (200, 67)
    assert canary["first_error"] == "422: rows.0.age: field required"
    assert sum(n for (v, _, _), n in traffic.rows.items() if v == 2) == (200 - 67) * 3
    found = monitoring.breaches({"errors": list(errors.values())}, monitoring.Thresholds(
        max_error_rate=0.05))  # fmt: skip
    assert len(found) == 1 and found[0].startswith("v2 (canary): 67 of 200 requests failed")


def _canary_report(
    cand: float, prod: float, promote: bool, units: int, p99: float, errors: int = 0
) -> dict:
    pair = {
        "metric": "auc",
        "candidate_metrics": {"auc": cand},
        "production_metrics": {"auc": prod},
        "decision": {"promote": promote, "units": units, "unit": "rows", "reason": "why"},
    }
    return {
        "pairs": {"canary v2 vs production v1": pair},
        "latency_ms": [
            {"version": 2, "answered_by": "canary", "p99": p99},
            {"version": 1, "answered_by": "production", "p99": 10.0},
        ],
        "errors": [
            {
                "version": 2,
                "answered_by": "canary",
                "requests": 400,
                "errors": errors,
                "first_error": "500: boom",
            },
            {
                "version": 1,
                "answered_by": "production",
                "requests": 8000,
                "errors": 8,
                "first_error": "422: bad",
            },
        ],
    }


@pytest.mark.parametrize(
    ("cand", "promote", "units", "p99", "errors", "action", "needle"),
    [
        (0.80, True, 5000, 12.0, 0, "promote", "why"),
        (0.70, False, 5000, 12.0, 0, "rollback", "worse by 0.0500"),
        (0.76, False, 5000, 12.0, 0, "wait", "why"),  # within max_metric_drop, not better
        (0.80, True, 500, 12.0, 0, "wait", "fewer than 1000"),
        (0.80, True, 5000, 25.0, 0, "rollback", "2.5x production's"),
        # 2% of 400 against production's 0.1%: above the allowed 1.1%, but p 0.08 > 0.01
        (0.80, True, 5000, 12.0, 8, "promote", "why"),
        (0.80, True, 5000, 12.0, 20, "rollback", "20 of its 400 requests failed (5.0%)"),
        (0.80, True, 100, 12.0, 20, "rollback", "first: 500: boom"),  # no labels needed
    ],
)
def test_the_canary_thresholds_judge_a_report(
    cand: float, promote: bool, units: int, p99: float, errors: int, action: str, needle: str
) -> None:
    from pipelines.monitor import judge_canary
    from pipelines.spec import CanaryThresholds

    report = _canary_report(cand, 0.75, promote, units, p99, errors)
    v = judge_canary(report, 2, 1, CanaryThresholds(confidence=0.99))
    assert v.action == action and needle in v.reason, v


def test_rank_requests_are_queries_with_their_ndcg_and_a_shadow_beside_them() -> None:
    """/rank records: each request one query; NDCG@3 of the logged ranks equals the offline one
    (filtered candidates rank last), and a shadow's ranks are the candidate's side of its pair."""
    rng = np.random.default_rng(3)
    records, truth = [], []
    for q in range(40):
        n = 6
        own, theirs = rng.random(n), rng.random(n)
        filtered = [int(rng.integers(n))] if q % 4 == 0 else []

        def ranked(s: np.ndarray, drop: list[int]) -> list[dict]:
            return sorted(
                ({"index": i, "score": float(v)} for i, v in enumerate(s) if i not in drop),
                key=lambda r: -r["score"],
            )

        records.append(
            Record(
                request_id=f"q{q}",
                ts=T0 + q,
                model="r",
                version=1,
                route="rank",
                rows=n,
                features={"candidates": [{"f": float(i)} for i in range(n)]},
                outputs={
                    "ranked": ranked(own, filtered),
                    "filtered": [{"index": i} for i in filtered] or None,
                },
                latency_ms=1.0,
                shadow_version=2,
                shadow_outputs={"ranked": ranked(theirs, [])},
            )
        )
        rel = rng.integers(0, 3, n)
        floor = own[[i for i in range(n) if i not in filtered]].min() - 1.0
        for i in range(n):
            truth.append({"request_id": f"q{q}", "row": i, "rel": float(rel[i]),
                          "score": floor if i in filtered else float(own[i]),
                          "shadow": float(theirs[i])})  # fmt: skip
    frame = pd.DataFrame(truth)
    plan = monitoring.MonitorPlan(task="ranking", label="rel", eval_kwargs={"ks": (3,)})
    joined = []
    for b in _blocks_of(records, "ranking"):
        narrow = monitoring.narrow(b, "ranking", None)
        joined.append(narrow.merge(frame[["request_id", "row", "rel"]], on=["request_id", "row"]))
    parts = monitoring.merge_labels(monitoring.label_block(j, plan) for j in joined)
    online = monitoring.metric_table(parts)["1"][monitoring.ALL]
    offline = evaluation.evaluate(
        "ranking", frame.assign(_group=frame["request_id"]), "rel", ks=(3,)
    )
    assert online["ndcg@3"] == pytest.approx(offline["ndcg@3"], abs=1e-12)
    shadow = evaluation.finish(parts.pairs[("shadow", 2, 1)]["test"])
    theirs = evaluation.evaluate(
        "ranking", frame.assign(_group=frame["request_id"], score=frame["shadow"]), "rel", ks=(3,)
    )
    assert shadow["ndcg@3"] == pytest.approx(theirs["ndcg@3"], abs=1e-12)
    # rank agreement without labels: Kendall's tau-b per query, averaged
    blocks = _blocks_of(records, "ranking")
    traffic = monitoring.merge_traffic(monitoring.traffic_block(b, plan) for b in blocks)
    agree = monitoring.agreement_summary(traffic.agreement[("shadow", 2, 1)])
    taus = [
        scipy.stats.kendalltau(q["shadow"], q["score"]).statistic
        for _, q in frame.groupby("request_id")
    ]
    assert agree["queries"] == 40 and agree["kendall_tau"] == pytest.approx(np.mean(taus))


@pytest.mark.filterwarnings("ignore:One or more sample")  # scipy: its NaN for one row
def test_query_taus_are_kendalls_tau_b_with_ties() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), rng.integers(1, 9, 30))
    x = rng.integers(0, 4, len(groups)).astype(float)  # many ties
    y = x + rng.integers(-1, 2, len(groups))
    got = monitoring.query_taus(groups, x, y)
    want = [scipy.stats.kendalltau(x[groups == g], y[groups == g]).statistic for g in range(30)]
    want = [t for t in want if np.isfinite(t)]  # one row, or one version scoring all the same
    assert len(want) < 30 and got == pytest.approx(np.array(want), abs=1e-12)
    assert len(monitoring.query_taus(groups[:0], x[:0], y[:0])) == 0


def _blocks_of(records: list[Record], task: str, n: int = 3) -> list[pd.DataFrame]:
    cuts = np.array_split(np.arange(len(records)), n)
    return [logged_rows(to_table([records[i] for i in c]), task) for c in cuts if len(c)]

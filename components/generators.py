"""Built-in synthetic data with a known, learnable signal, generated block by block.

Five generators (``synthetic:<kind>`` sources): ``binary``, ``multiclass`` and ``regression``
(tabular rows with numeric and categorical columns and missing values; the regression label is a
positive, right-skewed quantity, optionally with a share of zeros), ``ranking`` (graded-relevance
learning-to-rank data grouped by ``qid``) and ``ctr`` (Criteo-like click data grouped by
``request_id``). Pure numpy/pandas, no Ray: the pipeline plans the blocks on the driver
(``plan_blocks``) and calls ``generate_block`` in one parallel task per block, so a 1k-row test
and a 10M-row benchmark use the same code and no process ever holds the whole dataset.

Determinism: block ``i`` depends only on (kind, seed, i, params); its random stream is
``np.random.default_rng([seed, i, kind_id])``. The hidden "true" model (weights, per-category
effects, thresholds) depends only on the seed and the feature params (not on ``rows`` or
``block_rows``), drawn from ``default_rng([seed, 999, kind_id, 1])``, so every block shares one
signal. (The trailing tag word keeps that stream apart from block 999's: numpy's SeedSequence
treats ``[seed, 999, kind_id]`` and ``[seed, 999, kind_id, 0]`` as the same seed.)

Every frame has ``row_id`` (int64, the global row position: unique across blocks) and ``ts``
(int64 epoch seconds from 2026-01-01T00:00:00Z, increasing with the global row position, plus a
few minutes of jitter, spanning 30 days over ``rows`` rows). For ``ranking`` and ``ctr`` the rows
of a group are contiguous, share one ``ts`` and never straddle blocks: each block holds whole
groups until its row count is reached, the last group being cut short to fit, so block and total
row counts are exact here too (the cut group is simply a smaller query or request).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from components.hashing import mix64

GENERATORS: tuple[str, ...] = ("binary", "multiclass", "regression", "ranking", "ctr")
KIND_IDS: dict[str, int] = {"binary": 1, "multiclass": 2, "ranking": 3, "ctr": 4, "regression": 5}
TABULAR = ("binary", "multiclass", "regression")

TS_START = 1_767_225_600  # 2026-01-01T00:00:00Z
TS_SPAN = 30 * 86_400  # rows spread over 30 days
TS_JITTER_S = 300.0  # standard deviation of the timestamp jitter, seconds
MAX_GROUP_SIZE = 200  # the largest query (ranking) or request (ctr)
GROUP_STRIDE = 10**9  # group id = block index * GROUP_STRIDE + group number in the block
MAX_BLOCK_ROWS = 100_000_000
CTR_DENSE = 13
CTR_CATEGORICAL = 26

_HIDDEN_TAG = 999  # rng([seed, 999, kind_id, 1]): the hidden model
_CALIB_TAG = 998  # rng([seed, 998, kind_id, 2]): a fixed sample to calibrate rates/thresholds
_CALIB_ROWS = 20_000


@dataclass(frozen=True)
class BlockTask:
    """One block to generate: the pipeline turns each into one parallel (Ray Data) task."""

    kind: str
    index: int  # block number
    rows: int  # rows in this block (exact; for ranking/ctr whole groups, the last cut to fit)
    seed: int
    params: dict[str, Any]  # the resolved generator params (defaults filled in; JSON-able)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class _Param:
    default: Any  # None: required
    kind: type  # int or float
    low: float
    high: float
    high_open: bool = False

    def describe(self) -> str:
        if self.kind is int:
            return f"an integer in [{int(self.low)}, {int(self.high)}]"
        return f"a number in [{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


_COMMON: dict[str, _Param] = {
    "rows": _Param(None, int, 1, 10**13),
    "seed": _Param(0, int, 0, 2**63 - 1),
    "block_rows": _Param(100_000, int, 1, MAX_BLOCK_ROWS),
}
_TABULAR: dict[str, _Param] = {
    "n_numeric": _Param(8, int, 0, 1000),
    "n_categorical": _Param(3, int, 0, 1000),
    "cardinality": _Param(20, int, 1, 1_000_000),
    "missing_rate": _Param(0.02, float, 0.0, 1.0, high_open=True),
}
_PARAMS: dict[str, dict[str, _Param]] = {
    "binary": {**_COMMON, **_TABULAR},
    "multiclass": {**_COMMON, **_TABULAR, "n_classes": _Param(4, int, 2, 100)},
    # a positive quantity (think watch time); zero_rate: share of rows with a 0 label
    "regression": {
        **_COMMON,
        **_TABULAR,
        "zero_rate": _Param(0.0, float, 0.0, 1.0, high_open=True),
    },
    "ranking": {
        **_COMMON,
        "n_features": _Param(20, int, 1, 1000),
        "mean_query_size": _Param(20.0, float, 1.0, MAX_GROUP_SIZE),
    },
    "ctr": {
        **_COMMON,
        "cardinality": _Param(100_000, int, 1, 2**32),
        "mean_request_size": _Param(10.0, float, 1.0, MAX_GROUP_SIZE),
    },
}
# Params that shape the hidden model (everything else only changes which rows are drawn).
_MODEL_PARAMS: dict[str, tuple[str, ...]] = {
    "binary": ("n_numeric", "n_categorical", "cardinality"),
    "multiclass": ("n_numeric", "n_categorical", "cardinality", "n_classes"),
    "regression": ("n_numeric", "n_categorical", "cardinality"),
    "ranking": ("n_features",),
    "ctr": ("cardinality",),
}


def _check_kind(kind: str) -> None:
    if kind not in KIND_IDS:
        raise ValueError(f"unknown generator kind {kind!r}; valid kinds: {', '.join(GENERATORS)}")


def _coerce(kind: str, name: str, spec: _Param, value: Any) -> int | float:
    bad = ValueError(
        f"invalid value {value!r} for parameter {name!r} of generator {kind!r}: "
        f"must be {spec.describe()}"
    )
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise bad
    num = float(value)
    if not math.isfinite(num):
        raise bad
    out: int | float
    if spec.kind is int:
        if num != int(num):
            raise bad
        out = int(value)
    else:
        out = num
    too_high = out >= spec.high if spec.high_open else out > spec.high
    if out < spec.low or too_high:
        raise bad
    return out


def _resolve(
    kind: str, params: Mapping[str, Any] | None, require_rows: bool = True
) -> dict[str, Any]:
    """Validated params with defaults filled in; ValueError naming any bad one."""
    _check_kind(kind)
    specs = _PARAMS[kind]
    params = dict(params or {})
    valid = ", ".join(specs)
    unknown = [k for k in params if k not in specs]
    if unknown:
        raise ValueError(
            f"unknown parameter{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
            f"for generator {kind!r}; valid parameters: {valid}"
        )
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in params and params[name] is not None:
            out[name] = _coerce(kind, name, spec, params[name])
        elif spec.default is None:
            if require_rows:
                raise ValueError(
                    f"parameter {name!r} is required for generator {kind!r} "
                    f"({spec.describe()}); valid parameters: {valid}"
                )
        else:
            out[name] = spec.default
    if kind in TABULAR and out["n_numeric"] + out["n_categorical"] < 1:
        raise ValueError(
            f"invalid parameters 'n_numeric' and 'n_categorical' for generator {kind!r}: "
            "at least one feature column is needed"
        )
    return out


# --------------------------------------------------------------------------- public API


def plan_blocks(kind: str, params: Mapping[str, Any]) -> list[BlockTask]:
    """The blocks of a dataset: ceil(rows / block_rows) tasks of block_rows rows (the last fewer).

    params: ``rows`` (required), ``seed`` (default 0), ``block_rows`` (default 100_000) and the
    generator's own params. Raises ValueError for an unknown kind or an unknown/invalid param.
    """
    p = _resolve(kind, params)
    rows, block = int(p["rows"]), int(p["block_rows"])
    n_blocks = -(-rows // block)
    return [
        BlockTask(kind, i, min(block, rows - i * block), int(p["seed"]), dict(p))
        for i in range(n_blocks)
    ]


def columns(kind: str, params: Mapping[str, Any]) -> dict[str, list[str]]:
    """Column names by role: numeric, categorical, label, group, timestamp, key."""
    p = _resolve(kind, params, require_rows=False)
    out: dict[str, list[str]] = {"numeric": [], "categorical": [], "label": ["label"], "group": []}
    if kind in TABULAR:
        out["numeric"] = [f"num_{j}" for j in range(p["n_numeric"])]
        out["categorical"] = [f"cat_{j}" for j in range(p["n_categorical"])]
    elif kind == "ranking":
        out["numeric"] = [f"f{j}" for j in range(p["n_features"])]
        out["group"] = ["qid"]
    else:
        out["numeric"] = [f"I{j + 1}" for j in range(CTR_DENSE)]
        out["categorical"] = [f"C{j + 1}" for j in range(CTR_CATEGORICAL)]
        out["group"] = ["request_id"]
    out["timestamp"] = ["ts"]
    out["key"] = ["row_id"]
    return out


def generate_block(task: BlockTask) -> pd.DataFrame:
    """Generate one block (pure and deterministic: the same task gives the same frame)."""
    p = _resolve(task.kind, {"seed": task.seed, **task.params})
    if task.seed != p["seed"]:
        raise ValueError(f"BlockTask.seed {task.seed} differs from params['seed'] {p['seed']}")
    if task.index < 0 or task.rows < 0:
        raise ValueError(f"BlockTask index and rows must be >= 0, got {task.index} and {task.rows}")
    rng = np.random.default_rng([p["seed"], task.index, KIND_IDS[task.kind]])
    start = task.index * int(p["block_rows"])
    n = int(task.rows)
    if task.kind in TABULAR:
        return _tabular_block(task.kind, p, rng, start, n)
    if task.kind == "ranking":
        return _ranking_block(p, rng, task.index, start, n)
    return _ctr_block(p, rng, task.index, start, n)


# --------------------------------------------------------------------------- shared helpers


def _hidden_rng(kind: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, _HIDDEN_TAG, KIND_IDS[kind], 1])


def _calib_rng(kind: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, _CALIB_TAG, KIND_IDS[kind], 2])


def _model_key(kind: str, p: Mapping[str, Any]) -> str:
    return json.dumps({k: p[k] for k in _MODEL_PARAMS[kind]}, sort_keys=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


def _intercept_for_rate(logits: np.ndarray, rate: float) -> float:
    """The b for which mean(sigmoid(b + logits)) == rate (bisection; the mean rises with b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(_sigmoid(mid + logits).mean()) < rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _timestamps(rng: np.random.Generator, positions: np.ndarray, total_rows: int) -> np.ndarray:
    """Epoch seconds for rows (or groups) at global ``positions``: 30 days over ``total_rows``."""
    g = len(positions)
    frac = (positions + rng.random(g)) / max(total_rows, 1)
    ts = TS_START + frac * TS_SPAN + rng.normal(0.0, TS_JITTER_S, g)
    return np.clip(np.floor(ts), TS_START, TS_START + TS_SPAN - 1).astype(np.int64)


def _group_sizes(rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
    """Sizes 1 + NegBin (mean ``mean``, capped at MAX_GROUP_SIZE) summing exactly to ``n``."""
    chunks: list[np.ndarray] = []
    total = 0
    extra = mean - 1.0
    while total < n:
        k = int((n - total) / mean * 1.1) + 16
        if extra > 0:
            shape = 2.0  # over-dispersed: sizes vary more than Poisson
            s = 1 + rng.negative_binomial(shape, shape / (shape + extra), size=k)
        else:
            s = np.ones(k, dtype=np.int64)
        s = np.minimum(s, MAX_GROUP_SIZE).astype(np.int64)
        chunks.append(s)
        total += int(s.sum())
    sizes = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    ends = np.cumsum(sizes)
    last = int(np.searchsorted(ends, n))  # first group whose end reaches n
    sizes = sizes[: last + 1] if n > 0 else sizes[:0]
    if n > 0:
        sizes[-1] -= int(ends[last]) - n  # cut the last group to fit the block
    return sizes


def _object_column(values: np.ndarray) -> pd.Series:
    return pd.Series(values, dtype=object, copy=False)


# --------------------------------------------------------------------------- binary, multiclass


@dataclass(frozen=True)
class _TabularModel:
    n_num: int
    loc: np.ndarray  # (n_num,) observed = loc + scale * z (or a lognormal for every 4th column)
    scale: np.ndarray
    w_lin: np.ndarray  # (K, n_num)
    w_nl: np.ndarray  # (K, 3): interaction z_a*z_b, threshold z_c > 0.5, curvature z_d**2 - 1
    nl_idx: tuple[int, int, int, int]
    cat_probs: tuple[np.ndarray, ...]  # per column: value probabilities
    cat_eff: tuple[np.ndarray, ...]  # per column: (K, cardinality) effects
    vocab: tuple[np.ndarray, ...]  # per column: value strings "c{j}_{v}" (object)
    center: np.ndarray  # (K,) calibration mean of each raw score
    spread: float  # calibration std of the raw scores
    temperature: float
    bias: np.ndarray  # (K,)


# Signal strengths, tuned so that a GBDT reaches AUC ~0.87 (binary) and accuracy ~0.7 (K=4).
_BINARY_SCALE = 2.7
_BINARY_RATE = 0.35
_MULTICLASS_TEMPERATURE = 3.0
# regression: label = exp(_REGRESSION_SCALE * standardised score + noise) * e**_REGRESSION_LOG_MEDIAN
_REGRESSION_SCALE = 0.8
_REGRESSION_NOISE = 0.35
_REGRESSION_LOG_MEDIAN = 2.3


@lru_cache(maxsize=16)
def _tabular_model(kind: str, seed: int, key: str) -> _TabularModel:
    p = json.loads(key)
    rng = _hidden_rng(kind, seed)
    k = int(p.get("n_classes", 1)) if kind == "multiclass" else 1
    n_num, n_cat, card = int(p["n_numeric"]), int(p["n_categorical"]), int(p["cardinality"])
    loc = rng.normal(0.0, 2.0, n_num)
    scale = np.exp(rng.normal(0.0, 0.5, n_num))
    useful = rng.random((k, n_num)) < 0.6
    useful[:, : min(n_num, 2)] = True
    w_lin = rng.normal(0.0, 1.0, (k, n_num)) * useful
    w_nl = rng.choice([-1.0, 1.0], (k, 3)) * rng.uniform(0.8, 1.4, (k, 3))
    m = max(n_num, 1)
    nl_idx = (0, 1 % m, 2 % m, 3 % m)
    probs, effs, vocab = [], [], []
    for j in range(n_cat):
        pr = (np.arange(card) + 1.0) ** -rng.uniform(0.4, 1.0)
        pr = rng.permutation(pr / pr.sum())
        eff = rng.normal(0.0, 0.8, (k, card))
        eff -= (eff @ pr)[:, None]  # mean effect 0 under the value distribution
        probs.append(pr)
        effs.append(eff)
        vocab.append(np.array([f"c{j}_{v}" for v in range(card)], dtype=object))
    model = _TabularModel(
        n_num, loc, scale, w_lin, w_nl, nl_idx, tuple(probs), tuple(effs), tuple(vocab),
        center=np.zeros(k), spread=1.0, temperature=1.0, bias=np.zeros(k),
    )  # fmt: skip
    # Calibrate on a fixed sample: standardise the scores, then set the rates.
    raw = _tabular_scores(model, *_tabular_latent(model, _calib_rng(kind, seed), _CALIB_ROWS))
    center = raw.mean(axis=1)
    spread = float((raw - center[:, None]).std()) or 1.0
    if kind == "binary":
        temperature = _BINARY_SCALE
        std = (raw[0] - center[0]) / spread * temperature
        bias = np.array([_intercept_for_rate(std, _BINARY_RATE)])
    elif kind == "regression":
        temperature, bias = _REGRESSION_SCALE, np.array([_REGRESSION_LOG_MEDIAN])
    else:
        temperature, bias = _MULTICLASS_TEMPERATURE, np.zeros(k)
    return replace(model, center=center, spread=spread, temperature=temperature, bias=bias)


def _tabular_latent(
    model: _TabularModel, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    z = rng.standard_normal((model.n_num, n))
    cats = [rng.choice(len(pr), size=n, p=pr) for pr in model.cat_probs]
    return z, cats


def _tabular_scores(model: _TabularModel, z: np.ndarray, cats: list[np.ndarray]) -> np.ndarray:
    """Raw class scores (K, n) from the latent numerics and category indices."""
    k = model.w_lin.shape[0]
    n = z.shape[1] if model.n_num else (len(cats[0]) if cats else 0)
    s = model.w_lin @ z if model.n_num else np.zeros((k, n))
    if model.n_num:
        a, b, c, d = model.nl_idx
        h = np.stack([z[a] * z[b], (z[c] > 0.5) - 0.3085, z[d] ** 2 - 1.0])
        s = s + model.w_nl @ h
    for eff, idx in zip(model.cat_eff, cats, strict=True):
        s = s + eff[:, idx]
    return np.asarray(s)


def _tabular_block(
    kind: str, p: Mapping[str, Any], rng: np.random.Generator, start: int, n: int
) -> pd.DataFrame:
    model = _tabular_model(kind, int(p["seed"]), _model_key(kind, p))
    z, cats = _tabular_latent(model, rng, n)
    logits = (_tabular_scores(model, z, cats) - model.center[:, None]) / model.spread
    logits = logits * model.temperature + model.bias[:, None]
    if kind == "binary":
        label = (rng.random(n) < _sigmoid(logits[0])).astype(np.int64)
    elif kind == "regression":
        label = np.exp(logits[0] + rng.normal(0.0, _REGRESSION_NOISE, n))
        # zeros more likely for low scores; 2 * E[sigmoid(-z)] = 1 keeps the share near zero_rate
        zero = rng.random(n) < float(p["zero_rate"]) * 2.0 * _sigmoid(-(logits[0] - model.bias[0]))
        label[zero] = 0.0
    else:
        prob = np.exp(logits - logits.max(axis=0))
        cdf = np.cumsum(prob / prob.sum(axis=0), axis=0)
        label = np.minimum((rng.random(n) > cdf).sum(axis=0), len(cdf) - 1).astype(np.int64)
    rate = float(p["missing_rate"])
    x = model.loc[:, None] + model.scale[:, None] * z
    x[3::4] = model.scale[3::4, None] * np.exp(0.75 * z[3::4])  # a few skewed columns
    x[rng.random(x.shape) < rate] = np.nan
    out: dict[str, Any] = {
        "row_id": np.arange(start, start + n, dtype=np.int64),
        "ts": _timestamps(rng, np.arange(start, start + n, dtype=np.float64), int(p["rows"])),
    }
    for j in range(model.n_num):
        out[f"num_{j}"] = x[j]
    for j, (vocab, idx) in enumerate(zip(model.vocab, cats, strict=True)):
        values = vocab[idx]
        values[rng.random(n) < rate] = None
        out[f"cat_{j}"] = _object_column(values)
    out["label"] = label
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- ranking


@dataclass(frozen=True)
class _RankingModel:
    loc: np.ndarray  # (F,) observed f_j = loc_j + scale_j * (query shift + document value)
    scale: np.ndarray
    w: np.ndarray  # (F,), zero for noise features
    nl: tuple[int, int, int]  # threshold on z_a, interaction z_a * z_b, |z_c|
    w_nl: np.ndarray  # (3,)
    center: float
    spread: float
    thresholds: np.ndarray  # (4,) utility cut points between relevance 0|1|2|3|4


_QUERY_SHIFT_SD = 0.5  # query-level shift of every feature
_QUERY_OFFSET_SD = 0.6  # unobserved query-level offset of the utility
_RANKING_NOISE_SD = 0.45  # unobserved document-level noise of the utility
_RELEVANCE_CDF = (0.40, 0.70, 0.87, 0.96)  # target share of labels <= 0, 1, 2, 3


@lru_cache(maxsize=16)
def _ranking_model(seed: int, key: str) -> _RankingModel:
    nf = int(json.loads(key)["n_features"])
    rng = _hidden_rng("ranking", seed)
    loc = rng.normal(0.0, 3.0, nf)
    scale = np.exp(rng.normal(0.0, 0.7, nf))
    useful = rng.permutation(nf)[: max(1, (nf + 1) // 2)]
    w = np.zeros(nf)
    w[useful] = rng.choice([-1.0, 1.0], len(useful)) * rng.uniform(0.3, 1.0, len(useful))
    pick = [int(useful[i % len(useful)]) for i in range(3)]
    nl = (pick[0], pick[1], pick[2])
    w_nl = rng.uniform(0.6, 1.0, 3) * np.array([1.0, 0.5, -0.5])
    model = _RankingModel(loc, scale, w, nl, w_nl, 0.0, 1.0, np.zeros(4))
    crng = _calib_rng("ranking", seed)
    sizes = _group_sizes(crng, _CALIB_ROWS, 20.0)
    z, _ = _ranking_latent(crng, sizes, nf)
    g = _ranking_signal(model, z)
    center, spread = float(g.mean()), float(g.std()) or 1.0
    u = (g - center) / spread + _ranking_noise(crng, sizes)
    thresholds = np.quantile(u, _RELEVANCE_CDF)
    return replace(model, center=center, spread=spread, thresholds=thresholds)


def _ranking_latent(
    rng: np.random.Generator, sizes: np.ndarray, nf: int
) -> tuple[np.ndarray, np.ndarray]:
    """Latent feature values (F, n): a query-level shift plus a document-level value."""
    n = int(sizes.sum())
    shift = rng.normal(0.0, _QUERY_SHIFT_SD, (nf, len(sizes)))
    z = np.repeat(shift, sizes, axis=1) + rng.standard_normal((nf, n))
    return z, shift


def _ranking_noise(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    offset = np.repeat(rng.normal(0.0, _QUERY_OFFSET_SD, len(sizes)), sizes)
    return offset + rng.normal(0.0, _RANKING_NOISE_SD, int(sizes.sum()))


def _ranking_signal(model: _RankingModel, z: np.ndarray) -> np.ndarray:
    a, b, c = model.nl
    h = np.stack([(z[a] > 0.8).astype(np.float64), z[a] * z[b], np.abs(z[c])])
    return np.asarray(model.w @ z + model.w_nl @ h)


def _ranking_block(
    p: Mapping[str, Any], rng: np.random.Generator, index: int, start: int, n: int
) -> pd.DataFrame:
    model = _ranking_model(int(p["seed"]), _model_key("ranking", p))
    nf = len(model.w)
    sizes = _group_sizes(rng, n, float(p["mean_query_size"]))
    z, _ = _ranking_latent(rng, sizes, nf)
    u = (_ranking_signal(model, z) - model.center) / model.spread + _ranking_noise(rng, sizes)
    label = np.searchsorted(model.thresholds, u, side="right").astype(np.int64)
    x = model.loc[:, None] + model.scale[:, None] * z
    group_start = (np.cumsum(sizes) - sizes + start).astype(np.float64)
    ts = _timestamps(rng, group_start, int(p["rows"]))
    out: dict[str, Any] = {
        "row_id": np.arange(start, start + n, dtype=np.int64),
        "qid": np.repeat(index * GROUP_STRIDE + np.arange(len(sizes), dtype=np.int64), sizes),
        "ts": np.repeat(ts, sizes),
    }
    for j in range(nf):
        out[f"f{j}"] = x[j]
    out["label"] = label
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- ctr


@dataclass(frozen=True)
class _CtrModel:
    mu: np.ndarray  # (13,) dense count I = floor(exp(mu + sigma * z)) - 1, at least 0
    sigma: np.ndarray
    dense_missing: np.ndarray  # (13,) NaN rate per dense column
    dense_w: np.ndarray  # (13,) linear weights on the latent z (zero for most columns)
    zipf_a: np.ndarray  # (26,) Zipf exponent per categorical column
    cat_missing: np.ndarray  # (26,) None rate per categorical column
    salt: np.ndarray  # (26,) uint32: column salt for value -> 8-hex-char string
    effect_sd: np.ndarray  # (26,) sd of the per-value effects (zero for most columns)
    effect_salt: int
    center: float
    spread: float
    bias: float


_CTR_DENSE_SIGNAL = {0: 1.2, 2: -0.9, 4: 0.7, 6: 0.5, 9: 0.4}  # dense column -> weight on z
_CTR_CAT_SIGNAL = {0: 0.7, 1: 0.5, 2: 0.5, 3: 0.4, 13: 0.4, 16: 0.3}  # C column -> effect sd
_CTR_SCALE = 2.0  # logit sd of the observable signal
_CTR_REQUEST_SD = 0.4  # unobserved request-level logit offset
_CTR_RATE = 0.04
_LOWBIAS_M1 = np.uint32(0x7FEB352D)
_LOWBIAS_M2 = np.uint32(0x846CA68B)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).astype(np.uint32)
_NIBBLE_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)


@lru_cache(maxsize=16)
def _ctr_model(seed: int, key: str) -> _CtrModel:
    card = int(json.loads(key)["cardinality"])
    rng = _hidden_rng("ctr", seed)
    dense_w = np.zeros(CTR_DENSE)
    for j, w in _CTR_DENSE_SIGNAL.items():
        dense_w[j] = w
    effect_sd = np.zeros(CTR_CATEGORICAL)
    for j, sd in _CTR_CAT_SIGNAL.items():
        effect_sd[j] = sd
    model = _CtrModel(
        mu=rng.uniform(0.0, 3.0, CTR_DENSE),
        sigma=rng.uniform(1.0, 1.8, CTR_DENSE),
        dense_missing=rng.uniform(0.05, 0.2, CTR_DENSE),
        dense_w=dense_w,
        zipf_a=rng.uniform(1.05, 1.35, CTR_CATEGORICAL),
        cat_missing=np.where(
            rng.random(CTR_CATEGORICAL) < 0.5, rng.uniform(0.0, 0.1, CTR_CATEGORICAL), 0.0
        ),
        salt=rng.integers(0, 2**32, CTR_CATEGORICAL, dtype=np.uint64).astype(np.uint32),
        effect_sd=effect_sd,
        effect_salt=int(rng.integers(0, 2**62)),
        center=0.0,
        spread=1.0,
        bias=0.0,
    )
    crng = _calib_rng("ctr", seed)
    sizes = _group_sizes(crng, _CALIB_ROWS, 10.0)
    z, idx = _ctr_latent(model, crng, _CALIB_ROWS, card)
    raw = _ctr_signal(model, z, idx)
    center, spread = float(raw.mean()), float(raw.std()) or 1.0
    logits = (raw - center) / spread * _CTR_SCALE + _ctr_request_offset(crng, sizes)
    bias = _intercept_for_rate(logits, _CTR_RATE)
    return replace(model, center=center, spread=spread, bias=bias)


def _ctr_latent(
    model: _CtrModel, rng: np.random.Generator, n: int, card: int
) -> tuple[np.ndarray, np.ndarray]:
    """Latent dense values z (13, n) and categorical value indices (26, n), Zipf-like."""
    z = rng.standard_normal((CTR_DENSE, n))
    u = rng.random((CTR_CATEGORICAL, n))
    e = (1.0 - model.zipf_a)[:, None]
    top = (card + 1.0) ** e
    x = (1.0 + u * (top - 1.0)) ** (1.0 / e)  # inverse CDF of x**-a on [1, card + 1]
    idx = np.clip(np.floor(x) - 1.0, 0, card - 1).astype(np.int64)
    return z, idx


def _ctr_effects(model: _CtrModel, col: int, idx: np.ndarray) -> np.ndarray:
    """Per-value effect ~ N(0, sd) from a seeded hash of (column, value): nothing stored."""
    key = idx.astype(np.uint64) ^ np.uint64((col + 1) << 40) ^ np.uint64(model.effect_salt)
    h1 = mix64(key)
    h2 = mix64(h1 ^ np.uint64(0x9E3779B97F4A7C15))
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) / float(1 << 53)  # (0, 1]
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.asarray(model.effect_sd[col] * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))


def _ctr_signal(model: _CtrModel, z: np.ndarray, idx: np.ndarray) -> np.ndarray:
    s = model.dense_w @ z
    s = s + 0.6 * (z[1] > 1.0) + 0.35 * z[0] * z[4]  # a threshold and an interaction
    for col in np.flatnonzero(model.effect_sd):
        s = s + _ctr_effects(model, int(col), idx[col])
    return np.asarray(s)


def _ctr_request_offset(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    return np.repeat(rng.normal(0.0, _CTR_REQUEST_SD, len(sizes)), sizes)


def _hex8(codes: np.ndarray) -> np.ndarray:
    """uint32 codes -> 8-hex-char strings (object array), built without a per-row Python loop."""
    chars = _HEX[(codes[:, None] >> _NIBBLE_SHIFTS) & np.uint32(15)]
    return np.ascontiguousarray(chars).view("<U8").ravel().astype(object)


def _ctr_strings(model: _CtrModel, col: int, idx: np.ndarray) -> np.ndarray:
    """Value indices -> distinct 8-hex strings (a seeded 32-bit bijection); formats each once."""
    inverse, uniq = pd.factorize(idx)  # hash-based: O(n), unlike a sort
    x = np.asarray(uniq).astype(np.uint32) + model.salt[col]  # wraps mod 2**32: still one-to-one
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= _LOWBIAS_M1
        x ^= x >> np.uint32(15)
        x *= _LOWBIAS_M2
        x ^= x >> np.uint32(16)
    return np.asarray(_hex8(x)[inverse])


def _ctr_block(
    p: Mapping[str, Any], rng: np.random.Generator, index: int, start: int, n: int
) -> pd.DataFrame:
    card = int(p["cardinality"])
    model = _ctr_model(int(p["seed"]), _model_key("ctr", p))
    sizes = _group_sizes(rng, n, float(p["mean_request_size"]))
    z, idx = _ctr_latent(model, rng, n, card)
    logits = (_ctr_signal(model, z, idx) - model.center) / model.spread * _CTR_SCALE
    logits = logits + _ctr_request_offset(rng, sizes) + model.bias
    label = (rng.random(n) < _sigmoid(logits)).astype(np.int64)
    dense = np.maximum(np.floor(np.exp(model.mu[:, None] + model.sigma[:, None] * z)) - 1.0, 0.0)
    dense[rng.random(dense.shape) < model.dense_missing[:, None]] = np.nan
    cat_missing = rng.random(idx.shape) < model.cat_missing[:, None]
    group_start = (np.cumsum(sizes) - sizes + start).astype(np.float64)
    ts = _timestamps(rng, group_start, int(p["rows"]))
    out: dict[str, Any] = {
        "row_id": np.arange(start, start + n, dtype=np.int64),
        "request_id": np.repeat(
            index * GROUP_STRIDE + np.arange(len(sizes), dtype=np.int64), sizes
        ),
        "ts": np.repeat(ts, sizes),
    }
    for j in range(CTR_DENSE):
        out[f"I{j + 1}"] = dense[j]
    for j in range(CTR_CATEGORICAL):
        values = _ctr_strings(model, j, idx[j])
        values[cat_missing[j]] = None
        out[f"C{j + 1}"] = _object_column(values)
    out["label"] = label
    return pd.DataFrame(out)

"""XGBoost for rayline's tasks, without Ray: parameters, DMatrix building, training, files.

The Ray Train adapter (components/train_xgboost.py) calls these inside each worker, and the
Predictor calls ``load_booster``/``predict`` — one implementation for every path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xgboost

from components import sparse
from components.encoded import encoded_matrix
from components.features import Columns, FeatureTransform
from components.shard_stream import whole_queries
from components.tasks import metric_family, task_info
from components.validation import WEIGHT

# The objectives and eval metrics of each task are in components.tasks (xgb_objectives,
# xgb_eval_metrics, xgb_tracking).
_MAXIMIZE = {"auc", "ndcg", "map", "pre"}

# What rayline sets on XGBoost unless the spec's params say otherwise (listed in the README):
# nothing but XGBoost's own defaults, written out so a run's params say them. eta stays at
# XGBoost's 0.3: 0.1 was better on adult but worse on the LightGBM ranking example with rayline's
# 200 rounds and early stopping (benchmarks/xgboost_defaults.py), so there is no measured reason
# to differ. max_cat_to_onehot stays at XGBoost's 4 (1 made no difference on adult).
DEFAULT_PARAMS: dict[str, Any] = {"tree_method": "hist", "max_depth": 6}

# A booster attribute saying that its categorical code 0 (a missing or unseen value) reaches it as
# NaN. Boosters trained before it existed saw code 0 as a category, and are still fed that way.
MISSING_CATEGORY_ATTR = "rayline_missing_category"


def eval_metric(task: str, metric: str) -> str:
    """The XGBoost eval_metric that tracks the spec's selection metric (the task's
    ``xgb_tracking``; a cut-off such as ``@10`` carries over)."""
    info = task_info(task)
    tracked = info.xgb_tracking.get(metric_family(metric))
    if tracked is None:
        raise ValueError(
            f"{metric!r} is not a {task} metric; choose one of {', '.join(info.metrics)}"
        )
    if tracked.endswith("@k"):
        return tracked.removesuffix("k") + metric.rsplit("@", 1)[1]
    return tracked


def maximize(xgb_metric: str) -> bool:
    return xgb_metric.split("@", 1)[0] in _MAXIMIZE


def build_params(
    task: str,
    user_params: dict[str, Any],
    metric: str,
    num_classes: int | None,
    use_gpu: bool,
    nthread: int | None,
) -> dict[str, Any]:
    """Full XGBoost params: sensible defaults for the task, the spec's params on top."""
    info = task_info(task)
    objective = user_params.get("objective", info.default_objective)
    if objective not in info.xgb_objectives:
        raise ValueError(
            f"objective {objective!r} does not fit task {task}; use one of {info.xgb_objectives}"
        )
    # DEFAULT_PARAMS, then the spec's params: everything else is XGBoost's own default.
    params: dict[str, Any] = dict(DEFAULT_PARAMS)
    params.update(user_params)
    params["objective"] = objective
    tracked = eval_metric(task, metric)
    # XGBoost early-stops on the LAST metric in the list.
    params["eval_metric"] = [m for m in info.xgb_eval_metrics if m != tracked] + [tracked]
    if info.proba:
        params["num_class"] = num_classes
    if use_gpu:
        params["device"] = "cuda"
    if nthread:
        params.setdefault("nthread", nthread)
    return params


def sort_by_group(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of one query contiguous, as XGBoost ranking requires (stable within a query)."""
    return frame.sort_values("_group", kind="stable").reset_index(drop=True)


def matrix_inputs(
    frame: pd.DataFrame,
    transform: FeatureTransform,
    task: str,
    label: str | None,
    first_query: int = 0,
    encoded: bool = False,
) -> dict[str, Any]:
    """One batch's XGBoost inputs (the keywords of ``DMatrix`` and ``DataIter``'s
    ``input_data``): the feature matrix with categorical codes typed 'c' (missing ones NaN), the
    label, sample weights and, for a grouped task, query ids.

    A grouped frame must hold its queries' rows contiguously; their ids become dense
    ``first_query``, ``first_query + 1``, ... in row order: XGBoost stores qids as 32-bit, and
    group keys (hashes of string ids, generator ids) can exceed that and wrap out of order.
    ``encoded``: the frame holds ``components.encoded`` columns, not raw ones.
    """
    x = encoded_matrix(frame, transform) if encoded else transform.transform(frame)
    x = mark_missing_categories(x, transform)
    # sparse features: one CSR matrix, the dense columns then each sparse column (NaN = absent)
    data = sparse.model_matrix(x, frame, transform.sparse) if transform.sparse else x
    out: dict[str, Any] = {
        "data": data,
        "feature_names": transform.feature_names,
        "feature_types": transform.feature_types,
    }
    if label is not None:
        out["label"] = frame[label].to_numpy(dtype=np.float32)
    if task_info(task).grouped and "_group" in frame:
        qid = pd.factorize(frame["_group"].to_numpy())[0].astype(np.uint32)
        out["qid"] = qid + np.uint32(first_query)
    if WEIGHT in frame:
        w = frame[WEIGHT].to_numpy(dtype=np.float32)
        out["weight"] = query_weights(w, out["qid"]) if "qid" in out else w
    return out


def dmatrix(
    frame: pd.DataFrame, transform: FeatureTransform, task: str, label: str | None
) -> xgboost.DMatrix:
    """A DMatrix of a whole frame (``matrix_inputs``; a grouped task's rows sorted by query)."""
    if task_info(task).grouped:
        frame = sort_by_group(frame)
    return xgboost.DMatrix(
        **matrix_inputs(frame, transform, task, label), enable_categorical=True, missing=np.nan
    )


class FrameBatches(xgboost.DataIter):
    """Feeds XGBoost a stream of frames one batch at a time, for ``QuantileDMatrix`` (or
    ``ExtMemQuantileDMatrix`` with ``cache_prefix``): no frame of the whole stream is ever built.

    ``batches()`` starts the stream again on every call: XGBoost reads it more than once (the
    quantile sketch, then the binned pages). For a grouped task the stream must be sorted by
    ``_group`` (``whole_queries`` cuts it at query boundaries, so each batch holds whole
    queries). ``rows`` and ``queries`` count the last complete pass. ``encoded``: the frames
    hold ``components.encoded`` columns (XGBoost 3 reads the stream four times: encoding once,
    before, saves three transforms of every row).
    """

    def __init__(
        self,
        batches: Callable[[], Iterable[pd.DataFrame]],
        transform: FeatureTransform,
        task: str,
        label: str | None,
        cache_prefix: str | None = None,
        encoded: bool = False,
    ) -> None:
        self._batches = batches
        self._encoded = encoded
        self._transform = transform
        self._task = task
        self._label = label
        self._stream: Iterator[pd.DataFrame] | None = None
        self._rows = self._queries = 0
        self._empty_fed = False
        self.rows = self.queries = 0
        super().__init__(cache_prefix=cache_prefix, release_data=True)

    def _start(self) -> Iterator[pd.DataFrame]:
        frames = (b for b in self._batches() if len(b))
        return whole_queries(frames) if task_info(self._task).grouped else frames

    def next(self, input_data: Callable[..., None]) -> bool:
        if self._stream is None:
            self._stream = self._start()
            self._rows = self._queries = 0
            self._empty_fed = False
        frame = next(self._stream, None)
        if frame is None and self._rows == 0 and not self._empty_fed:
            # XGBoost refuses a stream of no batches; a worker whose shard is empty still
            # takes part in every all-reduce, so it gets one empty batch
            self._empty_fed = True
            input_data(**self._empty())
            return True
        if frame is None:
            self.rows, self.queries = self._rows, self._queries
            return False
        inputs = matrix_inputs(
            frame, self._transform, self._task, self._label, self._queries, self._encoded
        )
        self._rows += len(frame)
        if "qid" in inputs:
            self._queries = int(inputs["qid"][-1]) + 1
        input_data(**inputs)
        return True

    def reset(self) -> None:
        self._stream = None

    def _empty(self) -> dict[str, Any]:
        t = self._transform
        out: dict[str, Any] = {
            "data": np.empty((0, len(t.feature_names)), np.float32),
            "feature_names": t.feature_names,
            "feature_types": t.feature_types,
        }
        if self._label is not None:
            out["label"] = np.empty(0, np.float32)
        if task_info(self._task).grouped:
            out["qid"] = np.empty(0, np.uint32)
        return out


def quantile_dmatrix(
    train: FrameBatches,
    valid: FrameBatches | None,
    params: dict[str, Any],
    external_memory: bool = False,
) -> tuple[xgboost.DMatrix, xgboost.DMatrix | None]:
    """The training matrix from ``train``'s batches (``ExtMemQuantileDMatrix`` with pages in
    ``train``'s cache folder when ``external_memory``), and the validation matrix binned with
    the training matrix's cut points (``ref``), as XGBoost requires."""
    common: dict[str, Any] = {"missing": np.nan, "enable_categorical": True}
    if "max_bin" in params:
        common["max_bin"] = int(params["max_bin"])
    if "nthread" in params:
        common["nthread"] = int(params["nthread"])
    dtrain: xgboost.DMatrix
    if external_memory:
        dtrain = xgboost.ExtMemQuantileDMatrix(train, **common)
    else:
        dtrain = xgboost.QuantileDMatrix(train, **common)
    dvalid = xgboost.QuantileDMatrix(valid, ref=dtrain, **common) if valid is not None else None
    return dtrain, dvalid


def query_weights(weights: np.ndarray, qid: np.ndarray) -> np.ndarray:
    """One weight per query, as XGBoost's ranking objectives take them (rows of a query are
    contiguous, ``qid`` dense 0..G-1 in row order); a ValueError names the first query whose
    rows carry different weights."""
    starts = np.flatnonzero(np.r_[True, qid[1:] != qid[:-1]])
    first = np.repeat(weights[starts], np.diff(np.r_[starts, len(qid)]))
    differs = np.flatnonzero(first != weights)
    if differs.size:
        row = int(differs[0])
        raise ValueError(
            f"ranking weights are per query: query #{int(qid[row])} (in row order) has rows "
            f"weighted {float(first[row]):g} and {float(weights[row]):g}"
        )
    return weights[starts]


def mark_missing_categories(x: np.ndarray, transform: FeatureTransform) -> np.ndarray:
    """Categorical code 0 (missing, or a value outside the vocabulary) -> NaN, in place.

    XGBoost would otherwise learn code 0 as one more category: the rows with a missing value and
    the rows with values never seen in training would share the splits of one real category, and
    at test time an unseen value would follow them. As NaN, they take each split's learned
    default direction, as in XGBoost's own categorical support.
    """
    first = len(transform.numeric)
    if x.shape[1] > first:
        codes = x[:, first:]  # a view: the assignment below writes into x
        codes[codes == 0] = np.nan
    return x


def train(
    params: dict[str, Any],
    dtrain: xgboost.DMatrix,
    dvalid: xgboost.DMatrix | None,
    rounds: int,
    early_stopping_rounds: int | None,
    callbacks: Sequence[xgboost.callback.TrainingCallback] = (),
    init_model: xgboost.Booster | None = None,
) -> xgboost.Booster:
    """Train (or continue training ``init_model``); with early stopping the best model is kept."""
    evals = [(dtrain, "train")] + ([(dvalid, "valid")] if dvalid is not None else [])
    cbs = list(callbacks)
    if early_stopping_rounds and dvalid is not None:
        metric = params["eval_metric"][-1]
        # Appended last: xgboost stops calling callbacks after the first one that says stop.
        cbs.append(
            xgboost.callback.EarlyStopping(
                rounds=early_stopping_rounds,
                metric_name=metric,
                data_name="valid",
                maximize=maximize(metric),
                save_best=True,
            ),
        )
    done = init_model.num_boosted_rounds() if init_model is not None else 0
    booster = xgboost.train(
        params,
        dtrain,
        num_boost_round=max(rounds - done, 0),
        evals=evals,
        verbose_eval=False,
        callbacks=cbs,
        xgb_model=init_model,
    )
    booster.set_attr(**{MISSING_CATEGORY_ATTR: "nan"})  # dmatrix() marked them
    return booster


def to_bytes(booster: xgboost.Booster) -> bytes:
    return bytes(booster.save_raw(raw_format="ubj"))


def load_booster(data: bytes) -> xgboost.Booster:
    booster = xgboost.Booster()
    booster.load_model(bytearray(data))
    return booster


def check_feature_names(booster: xgboost.Booster, transform: FeatureTransform) -> None:
    """ValueError unless the booster was trained on the transform's columns (with sparse
    features there is a name per index, so this is worth doing once per model, not per call)."""
    if list(booster.feature_names or []) != transform.feature_names:
        raise ValueError("model and feature transform disagree on the feature columns")


def predict(
    booster: xgboost.Booster,
    x: np.ndarray,
    transform: FeatureTransform,
    frame: pd.DataFrame | Columns | None = None,
    checked: bool = False,
) -> np.ndarray:
    """Model output for a transformed matrix: P(1), class probabilities, a ranking score, or the
    predicted value (reg:tweedie predicts the mean, not the log of it). With sparse features,
    ``frame`` (the rows ``x`` came from) gives their columns: XGBoost reads one CSR matrix.

    ``inplace_predict`` skips building a DMatrix (half the cost of a 1-row request); the
    booster carries the feature types, so categorical codes split exactly as in training. ``x``
    (``transform.transform``'s output) is modified: missing categories become NaN. ``checked``:
    the caller has run ``check_feature_names`` on this pair already (the Predictor, at load).
    """
    if not checked:
        check_feature_names(booster, transform)
    if booster.attr(MISSING_CATEGORY_ATTR) == "nan":
        x = mark_missing_categories(x, transform)
    if transform.sparse:
        if frame is None:
            raise ValueError("a model with sparse features needs the rows' sparse columns")
        data = sparse.model_matrix(x, frame, transform.sparse)
        return np.asarray(booster.inplace_predict(data, missing=np.nan), dtype=np.float64)
    return np.asarray(booster.inplace_predict(x, missing=np.nan), dtype=np.float64)


def feature_importance(booster: xgboost.Booster) -> dict[str, float]:
    """Total gain per feature (features never used are absent)."""
    scores = booster.get_score(importance_type="total_gain")
    return {k: float(v if isinstance(v, float) else sum(v)) for k, v in scores.items()}

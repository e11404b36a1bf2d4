"""What rayline knows about each task, as a table: one ``TaskInfo`` record per task.

The four tasks are ``binary``, ``multiclass``, ``ranking`` and ``regression``. Code that behaves
differently per task reads the record's fields (``task_info(task).grouped``, ``.proba``, ...)
rather than testing the task's name, so what a task *is* lives in one place: its metrics and
their direction, the XGBoost objectives and torch losses it allows, what its model outputs and
how a scored frame and a served response show them, how its labels are checked and split, its
trivial baseline and the unit of the champion/challenger gate.

Plain Python with no imports from the rest of rayline, so any module (components, pipelines,
serve) can import it. ``tests/unit/test_tasks.py`` checks every record against the code that
computes it (metrics, XGBoost, the torch losses, the spec's validation).

Fields (see ``TaskInfo`` for their meaning; derived properties in brackets):

* labels: ``labels`` [``classes``], ``stratify``, ``standardized_label``
* outputs: ``output`` [``proba``], ``response_field``, ``rule_outputs``, ``grouped``
* metrics: ``metrics``, ``default_metric``, ``lower_is_better`` [``mode``], ``eval_options``,
  ``baseline``, [``unit``]
* training: ``xgb_objectives`` [``default_objective``], ``xgb_eval_metrics``,
  ``xgb_tracking``, ``torch_losses`` [``default_loss``]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

LabelKind = Literal["binary", "class", "relevance", "real"]
OutputKind = Literal["probability", "probabilities", "score", "value"]
BaselineKind = Literal["label_mean", "uniform", "random"]

_CUT_OFF = re.compile(r"@\d+$")


def metric_family(metric: str) -> str:
    """A metric name with its cut-off written ``@k`` (``ndcg@10`` -> ``ndcg@k``), as the
    ``metrics`` field names them; other names unchanged."""
    return _CUT_OFF.sub("@k", metric)


@dataclass(frozen=True)
class TaskInfo:
    """Everything the code needs to know about one task.

    Labels

    * ``labels``: what a label is. ``binary``: 0 or 1; ``class``: an integer class id
      ``0..num_classes-1`` (needs ``data.num_classes``); ``relevance``: an integer grade
      ``0..data.max_relevance``; ``real``: any finite number.
    * ``stratify``: a random split may stratify on the label (``split.stratify``).
    * ``standardized_label``: torch models learn ``(label - mean) / std`` of the training split
      and their predictions are mapped back (``ArchitectureSpec.target_mean/target_scale``).

    Outputs (``Predictor.predict``)

    * ``output``: what the model gives per row. ``probability``: P(class 1) in [0, 1], one
      column ``score``, a predicted label by ``score >= threshold``; ``probabilities``: an
      ``(n, K)`` matrix of class probabilities, columns ``proba_0..proba_{K-1}``, the predicted
      label its argmax; ``score``: any number, of which only the order within a query counts,
      column ``score``; ``value``: the predicted number, column ``score``.
    * ``proba`` (derived): ``output == "probabilities"``, a 2-D output (XGBoost needs
      ``num_class``, torch models one output per class).
    * ``classes`` (derived): ``labels`` is ``binary`` or ``class``, so predictions carry a
      predicted label (``label_pred`` in a scored frame, ``label`` in a /predict response).
    * ``response_field``: the field of a /predict response item holding the output.
    * ``rule_outputs``: the fields a rule, a rule model's default or an override may give
      (``score``, ``label``, ``value``; see components.rule_models).
    * ``grouped``: rows come in queries (``data.group``, the ``_group`` column): query ids go
      to XGBoost as qids, a random split would cut queries, the gate resamples queries, the
      ``boost``/``filter`` guardrails apply and the model is served at /rank.

    Metrics

    * ``metrics``: the metrics ``evaluation.evaluate`` reports that ``evaluation.metric`` may
      select; ``@k`` stands for any cut-off (``ndcg@10``). ``metric_family`` maps a name to
      this form and ``has_metric`` checks one.
    * ``default_metric``: the selection metric when the spec names none.
    * ``lower_is_better``: the metrics of ``metrics`` where smaller is better (``mode``).
    * ``eval_options``: the ``evaluation:`` settings that ``evaluation.evaluate`` (and
      ``baseline``, the gate) take for this task, as keyword arguments of the same names.
    * ``baseline``: the trivial model the winner is compared with (``evaluation.baseline``).
      ``label_mean``: every row gets the training label mean (binary: the base rate);
      ``uniform``: uniform class probabilities; ``random``: a random order (seeded by row key).
    * ``unit`` (derived): what the gate's paired bootstrap resamples: ``queries`` when
      ``grouped``, else ``rows``.

    Training

    * ``xgb_objectives``: the XGBoost objectives allowed; the first is the default
      (``default_objective``).
    * ``xgb_eval_metrics``: the XGBoost eval metrics always logged (the tracked one is added
      last, as early stopping reads the last).
    * ``xgb_tracking``: selection metric (as in ``metrics``) -> the XGBoost eval metric that
      tracks it for early stopping; an ``@k`` in the value takes the selection metric's
      cut-off.
    * ``torch_losses``: the torch losses (components.losses.LOSSES) allowed; the first is the
      default for ``loss: auto`` (``default_loss``).
    """

    name: str
    labels: LabelKind
    stratify: bool
    standardized_label: bool
    output: OutputKind
    response_field: str
    rule_outputs: tuple[str, ...]
    grouped: bool
    metrics: tuple[str, ...]
    default_metric: str
    lower_is_better: frozenset[str]
    eval_options: tuple[str, ...]
    baseline: BaselineKind
    xgb_objectives: tuple[str, ...]
    xgb_eval_metrics: tuple[str, ...]
    xgb_tracking: Mapping[str, str] = field(hash=False)
    torch_losses: tuple[str, ...]

    @property
    def classes(self) -> bool:
        return self.labels in ("binary", "class")

    @property
    def proba(self) -> bool:
        return self.output == "probabilities"

    @property
    def unit(self) -> Literal["queries", "rows"]:
        return "queries" if self.grouped else "rows"

    @property
    def default_objective(self) -> str:
        return self.xgb_objectives[0]

    @property
    def default_loss(self) -> str:
        return self.torch_losses[0]

    def has_metric(self, metric: str) -> bool:
        """Whether ``metric`` (e.g. ``ndcg@10``) is one of this task's metrics."""
        return metric_family(metric) in self.metrics

    def mode(self, metric: str) -> Literal["min", "max"]:
        """``min`` when smaller values of ``metric`` are better, else ``max``."""
        return "min" if metric in self.lower_is_better else "max"


TASKS: dict[str, TaskInfo] = {
    "binary": TaskInfo(
        name="binary",
        labels="binary",
        stratify=True,
        standardized_label=False,
        output="probability",
        response_field="score",
        rule_outputs=("score", "label"),
        grouped=False,
        metrics=("auc", "logloss", "accuracy", "f1"),
        default_metric="auc",
        lower_is_better=frozenset({"logloss"}),
        eval_options=("threshold",),
        baseline="label_mean",
        xgb_objectives=("binary:logistic",),
        xgb_eval_metrics=("logloss", "auc"),
        # F1 at a threshold has no XGBoost counterpart: logloss tracks the probabilities.
        xgb_tracking=MappingProxyType(
            {"auc": "auc", "logloss": "logloss", "accuracy": "error", "f1": "logloss"}
        ),
        torch_losses=("bce",),
    ),
    "multiclass": TaskInfo(
        name="multiclass",
        labels="class",
        stratify=True,
        standardized_label=False,
        output="probabilities",
        response_field="probabilities",
        rule_outputs=("label",),
        grouped=False,
        metrics=("accuracy", "macro_f1", "logloss"),
        default_metric="logloss",
        lower_is_better=frozenset({"logloss"}),
        eval_options=(),
        baseline="uniform",
        xgb_objectives=("multi:softprob",),
        xgb_eval_metrics=("mlogloss", "merror"),
        xgb_tracking=MappingProxyType(
            {"accuracy": "merror", "macro_f1": "mlogloss", "logloss": "mlogloss"}
        ),
        torch_losses=("cross_entropy",),
    ),
    "ranking": TaskInfo(
        name="ranking",
        labels="relevance",
        stratify=False,
        standardized_label=False,
        output="score",
        response_field="score",
        rule_outputs=("score",),
        grouped=True,
        metrics=("ndcg@k", "map@k", "map", "mrr"),
        default_metric="ndcg@10",
        lower_is_better=frozenset(),
        eval_options=("ks", "relevance_threshold", "no_relevant"),
        baseline="random",
        xgb_objectives=("rank:ndcg", "rank:pairwise", "rank:map"),
        xgb_eval_metrics=("ndcg@10",),
        # MAP in XGBoost only accepts binary labels; NDCG at the same cut-off tracks it. How a
        # query without a relevant row counts (evaluation.no_relevant) shifts or scales a metric
        # the same way every round, so XGBoost's own convention (1) picks the same best round.
        xgb_tracking=MappingProxyType(
            {"ndcg@k": "ndcg@k", "map@k": "ndcg@k", "map": "ndcg", "mrr": "ndcg"}
        ),
        # Pointwise bce needs 0/1 relevance (data.max_relevance 1; the spec checks it).
        torch_losses=("pairwise", "lambdarank", "listwise", "bce", "mse", "huber"),
    ),
    "regression": TaskInfo(
        name="regression",
        labels="real",
        stratify=False,
        standardized_label=True,
        output="value",
        response_field="value",
        rule_outputs=("value",),
        grouped=False,
        metrics=("rmse", "mae", "r2", "mape"),
        default_metric="rmse",
        lower_is_better=frozenset({"rmse", "mae", "mape"}),
        eval_options=(),
        baseline="label_mean",
        xgb_objectives=("reg:squarederror", "reg:absoluteerror", "reg:tweedie"),
        xgb_eval_metrics=("rmse", "mae"),
        # R2 on a fixed validation split is 1 - MSE / var: tracking RMSE picks the same round.
        # XGBoost's own mape divides by every label (zeros give inf); MAE is the robust stand-in.
        xgb_tracking=MappingProxyType({"rmse": "rmse", "mae": "mae", "r2": "rmse", "mape": "mae"}),
        torch_losses=("mse", "huber"),
    ),
}

LOWER_IS_BETTER: frozenset[str] = frozenset().union(*(t.lower_is_better for t in TASKS.values()))
"""Every metric name where smaller is better, whatever the task (re-exported by
components.metrics; a metric name means the same in every task that reports it)."""


def task_info(name: str) -> TaskInfo:
    """The record of task ``name``; ValueError naming the known tasks for any other name."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; rayline's tasks are {', '.join(TASKS)}") from None

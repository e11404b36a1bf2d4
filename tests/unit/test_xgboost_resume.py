"""XGBoost continued from a checkpoint (a restarted worker group): its reports and history
count rounds from the first round, as an uninterrupted run's do."""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost

from components import xgboost_model
from components.steps import train_xgboost


class _Setup:
    """What ``ReportEvery`` reports through: the metrics, in order."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], write: Any) -> None:
        self.reports.append(metrics)


def _data() -> tuple[xgboost.DMatrix, xgboost.DMatrix]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = (x[:, 0] + rng.normal(0, 0.5, 400) > 0).astype(float)
    return xgboost.DMatrix(x[:300], label=y[:300]), xgboost.DMatrix(x[300:], label=y[300:])


def test_a_continued_model_reports_rounds_from_the_first() -> None:
    dtrain, dvalid = _data()
    params = {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"], "nthread": 1}
    whole = train_xgboost.ReportEvery(5, _Setup())  # type: ignore[arg-type]
    uninterrupted = xgboost_model.train(params, dtrain, dvalid, 20, None, [whole])
    first = xgboost_model.train(params, dtrain, dvalid, 12, None)
    setup = _Setup()
    again = train_xgboost.ReportEvery(5, setup)  # type: ignore[arg-type]
    continued = xgboost_model.train(params, dtrain, dvalid, 20, None, [again], first)
    assert continued.num_boosted_rounds() == 20
    assert [h["round"] for h in again.history] == [float(r) for r in range(13, 21)]
    assert [r["round"] for r in setup.reports] == [15, 20]
    # the same trees as without the restart, so the same metrics at the same rounds
    assert again.history == whole.history[12:]
    assert setup.reports[-1]["valid-auc"] == whole.history[-1]["valid-auc"]
    assert uninterrupted.num_boosted_rounds() == 20

"""The Ray Tune adapter with a trivial trainable: space conversion, Optuna TPE, ASHA, FIFO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray import tune

from components.search_space import parse_space
from components.steps import tune as tune_step
from components.steps.train_common import TrainOutcome

pytestmark = pytest.mark.usefixtures("ray_session")

SPACE = parse_space(
    {
        "x": {"uniform": [-2.0, 2.0]},
        "lr": {"loguniform": [1e-3, 1e-1]},
        "depth": {"randint": [1, 4]},
        "flavor": {"choice": ["a", "b"]},
    }
)


def _trial(config: dict[str, Any], *, offset: float) -> None:
    """Reports a curve that peaks near x = offset, then its 'model'."""
    import ray.tune

    value = 0.0
    for epoch in range(1, 5):
        value = 1.0 - (config["x"] - offset) ** 2 + 0.01 * epoch
        ray.tune.report({"epoch": epoch, "valid-auc": value})
    outcome = TrainOutcome(
        model=f"{config['x']:.6f}".encode(),
        history=[{"epoch": 4, "valid-auc": value}],
        best_iteration=3,
        rounds=4,
        seconds=0.0,
        checkpoint_path=None,
        valid_metrics={"auc": value},
    )
    tune_step.report_final(outcome, "epoch")


def test_to_tune_objects() -> None:
    got = tune_step.to_tune(SPACE)
    assert isinstance(got["x"], tune.search.sample.Float)
    assert isinstance(got["depth"], tune.search.sample.Integer)
    assert got["depth"].lower == 1 and got["depth"].upper == 4
    assert isinstance(got["flavor"], tune.search.sample.Categorical)
    grid = tune_step.to_tune(parse_space({"n": {"grid": [1, 2]}}))
    assert grid["n"] == {"grid_search": [1, 2]}


@pytest.mark.parametrize(("searcher", "scheduler"), [("optuna", "fifo"), ("random", "asha")])
def test_search_picks_the_best_finished_trial(
    searcher: str, scheduler: str, tmp_path: Path
) -> None:
    settings = tune_step.SearchSettings(
        num_samples=5,
        max_concurrent_trials=2,
        time_budget_s=None,
        searcher=searcher,
        scheduler=scheduler,
        grace_period=1,
        reduction_factor=2,
        seed=3,
    )
    watch = tune_step.Watch("valid-auc", "max", "epoch", 4)
    result = tune_step.run_search(
        _trial, SPACE, settings, watch, str(tmp_path), f"s-{searcher}", {"cpu": 0.5}, offset=0.5
    )
    assert len(result.trials) == 5
    assert {t.status for t in result.trials} <= {"completed", "stopped early"}
    finished = [t for t in result.trials if t.status == "completed"]
    assert result.best is not None and result.best_outcome is not None
    assert result.best.value == max(t.value or -1e9 for t in finished)
    # the registered "model" is the best trial's own
    assert result.best_outcome.model == f"{result.best.config['x']:.6f}".encode()
    assert result.best_outcome.valid_metrics["auc"] == pytest.approx(result.best.value)
    for t in result.trials:
        assert -2.0 <= t.config["x"] <= 2.0 and t.config["flavor"] in ("a", "b")
    if scheduler == "fifo":
        assert len(finished) == 5  # nothing stops a trial early

"""Search spaces from YAML: parsing, every error case, applying sampled values, spec checks."""

from __future__ import annotations

import pytest

from components.search_space import Dist, apply, has_grid, parse_dist, parse_space
from pipelines.spec import SpecError, spec_from_dict


def test_each_kind_parses() -> None:
    space = parse_space(
        {
            "params.eta": {"loguniform": [0.01, 0.3]},
            "params.subsample": {"uniform": [0.5, 1.0]},
            "params.max_depth": {"randint": [3, 10]},
            "hidden": {"choice": [[64], [128, 64]]},
            "epochs": {"grid": [2, 4]},
        }
    )
    assert space["params.eta"] == Dist("loguniform", (0.01, 0.3))
    assert space["params.max_depth"].extremes() == [3, 9]  # upper bound excluded
    assert space["hidden"].extremes() == [[64], [128, 64]]
    assert has_grid(space) and not has_grid({"a": space["params.eta"]})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"uniform": [1, 0]}, "low < high"),
        ({"loguniform": [0, 1]}, "low > 0"),
        ({"randint": [1.5, 4]}, "integers"),
        ({"randint": [3, 3]}, "high > low"),
        ({"uniform": [0, "x"]}, "finite numbers"),
        ({"uniform": [0]}, "[low, high]"),
        ({"choice": []}, "non-empty list"),
        ({"normal": [0, 1]}, "unknown distribution 'normal'"),
        ({"uniform": [0, 1], "choice": [1]}, "one distribution"),
        (0.1, "one distribution"),
    ],
)
def test_bad_distributions_name_the_path(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_dist("params.eta", raw)
    assert str(e.value).startswith("params.eta: ") and message in str(e.value)


def test_paths_that_cannot_be_searched() -> None:
    for path in ("scaling.num_workers", "name", "kind"):
        with pytest.raises(ValueError, match="cannot be searched"):
            parse_space({path: {"choice": [1, 2]}})


def test_apply_sets_nested_paths_on_a_copy() -> None:
    base = {"params": {"eta": 0.1}, "epochs": 3}
    out = apply(base, {"params.eta": 0.2, "params.max_depth": 5, "new.inner": 1})
    assert out == {"params": {"eta": 0.2, "max_depth": 5}, "epochs": 3, "new": {"inner": 1}}
    assert base == {"params": {"eta": 0.1}, "epochs": 3}
    with pytest.raises(ValueError, match="not a mapping"):
        apply(base, {"epochs.x": 1})


def _spec(search: dict, **tune: object) -> dict:
    return {
        "name": "t",
        "task": "binary",
        "data": {"source": {"uri": "synthetic:binary", "params": {"rows": 100}}},
        "features": {"numeric": ["num_0"]},
        "models": [{"kind": "torch.mlp", "search": search}],
        "tune": tune,
    }


def test_spec_checks_every_edge_of_the_space() -> None:
    ok = spec_from_dict(_spec({"learning_rate": {"loguniform": [1e-4, 1e-2]}}))
    assert ok.models[0].search and ok.tune.scheduler == "asha"
    with pytest.raises(SpecError) as e:
        spec_from_dict(_spec({"dropout": {"uniform": [0.0, 1.0]}}), source="s.yaml")
    msg = str(e.value)
    assert "models.0.search.dropout: the value 1.0 is not valid" in msg and "less than 1" in msg
    with pytest.raises(SpecError, match=r"models\.0\.search\.learning_rat: the value"):
        spec_from_dict(_spec({"learning_rat": {"choice": [0.1]}}))
    with pytest.raises(SpecError, match=r"models\.0\.search\.epochs: unknown distribution"):
        spec_from_dict(_spec({"epochs": {"poisson": [3]}}))
    with pytest.raises(SpecError, match=r"grid cannot be used with tune\.searcher optuna"):
        spec_from_dict(_spec({"epochs": {"grid": [2, 3]}}, searcher="optuna"))


def test_a_search_needs_a_train_worker_group() -> None:
    """Ray Train's in-process mode refuses report/get_context inside a Tune trial: a search
    with num_workers 0 is refused before anything runs."""
    doc = _spec({"learning_rate": {"loguniform": [1e-4, 1e-2]}})
    doc["models"][0]["scaling"] = {"num_workers": 0}
    with pytest.raises(SpecError, match=r"models\.0\.scaling\.num_workers: a model with a search"):
        spec_from_dict(doc)
    doc["models"][0]["scaling"] = {"num_workers": 1}
    assert spec_from_dict(doc).models[0].search

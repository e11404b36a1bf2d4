"""Tiny model bundles for tests, written through components.model_bundle (the one format).

Each ``*_contents`` helper builds the ``BundleContents`` the pipeline's register stage would
build for the same model: rule docs and guardrails go through their pipeline spec models
(``RulesModelSpec``, ``GuardrailSpec``) and are dumped as the runner dumps them, so a test
bundle holds the same JSON as a trained one. ``write`` writes it and returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components import model_bundle, xgboost_model
from components.features import (
    CategoricalConfig,
    FeatureConfig,
    FeatureTransform,
    fit_transform,
    partial_stats,
)
from components.model_bundle import BundleContents
from components.sparse import SparseConfig
from components.validation import DataSchema

NUMERIC = ("age", "clicks")
CATEGORICAL = ("country",)


def tiny_frame(rows: int = 200, task: str = "binary", seed: int = 0) -> pd.DataFrame:
    """age, clicks, country (with missing values), a learnable ``label`` and, for ranking,
    a ``_group`` of 10 rows per query."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(10, 70, rows)
    age[::17] = np.nan
    clicks = rng.poisson(3, rows).astype(np.float64)
    country = rng.choice(np.array(["us", "ca", "de", None], dtype=object), rows)
    signal = clicks + (country == "us") * 2 - np.nan_to_num(age, nan=40.0) / 20
    if task == "binary":
        label = (signal > np.median(signal)).astype(np.int64)
    elif task == "multiclass":
        label = np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3])).astype(np.int64)
    elif task == "ranking":
        label = np.clip(np.round(signal - signal.min()), 0, 4).astype(np.int64)
    else:
        label = signal + rng.normal(0, 0.1, rows)
    frame = pd.DataFrame({"age": age, "clicks": clicks, "country": country, "label": label})
    if task == "ranking":
        frame["_group"] = np.arange(rows) // 10
    return frame


def features(
    frame: pd.DataFrame,
    numeric: Sequence[str] = NUMERIC,
    categorical: Sequence[str] = CATEGORICAL,
    sparse: Sequence[str] = (),
) -> FeatureTransform:
    """A FeatureTransform fitted on ``frame`` (median imputation, vocab categoricals, sparse
    columns with their fitted dim)."""
    config = FeatureConfig(
        numeric=tuple(numeric),
        categorical=tuple(CategoricalConfig(c) for c in categorical),
        sparse=tuple(SparseConfig(c) for c in sparse),
    )
    return fit_transform([partial_stats(frame, config)], config)


def schema(
    task: str,
    transform: FeatureTransform,
    label: str = "label",
    num_classes: int | None = None,
    **kwargs: Any,
) -> DataSchema:
    if transform.sparse:  # fitted dims: the spec left them out
        kwargs.setdefault("sparse", {p.name: None for p in transform.sparse})
    return DataSchema(
        task=task,
        numeric=tuple(p.name for p in transform.numeric),
        categorical=tuple(c.name for c in transform.categorical),
        label=label,
        num_classes=num_classes,
        **kwargs,
    )


def guardrail_items(guardrails: Sequence[Mapping[str, Any]] | None) -> tuple[dict[str, Any], ...]:
    """Guardrails as the runner writes them (validated by GuardrailSpec, None fields left out)."""
    from pipelines.spec import GuardrailSpec

    return tuple(
        GuardrailSpec.model_validate(dict(g)).model_dump(mode="json", exclude_none=True)
        for g in guardrails or ()
    )


def rules_contents(
    task: str,
    rules_doc: Mapping[str, Any],
    transform: FeatureTransform,
    *,
    guardrails: Sequence[Mapping[str, Any]] | None = None,
    num_classes: int | None = None,
    label: str = "label",
) -> BundleContents:
    """A rule model (``rules_doc``: a ``models:`` entry of kind rules, ``kind`` optional)."""
    from pipelines.spec import RulesModelSpec

    m = RulesModelSpec.model_validate({"kind": "rules", **rules_doc})
    return BundleContents(
        kind=m.kind,
        name=m.name,
        task=task,
        label=label,
        transform=transform,
        schema=schema(task, transform, label, num_classes),
        model=m.model_dump_json().encode(),
        params=m.model_dump(mode="json", exclude={"scaling"}),
        num_classes=num_classes,
        guardrails=guardrail_items(guardrails),
    )


def xgboost_contents(
    frame: pd.DataFrame,
    task: str = "binary",
    *,
    transform: FeatureTransform | None = None,
    rounds: int = 5,
    num_classes: int | None = None,
    guardrails: Sequence[Mapping[str, Any]] | None = None,
    label: str = "label",
    **kwargs: Any,
) -> BundleContents:
    """An XGBoost model trained for ``rounds`` rounds on ``frame`` (one thread, deterministic)."""
    from pipelines.spec import XGBoostModelSpec

    transform = transform or features(frame)
    m = XGBoostModelSpec(name="gbdt", params={"max_depth": 3}, num_boost_round=rounds)
    metric = {"binary": "auc", "multiclass": "accuracy", "ranking": "ndcg@10"}.get(task, "rmse")
    params = xgboost_model.build_params(task, m.params, metric, num_classes, False, nthread=1)
    dtrain = xgboost_model.dmatrix(frame, transform, task, label)
    booster = xgboost_model.train(params, dtrain, None, rounds, None)
    return BundleContents(
        kind=m.kind,
        name=m.name,
        task=task,
        label=label,
        transform=transform,
        schema=schema(task, transform, label, num_classes),
        model=xgboost_model.to_bytes(booster),
        params=m.model_dump(mode="json", exclude={"scaling"}),
        num_classes=num_classes,
        best_iteration=rounds - 1,
        rounds=rounds,
        guardrails=guardrail_items(guardrails),
        **kwargs,
    )


def torch_contents(
    frame: pd.DataFrame,
    task: str = "binary",
    *,
    kind: str = "torch.mlp",
    transform: FeatureTransform | None = None,
    num_classes: int | None = None,
    guardrails: Sequence[Mapping[str, Any]] | None = None,
    label: str = "label",
    seed: int = 0,
    **kwargs: Any,
) -> BundleContents:
    """A small torch model (seeded initial weights, one epoch of training on ``frame``)."""
    import torch

    from components.torch_models import ArchitectureSpec, build_model
    from components.torch_training import row_batches, save_state, sparse_matrices, train_epoch
    from pipelines.spec import TorchModelSpec

    transform = transform or features(frame)
    m = TorchModelSpec(kind=kind, name="net", hidden=[8], bottom_mlp=[8], top_mlp=[8], epochs=1)  # type: ignore[arg-type]
    arch = ArchitectureSpec(
        kind=m.kind,
        num_numeric=len(transform.numeric),
        cardinalities=tuple(c.cardinality for c in transform.categorical),
        embedding_dim=4,
        bottom_mlp=tuple(m.bottom_mlp),
        top_mlp=tuple(m.top_mlp),
        hidden=tuple(m.hidden),
        first_order=m.first_order,
        num_outputs=(num_classes or 2) if task == "multiclass" else 1,
        sparse=tuple((p.name, p.dim) for p in transform.sparse),
    )
    torch.manual_seed(seed)
    net = build_model(arch)
    x = transform.transform(frame)
    y = frame[label].to_numpy(dtype=np.float32)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    batches = row_batches(x, y, 64, seed, sparse=sparse_matrices(frame, arch))
    train_epoch(net, batches, m.loss_for(task), optimizer, "cpu")
    return BundleContents(
        kind=m.kind,
        name=m.name,
        task=task,
        label=label,
        transform=transform,
        schema=schema(task, transform, label, num_classes),
        model=save_state(net.eval()),
        params=m.model_dump(mode="json", exclude={"scaling"}),
        num_classes=num_classes,
        best_iteration=0,
        rounds=1,
        architecture=arch.to_json(),
        guardrails=guardrail_items(guardrails),
        **kwargs,
    )


def write(path: str | Path, contents: BundleContents) -> str:
    """Write ``contents`` as a bundle at ``path`` (which must not exist); returns the path."""
    return str(model_bundle.write_model_bundle(path, contents))

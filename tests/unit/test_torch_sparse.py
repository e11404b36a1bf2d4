"""Sparse columns into the torch models: EmbeddingBag inputs cut per batch from CSR rows (never
a dense ``(n, dim)`` array), learning, the Ray Train worker function, bundles, the Predictor
and serving requests. No Ray cluster."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import ray
import ray.train
import scipy.sparse
import torch
from sklearn.metrics import roc_auc_score

from components import sparse
from components.predictor import Predictor
from components.torch_models import DLRM, MLP, ArchitectureSpec, build_model
from components.torch_training import (
    batch_sparse,
    group_batches,
    load_state,
    predict,
    row_batches,
    sparse_input,
    sparse_matrices,
    train_epoch,
)
from tests import bundles
from tests.train_fakes import Context, encoded_shard

torch.set_num_threads(2)

DIM = 40  # the sparse column's width; indices 0..4 carry the signal


def _csr(rows: list[dict[int, float]], dim: int) -> scipy.sparse.csr_matrix:
    """A CSR matrix from one ``{index: value}`` dict per row (entries kept in the given order)."""
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = [i for r in rows for i in r]
    values = [v for r in rows for v in r.values()]
    return scipy.sparse.csr_matrix(
        (np.asarray(values, np.float32), np.asarray(indices, np.int32), indptr),
        shape=(len(rows), dim),
    )


def sparse_frame(rows: int, seed: int = 0, task: str = "binary") -> pd.DataFrame:
    """age, country and a sparse ``ids`` column (about 3 entries a row, some rows empty);
    the label is 1 where the value-weighted count of ids 0..4 plus a little age is high."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, rows)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.concatenate([rng.choice(DIM, c, replace=False) for c in counts]).astype(np.int32)
    values = rng.uniform(0.5, 1.5, len(indices)).astype(np.float32)
    m = scipy.sparse.csr_matrix((values, indices, indptr), shape=(rows, DIM))
    age = rng.uniform(10, 70, rows)
    country = rng.choice(np.array(["us", "ca", None], dtype=object), rows)
    signal = np.asarray(m[:, :5].sum(axis=1)).ravel() + age / 100
    frame = pd.DataFrame({"age": age, "country": country})
    frame["ids"] = sparse.series(sparse.from_csr(m))
    if task == "ranking":
        frame["label"] = np.clip(np.round(signal), 0, 3).astype(np.int64)
        frame["_group"] = np.arange(rows) // 8
    else:
        frame["label"] = (signal > np.median(signal)).astype(np.int64)
    return frame


def _arch(kind: str = "torch.mlp", **kwargs: Any) -> ArchitectureSpec:
    base: dict[str, Any] = {
        "kind": kind,
        "num_numeric": 1,
        "cardinalities": (),
        "embedding_dim": 4,
        "hidden": (16,),
        "bottom_mlp": (8,),
        "top_mlp": (8,),
        "sparse": (("ids", DIM),),
    }
    return ArchitectureSpec(**(base | kwargs))


# --------------------------------------------------------------------------------------------
# the model's sparse input


def test_embedding_bag_is_the_value_weighted_sum_of_embedding_rows() -> None:
    torch.manual_seed(0)
    spec = _arch(embedding_dim=3, hidden=(), sparse=(("ids", 5),))
    model = build_model(spec)
    assert isinstance(model, MLP)
    # rows: two entries, none, one, one missing (NaN) value, one explicit zero
    m = _csr([{1: 2.0, 4: -0.5}, {}, {1: 1.0}, {0: float("nan")}, {3: 0.0}], 5)
    indices, offsets, weights = sparse_input(m)
    assert indices.tolist() == [1, 4, 1, 0, 3] and indices.dtype == torch.int64
    assert offsets.tolist() == [0, 2, 2, 3, 4] and offsets.dtype == torch.int64
    assert weights.tolist() == [2.0, -0.5, 1.0, 0.0, 0.0]  # NaN weighs 0, as an absent entry
    e = model.bags[0].weight.detach()
    zero = torch.zeros(3)
    want = torch.stack([2.0 * e[1] - 0.5 * e[4], zero, e[1], zero, zero])
    with torch.no_grad():
        (got,) = model.bagged([(indices, offsets, weights)], 5)
        torch.testing.assert_close(got, want)
        # the MLP without hidden layers is one Linear over [numeric, bag]
        x = torch.tensor([[0.5], [1.0], [-1.0], [2.0], [0.0]])
        out = model(x, [(indices, offsets, weights)])
        torch.testing.assert_close(
            out, torch.cat([x, want], dim=1) @ model.out.weight.T + model.out.bias
        )


def test_dlrm_treats_each_sparse_column_as_one_more_field() -> None:
    torch.manual_seed(0)
    spec = _arch(
        "torch.dlrm",
        num_numeric=2,
        cardinalities=(4,),
        sparse=(("a", 6), ("b", 3)),
        first_order=True,
    )
    model = build_model(spec)
    assert isinstance(model, DLRM)
    # bottom + 1 embedding + 2 bags + the constant = 5 vectors -> 10 interactions
    first = model.top[0]
    assert isinstance(first, torch.nn.Linear) and first.in_features == 4 + 10
    x = torch.tensor([[0.1, 0.2, 1.0], [0.3, -0.1, 3.0], [0.0, 0.0, 2.0]])
    a = sparse_input(_csr([{0: 1.0, 5: 2.0}, {}, {2: 1.0}], 6))
    b = sparse_input(_csr([{1: 1.0}, {1: 0.5}, {}], 3))
    out = model(x, [a, b])
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    out.sum().backward()
    grad = model.bags[0].weight.grad
    assert grad is not None
    used = grad.abs().sum(dim=1) > 0
    assert used.tolist() == [True, False, True, False, False, True]  # only the rows looked up
    with pytest.raises(ValueError, match=r"takes 2 sparse column\(s\) \['a', 'b'\], got 1"):
        model(x, [a])
    with pytest.raises(ValueError, match=r"sparse column 'b': 2 rows, expected 3"):
        model(x, [a, sparse_input(_csr([{}, {}], 3))])


@pytest.mark.parametrize("kind", ["torch.mlp", "torch.dlrm"])
def test_a_model_of_sparse_columns_only(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(_arch(kind, num_numeric=0, first_order=True))
    m = _csr([{3: 1.0}, {}, {7: 2.0, 39: 1.0}], DIM)
    out = model(torch.zeros((3, 0)), [sparse_input(m)])
    assert out.shape == (3, 1) and torch.isfinite(out).all()


def test_architecture_json_records_the_sparse_columns() -> None:
    spec = _arch("torch.dlrm", cardinalities=(3,), sparse=(("ids", DIM), ("tags", 7)))
    back = ArchitectureSpec.from_json(spec.to_json())
    assert back == spec and back.sparse == (("ids", DIM), ("tags", 7))
    assert (back.num_features, back.num_embedded) == (4, 3)
    older = json.loads(spec.to_json())
    del older["sparse"]  # bundles written before sparse inputs
    assert ArchitectureSpec.from_json(json.dumps(older)) == replace(spec, sparse=())
    with pytest.raises(ValueError, match="dim >= 1"):
        _arch(sparse=(("ids", 0),))
    with pytest.raises(ValueError, match="distinct name"):
        _arch(sparse=(("ids", 3), ("ids", 4)))
    assert ArchitectureSpec("torch.mlp", 0, (), sparse=(("ids", 3),)).num_features == 1


# --------------------------------------------------------------------------------------------
# batches


def _rebuilt(batch: dict[str, torch.Tensor], dim: int) -> scipy.sparse.csr_matrix:
    ((indices, offsets, weights),) = batch_sparse(batch)
    indptr = np.append(offsets.numpy(), len(indices))
    return scipy.sparse.csr_matrix(
        (weights.numpy(), indices.numpy(), indptr), shape=(len(offsets), dim)
    )


@pytest.mark.parametrize("grouped", [False, True])
def test_batches_carry_csr_parts_of_their_rows_never_a_dense_matrix(grouped: bool) -> None:
    n, dim = 300, 1_000_000  # a dense (n, dim) float32 batch would be 1.2 GB
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 4, n)
    indices = rng.integers(0, dim, counts.sum())
    values = rng.uniform(0.1, 2, counts.sum()).astype(np.float32)
    m = scipy.sparse.csr_matrix(
        (values, indices, np.concatenate([[0], np.cumsum(counts)])), shape=(n, dim)
    )
    x = np.arange(n, dtype=np.float32)[:, None]  # the row number, to find each batch's rows
    y = np.zeros(n, np.float32)
    w = rng.uniform(0.5, 2, n).astype(np.float32)
    if grouped:
        groups = rng.integers(0, 40, n)
        batches = list(group_batches(x, y, groups, 64, seed=3, weights=w, sparse=[m]))
    else:
        batches = list(row_batches(x, y, 64, seed=3, weights=w, sparse=[m]))
    seen = []
    for batch in batches:
        rows = batch["x"][:, 0].long().numpy()
        seen.append(rows)
        k = len(rows)
        nnz = int(m[rows].nnz)
        assert {key: tuple(t.shape) for key, t in batch.items()} == {
            "x": (k, 1),
            "y": (k,),
            "group": (k,),
            "weight": (k,),
            "sparse0.indices": (nnz,),
            "sparse0.offsets": (k,),
            "sparse0.weights": (nnz,),
        }
        assert max(t.numel() for t in batch.values()) < k * 10  # entries, not k x dim
        assert (_rebuilt(batch, dim) != m[rows]).nnz == 0  # the batch's own rows' entries
        np.testing.assert_array_equal(batch["weight"].numpy(), w[rows])
        if grouped:  # whole queries
            assert set(groups[rows]).isdisjoint(set(groups[np.setdiff1d(np.arange(n), rows)]))
    assert sorted(np.concatenate(seen).tolist()) == list(range(n))  # every row exactly once
    with pytest.raises(ValueError, match="sparse input 0 has 299 rows, the features 300"):
        next(row_batches(x, y, 64, sparse=[m[:-1]]))


def test_dense_batches_are_unchanged_without_sparse_columns() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.float32)
    (batch,) = list(row_batches(x, y, 16, seed=0))
    assert set(batch) == {"x", "y", "group"} and batch_sparse(batch) == []


# --------------------------------------------------------------------------------------------
# training, the worker function, bundles and serving


def test_a_model_with_sparse_input_learns() -> None:
    frame, held_out = sparse_frame(600, seed=2), sparse_frame(300, seed=3)
    transform = bundles.features(frame, numeric=("age",), categorical=(), sparse=("ids",))
    assert [(p.name, p.dim) for p in transform.sparse] == [("ids", DIM)]
    arch = _arch(embedding_dim=8, hidden=(16,))
    torch.manual_seed(0)
    model = build_model(arch)
    x, y = transform.transform(frame), frame["label"].to_numpy(np.float32)
    mats = sparse_matrices(frame, arch)
    assert mats[0].shape == (600, DIM) and mats[0].nnz == sum(len(v) for v in frame["ids"])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = [
        train_epoch(model, row_batches(x, y, 64, seed=e, sparse=mats), "bce", optimizer, "cpu")
        for e in range(8)
    ]
    assert losses[-1] < 0.6 * losses[0], losses
    xt = transform.transform(held_out)
    p = predict(model, xt, "binary", sparse=sparse_matrices(held_out, arch))
    assert roc_auc_score(held_out["label"], p) > 0.9  # the ids' signal, not the rows
    # the same scores in other batch sizes: batches cut the CSR rows in step with x
    again = predict(model, xt, "binary", 37, sparse=sparse_matrices(held_out, arch))
    np.testing.assert_allclose(again, p, atol=1e-6)
    with pytest.raises(ValueError, match=r"takes 1 sparse column\(s\) \['ids'\], got 0"):
        predict(model, xt, "binary")


@pytest.mark.parametrize(("kind", "task"), [("torch.mlp", "binary"), ("torch.dlrm", "ranking")])
def test_the_train_worker_function_trains_on_sparse_columns(
    monkeypatch: pytest.MonkeyPatch, kind: str, task: str
) -> None:
    """train_fn_per_worker as one Ray Train worker runs it (ray.train's calls and the node lookup
    replaced: no Ray starts), on frames whose sparse column is Arrow-backed, as Ray Data's
    ``to_pandas`` gives it."""
    from components.steps import train_torch

    frame = sparse_frame(480, seed=5, task=task)
    train, valid = frame.iloc[:400].reset_index(drop=True), frame.iloc[400:].reset_index(drop=True)
    assert isinstance(train["ids"].dtype, pd.ArrowDtype)
    transform = bundles.features(train, numeric=("age",), categorical=("country",), sparse=("ids",))
    arch = _arch(kind, cardinalities=(transform.categorical[0].cardinality,))
    shards = {
        "train_r0": encoded_shard(train, transform),
        "valid_r0": encoded_shard(valid, transform),
    }
    reports: list[dict[str, Any]] = []
    monkeypatch.setattr(ray.train, "get_context", lambda: Context())
    monkeypatch.setattr(ray.train, "get_dataset_shard", lambda name: shards[name])
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    # where() asks Ray's runtime context for the node, which would start or join a cluster
    monkeypatch.setattr(train_torch, "where", lambda: {"id": "test", "labels": {}})
    monkeypatch.setattr(
        ray.train, "report", lambda metrics, checkpoint=None: reports.append(metrics)
    )
    metric = "auc" if task == "binary" else "ndcg@10"
    job = train_torch.TorchJob(
        task=task,
        label="label",
        loss="bce" if task == "binary" else "pairwise",
        arch_json=arch.to_json(),
        features_json=transform.to_json(),
        metric=metric,
        maximize=True,
        epochs=4,
        batch_size=64,
        learning_rate=0.02,
        early_stopping_epochs=None,
        num_workers=0,
    )
    ray_before = ray.is_initialized()  # make test runs this beside the tiers that start Ray
    out = train_torch.train_fn_per_worker({"job": asdict(job)})
    assert ray.is_initialized() == ray_before
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    model = load_state(arch, out["model"])
    p = predict(model, transform.transform(valid), task, sparse=sparse_matrices(valid, arch))
    if task == "binary":  # the best epoch's weights, scored as the worker scored them
        best = max(r[f"valid-{metric}"] for r in reports)
        assert roc_auc_score(valid["label"], p) == pytest.approx(best, abs=1e-9)
        assert best > 0.8


def test_ddp_passes_the_sparse_inputs_to_the_model(tmp_path: Path) -> None:
    """One gloo process group of one rank: DistributedDataParallel's forward with the bags."""
    import torch.distributed as dist
    from torch.distributed.algorithms.join import Join

    frame = sparse_frame(200, seed=6)
    arch = _arch()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(build_model(arch))
        x = frame[["age"]].to_numpy(np.float32) / 70
        y = frame["label"].to_numpy(np.float32)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        batches = row_batches(x, y, 50, sparse=sparse_matrices(frame, arch))
        with Join([model]):
            loss = train_epoch(model, batches, "bce", optimizer, "cpu")
        assert np.isfinite(loss)
        assert model.module.bags[0].weight.grad is not None
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("kind", "task"), [("torch.mlp", "binary"), ("torch.dlrm", "ranking")])
def test_a_sparse_bundle_predicts_the_same_on_frames_and_request_rows(
    tmp_path: Path, kind: str, task: str
) -> None:
    from serve.schemas import PredictRequest
    from serve.scoring import Limits, ModelScorer, score_frames

    frame = sparse_frame(300, seed=7, task=task)
    transform = bundles.features(frame, numeric=("age",), categorical=("country",), sparse=("ids",))
    contents = bundles.torch_contents(frame, task, kind=kind, transform=transform)
    arch = ArchitectureSpec.from_json(contents.architecture or "")
    assert arch.sparse == (("ids", DIM),)
    path = bundles.write(tmp_path / "bundle", contents)
    predictor = Predictor.load(path)
    assert predictor.feature_columns == ["age", "country", "ids"]
    assert predictor.schema.sparse == {"ids": None}

    # the bundle scores a frame as the trained model does, with no data beyond the rows
    model = load_state(arch, contents.model)
    want = predict(model, transform.transform(frame), task, sparse=sparse_matrices(frame, arch))
    got = predictor.predict(frame)
    np.testing.assert_array_equal(got, want)
    assert np.std(got) > 0  # the scores depend on the rows

    # request rows, as /predict parses and batches them, give the frame's scores
    scorer = ModelScorer(predictor, "m", 1, Limits())
    rows = frame.iloc[:3]
    entries = [
        {"indices": [int(e["index"]) for e in v], "values": [float(e["value"]) for e in v]}
        for v in rows["ids"]
    ]
    entries[1]["indices"].append(DIM + 100)  # never seen in training: ignored
    entries[1]["values"].append(5.0)
    body = PredictRequest.model_validate(
        {
            "rows": [
                {"age": float(a), "country": c, "ids": e}
                for a, c, e in zip(rows["age"], rows["country"], entries, strict=True)
            ]
            + [{"age": 30.0, "country": "us", "ids": None}]
        }
    )
    columns = scorer.frame(body.rows, "rows", 10)
    (scored,) = score_frames(predictor, [columns])
    no_entries = rows.iloc[:1].copy()
    no_entries["age"], no_entries["country"] = 30.0, "us"
    no_entries["ids"] = sparse.series(sparse.from_csr_arrays([0, 0], [], []))
    expected = np.concatenate([got[:3], predictor.predict(no_entries)])
    np.testing.assert_allclose(scored.output, expected, rtol=0, atol=1e-6)
    response = scorer.predict_response(scored)
    assert len(response["predictions"]) == 4


def test_a_bundle_whose_architecture_and_features_disagree_is_refused(tmp_path: Path) -> None:
    from components.bundle import BundleError

    frame = sparse_frame(100, seed=8)
    transform = bundles.features(frame, numeric=("age",), categorical=(), sparse=("ids",))
    contents = bundles.torch_contents(frame, transform=transform)
    arch = ArchitectureSpec.from_json(contents.architecture or "")
    wrong = replace(contents, architecture=replace(arch, sparse=(("ids", DIM + 1),)).to_json())
    path = bundles.write(tmp_path / "b", wrong)
    with pytest.raises(
        BundleError, match=r"architecture\.json has sparse columns \[\('ids', 41\)\]"
    ):
        Predictor.load(path)


def test_a_spec_with_sparse_features_and_torch_models_validates() -> None:
    from pipelines import trainers
    from pipelines.spec import spec_from_dict

    doc = {
        "name": "sparse-torch",
        "task": "binary",
        "data": {"source": {"uri": "d.ffm", "format": "libfm", "libsvm": {"sparse": "ids"}}},
        "features": {"sparse": [{"name": "ids", "dim": 64}]},
        "models": [
            {"name": "mlp", "kind": "torch.mlp"},
            {"name": "dlrm", "kind": "torch.dlrm", "embedding_dim": 8},
        ],
    }
    spec = spec_from_dict(doc)
    assert [m.kind for m in spec.models] == ["torch.mlp", "torch.dlrm"]
    # the trainers' factory sizes each bag from the fitted transform
    frame = sparse_frame(50)
    transform = bundles.features(frame, numeric=("age",), categorical=(), sparse=("ids",))
    ctx = trainers.TrainContext(
        task="binary", label="label", metric="auc", num_classes=None,
        features_json=transform.to_json(),
    )  # fmt: skip
    job = trainers.make_job(ctx, spec.models[1])
    arch = ArchitectureSpec.from_json(job.arch_json)
    assert (arch.kind, arch.sparse, arch.embedding_dim) == ("torch.dlrm", (("ids", DIM),), 8)

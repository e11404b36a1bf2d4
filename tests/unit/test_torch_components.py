"""components.torch_models / losses / torch_training: shapes, weights I/O, losses against slow
per-query references, whole-query batching, and small learnability checks. No Ray."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import ndcg_score, roc_auc_score

from components import shard_stream
from components.losses import (
    LOSSES,
    bce_loss,
    cross_entropy_loss,
    huber_loss,
    listwise_softmax_loss,
    mse_loss,
    pairwise_ranknet_loss,
)
from components.torch_models import DLRM, MLP, ArchitectureSpec, build_model
from components.torch_training import (
    Window,
    group_batches,
    load_state,
    predict,
    row_batches,
    save_state,
    train_epoch,
    window_batches,
)

torch.set_num_threads(2)


def features(n: int, num_numeric: int, cards: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cols = [rng.normal(size=(n, num_numeric))]
    cols += [rng.integers(0, c, size=(n, 1)).astype(np.float64) for c in cards]
    return np.hstack(cols).astype(np.float32)


# --------------------------------------------------------------------------------------------
# models


@pytest.mark.parametrize("kind", ["torch.mlp", "torch.dlrm"])
@pytest.mark.parametrize(
    ("num_numeric", "cards"), [(3, (5, 7)), (4, ()), (0, (3, 4, 5)), (2, (6,))]
)
@pytest.mark.parametrize("outputs", [1, 3])
def test_model_shapes(kind: str, num_numeric: int, cards: tuple[int, ...], outputs: int) -> None:
    torch.manual_seed(0)
    spec = ArchitectureSpec(kind, num_numeric, cards, embedding_dim=8, num_outputs=outputs)  # type: ignore[arg-type]
    model = build_model(spec)
    assert isinstance(model, DLRM if kind == "torch.dlrm" else MLP)
    x = torch.from_numpy(features(11, num_numeric, cards))
    out = model(x)
    assert out.shape == (11, outputs)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.sum().backward()


def test_dlrm_interaction_count() -> None:
    spec = ArchitectureSpec("torch.dlrm", 3, (4, 5, 6), embedding_dim=8, top_mlp=(16,))
    model = build_model(spec)
    assert isinstance(model, DLRM)
    # 4 vectors (bottom + 3 embeddings) -> 6 interactions, plus the bottom output itself
    first = model.top[0]
    assert isinstance(first, torch.nn.Linear)
    assert first.in_features == 8 + 6


def test_dlrm_first_order_term() -> None:
    """The constant vector adds one interaction per vector: <e_i, c> is a per-value effect."""
    spec = ArchitectureSpec(
        "torch.dlrm", 3, (4, 5, 6), embedding_dim=8, top_mlp=(16,), first_order=True
    )
    model = build_model(spec)
    assert isinstance(model, DLRM) and model.constant is not None
    first = model.top[0]
    assert isinstance(first, torch.nn.Linear)
    assert first.in_features == 8 + 10  # 5 vectors -> 10 pairs
    assert "constant" in model.state_dict()
    # an architecture.json written before the field existed rebuilds the old model
    old = json.loads(spec.to_json())
    del old["first_order"]
    assert ArchitectureSpec.from_json(json.dumps(old)).first_order is False


def test_out_of_range_codes_map_to_zero() -> None:
    torch.manual_seed(0)
    model = build_model(ArchitectureSpec("torch.dlrm", 1, (3,))).eval()
    x = torch.tensor([[0.5, 0.0], [0.5, 7.0], [0.5, -2.0], [0.5, float("nan")]])
    out = model(x)
    assert torch.allclose(out[1:], out[:1].expand(3, -1))


def test_spec_json_round_trip() -> None:
    spec = ArchitectureSpec(
        "torch.dlrm", 3, (5, 9), embedding_dim=4, bottom_mlp=(8,), top_mlp=(), dropout=0.1
    )
    back = ArchitectureSpec.from_json(spec.to_json())
    assert back == spec
    assert isinstance(back.cardinalities, tuple)
    with pytest.raises(ValueError):
        ArchitectureSpec("torch.gbm", 3, ())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ArchitectureSpec("torch.mlp", 0, ())


@pytest.mark.parametrize("kind", ["torch.mlp", "torch.dlrm"])
def test_save_load_state_identical_outputs(kind: str) -> None:
    torch.manual_seed(1)
    spec = ArchitectureSpec(kind, 3, (5, 9), embedding_dim=4, dropout=0.2)  # type: ignore[arg-type]
    model = build_model(spec)
    x = features(50, 3, (5, 9))
    data = save_state(model)
    loaded = load_state(ArchitectureSpec.from_json(spec.to_json()), data)
    for task in ("binary", "ranking"):
        np.testing.assert_array_equal(predict(model, x, task), predict(loaded, x, task))
    # torch.load(weights_only=True) is the path used: a pickled object is refused
    buf = io.BytesIO()
    torch.save({"evil": object()}, buf)
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_state(spec, buf.getvalue())


def test_predict_outputs() -> None:
    torch.manual_seed(0)
    x = features(20, 2, (3,))
    binary = predict(build_model(ArchitectureSpec("torch.mlp", 2, (3,))), x, "binary", batch_size=7)
    assert binary.shape == (20,) and ((binary > 0) & (binary < 1)).all()
    multi = build_model(ArchitectureSpec("torch.mlp", 2, (3,), num_outputs=4))
    probs = predict(multi, x, "multiclass", batch_size=7)
    assert probs.shape == (20, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)
    assert predict(multi, x[:0], "multiclass").shape == (0, 4)


# --------------------------------------------------------------------------------------------
# losses against slow references


def ltr_batch(seed: int, queries: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random scores/relevance with shuffled query ids, including a single-row query and a
    constant-relevance query."""
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(2, 9)) for _ in range(queries)] + [1, 5]
    groups = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)
    rel = rng.integers(0, 5, size=len(groups)).astype(np.float32)
    rel[groups == groups[-1]] = 2.0  # constant relevance
    perm = rng.permutation(len(groups))
    scores = rng.normal(size=len(groups)).astype(np.float32)
    return (
        torch.from_numpy(scores[perm]),
        torch.from_numpy(rel[perm]),
        torch.from_numpy(groups[perm]),
    )


def dcg(gains: list[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def pairwise_reference(s: list[float], r: list[float], g: list[int], lam: bool) -> float:
    num = den = 0.0
    for q in sorted(set(g)):
        idx = [i for i in range(len(g)) if g[i] == q]
        if len(idx) < 2 or len({r[i] for i in idx}) < 2:
            continue
        ranked = sorted(idx, key=lambda i: -s[i])
        idcg = dcg(sorted((2 ** r[i] - 1 for i in idx), reverse=True))
        base = dcg([2 ** r[i] - 1 for i in ranked])
        for i in idx:
            for j in idx:
                if r[i] <= r[j]:
                    continue
                w = 1.0
                if lam:
                    swapped = [j if k == i else i if k == j else k for k in ranked]
                    w = abs(dcg([2 ** r[k] - 1 for k in swapped]) - base) / idcg
                num += w * math.log1p(math.exp(-(s[i] - s[j])))
                den += w
    return num / den


def listwise_reference(s: list[float], r: list[float], g: list[int]) -> float:
    losses = []
    for q in sorted(set(g)):
        idx = [i for i in range(len(g)) if g[i] == q]
        if len(idx) < 2 or len({r[i] for i in idx}) < 2:
            continue
        gains = [2 ** r[i] - 1 for i in idx]
        target = [v / sum(gains) for v in gains]
        m = max(s[i] for i in idx)
        log_z = m + math.log(sum(math.exp(s[i] - m) for i in idx))
        losses.append(-sum(t * (s[i] - log_z) for t, i in zip(target, idx, strict=True)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lam", [False, True])
def test_pairwise_matches_reference(seed: int, lam: bool) -> None:
    s, r, g = ltr_batch(seed)
    got = pairwise_ranknet_loss(s, r, g, lambda_weighting=lam)
    ref = pairwise_reference(s.tolist(), r.tolist(), g.tolist(), lam)
    assert float(got) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_listwise_matches_reference(seed: int) -> None:
    s, r, g = ltr_batch(seed)
    got = listwise_softmax_loss(s, r, g)
    assert float(got) == pytest.approx(
        listwise_reference(s.tolist(), r.tolist(), g.tolist()), rel=1e-5
    )


@pytest.mark.parametrize("name", ["pairwise", "listwise", "lambdarank"])
def test_ranking_losses_order_and_ignored_queries(name: str) -> None:
    loss = LOSSES[name]
    r = torch.tensor([3.0, 2.0, 1.0, 0.0])
    g = torch.zeros(4, dtype=torch.long)
    perfect, reversed_ = torch.tensor([3.0, 2.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert float(loss(perfect, r, g)) < float(loss(reversed_, r, g))
    # adding a single-row query and a constant-relevance query changes nothing
    s2 = torch.cat([perfect, torch.tensor([5.0, -1.0, 2.0, 0.3])])
    r2 = torch.cat([r, torch.tensor([4.0, 1.0, 1.0, 1.0])])
    g2 = torch.cat([g, torch.tensor([9, 4, 4, 4])])
    assert float(loss(s2, r2, g2)) == pytest.approx(float(loss(perfect, r, g)), rel=1e-6)
    # only ignored queries: zero loss, zero (finite) gradients
    s3 = torch.tensor([5.0, -1.0, 2.0, 0.3], requires_grad=True)
    out = loss(s3, r2[4:], g2[4:])
    out.backward()
    assert float(out.detach()) == 0.0
    assert s3.grad is not None and (s3.grad == 0).all()


def test_ranking_loss_gradients_finite_with_padding() -> None:
    s, r, g = ltr_batch(3)
    for name in ("pairwise", "listwise", "lambdarank"):
        x = s.clone().requires_grad_(True)
        LOSSES[name](x, r, g).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_pointwise_losses() -> None:
    logits = torch.tensor([0.3, -1.2, 2.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    ref = np.mean(
        [math.log1p(math.exp(-0.3)), math.log1p(math.exp(-1.2)), math.log1p(math.exp(-2.0))]
    )
    assert float(bce_loss(logits, y)) == pytest.approx(ref, rel=1e-6)
    assert float(bce_loss(logits[:, None], y)) == pytest.approx(ref, rel=1e-6)
    k = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    labels = torch.tensor([1.0, 0.0])
    ref_ce = np.mean(
        [
            -(2.0 - math.log(sum(math.exp(v) for v in (1.0, 2.0, 0.5)))),
            -(0.0 - math.log(2 + math.exp(3.0))),
        ]
    )
    assert float(cross_entropy_loss(k, labels)) == pytest.approx(ref_ce, rel=1e-6)


# --------------------------------------------------------------------------------------------
# batching


@pytest.mark.parametrize("max_rows", [1, 7, 20, 1000])
def test_group_batches_whole_queries_each_row_once(max_rows: int) -> None:
    rng = np.random.default_rng(0)
    groups = rng.permutation(np.repeat(np.arange(30) * 3, rng.integers(1, 12, size=30)))
    n = len(groups)
    x = np.arange(n, dtype=np.float32)[:, None].repeat(2, axis=1)
    y = rng.integers(0, 5, size=n).astype(np.float32)
    seen: list[int] = []
    for batch in group_batches(x, y, groups, max_rows=max_rows, seed=1):
        rows = batch["x"][:, 0].long().numpy()
        seen += rows.tolist()
        bq = batch["group"].numpy()
        np.testing.assert_array_equal(bq, groups[rows])
        np.testing.assert_array_equal(batch["y"].numpy(), y[rows])
        for q in np.unique(bq):  # whole queries only
            assert (bq == q).sum() == (groups == q).sum()
        if len(rows) > max_rows:
            assert len(np.unique(bq)) == 1
        assert batch["x"].dtype == torch.float32 and batch["group"].dtype == torch.int64
    assert sorted(seen) == list(range(n))
    order = lambda seed: [b["group"][0].item() for b in group_batches(x, y, groups, 20, seed)]  # noqa: E731
    assert order(1) == order(1) and order(1) != order(2)


def test_row_batches_cover_rows() -> None:
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.zeros(10, dtype=np.float32)
    batches = list(row_batches(x, y, batch_size=4, seed=0))
    assert [len(b["x"]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b["x"][:, 0] for b in batches]).tolist()) == list(range(10))


# --------------------------------------------------------------------------------------------
# learnability


def test_dlrm_learns_binary_problem() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, cards = 6000, (8, 5)
    x = features(n, 3, cards, seed=1)
    effect_a, effect_b = rng.normal(scale=1.5, size=cards[0]), rng.normal(scale=1.5, size=cards[1])
    logit = (
        1.2 * x[:, 0]
        - 0.8 * x[:, 1]
        + effect_a[x[:, 3].astype(int)]
        + effect_b[x[:, 4].astype(int)]
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    train, test = slice(0, 5000), slice(5000, None)
    spec = ArchitectureSpec(
        "torch.dlrm", 3, cards, embedding_dim=8, bottom_mlp=(32,), top_mlp=(32,)
    )
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = [
        train_epoch(model, row_batches(x[train], y[train], 256, seed=e), "bce", opt, "cpu")
        for e in range(6)
    ]
    auc = roc_auc_score(y[test], predict(model, x[test], "binary"))
    bayes = roc_auc_score(y[test], logit[test])
    print(
        f"DLRM binary: losses {np.round(losses, 4).tolist()} AUC {auc:.4f} (true logit {bayes:.4f})"
    )
    assert losses[-1] < losses[0]
    assert auc >= 0.75


def ltr_data(queries: int, per_query: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = queries * per_query
    x = rng.normal(size=(n, 5)).astype(np.float32)
    utility = x[:, 0] + 0.5 * x[:, 1] - 0.5 * x[:, 2] + 0.3 * rng.normal(size=n)
    rel = np.digitize(utility, [-0.5, 0.5, 1.2, 2.0]).astype(np.float32)  # 0..4
    return x, rel, np.repeat(np.arange(queries), per_query)


@pytest.mark.parametrize("loss_name", ["pairwise", "listwise", "lambdarank"])
def test_mlp_learns_to_rank(loss_name: str) -> None:
    torch.manual_seed(0)
    per_query = 20
    x, rel, groups = ltr_data(150, per_query, seed=0)
    xt, relt, _ = ltr_data(50, per_query, seed=1)
    model = build_model(ArchitectureSpec("torch.mlp", 5, (), hidden=(32,)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(5):
        train_epoch(model, group_batches(x, rel, groups, 200, seed=epoch), loss_name, opt, "cpu")
    gains = (2**relt - 1).reshape(-1, per_query)
    scores = predict(model, xt, "ranking").reshape(-1, per_query)
    random_scores = np.random.default_rng(2).random(scores.shape)
    ndcg, ndcg_random = ndcg_score(gains, scores, k=10), ndcg_score(gains, random_scores, k=10)
    print(f"{loss_name}: NDCG@10 {ndcg:.4f} vs random {ndcg_random:.4f}")
    assert ndcg > ndcg_random + 0.2


def test_train_epoch_bf16_autocast_and_multiclass() -> None:
    torch.manual_seed(0)
    x = features(300, 3, (4,))
    y = (x[:, 0] > 0).astype(np.float32) + (x[:, 1] > 0)  # classes 0..2
    model = build_model(ArchitectureSpec("torch.dlrm", 3, (4,), num_outputs=3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = row_batches(x, y, 64, seed=0)
    loss = train_epoch(model, batches, "cross_entropy", opt, "cpu", autocast_dtype=torch.bfloat16)
    assert math.isfinite(loss) and loss > 0
    assert math.isnan(train_epoch(model, [], "bce", opt, "cpu"))


def test_regression_losses_against_references() -> None:
    out = torch.tensor([0.5, 2.0, -1.0, 4.0])
    y = torch.tensor([1.0, 2.0, 2.0, 0.0])
    err = [-0.5, 0.0, -3.0, 4.0]
    assert float(mse_loss(out, y)) == pytest.approx(np.mean([e * e for e in err]), rel=1e-6)
    huber = [0.5 * e * e if abs(e) <= 1 else abs(e) - 0.5 for e in err]
    assert float(huber_loss(out[:, None], y)) == pytest.approx(np.mean(huber), rel=1e-6)
    # a pointwise loss ignores query ids
    g = torch.tensor([0, 0, 1, 1])
    assert float(mse_loss(out, y, g)) == float(mse_loss(out, y))


def test_window_batches_shuffle_within_windows_each_row_once() -> None:
    """A shard streamed in windows: every row once per epoch, rows mixed only within their
    window, whole queries for ranking, the same order for the same seed."""
    n = 1000
    x = np.arange(n, dtype=np.float32)[:, None]
    y = np.zeros(n, np.float32)
    groups = np.repeat(np.arange(100), 10)
    cuts = [(0, 400), (400, 800), (800, 1000)]

    def windows() -> list[Window]:
        return [(x[a:b], y[a:b], groups[a:b], None, []) for a, b in cuts]

    for by_query in (False, True):
        batches = list(window_batches(windows(), 64, seed=1, by_query=by_query))
        rows = torch.cat([b["x"][:, 0] for b in batches]).long().numpy()
        assert sorted(rows.tolist()) == list(range(n))
        # the first window's rows come first, shuffled among themselves
        assert sorted(rows[:400].tolist()) == list(range(400)) and rows[:400].tolist() != list(
            range(400)
        )
        if by_query:
            for b in batches:
                q = b["group"].numpy()
                assert all((q == g).sum() == 10 for g in np.unique(q))
        again = torch.cat([b["x"][:, 0] for b in window_batches(windows(), 64, 1, by_query)])
        other = torch.cat([b["x"][:, 0] for b in window_batches(windows(), 64, 2, by_query)])
        assert again.long().tolist() == rows.tolist() and other.long().tolist() != rows.tolist()


def test_shard_windows_join_frames_without_cutting_them() -> None:
    frames = [pd.DataFrame({"v": range(k)}) for k in (5, 0, 7, 3, 9, 2)]
    sizes = [len(w) for w in shard_stream.windows(iter(frames), 10)]
    assert sizes == [12, 12, 2]
    assert list(shard_stream.windows(iter([]), 10)) == []

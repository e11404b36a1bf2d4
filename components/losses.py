"""Training losses with one signature: ``loss(outputs, labels, groups, weights) -> scalar``.

Pointwise losses (``bce``, ``cross_entropy``, ``mse``, ``huber``) ignore ``groups``; ``mse`` and
``huber`` regress the label itself (graded relevance, or a quantity). Ranking losses compare rows
within a query (``groups``: one integer query id per row, in any order); they pad the batch's
queries into a ``(Q, max_len)`` matrix with a mask, so memory is ``O(Q * max_len**2)`` for the
pairwise loss. Queries with a single row or with all-equal relevance contribute nothing; a
batch with no such query gives a zero loss that still back-propagates (zero gradients).
Relevance is graded, non-negative (0..4); gains are ``2**rel - 1``.

``weights`` (optional, ``(n,)``, >= 0) are sample weights: pointwise losses become the weighted
mean over rows, ranking losses weigh each query by its rows' weight (one per query, as checked at
ingest). A batch whose weights are all 0 gives a zero loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def _mean(losses: Tensor, weights: Tensor | None) -> Tensor:
    """The mean of per-row (or per-query) losses, weighted when ``weights`` is given."""
    if weights is None:
        return losses.mean()
    w = weights.reshape(-1).float().to(losses.device)
    total = w.sum()
    if not bool(total > 0):
        return _zero(losses)
    return (losses * w).sum() / total


def bce_loss(
    logits: Tensor, labels: Tensor, groups: Tensor | None = None, weights: Tensor | None = None
) -> Tensor:
    """Mean binary cross-entropy on logits ``(n,)`` and 0/1 labels ``(n,)``."""
    losses = F.binary_cross_entropy_with_logits(
        logits.reshape(-1).float(), labels.float(), reduction="none"
    )
    return _mean(losses, weights)


def cross_entropy_loss(
    logits: Tensor, labels: Tensor, groups: Tensor | None = None, weights: Tensor | None = None
) -> Tensor:
    """Mean softmax cross-entropy on logits ``(n, K)`` and class labels ``(n,)`` in 0..K-1."""
    return _mean(F.cross_entropy(logits.float(), labels.long(), reduction="none"), weights)


def mse_loss(
    outputs: Tensor, labels: Tensor, groups: Tensor | None = None, weights: Tensor | None = None
) -> Tensor:
    """Mean squared error between outputs ``(n,)`` and real-valued labels ``(n,)``."""
    return _mean(F.mse_loss(outputs.reshape(-1).float(), labels.float(), reduction="none"), weights)


def huber_loss(
    outputs: Tensor, labels: Tensor, groups: Tensor | None = None, weights: Tensor | None = None
) -> Tensor:
    """Huber loss (delta 1): squared near the label, linear far from it, so outliers pull less."""
    losses = F.huber_loss(outputs.reshape(-1).float(), labels.float(), delta=1.0, reduction="none")
    return _mean(losses, weights)


def query_weights(weights: Tensor | None, groups: Tensor, device: torch.device) -> Tensor | None:
    """One weight per query, in the order ``pad_queries`` gives the queries (sorted ids)."""
    if weights is None:
        return None
    _, inverse = torch.unique(groups.to(device), return_inverse=True)
    out = torch.zeros(int(inverse.max()) + 1 if len(inverse) else 0, device=device)
    return out.index_put((inverse,), weights.reshape(-1).float().to(device))


def pad_queries(
    scores: Tensor, relevance: Tensor, groups: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scores, relevance and row mask as ``(Q, max_len)`` matrices, plus a ``(Q,)`` mask of
    queries that count (at least two rows and not all-equal relevance)."""
    scores = scores.reshape(-1).float()
    relevance = relevance.reshape(-1).float().to(scores.device)
    _, inverse, counts = torch.unique(
        groups.to(scores.device), return_inverse=True, return_counts=True
    )
    order = torch.argsort(inverse, stable=True)
    query = inverse[order]
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(order), device=scores.device) - starts[query]
    q, length = len(counts), int(counts.max()) if len(counts) else 0
    s = scores.new_zeros((q, length)).index_put((query, pos), scores[order])
    r = relevance.new_zeros((q, length)).index_put((query, pos), relevance[order])
    mask = torch.zeros((q, length), dtype=torch.bool, device=scores.device)
    mask[query, pos] = True
    r_max = torch.where(mask, r, -torch.inf).amax(dim=1)
    r_min = torch.where(mask, r, torch.inf).amin(dim=1)
    valid = (counts >= 2) & (r_max > r_min)
    return s, r, mask, valid


def _zero(scores: Tensor) -> Tensor:
    return scores.sum() * 0.0


def _delta_ndcg(s: Tensor, r: Tensor, mask: Tensor) -> Tensor:
    """``|ΔNDCG|`` of swapping rows i and j of each query, ranks from the current scores."""
    with torch.no_grad():
        gains = torch.where(mask, torch.exp2(r) - 1.0, 0.0)
        order = torch.argsort(torch.where(mask, s, -torch.inf), dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        ranks = torch.arange(s.shape[1], device=s.device).expand_as(order)
        rank.scatter_(1, order, ranks)
        discount = 1.0 / torch.log2(rank.float() + 2.0)
        ideal = torch.sort(gains, dim=1, descending=True).values
        idcg = (ideal / torch.log2(torch.arange(s.shape[1], device=s.device).float() + 2.0)).sum(1)
        dg = (gains[:, :, None] - gains[:, None, :]).abs()
        dd = (discount[:, :, None] - discount[:, None, :]).abs()
        return dg * dd / idcg.clamp_min(1e-12)[:, None, None]


def pairwise_ranknet_loss(
    scores: Tensor,
    relevance: Tensor,
    groups: Tensor,
    weights: Tensor | None = None,
    lambda_weighting: bool = False,
) -> Tensor:
    """RankNet: weighted mean over pairs ``rel_i > rel_j`` in the same query of
    ``log(1 + exp(-(s_i - s_j)))``; pair weights are 1, or ``|ΔNDCG|`` of swapping the pair
    (LambdaRank-style) with ``lambda_weighting``, times the query's sample weight."""
    s, r, mask, valid = pad_queries(scores, relevance, groups)
    pairs = (r[:, :, None] > r[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    pairs &= valid[:, None, None]
    if not bool(pairs.any()):
        return _zero(scores)
    losses = F.softplus(-(s[:, :, None] - s[:, None, :]))
    pair_w = _delta_ndcg(s, r, mask) if lambda_weighting else torch.ones_like(losses)
    qw = query_weights(weights, groups, s.device)
    if qw is not None:
        pair_w = pair_w * qw[:, None, None]
    pair_w = torch.where(pairs, pair_w, 0.0)
    total = pair_w.sum()
    if not bool(total > 0):
        return _zero(scores)
    return (pair_w * losses).sum() / total


def listwise_softmax_loss(
    scores: Tensor, relevance: Tensor, groups: Tensor, weights: Tensor | None = None
) -> Tensor:
    """ListNet (top-one): per query, cross-entropy between the target distribution
    ``(2**rel - 1) / sum(2**rel - 1)`` and ``softmax(scores)``; the (weighted) mean over
    counted queries."""
    s, r, mask, valid = pad_queries(scores, relevance, groups)
    gains = torch.where(mask, torch.exp2(r.clamp_min(0.0)) - 1.0, 0.0)
    total = gains.sum(dim=1, keepdim=True)
    valid &= total[:, 0] > 0
    if not bool(valid.any()):
        return _zero(scores)
    target = gains[valid] / total[valid]
    log_p = torch.log_softmax(torch.where(mask, s, -torch.inf)[valid], dim=1)
    per_query = -(target * torch.where(mask[valid], log_p, 0.0)).sum(dim=1)
    qw = query_weights(weights, groups, s.device)
    return _mean(per_query, None if qw is None else qw[valid])


def lambda_ranknet_loss(
    scores: Tensor, relevance: Tensor, groups: Tensor, weights: Tensor | None = None
) -> Tensor:
    """``pairwise_ranknet_loss`` with ``|ΔNDCG|`` pair weights."""
    return pairwise_ranknet_loss(scores, relevance, groups, weights, lambda_weighting=True)


# Which tasks allow which loss, and each task's default: components.tasks (torch_losses).
LOSSES: dict[str, LossFn] = {
    "bce": bce_loss,
    "cross_entropy": cross_entropy_loss,
    "mse": mse_loss,
    "huber": huber_loss,
    "pairwise": pairwise_ranknet_loss,
    "listwise": listwise_softmax_loss,
    "lambdarank": lambda_ranknet_loss,
}
RANKING_LOSSES = frozenset({"pairwise", "listwise", "lambdarank"})

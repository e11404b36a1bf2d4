"""PyTorch models over ``FeatureTransform`` matrices: an MLP and DLRM (Naumov et al. 2019).

Both take one float32 matrix ``(n, num_numeric + num_categorical)`` as produced by
``FeatureTransform.transform`` (numeric columns first, then integer categorical codes) and
return ``(n, num_outputs)``. Codes outside ``[0, cardinality)`` (e.g. NaN) are mapped to the
out-of-vocabulary code 0. The architecture is described by ``ArchitectureSpec``, stored as plain
JSON next to a ``state_dict`` (loaded with ``torch.load(weights_only=True)``); no pickle.

Sparse features (components.sparse) come as a second argument, one ``SparseInput`` per sparse
column in ``ArchitectureSpec.sparse`` order: the rows' entries in CSR form, never a dense
``(n, dim)`` matrix. Each column is an ``nn.EmbeddingBag(dim, embedding_dim, mode="sum")``
weighted by the entries' values, so a row gets ``sum_k value_k * E[index_k]`` (a zero vector
without entries) and ``dim`` costs one embedding row per index, not one input per index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

SPEC_FORMAT = 1
KINDS = ("torch.mlp", "torch.dlrm")

SparseInput = tuple[Tensor, Tensor, Tensor]
"""One sparse column of a batch as ``nn.EmbeddingBag`` takes it: ``indices`` (nnz,) int64,
``offsets`` (n,) int64 (row i's entries start at ``offsets[i]``) and ``weights`` (nnz,) float32
(the entries' values)."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """Everything needed to rebuild a model before loading its weights."""

    kind: Literal["torch.mlp", "torch.dlrm"]
    num_numeric: int
    cardinalities: tuple[int, ...]
    embedding_dim: int = 16
    bottom_mlp: tuple[int, ...] = (64, 32)
    top_mlp: tuple[int, ...] = (64, 32)
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.0
    num_outputs: int = 1
    # DLRM only: a learned constant vector joins the dot-product interactions, so each
    # embedding also gets a first-order (per-value) term. False in bundles written before it.
    first_order: bool = False
    # regression: the network learns the standardised label; predictions are
    # output * target_scale + target_mean (identity for other tasks and older bundles)
    target_mean: float = 0.0
    target_scale: float = 1.0
    # sparse feature columns as (name, dim): one EmbeddingBag of dim rows each, in this order
    # (empty in bundles written before sparse inputs)
    sparse: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; expected one of {KINDS}")
        if self.num_numeric < 0 or any(c < 1 for c in self.cardinalities):
            raise ValueError("num_numeric must be >= 0 and every cardinality >= 1")
        if self.num_features == 0:
            raise ValueError("a model needs at least one input feature")
        names = [name for name, _ in self.sparse]
        if any(dim < 1 for _, dim in self.sparse) or len(set(names)) != len(names):
            raise ValueError(f"sparse columns {names}: each needs a distinct name and a dim >= 1")
        if self.embedding_dim < 1 or self.num_outputs < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("embedding_dim and num_outputs must be >= 1, dropout in [0, 1)")
        if not self.target_scale > 0:
            raise ValueError("target_scale must be > 0")

    @property
    def num_features(self) -> int:
        """Input features: numeric columns, categorical columns and sparse columns."""
        return self.num_numeric + len(self.cardinalities) + len(self.sparse)

    @property
    def num_embedded(self) -> int:
        """Embedded vectors per row: one per categorical and one per sparse column."""
        return len(self.cardinalities) + len(self.sparse)

    def to_json(self) -> str:
        d: dict[str, object] = {"format": SPEC_FORMAT, **asdict(self)}
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ArchitectureSpec:
        d = json.loads(text)
        if d.pop("format", None) != SPEC_FORMAT:
            raise ValueError("architecture.json: unsupported format version")
        for key in ("cardinalities", "bottom_mlp", "top_mlp", "hidden"):
            d[key] = tuple(int(v) for v in d[key])
        d["sparse"] = tuple((str(name), int(dim)) for name, dim in d.get("sparse", ()))
        return cls(**d)


def mlp_layers(sizes: tuple[int, ...], in_dim: int, dropout: float) -> tuple[nn.Sequential, int]:
    """Linear -> ReLU (-> Dropout) per size; returns the stack and its output width."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_dim, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = size
    return nn.Sequential(*layers), in_dim


class _Embedded(nn.Module):
    """Shared input handling: split numeric/codes, look up one embedding per categorical and
    one weighted bag of embeddings per sparse column."""

    cardinality: Tensor

    def __init__(self, spec: ArchitectureSpec) -> None:
        super().__init__()
        self.spec = spec
        self.num_numeric = spec.num_numeric
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, spec.embedding_dim) for c in spec.cardinalities
        )
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(dim, spec.embedding_dim, mode="sum") for _, dim in spec.sparse
        )
        card = torch.tensor(spec.cardinalities, dtype=torch.long)
        self.register_buffer("cardinality", card, persistent=False)

    def bagged(self, sparse: Sequence[SparseInput], n: int) -> list[Tensor]:
        """One ``(n, embedding_dim)`` vector per sparse column: ``sum_k value_k * E[index_k]``
        over the row's entries (zeros for a row without entries)."""
        if len(sparse) != len(self.bags):
            names = [name for name, _ in self.spec.sparse]
            raise ValueError(
                f"the model takes {len(self.bags)} sparse column(s) {names}, got {len(sparse)}"
            )
        out = []
        for (name, _), (indices, offsets, weights), bag in zip(
            self.spec.sparse, sparse, self.bags, strict=True
        ):
            if len(offsets) != n:
                raise ValueError(f"sparse column {name!r}: {len(offsets)} rows, expected {n}")
            out.append(bag(indices, offsets, per_sample_weights=weights))
        return out

    def split(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Numeric block ``(n, num_numeric)`` and one ``(n, dim)`` embedding per categorical."""
        dense = x[:, : self.num_numeric]
        if not len(self.embeddings):
            return dense, []
        raw = x[:, self.num_numeric :]
        codes = torch.nan_to_num(raw, nan=0.0).long()
        codes = torch.where((codes >= 0) & (codes < self.cardinality), codes, 0)
        return dense, [emb(codes[:, j]) for j, emb in enumerate(self.embeddings)]


class MLP(_Embedded):
    """[numeric, embeddings...] -> hidden layers (ReLU, dropout) -> ``num_outputs``."""

    def __init__(self, spec: ArchitectureSpec) -> None:
        super().__init__(spec)
        in_dim = spec.num_numeric + spec.num_embedded * spec.embedding_dim
        self.hidden, width = mlp_layers(spec.hidden, in_dim, spec.dropout)
        self.out = nn.Linear(width, spec.num_outputs)

    def forward(self, x: Tensor, sparse: Sequence[SparseInput] = ()) -> Tensor:
        dense, embedded = self.split(x)
        bags = self.bagged(sparse, len(x))
        return self.out(self.hidden(torch.cat([dense, *embedded, *bags], dim=1)))


class DLRM(_Embedded):
    """DLRM: bottom MLP over numeric features to ``embedding_dim``, pairwise dot-product
    interactions between it and every embedding (upper triangle, no self-interactions),
    top MLP over [bottom output, interactions] -> ``num_outputs``. A sparse column's bag of
    embeddings is one more embedded field among the interactions.

    With ``first_order``, a learned constant vector ``c`` is one more interaction partner:
    ``<e_i, c>`` is a per-value effect of feature i, which plain dot products between
    features can only express through the bottom vector.

    Without numeric features there is no bottom MLP (interactions between embeddings only);
    without categoricals the top MLP sees the bottom output alone.
    """

    tri_i: Tensor
    tri_j: Tensor

    def __init__(self, spec: ArchitectureSpec) -> None:
        super().__init__(spec)
        dim = spec.embedding_dim
        self.bottom: nn.Module | None = None
        if spec.num_numeric:
            stack, width = mlp_layers(spec.bottom_mlp, spec.num_numeric, spec.dropout)
            self.bottom = nn.Sequential(*stack, nn.Linear(width, dim), nn.ReLU())
        self.constant: nn.Parameter | None = None
        if spec.first_order and spec.num_embedded:
            self.constant = nn.Parameter(torch.randn(dim) * 0.1)
        num_vectors = (
            int(self.bottom is not None) + spec.num_embedded + int(self.constant is not None)
        )
        i, j = torch.triu_indices(num_vectors, num_vectors, offset=1)
        self.register_buffer("tri_i", i, persistent=False)
        self.register_buffer("tri_j", j, persistent=False)
        top_in = (dim if self.bottom is not None else 0) + len(i)
        self.top, width = mlp_layers(spec.top_mlp, top_in, spec.dropout)
        self.out = nn.Linear(width, spec.num_outputs)

    def forward(self, x: Tensor, sparse: Sequence[SparseInput] = ()) -> Tensor:
        dense, embedded = self.split(x)
        vectors = [*embedded, *self.bagged(sparse, len(x))]
        parts: list[Tensor] = []
        if self.bottom is not None:
            bottom = self.bottom(dense)
            vectors.insert(0, bottom)
            parts.append(bottom)
        if self.constant is not None:
            vectors.append(self.constant.expand(len(x), -1))
        if len(self.tri_i):
            t = torch.stack(vectors, dim=1)  # (n, F, dim)
            z = torch.bmm(t, t.transpose(1, 2))  # (n, F, F)
            parts.append(z[:, self.tri_i, self.tri_j])
        return self.out(self.top(torch.cat(parts, dim=1)))


def build_model(spec: ArchitectureSpec) -> nn.Module:
    """A freshly initialised model for ``spec`` (call ``torch.manual_seed`` first to fix it)."""
    if spec.kind == "torch.mlp":
        return MLP(spec)
    if spec.kind == "torch.dlrm":
        return DLRM(spec)
    raise ValueError(f"unknown model kind {spec.kind!r}")

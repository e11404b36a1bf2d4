"""HTTP request and response bodies (pydantic), shared by the Serve app and its clients.

The shape is fixed (rows of feature name -> value); which features a model needs is checked
per request against the loaded bundle (serve.scoring), so one schema serves every model.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

# NaN and infinity are rejected at parse time: JSON has no such numbers and a model must
# never see them from a client (a missing value is null).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SparseValue(_Body):
    """The value of a sparse feature (a model's ``features.sparse``): its entries. Indices the
    model never saw in training are ignored; absent indices are missing values."""

    indices: list[Annotated[int, Field(ge=0, le=2**31 - 2)]] = Field(max_length=1_000_000)
    values: list[FiniteFloat] | None = Field(
        default=None, description="one per index; left out: every value is 1 (a bag of ids)"
    )

    @model_validator(mode="after")
    def _aligned(self) -> SparseValue:
        if self.values is not None and len(self.values) != len(self.indices):
            raise ValueError(
                f"{len(self.indices)} indices but {len(self.values)} values (one per index)"
            )
        seen: set[int] = set()
        for i in self.indices:  # ingest refuses a repeated index too
            if i in seen:
                raise ValueError(f"index {i} is given more than once")
            seen.add(i)
        return self


Value = FiniteFloat | int | str | bool | None | SparseValue
Row = dict[str, Value]


class PredictRequest(_Body):
    rows: list[Row] = Field(min_length=1, description="feature name -> value, one object per row")


class RankRequest(_Body):
    query: Row | None = Field(
        default=None, description="query/context features shared by every candidate"
    )
    candidates: list[Row] = Field(
        min_length=1, description="the items to rank, feature name -> value"
    )
    top_k: int | None = Field(default=None, ge=1, description="return only the best k candidates")


class RowPrediction(BaseModel):
    score: float | None = Field(default=None, description="binary: P(class 1); ranking: score")
    label: int | None = None
    probabilities: list[float] | None = None
    value: float | None = Field(default=None, description="regression: the predicted value")
    rule: str | None = Field(default=None, description="rule models: the rule that decided")
    guardrails: list[str] | None = Field(
        default=None, description="guardrails that changed this row, in the order they ran"
    )
    filtered: bool | None = Field(
        default=None, description="ranking: a guardrail filter would drop this row"
    )


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[RowPrediction]


class RankedCandidate(BaseModel):
    index: int = Field(description="position of the candidate in the request")
    score: float
    rule: str | None = None
    guardrails: list[str] | None = None


class FilteredCandidate(BaseModel):
    index: int = Field(description="position of the candidate in the request")
    guardrails: list[str] = Field(description="the filter(s) that dropped it")


class RankResponse(BaseModel):
    model: str
    version: int
    ranked: list[RankedCandidate]
    filtered: list[FilteredCandidate] | None = Field(
        default=None, description="candidates a guardrail filter removed"
    )


class FeatureInfo(BaseModel):
    name: str
    type: str


class BatchingStats(BaseModel):
    """How this replica's @serve.batch grouped requests since it loaded the model."""

    batches: int = Field(default=0, description="predict calls")
    requests: int = Field(default=0, description="requests they scored")
    largest: int = Field(default=0, description="most requests in one batch")


class ModelInfo(BaseModel):
    model: str
    version: int
    task: str
    kind: str
    bundle_sha256: str = Field(
        description="sha256 of the bundle's MANIFEST.json, which holds every file's sha256"
    )
    features: list[FeatureInfo]
    metrics: dict[str, object]
    lineage: dict[str, object] = Field(
        description="pipeline, run id, creation time, spec sha256, data fingerprints, git commit"
    )
    limits: dict[str, int]
    guardrails: list[str] = Field(
        default_factory=list, description="guardrails applied after the model, in order"
    )
    batching: BatchingStats | None = Field(
        default=None, description="the answering replica's batches (one replica of several)"
    )
    prediction_log: dict[str, int | str] | None = Field(
        default=None,
        description="the answering replica's prediction log: records offered, written, "
        "dropped (queue full or unwritable), not sampled, not logged (X-Rayline-No-Log)",
    )
    routing: dict[str, object] | None = Field(
        default=None,
        description="with a shadow or canary: their versions, the canary's share, and the "
        "answering replica's companion scorings (scored, failed, timed out, skipped)",
    )

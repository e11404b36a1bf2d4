"""HTTP request and response bodies (pydantic), shared by the Serve app and its clients.

The shape is fixed (rows of feature name -> value); which features a model needs is checked
per request against the loaded bundle (serve.scoring), so one schema serves every model.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# NaN and infinity are rejected at parse time: JSON has no such numbers and a model must
# never see them from a client (a missing value is null).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Value = FiniteFloat | int | str | bool | None
Row = dict[str, Value]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    score: float | None = None
    label: int | None = None
    probabilities: list[float] | None = None


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[RowPrediction]


class RankedCandidate(BaseModel):
    index: int = Field(description="position of the candidate in the request")
    score: float


class RankResponse(BaseModel):
    model: str
    version: int
    ranked: list[RankedCandidate]


class FeatureInfo(BaseModel):
    name: str
    type: str


class ModelInfo(BaseModel):
    model: str
    version: int
    task: str
    kind: str
    features: list[FeatureInfo]
    metrics: dict[str, object]
    lineage: dict[str, object]
    limits: dict[str, int]

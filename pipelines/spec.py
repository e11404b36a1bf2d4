"""The pipeline spec: pydantic models loaded from one YAML file.

Every model forbids unknown fields, so a typo in a spec fails before Ray starts, with the
file, the field path and the reason. ``load_spec`` applies ``key=value`` dotted overrides from
the command line before validation, so an override is checked exactly like the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from components import search_space, uris
from components.tasks import task_info
from serve.config import ServeArgs, ServeOptions

Task = Literal["binary", "multiclass", "ranking", "regression"]
Policy = Literal["fail", "quarantine"]

STORAGE_ENV = "RAYLINE_STORAGE"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SpecError(Exception):
    """An invalid spec: the message names the file, the field path and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvOptions(_Strict):
    header: bool = True
    column_names: list[str] | None = None
    delimiter: str | None = None  # None: tab for .tsv files, comma otherwise
    null_values: list[str] = Field(default_factory=lambda: ["", "NA", "null", "?"])
    skip_initial_space: bool = True

    @model_validator(mode="after")
    def _names_without_header(self) -> CsvOptions:
        if not self.header and not self.column_names:
            raise ValueError("csv.column_names is required when csv.header is false")
        return self


class LibsvmOptions(_Strict):
    num_features: int | None = Field(default=None, gt=0)
    # The widest file read (features become dense columns): an index above it, such as a typo
    # like 500000000:1, is an error naming the file and line instead of a huge allocation.
    max_features: int = Field(default=1_000_000, gt=0)
    zero_based: bool = True
    feature_prefix: str = "f"
    query_file_suffix: str | None = ".query"
    # Read the features into one sparse column of this name (list<struct<index, value>>, list it
    # under features.sparse) instead of dense columns <feature_prefix>0..n-1; max_features does
    # not apply then. libfm files: every field:index:value token goes into it.
    sparse: str | None = None
    # libfm without sparse: each field becomes a categorical column <feature_prefix><field>;
    # num_fields fixes them to 0..num_fields-1 (default: the file's largest field + 1)
    num_fields: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _width(self) -> LibsvmOptions:
        if self.num_features is not None and self.num_features > self.max_features:
            raise ValueError(
                f"libsvm.num_features {self.num_features} is above libsvm.max_features "
                f"{self.max_features}; raise max_features to read files that wide"
            )
        return self


class SourceSpec(_Strict):
    """Where rows come from: files/URIs or a built-in generator (``synthetic:<kind>``)."""

    uri: str
    format: Literal["parquet", "csv", "jsonl", "libsvm", "libfm"] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    csv: CsvOptions = CsvOptions()
    libsvm: LibsvmOptions = LibsvmOptions()

    @property
    def is_synthetic(self) -> bool:
        return self.uri.startswith("synthetic:")

    @property
    def generator(self) -> str:
        return self.uri.split(":", 1)[1]

    @model_validator(mode="after")
    def _params_only_for_generators(self) -> SourceSpec:
        if self.params and not self.is_synthetic:
            raise ValueError("params is only used by synthetic:<kind> sources")
        if self.is_synthetic:
            from components import generators

            if self.generator not in generators.GENERATORS:
                raise ValueError(
                    f"unknown generator {self.generator!r}; choose one of "
                    f"{', '.join('synthetic:' + g for g in generators.GENERATORS)}"
                )
            generators.plan_blocks(self.generator, self.params)  # validates the params
        return self


class ValidationRules(_Strict):
    """What to do with each kind of bad row: fail the run, or quarantine the row."""

    wrong_type: Policy = "fail"
    null_label: Policy = "fail"
    label_out_of_range: Policy = "fail"
    missing_group: Policy = "fail"
    missing_timestamp: Policy = "fail"
    bad_weight: Policy = "fail"  # data.weight missing, not a finite number, or negative
    unexpected_columns: Literal["ignore", "fail"] = "ignore"


class LabelFrom(_Strict):
    """A label derived from another column: ``threshold`` gives 1 where value >= threshold and
    0 elsewhere (binary, or 0/1 relevance); ``offset`` gives value + offset (ranking relevance,
    multiclass class ids), checked against the task's label range like any label."""

    column: str
    threshold: float | None = None
    offset: int | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> LabelFrom:
        if (self.threshold is None) == (self.offset is None):
            raise ValueError(
                "give exactly one of threshold (label 1 where value >= threshold) or offset "
                "(label = value + offset)"
            )
        return self


def _location(src: SourceSpec) -> str:
    """Where a source's rows come from, normalised so that one file named two ways compares equal."""
    if src.is_synthetic:
        return json.dumps([src.uri, src.params], sort_keys=True, default=str)
    if "://" in src.uri and not src.uri.startswith("file://"):
        return src.uri.rstrip("/")
    return os.path.realpath(os.path.expanduser(src.uri.removeprefix("file://")))


class DataSpec(_Strict):
    source: SourceSpec | None = None
    # train and test, and optionally valid: without it, split.valid of train is held out
    sources: dict[Literal["train", "valid", "test"], SourceSpec] | None = None
    label: str = "label"
    label_mapping: dict[str, int] | None = None
    label_from: LabelFrom | None = None
    num_classes: int | None = Field(default=None, ge=2)
    max_relevance: int = Field(default=4, ge=1)
    group: str | None = None
    timestamp: str | None = None
    keys: list[str] = Field(default_factory=list)
    # A column of sample weights (finite, >= 0) for training, every metric, the gate and the
    # report; ranking: per-query weights (the same on every row of a query, checked).
    weight: str | None = None
    validation: ValidationRules = ValidationRules()

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> DataSpec:
        if (self.source is None) == (self.sources is None):
            raise ValueError("give exactly one of data.source or data.sources (train/valid/test)")
        if self.sources is not None and not {"train", "test"} <= set(self.sources):
            raise ValueError(
                "data.sources needs train and test, and may have valid (without it, split.valid "
                "of the train source is held out for validation)"
            )
        if self.label_mapping is not None and self.label_from is not None:
            raise ValueError("give at most one of data.label_mapping and data.label_from")
        return self

    def role_columns(self) -> list[str]:
        """Columns with a role other than feature (the label and the column it is derived
        from, group, timestamp, keys): a feature selector never picks them."""
        cols = [self.label]
        if self.label_from is not None:
            cols.append(self.label_from.column)
        cols += [c for c in (self.group, self.timestamp, self.weight) if c]
        return list(dict.fromkeys(cols + self.keys))

    def valid_is_test(self) -> bool:
        """data.sources.valid reads the same data as data.sources.test."""
        s = self.sources
        return s is not None and "valid" in s and _location(s["valid"]) == _location(s["test"])


class CategoricalFeature(_Strict):
    name: str
    encoding: Literal["vocab", "hash"] = "vocab"
    min_frequency: int = Field(default=1, ge=1)
    max_vocab_size: int = Field(default=100_000, ge=1)
    hash_buckets: int = Field(default=1 << 18, ge=2)


_SELECTOR_KINDS = ("prefix", "pattern", "all_except")


class ColumnSelector(_Strict):
    """Feature columns picked from the data's own columns when a run starts, in the data's
    order: by ``prefix``, by ``pattern`` (a regular expression the whole name matches), or
    ``all_except`` (every column but these). Columns with a role (label, group, timestamp,
    keys) and the other feature list's columns are never picked."""

    prefix: str | None = Field(default=None, min_length=1)
    pattern: str | None = None
    all_except: list[str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ColumnSelector:
        given = [k for k in _SELECTOR_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a column selector takes exactly one of prefix, pattern or all_except, "
                f"got {given or 'none'}"
            )
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(
                    f"pattern {self.pattern!r} is not a regular expression: {e}"
                ) from None
        return self

    def describe(self) -> str:
        """The selector as written, e.g. ``{prefix: 'f'}``."""
        kind = next(k for k in _SELECTOR_KINDS if getattr(self, k) is not None)
        return f"{{{kind}: {getattr(self, kind)!r}}}"

    def select(self, columns: list[str], excluded: set[str]) -> list[str]:
        """The columns this selector picks from ``columns`` (in their order), never ``excluded``."""
        candidates = [c for c in columns if c not in excluded]
        if self.prefix is not None:
            return [c for c in candidates if c.startswith(self.prefix)]
        if self.pattern is not None:
            rx = re.compile(self.pattern)
            return [c for c in candidates if rx.fullmatch(c)]
        skip = set(self.all_except or ())
        return [c for c in candidates if c not in skip]


class CategoricalSelector(ColumnSelector):
    """A selector for categorical columns, with the encoding options every picked column gets."""

    encoding: Literal["vocab", "hash"] = "vocab"
    min_frequency: int = Field(default=1, ge=1)
    max_vocab_size: int = Field(default=100_000, ge=1)
    hash_buckets: int = Field(default=1 << 18, ge=2)

    def feature(self, name: str) -> CategoricalFeature | str:
        """One picked column, as a plain name when every option is the default."""
        options = {k: getattr(self, k) for k in CategoricalFeature.model_fields if k != "name"}
        feat = CategoricalFeature(name=name, **options)
        return name if feat == CategoricalFeature(name=name) else feat


def _list_or_selector(value: Any) -> str:
    """The union member a feature list is validated as: a mapping is a selector."""
    return "selector" if isinstance(value, (dict, ColumnSelector)) else "names"


NumericColumns = Annotated[
    Annotated[list[str], Tag("names")] | Annotated[ColumnSelector, Tag("selector")],
    Discriminator(_list_or_selector),
]
CategoricalColumns = Annotated[
    Annotated[list[CategoricalFeature | str], Tag("names")]
    | Annotated[CategoricalSelector, Tag("selector")],
    Discriminator(_list_or_selector),
]
_UNION_TAGS = ("names", "selector")


class SparseFeature(_Strict):
    """A sparse column (rows of {index, value} entries, e.g. from libsvm.sparse): ``dim`` model
    columns ``<name>:0 .. <name>:dim-1``; without ``dim``, the training split's largest index + 1
    (larger indices met later are ignored: no tree splits on them)."""

    name: str
    dim: int | None = Field(default=None, ge=1, le=2**31 - 1)


class FeatureSpec(_Strict):
    # a list of names, or a selector ({prefix}, {pattern} or {all_except}) resolved against the
    # data's columns when the run starts; the run's spec.yaml and bundle hold the full lists
    numeric: NumericColumns = Field(default_factory=list)
    categorical: CategoricalColumns = Field(default_factory=list)
    sparse: list[SparseFeature | str] = Field(default_factory=list)
    impute: Literal["median", "none"] = "median"
    standardize: bool = False
    # Numeric columns to map through sign(x) * log(1 + |x|) before imputing and standardizing:
    # heavy-tailed counts (clicks, views, dwell) that neural models learn badly from raw.
    log1p: list[str] = Field(default_factory=list)

    def selectors(self) -> dict[str, ColumnSelector]:
        """The feature lists given as selectors, by field name (empty once resolved)."""
        return {
            name: value
            for name in ("numeric", "categorical")
            if isinstance(value := getattr(self, name), ColumnSelector)
        }

    @property
    def resolved(self) -> bool:
        """Every feature is named (no selector is left to resolve against the data)."""
        return not self.selectors()

    def _require_resolved(self) -> None:
        for name, sel in self.selectors().items():
            raise ValueError(
                f"features.{name} is the selector {sel.describe()}: resolve it against the "
                "data's columns first (pipelines.columns.resolve)"
            )

    def numeric_names(self) -> list[str]:
        """The numeric feature columns (the spec must be resolved)."""
        self._require_resolved()
        assert isinstance(self.numeric, list)
        return list(self.numeric)

    def categorical_features(self) -> list[CategoricalFeature]:
        """The categorical features with their options (the spec must be resolved)."""
        self._require_resolved()
        assert isinstance(self.categorical, list)
        return [
            c if isinstance(c, CategoricalFeature) else CategoricalFeature(name=c)
            for c in self.categorical
        ]

    def sparse_features(self) -> list[SparseFeature]:
        """The sparse features with their options."""
        return [c if isinstance(c, SparseFeature) else SparseFeature(name=c) for c in self.sparse]

    def names(self) -> list[str]:
        """The features given by name: every feature once resolved."""
        numeric = self.numeric if isinstance(self.numeric, list) else []
        categorical = self.categorical if isinstance(self.categorical, list) else []
        return (
            list(numeric)
            + [c if isinstance(c, str) else c.name for c in categorical]
            + [c.name for c in self.sparse_features()]
        )

    @model_validator(mode="after")
    def _distinct(self) -> FeatureSpec:
        names = self.names()
        if not names and self.resolved:
            raise ValueError("features: list at least one numeric, categorical or sparse column")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features listed more than once: {dupes}")
        if isinstance(self.numeric, list):  # a selector: checked once resolved
            stray = [c for c in self.log1p if c not in self.numeric]
            if stray:
                raise ValueError(
                    f"features.log1p names columns that are not numeric features: {stray}"
                )
        sel = self.selectors()
        if len(sel) == 2 and all(s.all_except is not None for s in sel.values()):
            raise ValueError(
                "features.numeric and features.categorical cannot both be all_except: "
                "each would take every column the other leaves"
            )
        return self


class SplitSpec(_Strict):
    method: Literal["random", "group", "time", "explicit"] = "random"
    train: float = Field(default=0.8, gt=0, lt=1)
    # explicit sources without a valid one: the fraction of the train source held out for it
    valid: float = Field(default=0.1, gt=0, lt=1)
    test: float = Field(default=0.1, gt=0, lt=1)
    seed: int = 0
    stratify: bool = True
    valid_from: float | str | None = None
    test_from: float | str | None = None

    @model_validator(mode="after")
    def _fractions(self) -> SplitSpec:
        if (
            self.method in ("random", "group")
            and abs(self.train + self.valid + self.test - 1) > 1e-9
        ):
            raise ValueError(
                f"split fractions must sum to 1, got train+valid+test = "
                f"{self.train + self.valid + self.test:g}"
            )
        if self.method == "time" and (self.valid_from is None or self.test_from is None):
            raise ValueError("split.method time needs valid_from and test_from (timestamps)")
        return self


class ScalingSpec(_Strict):
    """Ray Train workers for one model: how many, what each holds, and which nodes they may use."""

    num_workers: int = Field(default=1, ge=0)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    # Restarts of the worker group after a worker or node dies; each resumes from the last
    # checkpoint.
    max_failures: int = Field(default=2, ge=0)
    # Ray node labels the workers' nodes must carry, e.g. {node-type: gpu}; values may be
    # "!v" (not v), "in(a,b)" or "!in(a,b)", as in Ray's label selectors.
    label_selector: dict[str, str] | None = None
    # A GPU type (e.g. H100, A10G): workers only go to nodes with that accelerator.
    accelerator_type: str | None = None
    # XGBoost: build the training matrix with ExtMemQuantileDMatrix, its binned pages cached on
    # each worker's local disk (for shards larger than the workers' memory). Torch models
    # reject it.
    external_memory: bool = False

    @model_validator(mode="after")
    def _accelerator_needs_gpu(self) -> ScalingSpec:
        if self.accelerator_type and not self.use_gpu:
            raise ValueError("accelerator_type needs use_gpu: true")
        return self

    def per_worker(self) -> dict[str, float]:
        """Resources each worker asks for (resources_per_worker, plus a GPU with use_gpu)."""
        res = dict(self.resources_per_worker or {"CPU": 1.0})
        if self.use_gpu:
            res.setdefault("GPU", 1.0)
        return res

    def worker_resources(self) -> dict[str, float]:
        """Logical resources one training worker holds (what Ray Train will request)."""
        res = self.per_worker()
        if self.accelerator_type:  # how Ray itself expresses the request
            res[f"accelerator_type:{self.accelerator_type}"] = 0.001
        return res


class XGBoostModelSpec(_Strict):
    kind: Literal["xgboost"] = "xgboost"
    name: str = "xgboost"
    params: dict[str, Any] = Field(default_factory=dict)
    num_boost_round: int = Field(default=200, ge=1)
    early_stopping_rounds: int | None = Field(default=20, ge=1)
    report_every: int = Field(default=10, ge=1)
    scaling: ScalingSpec = ScalingSpec()
    # dotted path -> distribution, e.g. {params.eta: {loguniform: [0.01, 0.3]}}: tuned with Ray
    # Tune (see the tune: section); checked against this model's fields at validation
    search: dict[str, Any] | None = None

    @field_validator("params")
    @classmethod
    def _no_reserved(cls, params: dict[str, Any]) -> dict[str, Any]:
        reserved = {"num_class", "device"} & set(params)
        if reserved:
            raise ValueError(
                f"{sorted(reserved)} are set by rayline (from data.num_classes and scaling.use_gpu)"
            )
        return params


class TorchModelSpec(_Strict):
    """A PyTorch model trained with DDP on Ray Train: an MLP, or DLRM for CTR/ranking."""

    kind: Literal["torch.mlp", "torch.dlrm"]
    name: str = "torch"
    loss: Literal[
        "auto", "bce", "cross_entropy", "mse", "huber", "pairwise", "lambdarank", "listwise"
    ] = "auto"
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    early_stopping_epochs: int | None = Field(default=3, ge=1)
    embedding_dim: int = Field(default=16, ge=1)
    bottom_mlp: list[int] = Field(default_factory=lambda: [64, 32])
    top_mlp: list[int] = Field(default_factory=lambda: [64, 32])
    hidden: list[int] = Field(default_factory=lambda: [128, 64])
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # torch.dlrm: a learned constant vector among the interactions (per-value effects)
    first_order: bool = True
    bf16: bool = False
    seed: int = 0
    scaling: ScalingSpec = ScalingSpec()
    search: dict[str, Any] | None = None  # as for XGBoost models

    @model_validator(mode="after")
    def _no_external_memory(self) -> TorchModelSpec:
        if self.scaling.external_memory:
            raise ValueError(
                "scaling.external_memory is an XGBoost setting; torch models read their shard "
                "in batches"
            )
        return self

    def loss_for(self, task: str) -> str:
        """The loss to train with: ``loss``, or for ``auto`` the task's default loss."""
        if self.loss != "auto":
            return self.loss
        return task_info(task).default_loss


class RuleOutput(_Strict):
    """What a rule (or the default, or an override) gives; which field depends on the task:
    binary ``score`` (a probability) or ``label`` (0/1), multiclass ``label``, ranking ``score``,
    regression ``value``. Ranking scores and regression values may be numeric expressions."""

    score: float | str | None = None
    label: int | None = None
    value: float | str | None = None


class RuleSpec(RuleOutput):
    name: str | None = None  # default rule_<i>
    when: str  # a condition, e.g. "country in ['us', 'ca'] and age >= 18"


class RulesModelSpec(_Strict):
    """A hand-written model: ordered rules over feature values, the first that holds decides.

    It needs no training; it is scored on the validation and test splits like any candidate.
    """

    kind: Literal["rules"]
    name: str = "rules"
    rules: list[RuleSpec] = Field(min_length=1)
    default: RuleOutput
    # A baseline: a trained model is selected over it only when the paired bootstrap on the
    # validation split (registry.gate settings) says it is confidently better.
    baseline: bool = True


class ClampSpec(_Strict):
    # finite numbers only: a NaN bound would turn every output into NaN
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)


class GuardrailSpec(_Strict):
    """One rule applied after the winning model, offline and online: exactly one action."""

    name: str
    when: str | None = None  # required except for clamp (which then applies to every row)
    override: RuleOutput | None = None
    clamp: ClampSpec | None = None
    boost: float | str | None = None  # ranking: added to the score
    filter: bool = False  # ranking: the candidate is dropped

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME_RE.match(name):  # names travel comma-separated in prediction files
            raise ValueError(
                "use letters, digits, '_', '.', '-' (max 128), starting with a letter or digit"
            )
        return name


TrainedModelSpec = XGBoostModelSpec | TorchModelSpec  # the families Ray Train fits and Tune tunes
ModelSpecType = TrainedModelSpec | RulesModelSpec
ModelSpec = Annotated[ModelSpecType, Field(discriminator="kind")]
_MODEL_SPEC: TypeAdapter[ModelSpecType] = TypeAdapter(ModelSpec)


def parse_model(doc: dict[str, Any]) -> ModelSpecType:
    """One ``models:`` entry (a dict, e.g. read back from a run's files) as its validated spec."""
    return _MODEL_SPEC.validate_python(doc)


class EvaluationSpec(_Strict):
    metric: str | None = None
    ks: list[int] = Field(default_factory=lambda: [1, 3, 5, 10])
    relevance_threshold: float = 1.0
    threshold: float = Field(default=0.5, gt=0, lt=1)
    # Ranking: how a query without a relevant row counts. one: NDCG 1 (XGBoost, LightGBM);
    # zero: NDCG 0 (the LETOR scripts); skip: left out of every ranking metric's mean. MAP and
    # MRR count such a query 0 unless skip (components.metrics).
    no_relevant: Literal["one", "zero", "skip"] = "one"


class GateSpec(_Strict):
    """When a new model replaces production: a paired bootstrap on the same test split."""

    # The lower end of the interval of the improvement (in the selection metric's units, in its
    # better direction) must exceed this; 0 means "confidently not worse than better".
    min_improvement: float = 0.0
    confidence: float = Field(default=0.95, ge=0.5, lt=1)
    resamples: int = Field(default=1000, ge=100, le=100_000)
    seed: int = 0


class RegistrySpec(_Strict):
    model_name: str | None = None
    # false: never touch production automatically (the new version becomes `candidate`)
    promote: bool = True
    gate: GateSpec = GateSpec()


class TuneSpec(_Strict):
    """How models with a ``search:`` space are tuned (one Ray Tune run per such model)."""

    num_samples: int = Field(default=8, ge=1)  # trials (times each grid value)
    max_concurrent_trials: int = Field(default=2, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0)  # per model; running trials stop
    searcher: Literal["random", "optuna"] = "random"  # optuna = TPE
    scheduler: Literal["asha", "fifo"] = "asha"
    # rounds (XGBoost) or epochs (torch) before ASHA may stop a trial; default: a quarter of a
    # full trial
    grace_period: int | None = Field(default=None, ge=1)
    reduction_factor: int = Field(default=2, ge=2)
    seed: int = 0
    # The winner's final model: "checkpoint" = the model its run/trial trained on the training
    # split; "refit" = the same configuration trained again on train + valid for its best number
    # of rounds/epochs (then the validation metrics no longer measure held-out data).
    winner: Literal["checkpoint", "refit"] = "checkpoint"


class TrackingSpec(_Strict):
    """Optional MLflow tracking of each finished run (needs ``pip install rayline[mlflow]``)."""

    # e.g. http://mlflow:5000, or sqlite:////abs/path/mlflow.db for an offline local store
    mlflow_uri: str | None = None
    experiment: str | None = None  # default: the pipeline name
    artifact_location: str | None = None  # for a new experiment; default: the server's choice


class PlacementSpec(_Strict):
    """Which nodes run the Ray Data work (ingest, splits, feature statistics, scoring).

    Training workers follow each model's ``scaling.label_selector``, serving replicas
    ``serve.label_selector``. With node types labelled (see clusters/), ``data: {node-type: cpu}``
    keeps CPU-only work off the GPU nodes.
    """

    data: dict[str, str] | None = None


class RaySpec(_Strict):
    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)


def _check_search(i: int, m: XGBoostModelSpec | TorchModelSpec, tune: TuneSpec) -> None:
    """Parse the space and validate the model at every edge of it, naming the path."""
    try:
        space = search_space.parse_space(m.search or {})
    except ValueError as e:
        raise ValueError(f"models.{i}.search.{e}") from None
    if tune.searcher == "optuna" and search_space.has_grid(space):
        raise ValueError(f"models.{i}.search: grid cannot be used with tune.searcher optuna")
    if m.scaling.num_workers == 0:  # (scaling cannot be searched over)
        # Ray Train's in-process mode refuses its own API (report, context, checkpoints)
        # inside a Ray Tune trial: every trial would fail
        raise ValueError(
            f"models.{i}.scaling.num_workers: a model with a search trains each trial on a "
            "Ray Train worker group; num_workers must be at least 1 (in-process training, "
            "num_workers 0, is for runs without a search)"
        )
    base = m.model_dump(mode="json", exclude={"search"})
    for path, dist in space.items():
        for value in dist.extremes():
            try:
                type(m).model_validate(search_space.apply(base, {path: value}))
            except (ValidationError, ValueError) as e:
                first = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
                raise ValueError(
                    f"models.{i}.search.{path}: the value {value!r} is not valid for this "
                    f"model ({first})"
                ) from None


class CanaryThresholds(_Strict):
    """When ``rayline monitor --act`` ends a canary: promote it when the gate's paired bootstrap
    on the logged labels says it is confidently better (``min_improvement`` in the metric's
    better direction, at ``confidence``), roll it back when its share of failed requests is
    above production's by more than ``max_error_rate_increase`` (and significantly, at
    ``confidence``), its latency p99 is more than ``max_latency_ratio`` times production's, or
    its online metric is worse than production's by more than ``max_metric_drop``. Failures and
    latency need no labels; promoting and the metric wait for ``min_labelled_rows``."""

    min_labelled_rows: int = Field(default=1000, ge=1)
    min_improvement: float = 0.0
    confidence: float = Field(default=0.95, ge=0.5, lt=1)
    max_metric_drop: float = Field(default=0.01, ge=0)
    max_latency_ratio: float | None = Field(default=2.0, gt=0)
    max_error_rate_increase: float | None = Field(default=0.01, ge=0, le=1)


class MonitorSpec(_Strict):
    """What ``rayline monitor`` checks (components.monitoring.Thresholds); a breach exits 2.

    ``min_metrics``/``max_metrics``: bounds on a version's online metrics over the period read
    (``{auc: 0.7}``, ``{logloss: 0.5}``); ``max_psi``: per feature and window; ``max_unseen_rate``:
    a categorical feature's live share of missing or out-of-vocabulary values; ``max_error_rate``:
    a version's share of the requests routed to it that it refused or failed on (non-200)."""

    window: Literal["day", "hour"] = "day"
    max_psi: float | None = Field(default=0.25, gt=0)
    max_unseen_rate: float | None = Field(default=None, ge=0, le=1)
    min_metrics: dict[str, float] = Field(default_factory=dict)
    max_metrics: dict[str, float] = Field(default_factory=dict)
    max_skew: float = Field(default=1e-6, ge=0)
    skew_requests: int = Field(default=100, ge=1)  # re-scored per version and block of the log
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    canary: CanaryThresholds = CanaryThresholds()


class PipelineSpec(_Strict):
    """A whole pipeline: data, features, split, models, evaluation, registry, serving, Ray."""

    name: str
    task: Task
    storage: str = "./storage"
    # s3:// only: endpoint_url (http(s)://host:port), region; credentials come from each
    # process's environment, never from the spec (components/uris.py)
    storage_options: dict[str, str] = Field(default_factory=dict)
    data: DataSpec
    features: FeatureSpec
    split: SplitSpec = SplitSpec()
    models: list[ModelSpec] = Field(min_length=1)
    # applied in order after whichever model wins; stored in its bundle (see components/rule_models)
    guardrails: list[GuardrailSpec] = Field(default_factory=list)
    evaluation: EvaluationSpec = EvaluationSpec()
    registry: RegistrySpec = RegistrySpec()
    tune: TuneSpec = TuneSpec()
    tracking: TrackingSpec = TrackingSpec()
    placement: PlacementSpec = PlacementSpec()
    serve: ServeOptions = ServeOptions()
    monitor: MonitorSpec = MonitorSpec()
    ray: RaySpec = RaySpec()

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: Any) -> Any:
        """A model without ``kind`` is XGBoost (the union is chosen by ``kind``)."""
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            data = {
                **data,
                "models": [
                    {"kind": "xgboost", **m} if isinstance(m, dict) and "kind" not in m else m
                    for m in data["models"]
                ],
            }
        return data

    @model_validator(mode="after")
    def _check_storage_options(self) -> PipelineSpec:
        """Options that do not fit the storage location are refused before anything runs."""
        try:
            uris.normalize(self.storage_root(), self.storage_options, environ={})
        except uris.StorageLocationError as e:
            raise ValueError(f"storage: {e}") from None
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(
                "use letters, digits, '_', '.', '-' (max 128), starting with a letter or digit"
            )
        return name

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        d = self.data
        info = task_info(self.task)  # metrics, objectives, losses per task: components.tasks
        if info.grouped and not d.group:
            raise ValueError(f"task {self.task} needs data.group (the query id column)")
        if info.labels == "class" and d.num_classes is None:
            raise ValueError(f"task {self.task} needs data.num_classes")
        if self.split.method == "group" and not d.group:
            raise ValueError("split.method group needs data.group")
        if self.split.method == "time" and not d.timestamp:
            raise ValueError("split.method time needs data.timestamp")
        if (self.split.method == "explicit") != (d.sources is not None):
            raise ValueError("split.method explicit goes with data.sources (and only with it)")
        if info.grouped and self.split.method == "random":
            raise ValueError(
                f"task {self.task} with split.method random would cut queries across splits; "
                "use split.method group (or time/explicit)"
            )
        self._check_label_from()
        self._check_feature_roles()
        if d.valid_is_test():
            stopping = self._early_stopping()
            if stopping:
                raise ValueError(
                    f"data.sources.valid and data.sources.test are the same data "
                    f"({d.sources['test'].uri if d.sources else ''}) and {stopping[0]} stops "
                    "training on it, so the test metrics would not be held out; leave "
                    "data.sources.valid out (split.valid of the train source is then held out), "
                    f"or set {stopping[0]}: null"
                )
        for i, m in enumerate(self.models):
            if isinstance(m, TorchModelSpec):
                loss = m.loss_for(self.task)
                if loss not in info.torch_losses:
                    raise ValueError(
                        f"models.{i}.loss {loss!r} does not fit task {self.task}; "
                        f"use one of {sorted(info.torch_losses)}"
                    )
                if info.labels == "relevance" and loss == "bce" and d.max_relevance > 1:
                    raise ValueError(
                        f"models.{i}.loss bce needs 0/1 labels but data.max_relevance is "
                        f"{d.max_relevance}; use mse or huber (pointwise) or a ranking loss"
                    )
            if (
                isinstance(m, XGBoostModelSpec)
                and "objective" in m.params
                and m.params["objective"] not in info.xgb_objectives
            ):
                raise ValueError(
                    f"models.{i}.params.objective {m.params['objective']!r} does not fit "
                    f"task {self.task}; use one of {list(info.xgb_objectives)}"
                )
        if self.features.resolved:  # with selectors: once resolved against the data's columns
            self._check_rules()
        for i, m in enumerate(self.models):
            if not isinstance(m, RulesModelSpec) and m.search:
                _check_search(i, m, self.tune)
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be distinct, got {names}")
        metric = self.selection_metric()
        if not info.has_metric(metric):
            raise ValueError(
                f"evaluation.metric {metric!r} is not a {self.task} metric; "
                f"choose one of {', '.join(info.metrics)}"
            )
        self._check_metric_cutoff(metric)
        return self

    def _check_metric_cutoff(self, metric: str) -> None:
        """A ranking metric's cut-off must be one the evaluation computes: NDCG at each of
        evaluation.ks, MAP at the largest of them."""
        family, _, cut = metric.partition("@")
        if not cut.isdigit():
            return
        ks = self.evaluation.ks
        if family == "ndcg" and int(cut) not in ks:
            raise ValueError(f"evaluation.metric {metric} needs {cut} in evaluation.ks (now {ks})")
        if family == "map" and int(cut) != max(ks):
            raise ValueError(
                f"evaluation.metric {metric}: MAP is computed at the largest of evaluation.ks "
                f"({max(ks)}); use map@{max(ks)} or map, or make {cut} the largest of "
                "evaluation.ks"
            )

    def _check_label_from(self) -> None:
        """A derived label fits the task: a threshold gives 0/1, an offset shifts integers."""
        lf, labels = self.data.label_from, task_info(self.task).labels
        if lf is None:
            return
        if lf.threshold is not None and labels not in ("binary", "relevance"):
            raise ValueError(
                f"data.label_from.threshold gives 0/1 labels, for task binary or ranking, "
                f"not {self.task}"
            )
        if lf.offset is not None and labels not in ("class", "relevance"):
            raise ValueError(
                f"data.label_from.offset shifts integer labels, for task multiclass or ranking, "
                f"not {self.task}"
            )

    def _check_feature_roles(self) -> None:
        """The label (and the column it is derived from) and the timestamp are never features;
        the group (query id) column is one only when listed by name."""
        d, names = self.data, set(self.features.names())
        if d.label in names:
            raise ValueError(f"the label column {d.label!r} (data.label) cannot also be a feature")
        if d.label_from is not None and d.label_from.column in names:
            raise ValueError(
                f"data.label_from.column {d.label_from.column!r} cannot also be a feature: the "
                "label is derived from it (leakage)"
            )
        if d.weight and (d.weight in names or d.weight == d.label):
            raise ValueError(
                f"the weight column {d.weight!r} (data.weight) cannot also be a feature or the label"
            )
        if d.timestamp and d.timestamp in names:
            raise ValueError(
                f"the timestamp column {d.timestamp!r} (data.timestamp) cannot also be a feature: "
                "later splits only hold times the model never saw in training; derive features "
                "such as the hour of day into their own columns instead"
            )

    def _early_stopping(self) -> list[str]:
        """The fields of the models that stop training early on the validation split."""
        out = []
        for i, m in enumerate(self.models):
            if isinstance(m, XGBoostModelSpec) and m.early_stopping_rounds is not None:
                out.append(f"models.{i}.early_stopping_rounds")
            elif isinstance(m, TorchModelSpec) and m.early_stopping_epochs is not None:
                out.append(f"models.{i}.early_stopping_epochs")
        return out

    def warnings(self) -> list[str]:
        """What the spec allows but probably does not mean (printed by validate and by a run)."""
        out = []
        if self.data.valid_is_test():
            out.append(
                "data.sources.valid is the same data as data.sources.test: models are selected "
                "(and tuned) on the test rows, so the test metrics are not held out; leave "
                "data.sources.valid out to hold out split.valid of the train source instead"
            )
        return out

    def feature_kinds(self) -> dict[str, Any]:
        """Feature name -> "number" | "string", for rule expressions."""
        from components import rules

        return rules.feature_kinds(
            self.features.numeric_names(),
            [c.name for c in self.features.categorical_features()],
        )

    def _check_rules(self) -> None:
        """Compile every rule model and guardrail: names, types and syntax, with positions."""
        from components import rule_models

        kinds = self.feature_kinds()
        k = self.data.num_classes
        try:
            for i, m in enumerate(self.models):
                if isinstance(m, RulesModelSpec):
                    rule_models.compile_rule_model(
                        self.task, m.model_dump(), kinds, k, where=f"models.{i}"
                    )
            rule_models.compile_guardrails(
                self.task, [g.model_dump() for g in self.guardrails], kinds, k
            )
        except rule_models.RulesConfigError as e:
            raise ValueError(str(e)) from None

    def selection_metric(self) -> str:
        return self.evaluation.metric or task_info(self.task).default_metric

    def model_name(self) -> str:
        return self.registry.model_name or self.name

    def storage_root(self) -> str:
        """The storage location: RAYLINE_STORAGE wins over the spec, for every command."""
        return os.environ.get(STORAGE_ENV) or self.storage

    def storage_location(self, override: str | None = None) -> str:
        """The storage root every process opens (components.uris.normalize): ``override``
        (--storage), else RAYLINE_STORAGE, else the spec's, with the spec's storage_options."""
        return uris.normalize(override or self.storage_root(), self.storage_options)

    def serve_args(self, storage: str, version: int | None = None) -> ServeArgs:
        """The app builder's arguments for serving this pipeline's model."""
        return ServeArgs(
            **self.serve.model_dump(), storage=storage, model=self.model_name(), version=version
        )

    def fingerprint(self) -> str:
        """sha256 of the validated spec (canonical JSON), for lineage."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.0.c=value`` into a path and a YAML-parsed value."""
    if "=" not in text:
        raise SpecError(f"override {text!r}: expected key=value (e.g. models.0.num_boost_round=50)")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise SpecError(f"override {text!r}: empty key")
    return path, yaml.safe_load(raw) if raw.strip() else ""


def apply_override(doc: Any, path: list[str], value: Any) -> None:
    """Set ``value`` at ``path`` in a nested dict/list document, creating dicts as needed."""
    node = doc
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(
                    f"override {'.'.join(path)}: {where} is not an index of a list of {len(node)}"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise SpecError(f"override {'.'.join(path)}: {'.'.join(path[:i])} is not a mapping")


_MODEL_TAGS = ("xgboost", "torch.mlp", "torch.dlrm", "rules")


def _visible_loc(loc: tuple[Any, ...]) -> list[str]:
    """The field path without pydantic's tags: validator names, and the model kind that a
    discriminated union inserts after ``models.<i>`` (a field may have the same name)."""
    out: list[str] = []
    for i, p in enumerate(loc):
        text = str(p)
        if text.startswith("function-"):
            continue
        if (
            text in _MODEL_TAGS
            and i >= 2
            and loc[i - 2] == "models"
            and isinstance(loc[i - 1], int)
        ):
            continue
        if text in _UNION_TAGS and i >= 2 and loc[i - 2] == "features":
            continue  # a feature list's member: names or a selector
        out.append(text)
    return out


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid spec ({err.error_count()} problem{'s' * (err.error_count() > 1)})"]
    for e in err.errors():
        # Drop pydantic's tags (validator names, the model kind of a discriminated union).
        loc = ".".join(_visible_loc(e["loc"])) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if loc == "(top level)" and re.match(r"^(models|guardrails)\.\d", msg):
            lines.append(f"  - {msg}")  # the message starts with the field path
        else:
            lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineSpec:
    """Load, override and validate a spec file; raise SpecError naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read spec: {e.strerror or e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping, got {type(doc).__name__}")
    for item in overrides:
        key, value = parse_override(item)
        apply_override(doc, key, value)
    return spec_from_dict(doc, source=str(path))


def spec_from_dict(doc: dict[str, Any], source: str = "<spec>") -> PipelineSpec:
    try:
        return PipelineSpec.model_validate(doc)
    except ValidationError as e:
        raise SpecError(_format_errors(source, e)) from None

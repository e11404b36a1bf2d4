"""Serving options (a spec's ``serve:`` section) and the app builder's arguments. No Ray here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Fields that reach replicas through user_config (a change is applied by reconfigure()).
USER_CONFIG_FIELDS = (
    "storage",
    "model",
    "version",
    "max_rows",
    "max_candidates",
    "max_body_bytes",
    "max_batch_size",
    "batch_wait_timeout_s",
    "auth",
    "api_key_env",
    "api_key_file",
    "prediction_log",
    "shadow_version",
    "shadow_timeout_s",
    "canary_version",
    "canary_share",
    "canary_key_header",
)


class PredictionLogOptions(BaseModel):
    """What a replica writes of the requests it answers (components.prediction_log): to
    ``<storage>/logs/<model>/date=.../`` as Parquet, in batches, off the request's path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(
        default=1.0, ge=0, le=1, description="requests logged: 1 all, 0 none (by request id)"
    )
    drop_fields: tuple[str, ...] = Field(
        default=(), description="features never written (e.g. personal data)"
    )
    # Records waiting in memory; beyond it new ones are dropped and counted (a request is never
    # slowed or failed by its log). ~1-2 KB each for a one-row request.
    queue_records: int = Field(default=100_000, ge=1)
    flush_seconds: float = Field(default=5.0, gt=0, le=3600)


class ServeOptions(BaseModel):
    """How a model is served: where, how many replicas, batching, limits, auth."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # How HTTP reaches the replicas. A property of the Ray cluster, fixed when its nodes start:
    # rayline applies it to a local Ray it starts itself and reports what a running cluster uses.
    ingress: Literal["proxy", "haproxy"] = Field(
        default="proxy",
        description="proxy: Serve's HTTP proxy actor; haproxy: HAProxy in front of replicas that "
        "serve HTTP themselves (Ray's direct ingress, RAY_SERVE_ENABLE_HA_PROXY=1)",
    )
    route_prefix: str | None = Field(default=None, description="default: /<model name>")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=2, ge=1)
    target_ongoing_requests: float = Field(default=4, gt=0)
    upscale_delay_s: float = Field(default=5.0, ge=0)
    downscale_delay_s: float = Field(default=30.0, ge=0)
    # Requests a replica holds at once (queued ones included). Beyond it Serve's proxy parks
    # requests and retries them with backoff of up to 0.5 s, which starves the replica: at 128
    # clients on one replica, 64 here gave 20-40 requests/s and 256 gave 240. Queue in the
    # replica instead (batching drains it); autoscaling follows target_ongoing_requests.
    max_ongoing_requests: int = Field(default=128, ge=1)
    max_batch_size: int = Field(default=16, ge=1)
    # 0: a batch is whatever queued while the previous one was scored. Waiting for more (2 ms)
    # made one client's request 2.5x slower and gained nothing under load (benchmarks/).
    batch_wait_timeout_s: float = Field(default=0.0, ge=0, le=1)
    num_cpus: float = Field(default=0.5, ge=0)
    num_gpus: float = Field(default=0, ge=0)
    max_rows: int = Field(default=1000, ge=1)
    max_candidates: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # One log line per request in each replica's log (Serve's access log); at hundreds of
    # requests/s per replica writing it costs CPU the scoring could use.
    access_log: bool = True
    # api_key: every endpoint but /healthz, /docs and /openapi.json needs the key, and a replica
    # whose key source is missing or empty refuses to start (fails closed). none: no key, open
    # to anyone who can reach host:port; it has to be written down to get it.
    auth: Literal["api_key", "none"] = Field(
        default="api_key",
        description="api_key: requests need the key from api_key_file or api_key_env; "
        "none: the endpoint is open",
    )
    # The key itself is never in a spec or config: the file is read on the replicas' nodes; the
    # variable is taken from the environment of `rayline deploy`/`run` (passed to the replicas
    # in the deployment's runtime_env) or else from the replicas' own (their nodes') environment.
    api_key_env: str | None = "RAYLINE_API_KEY"
    api_key_file: str | None = None
    # Ray node labels the replicas' nodes must carry, e.g. {node-type: gpu} with num_gpus: 1
    label_selector: dict[str, str] | None = None
    prediction_log: PredictionLogOptions = PredictionLogOptions()
    # Another version beside production on the same requests: only production answers, the
    # shadow's outputs go to the prediction log. A version number or an alias (e.g. candidate:
    # what a run registered but did not promote), resolved when the application is deployed.
    shadow: int | str | None = Field(  # a number given as text ("3") is a version
        default=None, description="a version (or alias) scored beside production, never answering"
    )
    # A shadow (or the production scores of a canary's requests) slower than this is left out
    # of that request's log record; it never delays the response.
    shadow_timeout_s: float = Field(default=1.0, gt=0, le=60)
    # A version (or alias) that answers ``canary_share`` of the requests, chosen by a hash of
    # the ``canary_key_header`` value (a user or query id: one key sees one version), or of the
    # request id when the header is absent.
    canary: int | str | None = Field(
        default=None, description="a version (or alias) answering canary_share of the requests"
    )
    canary_share: float = Field(default=0.05, ge=0, le=1)
    canary_key_header: str = Field(
        default="X-Rayline-Key",
        description="the request header whose value keeps a caller on one version",
    )

    @field_validator("shadow", "canary", mode="before")
    @classmethod
    def _version_number(cls, v: Any) -> Any:
        return int(v) if isinstance(v, str) and v.strip().isdigit() else v

    @model_validator(mode="after")
    def _consistent(self) -> ServeOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is more than max_replicas ({self.max_replicas})"
            )
        if self.max_batch_size > self.max_ongoing_requests:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}) is more than max_ongoing_requests "
                f"({self.max_ongoing_requests}): a replica never holds enough requests to fill such a batch"
            )
        if self.target_ongoing_requests > self.max_ongoing_requests:
            raise ValueError(
                "target_ongoing_requests is more than max_ongoing_requests: autoscaling would never trigger"
            )
        if self.route_prefix is not None and not self.route_prefix.startswith("/"):
            raise ValueError("route_prefix must start with '/'")
        if self.auth == "api_key" and not (self.api_key_env or self.api_key_file):
            raise ValueError(
                "auth is api_key but no key source is set: set api_key_env (an environment "
                "variable) or api_key_file, or auth: none to serve without a key"
            )
        return self

    def key_source(self) -> str | None:
        """Where the replicas read the key ("file /path" or "$VAR"); None with auth none."""
        if self.auth == "none":
            return None
        return f"file {self.api_key_file}" if self.api_key_file else f"${self.api_key_env}"


class ServeArgs(ServeOptions):
    """Arguments of ``serve.app:build_app``: the options plus which model version to serve."""

    storage: str
    model: str
    version: int | None = Field(default=None, ge=1)
    alias: str = "production"
    # ``shadow`` and ``canary`` as version numbers (``pinned`` resolves their aliases)
    shadow_version: int | None = Field(default=None, ge=1)
    canary_version: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _distinct_versions(self) -> ServeArgs:
        if self.version is not None:
            for name, v in (("shadow", self.shadow_version), ("canary", self.canary_version)):
                if v == self.version:
                    raise ValueError(f"the {name} version v{v} is the version being served")
        return self

    def pinned(self) -> ServeArgs:
        """These args with every version a number: the alias's production version, and the
        shadow's and canary's (a number, or an alias resolved now, so replicas agree)."""
        from components.registry import Registry

        registry = Registry(self.storage)
        update: dict[str, Any] = {}
        if self.version is None:
            update["version"] = registry.resolve(self.model, alias=self.alias).version
        for name in ("shadow", "canary"):
            which = getattr(self, name)
            if which is None:
                update[f"{name}_version"] = None
            elif isinstance(which, int):
                update[f"{name}_version"] = registry.resolve(self.model, version=which).version
            else:
                update[f"{name}_version"] = registry.resolve(self.model, alias=which).version
        return ServeArgs.model_validate({**self.model_dump(), **update})

    def user_config(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=set(USER_CONFIG_FIELDS))

    def prefix(self) -> str:
        return self.route_prefix or f"/{self.model}"

    def app_name(self) -> str:
        """The Serve application's name: one application per route prefix."""
        return self.prefix().strip("/").replace("/", "-") or self.model

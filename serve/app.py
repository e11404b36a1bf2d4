"""The Ray Serve application: a FastAPI ingress around ``serve.scoring`` and the Predictor.

Build it with ``build_app(args)`` (``serve run serve.app:build_app storage=... model=...``, a
``serve deploy`` config whose ``import_path`` is ``serve.app:build_app``, or ``rayline deploy``).
The bundle to serve travels in ``user_config``: a new version reaches running replicas through
``reconfigure()`` without a restart, and Serve rolls replicas when anything else changes.

Endpoints (under the route prefix): POST /predict, POST /rank, GET /healthz, GET /model,
and FastAPI's /docs and /openapi.json.

Every answer carries Serve's ``X-Request-Id`` header: the client's own ``X-Request-Id``, or one
Serve generated; the log keys records by it. Answered requests go to the prediction
log (``serve.prediction_log``; components.prediction_log) unless the request has an
``X-Rayline-No-Log`` header; its counts are in ``/model`` and in Serve's metrics
(``rayline_prediction_log_records_total`` by outcome).
"""

import logging
import os
import threading
import time
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException

from components.features import Columns
from components.prediction_log import LogSettings, LogStats, PredictionLog, Record, new_request_id
from components.predictor import Scored
from components.registry import Registry
from serve.config import PredictionLogOptions, ServeArgs
from serve.guards import BodyLimit, GuardSettings, RequireKey
from serve.schemas import (
    BatchingStats,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    RankRequest,
    RankResponse,
)
from serve.scoring import Body, Limits, ModelScorer, RequestError, body_json, score_frames

logger = logging.getLogger("ray.serve")

GUARD = GuardSettings()  # this replica's key and body limit, set by ModelServer.reconfigure


class ReplicaConfigError(RuntimeError):
    """A replica that cannot serve as configured (e.g. no API key): it refuses to start."""


api = FastAPI(
    title="rayline model endpoint",
    description="Scores rows with a registered rayline model bundle (the same Predictor as offline evaluation).",
)
# Added last, so it runs first: the key is checked before the body is counted or read.
api.add_middleware(BodyLimit, settings=GUARD)
api.add_middleware(RequireKey, settings=GUARD)


@api.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"detail": exc.detail})


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> Response:
    # FastAPI answers 400 "There was an error parsing the body" for any error but a JSON syntax
    # error while reading it: e.g. an integer of more than 4300 digits (Python's int limit) or
    # bytes that are not UTF-8. Those are bad values, 422 like every other.
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, ValueError):
        msg = str(cause).split(";")[0][:200]
        detail = [
            {
                "loc": ["body"],
                "msg": f"the body is not valid JSON here: {msg}",
                "type": "json_invalid",
            }
        ]
        return JSONResponse(status_code=422, content={"detail": detail})
    return await http_exception_handler(request, exc)


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default, minus the echoed input (a request may be large or sensitive).
    detail = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": detail})


def _json(body: Body) -> Response:
    """The response body serialised in one call. Returning a pydantic model would make FastAPI
    dump it, validate the dump again and serialise that; the route's response_model still
    documents the body in OpenAPI."""
    return Response(body_json(body), media_type="application/json")


REQUEST_ID = "x-request-id"
NO_LOG = "x-rayline-no-log"


def request_id(request: Request) -> str:
    """This request's id: Serve's (the client's ``X-Request-Id``, or one Serve generated and
    puts on the response), under either ingress."""
    # Serve's proxy, HAProxy and the replica's own ingress put it in the request's headers
    return request.headers.get(REQUEST_ID) or new_request_id()


def no_log(request: Request) -> bool:
    """Whether the request asks to stay out of the prediction log (any value but 0/false/no)."""
    value = request.headers.get(NO_LOG)
    return value is not None and value.strip().lower() not in ("0", "false", "no")


def log_settings(options: PredictionLogOptions) -> LogSettings:
    return LogSettings(
        share=options.share,
        queue_records=options.queue_records,
        flush_records=max(1, min(10_000, options.queue_records // 2)),
        flush_seconds=options.flush_seconds,
        drop_fields=tuple(options.drop_fields),
    )


class LogMetrics:
    """Serve (Ray) metrics of a replica's prediction log: records by outcome, as counters."""

    OUTCOMES = ("written", "dropped", "not_sampled", "not_logged")

    def __init__(self, model: str) -> None:
        from ray.util.metrics import Counter

        self.counter = Counter(
            "rayline_prediction_log_records",
            description="prediction log records by outcome",
            tag_keys=("model", "outcome"),
        )
        self.model = model
        self.last = LogStats()

    def __call__(self, stats: LogStats) -> None:
        for outcome in self.OUTCOMES:
            delta = getattr(stats, outcome) - getattr(self.last, outcome)
            if delta > 0:
                self.counter.inc(delta, tags={"model": self.model, "outcome": outcome})
        self.last = stats


def read_api_key(args: ServeArgs) -> bytes | None:
    """The replica's API key (None with auth none), from the key file if one is set, else the
    environment variable. A missing or empty source raises ReplicaConfigError naming it: with
    auth api_key the endpoint never runs open."""
    if args.auth == "none":
        return None
    if args.api_key_file:
        try:
            with open(args.api_key_file, "rb") as fh:
                key = fh.read().strip()
        except OSError as e:
            raise ReplicaConfigError(
                f"serve.auth is api_key but the API key file {args.api_key_file} (serve.api_key_file) "
                f"cannot be read on this replica's node: {e.strerror or e}"
            ) from None
        if not key:
            raise ReplicaConfigError(
                f"serve.auth is api_key but the API key file {args.api_key_file} (serve.api_key_file) is empty"
            )
        return key
    assert args.api_key_env  # ServeOptions refuses auth api_key without a key source
    value = os.environ.get(args.api_key_env, "").strip()
    if not value:
        raise ReplicaConfigError(
            f"serve.auth is api_key but the environment variable {args.api_key_env} "
            f"(serve.api_key_env) is unset or empty in the replica: export it where "
            f"`rayline deploy`/`rayline run` runs (it is passed to the replicas), give it to the "
            f"Ray nodes, set serve.api_key_file, or set serve.auth: none to serve without a key"
        )
    return value.encode()


@serve.deployment(name="ModelServer", health_check_period_s=5, health_check_timeout_s=10)
@serve.ingress(api)
class ModelServer:
    """One replica: loads the bundle once, scores batches of requests in one predict call."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.scorer: ModelScorer | None = None
        self.batching = BatchingStats()
        self.auth = "api_key"
        self.config: dict[str, Any] = {}
        self.log: PredictionLog | None = None
        if config:
            self.reconfigure(config)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Load the configured model version (called by Serve when user_config changes).

        Raises ReplicaConfigError (the replica refuses to start, Serve reports the deployment
        failed) when auth is api_key and the key's file or variable is missing or empty."""
        args = ServeArgs.model_validate(config)
        key = read_api_key(args)  # first: a replica without its key fails before loading a model
        limits = Limits(args.max_rows, args.max_candidates, args.max_body_bytes)
        if self.scorer is None or (args.model, args.version, args.storage) != (
            self.scorer.model,
            self.scorer.version,
            self.config.get("storage"),
        ):
            version = Registry(args.storage).resolve(args.model, version=args.version)
            self.batching = BatchingStats()
            self.scorer = ModelScorer.load(
                version.path,
                args.model,
                version.version,
                limits,
                threads=max(1, int(args.num_cpus)),  # the replica's CPUs
            )
        else:
            self.scorer.limits = limits
        GUARD.max_body_bytes = args.max_body_bytes
        GUARD.api_key = key
        GUARD.auth = args.auth
        self.auth = args.auth
        if args.auth == "none":
            logger.warning(
                "rayline: serving %s without an API key (serve.auth: none): anyone who can reach "
                "the endpoint can call it",
                args.model,
            )
        else:
            logger.info("rayline: API key from %s", args.key_source())
        batcher: Any = self._score  # serve.batch's wrapper carries the setters
        batcher.set_max_batch_size(args.max_batch_size)
        batcher.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self._configure_log(args)
        self.config = dict(config)

    def _configure_log(self, args: ServeArgs) -> None:
        """A new log when where or how it logs changed (the old one writes what it holds)."""
        settings = log_settings(args.prediction_log)
        old = self.log
        if old is not None and (old.storage, old.model, old.settings) == (
            args.storage,
            args.model,
            settings,
        ):
            return
        if old is not None:  # it writes what it holds in a thread: reconfigure does not wait
            threading.Thread(target=old.close, name="rayline-log-close", daemon=True).start()
        self.log = None
        if settings.share > 0:
            self.log = PredictionLog(
                args.storage, args.model, settings, on_written=LogMetrics(args.model)
            ).start()

    def __del__(self) -> None:
        # Serve calls this when it stops the replica: what is queued is written first
        log = getattr(self, "log", None)
        if log is not None:
            log.close()

    def _answer(
        self,
        request: Request,
        started: float,
        scorer: ModelScorer,
        route: str,
        rows: int,
        body: bytes,
        out: Body,
    ) -> Response:
        """The response, and the request handed to the log (``scorer``: the one that answered,
        not whichever a reconfigure installed since). ``body``: the request's JSON bytes (read
        once already, to parse it); the log takes them and the response's bytes as they are, so
        nothing is serialised again for it."""
        rid = request_id(request)
        response = _json(out)
        if self.log is not None:
            self.log.offer(
                Record(
                    request_id=rid,
                    ts=time.time() - (time.perf_counter() - started),
                    model=scorer.model,
                    version=scorer.version,
                    route=route,
                    rows=rows,
                    features=body,
                    outputs=bytes(response.body),
                    latency_ms=(time.perf_counter() - started) * 1e3,
                ),
                no_log=no_log(request),
            )
        return response

    def check_health(self) -> None:
        if self.scorer is None:
            raise RuntimeError("no model loaded")

    def _loaded(self) -> ModelScorer:
        """The scorer; the API key was checked by RequireKey before the body was read."""
        if self.scorer is None:
            raise RequestError(
                503, [{"loc": [], "msg": "model not loaded yet", "type": "unavailable"}]
            )
        return self.scorer

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _score(self, frames: list[Columns]) -> list[Scored]:
        assert self.scorer is not None
        stats = self.batching
        stats.batches += 1
        stats.requests += len(frames)
        stats.largest = max(stats.largest, len(frames))
        return score_frames(self.scorer.predictor, frames)

    @api.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
    async def predict(self, body: PredictRequest, request: Request) -> Response:
        started = time.perf_counter()
        scorer = self._loaded()
        frame = scorer.frame(body.rows, "rows", scorer.limits.max_rows)
        out = scorer.predict_response(await self._score(frame))
        raw = await request.body()  # cached: FastAPI read it to parse the body
        return self._answer(request, started, scorer, "predict", len(body.rows), raw, out)

    @api.post("/rank", response_model=RankResponse, response_model_exclude_none=True)
    async def rank(self, body: RankRequest, request: Request) -> Response:
        started = time.perf_counter()
        scorer = self._loaded()
        if len(body.candidates) > scorer.limits.max_candidates:
            scorer.frame(body.candidates, "candidates", scorer.limits.max_candidates)  # raises 413
        rows = scorer.merge_query(body.query, body.candidates)
        frame = scorer.frame(rows, "candidates", scorer.limits.max_candidates)
        out = scorer.rank_response(await self._score(frame), body.top_k)
        raw = await request.body()
        return self._answer(request, started, scorer, "rank", len(body.candidates), raw, out)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        if self.scorer is None:
            raise RequestError(
                503, [{"loc": [], "msg": "model not loaded yet", "type": "unavailable"}]
            )
        return {
            "status": "ok",
            "model": self.scorer.model,
            "version": self.scorer.version,
            "auth": self.auth,  # what clients need: api_key (send the key) or none
        }

    @api.get("/model", response_model=ModelInfo)
    async def model(self) -> ModelInfo:
        # built once at load (the bundle hash, trimmed metrics and lineage): nothing read here
        info = self._loaded().info()  # a fresh copy
        info.batching = self.batching.model_copy()
        if self.log is not None:
            info.prediction_log = asdict(self.log.snapshot())
        return info


def deployment_options(args: ServeArgs) -> dict[str, Any]:
    """Serve options from the args: autoscaling, concurrency, resources, and the user_config."""
    return {
        "user_config": args.user_config(),
        "max_ongoing_requests": args.max_ongoing_requests,
        "logging_config": {"enable_access_log": args.access_log},
        "autoscaling_config": {
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "initial_replicas": args.min_replicas,
            "target_ongoing_requests": args.target_ongoing_requests,
            "upscale_delay_s": args.upscale_delay_s,
            "downscale_delay_s": args.downscale_delay_s,
        },
        "ray_actor_options": {
            "num_cpus": args.num_cpus,
            "num_gpus": args.num_gpus,
            **({"label_selector": dict(args.label_selector)} if args.label_selector else {}),
        },
    }


def application(args: ServeArgs, runtime_env: dict[str, Any] | None = None) -> Any:
    """The bound application for ``args`` (the alias resolved to a pinned version). A
    ``runtime_env`` (``rayline deploy`` passes the operator's API key variable in its env_vars)
    becomes the replicas' own."""
    if args.version is None:  # pin the alias's current version, so replicas agree on it
        resolved = Registry(args.storage).resolve(args.model, alias=args.alias)
        args = args.model_copy(update={"version": resolved.version})
    options = deployment_options(args)
    if runtime_env:
        options["ray_actor_options"]["runtime_env"] = runtime_env
    return ModelServer.options(**options).bind()  # type: ignore[attr-defined]


def build_app(args: dict[str, Any]) -> Any:
    """The application for ``serve run``/``serve deploy``/RayService (typed, checked args). The
    replicas read the API key from their own environment (their nodes') or the key file."""
    return application(ServeArgs.model_validate(args))

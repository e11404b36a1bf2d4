"""The Ray Serve application: a FastAPI ingress around ``serve.scoring`` and the Predictor.

Build it with ``build_app(args)`` (``serve run serve.app:build_app storage=... model=...``, a
``serve deploy`` config whose ``import_path`` is ``serve.app:build_app``, or ``rayline deploy``).
The bundle to serve travels in ``user_config``: a new version reaches running replicas through
``reconfigure()`` without a restart, and Serve rolls replicas when anything else changes.

Endpoints (under the route prefix): POST /predict, POST /rank, GET /healthz, GET /model,
and FastAPI's /docs and /openapi.json.

Every answer carries Serve's ``X-Request-Id`` header: the client's own ``X-Request-Id``, or one
Serve generated; the log keys records by it. Requests routed to a version (answered, or
refused or failed on by it: their status and error) go to the prediction log (``serve.prediction_log``; components.prediction_log) unless the request has an
``X-Rayline-No-Log`` header; its counts are in ``/model`` and in Serve's metrics
(``rayline_prediction_log_records_total`` by outcome).

A shadow version (``shadow_version``) and a canary (``canary_version``, ``canary_share``,
sticky by ``canary_key_header``) run in the same replica as production (serve/routing.py): the
canary answers its share, production the rest, and the other version's outputs on the same
request (the shadow's, or production's beside a canary) are scored after the response, off its
path, and logged with the record.
"""

import asyncio
import json
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
from components.predictor import Predictor, Scored
from components.registry import Registry
from serve.config import PredictionLogOptions, ServeArgs
from serve.guards import BodyLimit, GuardSettings, RequireKey
from serve.routing import CANARY, PRODUCTION, CompanionStats, companion_body, in_canary
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
# Companion scorings (serve/routing.py) a replica runs at once; beyond it a request's record says
# its companion was not scored. A slow shadow then costs a bounded share of the replica's threads
# instead of piling up.
MAX_COMPANIONS = 8
COMPANION_SKIPPED = "not scored: too many companion scorings running"
_BACKGROUND: set[asyncio.Task[None]] = set()
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


def _record(
    rid: str,
    started: float,
    scorer: ModelScorer,
    route: str,
    rows: int,
    body: bytes,
    answered_by: str,
    outputs: bytes | None,
) -> Record:
    """The log record of a request that arrived at ``started`` (perf_counter) and ends now."""
    elapsed = time.perf_counter() - started
    return Record(
        request_id=rid,
        ts=time.time() - elapsed,
        model=scorer.model,
        version=scorer.version,
        route=route,
        rows=rows,
        features=body,
        outputs=outputs,
        latency_ms=elapsed * 1e3,
        answered_by=answered_by,
    )


@serve.deployment(name="ModelServer", health_check_period_s=5, health_check_timeout_s=10)
@serve.ingress(api)
class ModelServer:
    """One replica: loads the bundle once, scores batches of requests in one predict call."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.scorer: ModelScorer | None = None
        self.batching = BatchingStats()
        self.auth = "api_key"
        self.config: dict[str, Any] = {}
        self.args: ServeArgs | None = None
        self.log: PredictionLog | None = None
        self.shadow: ModelScorer | None = None
        self.canary: ModelScorer | None = None
        self.companions = CompanionStats()
        self._companions_running = 0
        if config:
            self.reconfigure(config)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Load the configured model version (called by Serve when user_config changes).

        Raises ReplicaConfigError (the replica refuses to start, Serve reports the deployment
        failed) when auth is api_key and the key's file or variable is missing or empty."""
        args = ServeArgs.model_validate(config)
        key = read_api_key(args)  # first: a replica without its key fails before loading a model
        limits = Limits(args.max_rows, args.max_candidates, args.max_body_bytes)
        loaded = {
            s.version: s
            for s in (self.scorer, self.shadow, self.canary)
            if s is not None and (s.model, self.config.get("storage")) == (args.model, args.storage)
        }
        scorer = self._load(args, args.version, limits, loaded, optional=False)
        assert scorer is not None
        if scorer is not self.scorer:
            self.batching = BatchingStats()
        shadow = self._load(args, args.shadow_version, limits, loaded)
        canary = self._load(args, args.canary_version, limits, loaded)
        if (self.shadow, self.canary) != (shadow, canary):
            self.companions = CompanionStats()
        self.scorer, self.shadow, self.canary = scorer, shadow, canary
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
        self.args = args
        self.config = dict(config)

    @staticmethod
    def _load(
        args: ServeArgs,
        version: int | None,
        limits: Limits,
        loaded: dict[int, ModelScorer],
        optional: bool = True,
    ) -> ModelScorer | None:
        """The scorer of ``version`` (None: none, or for production the alias's version),
        reusing one this replica already holds."""
        if version is None and optional:
            return None
        if version is not None and version in loaded:
            loaded[version].limits = limits
            return loaded[version]
        found = Registry(args.storage).resolve(args.model, version=version)
        return ModelScorer.load(
            found.path,
            args.model,
            found.version,
            limits,
            threads=max(1, int(args.num_cpus)),  # the replica's CPUs
        )

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

    def _route(self, request: Request, production: ModelScorer) -> tuple[ModelScorer, str]:
        """The scorer that answers this request: the canary for its share of keys (the
        ``canary_key_header`` value, else the request id), production otherwise."""
        canary, args = self.canary, self.args
        if canary is None or args is None:
            return production, PRODUCTION
        key = request.headers.get(args.canary_key_header) or request_id(request)
        if in_canary(key, args.canary_share):
            return canary, CANARY
        return production, PRODUCTION

    def _companion(self, answered_by: str) -> ModelScorer | None:
        """The version scored beside the answering one: production beside a canary, else the
        shadow (None: no other version)."""
        return self.scorer if answered_by == CANARY else self.shadow

    def _answer(
        self,
        request: Request,
        started: float,
        scorer: ModelScorer,
        route: str,
        rows: int,
        body: bytes,
        out: Body,
        answered_by: str = PRODUCTION,
    ) -> Response:
        """The response, and the request handed to the log (``scorer``: the one that answered,
        not whichever a reconfigure installed since). ``body``: the request's JSON bytes (read
        once already, to parse it); the log takes them and the response's bytes as they are, so
        nothing is serialised again for it. A companion version (serve/routing.py) is scored
        after the response is returned, and the record is logged when it is done."""
        rid = request_id(request)
        response = _json(out)
        log = self.log
        if log is None:
            return response
        record = _record(rid, started, scorer, route, rows, body, answered_by, bytes(response.body))
        skip = no_log(request)
        companion = self._companion(answered_by)
        if companion is None or not log.would_log(rid, skip):
            log.offer(record, no_log=skip)
        elif self._companions_running >= MAX_COMPANIONS:
            self.companions.skipped += 1
            record.shadow_version = companion.version
            record.shadow_error = COMPANION_SKIPPED
            log.offer(record)
        else:
            self._companions_running += 1
            task = asyncio.get_running_loop().create_task(
                self._log_with_companion(log, record, companion, route, body)
            )
            _BACKGROUND.add(task)  # a task nobody references may be collected before it ends
            task.add_done_callback(_BACKGROUND.discard)
        return response

    def _failed(
        self,
        request: Request,
        started: float,
        scorer: ModelScorer,
        route: str,
        rows: int,
        body: bytes,
        error: Exception,
        answered_by: str,
    ) -> None:
        """Log a request the routed version refused (a RequestError's 4xx) or failed on (500):
        its status and why, no outputs, no companion. Never raises."""
        log = self.log
        if log is None:
            return
        if isinstance(error, RequestError):
            status, why = error.status, str(error)[:500]
        else:
            status, why = 500, f"{type(error).__name__}: {str(error)[:500]}"
        record = _record(request_id(request), started, scorer, route, rows, body, answered_by, None)
        record.status, record.error = status, why
        log.offer(record, no_log=no_log(request))

    async def _log_with_companion(
        self, log: PredictionLog, record: Record, companion: ModelScorer, route: str, body: bytes
    ) -> None:
        """Score the companion version on the request (in a thread, within shadow_timeout_s)
        and log the record with its outputs or why there are none. Never raises."""
        timeout = self.args.shadow_timeout_s if self.args is not None else 1.0
        record.shadow_version = companion.version
        try:
            parsed = json.loads(body)
            job = asyncio.to_thread(companion_body, companion, route, parsed)
            outputs = await asyncio.wait_for(job, timeout)
            record.shadow_outputs = body_json(outputs)
            self.companions.scored += 1
        except TimeoutError:
            self.companions.timed_out += 1
            record.shadow_error = f"timed out after {timeout:g}s"
        except RequestError as e:
            self.companions.failed += 1
            record.shadow_error = f"{e.status}: {str(e)[:500]}"
        except Exception as e:  # a companion's failure is logged, never the caller's
            self.companions.failed += 1
            record.shadow_error = f"{type(e).__name__}: {str(e)[:500]}"
        finally:
            self._companions_running -= 1
            log.offer(record)

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
    async def _score(self, jobs: list[tuple[Predictor, Columns]]) -> list[Scored]:
        """One predict call per version among the batched requests (production and canary)."""
        predictors = [p for p, _ in jobs]
        frames = [f for _, f in jobs]
        stats = self.batching
        stats.batches += 1
        stats.requests += len(frames)
        stats.largest = max(stats.largest, len(frames))
        if all(p is predictors[0] for p in predictors):
            return score_frames(predictors[0], frames)
        out: list[Scored | None] = [None] * len(frames)
        for predictor in {id(p): p for p in predictors}.values():
            idx = [i for i, p in enumerate(predictors) if p is predictor]
            for i, scored in zip(
                idx, score_frames(predictor, [frames[i] for i in idx]), strict=True
            ):
                out[i] = scored
        return [s for s in out if s is not None]

    @api.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
    async def predict(self, body: PredictRequest, request: Request) -> Response:
        started = time.perf_counter()
        scorer, answered_by = self._route(request, self._loaded())
        raw = await request.body()  # cached: FastAPI read it to parse the body
        try:
            frame = scorer.frame(body.rows, "rows", scorer.limits.max_rows)
            out = scorer.predict_response(await self._score((scorer.predictor, frame)))
        except Exception as e:
            self._failed(request, started, scorer, "predict", len(body.rows), raw, e, answered_by)
            raise
        return self._answer(
            request, started, scorer, "predict", len(body.rows), raw, out, answered_by
        )

    @api.post("/rank", response_model=RankResponse, response_model_exclude_none=True)
    async def rank(self, body: RankRequest, request: Request) -> Response:
        started = time.perf_counter()
        scorer, answered_by = self._route(request, self._loaded())
        raw = await request.body()
        n = len(body.candidates)
        try:
            if n > scorer.limits.max_candidates:
                scorer.frame(body.candidates, "candidates", scorer.limits.max_candidates)  # 413
            rows = scorer.merge_query(body.query, body.candidates)
            frame = scorer.frame(rows, "candidates", scorer.limits.max_candidates)
            out = scorer.rank_response(await self._score((scorer.predictor, frame)), body.top_k)
        except Exception as e:
            self._failed(request, started, scorer, "rank", n, raw, e, answered_by)
            raise
        return self._answer(
            request, started, scorer, "rank", len(body.candidates), raw, out, answered_by
        )

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
        if self.shadow is not None or self.canary is not None:
            args = self.args
            info.routing = {
                "shadow_version": self.shadow.version if self.shadow else None,
                "canary_version": self.canary.version if self.canary else None,
                "canary_share": args.canary_share if self.canary and args else 0.0,
                "companions": self.companions.as_dict(),
            }
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
    """The bound application for ``args`` (aliases resolved to pinned versions). A
    ``runtime_env`` (``rayline deploy`` passes the operator's API key variable in its env_vars)
    becomes the replicas' own."""
    args = args.pinned()  # the alias's current version (and the shadow's, canary's): one for all
    options = deployment_options(args)
    if runtime_env:
        options["ray_actor_options"]["runtime_env"] = runtime_env
    return ModelServer.options(**options).bind()  # type: ignore[attr-defined]


def build_app(args: dict[str, Any]) -> Any:
    """The application for ``serve run``/``serve deploy``/RayService (typed, checked args). The
    replicas read the API key from their own environment (their nodes') or the key file."""
    return application(ServeArgs.model_validate(args))

"""The Ray Serve application: a FastAPI ingress around ``serve.scoring`` and the Predictor.

Build it with ``build_app(args)`` (``serve run serve.app:build_app storage=... model=...``, a
``serve deploy`` config whose ``import_path`` is ``serve.app:build_app``, or ``rayline deploy``).
The bundle to serve travels in ``user_config``: a new version reaches running replicas through
``reconfigure()`` without a restart, and Serve rolls replicas when anything else changes.

Endpoints (under the route prefix): POST /predict, POST /rank, GET /healthz, GET /model,
and FastAPI's /docs and /openapi.json.
"""

import hmac
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from components.features import Columns
from components.predictor import Scored
from components.registry import Registry
from serve.config import ServeArgs
from serve.schemas import (
    BatchingStats,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    RankRequest,
    RankResponse,
)
from serve.scoring import Body, Limits, ModelScorer, RequestError, body_json, score_frames

OPEN_PATHS = ("/healthz",)


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, counted as they stream in."""

    limit = Limits().max_body_bytes  # set per replica from its config

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = BodyLimit.limit
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(send, limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = (
        b'{"detail":[{"loc":["body"],"msg":"request body is larger than the limit of '
        + str(limit).encode()
        + b' bytes","type":"too_large"}]}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


api = FastAPI(
    title="rayline model endpoint",
    description="Scores rows with a registered rayline model bundle (the same Predictor as offline evaluation).",
)
api.add_middleware(BodyLimit)


@api.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"detail": exc.detail})


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


def read_api_key(env: str | None, path: str | None) -> str | None:
    """The endpoint's API key: from a file (preferred) or an environment variable; never the spec."""
    if path:
        with open(path) as fh:
            key = fh.read().strip()
        if not key:
            raise ValueError(f"API key file {path} is empty")
        return key
    if env:
        return os.environ.get(env) or None
    return None


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


@serve.deployment(name="ModelServer", health_check_period_s=5, health_check_timeout_s=10)
@serve.ingress(api)
class ModelServer:
    """One replica: loads the bundle once, scores batches of requests in one predict call."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.scorer: ModelScorer | None = None
        self.batching = BatchingStats()
        self.api_key: str | None = None
        self.config: dict[str, Any] = {}
        if config:
            self.reconfigure(config)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Load the configured model version (called by Serve when user_config changes)."""
        args = ServeArgs.model_validate(config)
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
        self.api_key = read_api_key(args.api_key_env, args.api_key_file)
        BodyLimit.limit = args.max_body_bytes
        batcher: Any = self._score  # serve.batch's wrapper carries the setters
        batcher.set_max_batch_size(args.max_batch_size)
        batcher.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self.config = dict(config)

    def check_health(self) -> None:
        if self.scorer is None:
            raise RuntimeError("no model loaded")

    def _authorize(self, request: Request) -> ModelScorer:
        if self.api_key is not None:
            given = _presented_key(request)
            if given is None or not hmac.compare_digest(given.encode(), self.api_key.encode()):
                raise RequestError(
                    401,
                    [
                        {
                            "loc": ["header", "authorization"],
                            "msg": "missing or wrong API key (Authorization: Bearer <key>)",
                            "type": "unauthorized",
                        }
                    ],
                )
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
        scorer = self._authorize(request)
        frame = scorer.frame(body.rows, "rows", scorer.limits.max_rows)
        return _json(scorer.predict_response(await self._score(frame)))

    @api.post("/rank", response_model=RankResponse, response_model_exclude_none=True)
    async def rank(self, body: RankRequest, request: Request) -> Response:
        scorer = self._authorize(request)
        if len(body.candidates) > scorer.limits.max_candidates:
            scorer.frame(body.candidates, "candidates", scorer.limits.max_candidates)  # raises 413
        rows = scorer.merge_query(body.query, body.candidates)
        frame = scorer.frame(rows, "candidates", scorer.limits.max_candidates)
        return _json(scorer.rank_response(await self._score(frame), body.top_k))

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        if self.scorer is None:
            raise RequestError(
                503, [{"loc": [], "msg": "model not loaded yet", "type": "unavailable"}]
            )
        return {"status": "ok", "model": self.scorer.model, "version": self.scorer.version}

    @api.get("/model", response_model=ModelInfo)
    async def model(self, request: Request) -> ModelInfo:
        info = self._authorize(request).info()
        info.batching = self.batching.model_copy()
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


def build_app(args: dict[str, Any]) -> Any:
    """The application for ``serve run``/``serve deploy``/RayService (typed, checked args)."""
    parsed = ServeArgs.model_validate(args)
    if parsed.version is None:  # pin the alias's current version, so replicas agree on it
        resolved = Registry(parsed.storage).resolve(parsed.model, alias=parsed.alias)
        parsed = parsed.model_copy(update={"version": resolved.version})
    return ModelServer.options(**deployment_options(parsed)).bind()  # type: ignore[attr-defined]

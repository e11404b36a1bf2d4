"""ASGI middleware in front of the endpoint's routes: the API key and the body size. No Ray here.

Both run before anything reads the request body: ``RequireKey`` answers 401 without reading it,
and ``BodyLimit`` counts the body as the app reads it and answers 413 once it passes the limit,
whether the client declared a Content-Length or sent it chunked. Each replica sets the values
in its ``GuardSettings`` when it (re)loads its config.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Paths answered without the key, relative to the route prefix: the health check, and FastAPI's
# docs page and the OpenAPI schema it loads (the same for every model: they name no feature,
# metric or path; GET /model, which does, needs the key).
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json"})


@dataclass
class GuardSettings:
    """What the middleware enforces; one instance per replica process, set by the replica."""

    max_body_bytes: int = 4 * 1024 * 1024
    auth: Literal["api_key", "none"] = "api_key"
    # The key with auth api_key; None until the replica has read it (every guarded request 503).
    api_key: bytes | None = None
    open_paths: frozenset[str] = OPEN_PATHS


def route_path(scope: Scope) -> str:
    """The request path under the route prefix (Serve and Starlette put the prefix in both
    ``root_path`` and ``path``)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :] or "/"
    return path


def presented_key(scope: Scope) -> bytes | None:
    """The key a request carries: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    bearer = other = None
    for name, value in scope.get("headers") or ():
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].strip()
        elif name == b"x-api-key":
            other = value.strip()
    return bearer if bearer is not None else other


async def send_json(
    send: Send, status: int, detail: list[dict[str, object]], headers: tuple = ()
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequireKey:
    """ASGI middleware: 401 for a request without the right key, before its body is read.

    With ``auth: api_key`` every path but ``open_paths`` needs the key; a replica that has no
    key (it could not read one) answers 503 rather than serving openly.
    """

    def __init__(self, app: ASGIApp, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        s = self.settings
        if scope["type"] != "http" or s.auth == "none" or route_path(scope) in s.open_paths:
            await self.app(scope, receive, send)
            return
        if s.api_key is None:
            await send_json(
                send,
                503,
                [{"loc": [], "msg": "the API key is not loaded yet", "type": "unavailable"}],
            )
            return
        given = presented_key(scope)
        if given is None or not hmac.compare_digest(given, s.api_key):
            await send_json(
                send,
                401,
                [
                    {
                        "loc": ["header", "authorization"],
                        "msg": "missing or wrong API key (Authorization: Bearer <key>)",
                        "type": "unauthorized",
                    }
                ],
                ((b"www-authenticate", b"Bearer"),),
            )
            return
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised from ``receive`` once the body passes the limit."""


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, counted as they stream in.

    A declared Content-Length over the limit is refused before reading. Otherwise ``receive``
    raises once the count passes the limit; whatever the app then answers (FastAPI turns any
    error while reading the body into a 400) is dropped and the 413 sent in its place.
    """

    def __init__(self, app: ASGIApp, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await too_large(send, limit)
                return
        seen = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal seen, over
            if over:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise BodyTooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to the refused body: replaced by the 413 below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except Exception:
            if not over:
                raise
        if over and not started:
            await too_large(send, limit)


async def too_large(send: Send, limit: int) -> None:
    await send_json(
        send,
        413,
        [
            {
                "loc": ["body"],
                "msg": f"request body is larger than the limit of {limit} bytes",
                "type": "too_large",
            }
        ],
    )

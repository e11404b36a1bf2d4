"""The endpoint's ASGI middleware (serve.guards), driven as plain ASGI callables with a fake
receive/send around a small FastAPI app with a pydantic body (no Ray): the API key is checked
before the body is read, and every body over the limit is a 413, chunked or not."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from serve.guards import OPEN_PATHS, BodyLimit, GuardSettings, RequireKey, route_path

KEY = b"s3cret-key"


class Body(BaseModel):
    rows: list[dict[str, float]]


def _app(settings: GuardSettings) -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: Body) -> dict[str, int]:
        return {"rows": len(body.rows)}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    async def model() -> dict[str, str]:
        return {"model": "m"}

    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(RequireKey, settings=settings)  # outermost, as in serve.app
    return app


def _scope(
    path: str, method: str = "POST", headers: dict[str, str] | None = None, root: str = ""
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root + path,
        "raw_path": (root + path).encode(),
        "root_path": root,
        "query_string": b"",
        "headers": [
            (k.lower().encode(), v.encode())
            for k, v in {"Content-Type": "application/json", **(headers or {})}.items()
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }


class Client:
    """Sends one request's body in ``chunks`` (more_body until the last) and records what the
    app reads and answers."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.reads += 1
        if not self.chunks:
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent
        return int(starts[0]["status"])

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if "body" in m))


def _call(app: Any, scope: dict[str, Any], client: Client) -> Client:
    asyncio.run(app(scope, client.receive, client.send))
    return client


def _json_body(n_rows: int = 1) -> bytes:
    return json.dumps({"rows": [{"a": 1.0}] * n_rows}).encode()


def test_a_request_without_the_key_is_refused_before_its_body_is_read() -> None:
    app = _app(GuardSettings(auth="api_key", api_key=KEY))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        # a body that is not even JSON: a 422 would mean it was parsed before the key check
        client = _call(app, _scope("/predict", headers=headers), Client([b"{not json" * 1000]))
        assert client.status == 401
        assert client.reads == 0, "the body was read before the key was checked"
        assert client.body["detail"][0]["type"] == "unauthorized"
        start = client.sent[0]
        assert (b"www-authenticate", b"Bearer") in start["headers"]


def test_the_right_key_passes_as_bearer_or_x_api_key() -> None:
    app = _app(GuardSettings(auth="api_key", api_key=KEY))
    for headers in ({"Authorization": "Bearer s3cret-key"}, {"X-API-Key": "s3cret-key"}):
        client = _call(app, _scope("/predict", headers=headers), Client([_json_body(3)]))
        assert client.status == 200 and client.body == {"rows": 3}
    client = _call(app, _scope("/model", "GET"), Client([]))
    assert client.status == 401


@pytest.mark.parametrize("root", ["", "/guarded"])
def test_only_the_open_paths_skip_the_key(root: str) -> None:
    app = _app(GuardSettings(auth="api_key", api_key=KEY))
    assert _call(app, _scope("/healthz", "GET", root=root), Client([])).status == 200
    for path in ("/model", "/healthz/", "/healthz/x", "//healthz", "/predict/../healthz", "/"):
        client = _call(app, _scope(path, "GET", root=root), Client([]))
        assert client.status == 401, path
    assert {"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json"} == OPEN_PATHS


def test_route_path_strips_the_route_prefix_only() -> None:
    assert route_path({"path": "/m/healthz", "root_path": "/m"}) == "/healthz"
    assert route_path({"path": "/m", "root_path": "/m"}) == "/"
    assert route_path({"path": "/mx/healthz", "root_path": "/m"}) == "/mx/healthz"
    assert route_path({"path": "/healthz", "root_path": ""}) == "/healthz"


def test_auth_none_is_open_and_a_missing_key_fails_closed() -> None:
    open_app = _app(GuardSettings(auth="none"))
    assert _call(open_app, _scope("/predict"), Client([_json_body()])).status == 200
    # auth api_key but no key loaded (a replica never serves so; still never open)
    closed = _app(GuardSettings(auth="api_key", api_key=None))
    client = _call(closed, _scope("/predict"), Client([_json_body()]))
    assert client.status == 503 and client.reads == 0


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_chunked_body_over_the_limit_is_413_not_400() -> None:
    """Before the fix FastAPI turned the middleware's exception into 400 "There was an error
    parsing the body"."""
    settings = GuardSettings(auth="none", max_body_bytes=2048)
    app = _app(settings)
    data = _json_body(400)  # ~5 KB, no Content-Length header: sent chunked
    client = _call(app, _scope("/predict"), Client(_chunks(data, 512)))
    assert client.status == 413, client.sent
    assert "larger than the limit of 2048 bytes" in client.body["detail"][0]["msg"]
    assert client.reads <= 5, "reading stopped once the limit was passed"


def test_a_declared_length_over_the_limit_is_413_unread() -> None:
    app = _app(GuardSettings(auth="none", max_body_bytes=2048))
    data = _json_body(400)
    client = _call(
        app, _scope("/predict", headers={"Content-Length": str(len(data))}), Client([data])
    )
    assert client.status == 413 and client.reads == 0


def test_bodies_within_the_limit_pass_chunked_or_not() -> None:
    app = _app(GuardSettings(auth="none", max_body_bytes=4096))
    data = _json_body(100)
    assert len(data) < 4096
    for chunks in ([data], _chunks(data, 100)):
        client = _call(app, _scope("/predict"), Client(chunks))
        assert client.status == 200 and client.body == {"rows": 100}


def test_the_endpoint_checks_the_key_first() -> None:
    """serve.app's FastAPI app: RequireKey runs before BodyLimit and the routes."""
    from serve.app import GUARD, api

    classes = [m.cls for m in api.user_middleware]
    assert classes[:2] == [RequireKey, BodyLimit]  # user_middleware[0] is the outermost
    assert all(m.kwargs["settings"] is GUARD for m in api.user_middleware[:2])

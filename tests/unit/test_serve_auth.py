"""serve.auth fails closed (no Ray): the default needs a key, `none` has to be written, a replica
without its key refuses to start naming the variable or file, the key reaches replicas from the
operator's environment (never the spec), and the printed curl examples follow the real mode."""

from __future__ import annotations

import asyncio
import glob
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from pipelines.deploy import (
    auth_header,
    curl_examples,
    deploy_failure,
    replica_runtime_env,
)
from pipelines.spec import SpecError, load_spec, spec_from_dict
from serve.app import ModelServer, ReplicaConfigError, _http_error, read_api_key
from serve.config import ServeArgs, ServeOptions
from tests import bundles

ROOT = Path(__file__).resolve().parents[2]


def _args(**kw: Any) -> ServeArgs:
    return ServeArgs.model_validate({"storage": "/s", "model": "m", **kw})


def test_the_default_is_an_api_key_and_open_has_to_be_written() -> None:
    assert ServeOptions().auth == "api_key" and ServeOptions().api_key_env == "RAYLINE_API_KEY"
    with pytest.raises(ValidationError) as e:
        ServeOptions(api_key_env=None)
    assert "auth is api_key but no key source is set" in str(e.value)
    assert "auth: none" in str(e.value)
    assert ServeOptions(auth="none", api_key_env=None).auth == "none"
    assert _args(auth="none").user_config()["auth"] == "none"  # reaches the replicas
    with pytest.raises(ValidationError):
        ServeOptions(auth="open")  # type: ignore[arg-type]


def test_a_spec_without_a_key_source_is_refused() -> None:
    doc = {
        "name": "t",
        "task": "binary",
        "data": {"source": {"uri": "synthetic:binary", "params": {"rows": 100}}},
        "features": {"numeric": ["num_0"]},
        "models": [{"kind": "xgboost"}],
        "serve": {"api_key_env": None},
    }
    with pytest.raises(SpecError) as e:
        spec_from_dict(doc, source="my.yaml")
    assert "serve" in str(e.value) and "auth: none" in str(e.value)
    assert spec_from_dict({**doc, "serve": {}}, source="my.yaml").serve.auth == "api_key"


def test_the_shipped_configs_say_their_auth_mode() -> None:
    """The local demo specs serve 127.0.0.1 openly on purpose (`make demo` on a fresh machine);
    the operator configs guard the endpoint with a key."""
    specs = sorted(glob.glob(str(ROOT / "pipelines/configs/*.yaml")))
    specs += sorted(glob.glob(str(ROOT / "pipelines/configs/tiny/*.yaml")))
    assert len(specs) >= 10
    for path in specs:
        spec = load_spec(path)
        assert spec.serve.auth == "none" and spec.serve.host == "127.0.0.1", path
        assert "auth: none" in Path(path).read_text(), f"{path}: auth none is written down"
    serve_yaml = yaml.safe_load((ROOT / "serve/configs/ranking-demo.yaml").read_text())
    kuberay = yaml.safe_load((ROOT / "clusters/kuberay/rayservice.yaml").read_text())
    apps = (
        serve_yaml["applications"]
        + yaml.safe_load(kuberay["spec"]["serveConfigV2"])["applications"]
    )
    for app in apps:
        args = ServeArgs.model_validate(app["args"])
        assert args.auth == "api_key" and args.key_source()


def test_a_replica_without_its_key_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAYLINE_API_KEY", raising=False)
    args = _args()
    with pytest.raises(ReplicaConfigError) as e:
        read_api_key(args)
    assert "environment variable RAYLINE_API_KEY" in str(e.value) and "unset or empty" in str(
        e.value
    )
    monkeypatch.setenv("RAYLINE_API_KEY", "  ")
    with pytest.raises(ReplicaConfigError):
        read_api_key(args)
    monkeypatch.setenv("RAYLINE_API_KEY", "k1\n")
    assert read_api_key(args) == b"k1"
    missing = tmp_path / "nope"
    with pytest.raises(ReplicaConfigError) as e:
        read_api_key(_args(api_key_file=str(missing)))
    assert f"API key file {missing}" in str(e.value) and "cannot be read" in str(e.value)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ReplicaConfigError) as e:
        read_api_key(_args(api_key_file=str(empty)))
    assert f"API key file {empty}" in str(e.value) and "is empty" in str(e.value)
    good = tmp_path / "key"
    good.write_text("from-file\n")
    assert read_api_key(_args(api_key_file=str(good))) == b"from-file"  # the file wins
    assert read_api_key(_args(auth="none")) is None


def test_the_replica_checks_its_key_before_loading_a_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ModelServer's constructor (via reconfigure) raises, so Serve marks the replica failed;
    the storage here does not exist: the key is checked before anything is loaded."""
    monkeypatch.delenv("RAYLINE_API_KEY", raising=False)
    cls = ModelServer.func_or_class
    config = _args(storage="/does/not/exist").user_config()
    with pytest.raises(ReplicaConfigError) as e:
        cls.reconfigure(object(), config)
    assert "RAYLINE_API_KEY" in str(e.value)


def test_the_key_reaches_replicas_from_the_operators_environment() -> None:
    base = {"working_dir": "gcs://job.zip", "env_vars": {"RAYLINE_STORAGE": "/s"}}
    env, line = replica_runtime_env(_args(), base, {"RAYLINE_API_KEY": "the-key-42"})
    assert env == {
        "working_dir": "gcs://job.zip",
        "env_vars": {"RAYLINE_STORAGE": "/s", "RAYLINE_API_KEY": "the-key-42"},
    }
    assert "passed to the replicas" in line and "the-key-42" not in line
    assert base["env_vars"] == {"RAYLINE_STORAGE": "/s"}  # not modified
    env, line = replica_runtime_env(_args(), base, {})
    assert env is None and "RAYLINE_API_KEY is not set here" in line
    env, line = replica_runtime_env(_args(api_key_file="/k"), base, {"RAYLINE_API_KEY": "k"})
    assert env is None and "/k" in line  # each replica reads the file
    env, line = replica_runtime_env(_args(auth="none"), base, {"RAYLINE_API_KEY": "k"})
    assert env is None and "no API key" in line


def test_a_refused_start_is_reported_with_the_replicas_message() -> None:
    serve_said = RuntimeError(
        "Deploying application m failed: Failed to update the deployments ['ModelServer'].\n"
        "The deployment failed to start 3 times in a row. ... Traceback (most recent call last):\n"
        '  File "serve/app.py", line 99, in reconfigure\n'
        "serve.app.ReplicaConfigError: serve.auth is api_key but the environment variable "
        "RAYLINE_API_KEY (serve.api_key_env) is unset or empty in the replica: export it\n"
    )
    msg = deploy_failure("m", serve_said)
    assert msg.startswith("the replicas of m refused to start: serve.auth is api_key")
    assert "Traceback" not in msg
    assert deploy_failure("m", RuntimeError("other")) == "deploying m failed: other"


def test_curl_examples_follow_the_replicas_auth_mode(tmp_path: Path) -> None:
    frame = bundles.tiny_frame()
    path = bundles.write(tmp_path / "b", bundles.xgboost_contents(frame))
    open_ = curl_examples(_args(auth="none"), path)
    assert "Authorization" not in open_ and "/predict" in open_
    keyed = curl_examples(_args(), path)
    assert keyed.count('-H "Authorization: Bearer $RAYLINE_API_KEY"') == 2  # /predict, /model
    assert "/healthz\n" in keyed.split("Bearer")[0]  # /healthz needs no key
    assert '$(cat /etc/k)"' in auth_header(_args(api_key_file="/etc/k"))
    assert "Authorization" not in curl_examples(_args(), path, auth="none")  # as /healthz said


class Body(BaseModel):
    rows: list[dict[str, float | int]]


def _app_with_the_endpoints_handlers() -> FastAPI:
    app = FastAPI()
    app.add_exception_handler(HTTPException, _http_error)  # as serve.app registers it

    @app.post("/predict")
    async def predict(body: Body) -> dict[str, int]:
        return {"rows": len(body.rows)}

    return app


def test_a_number_too_long_for_python_or_bad_utf8_is_422_not_400() -> None:
    app = _app_with_the_endpoints_handlers()

    async def post(content: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                "/predict", content=content, headers={"content-type": "application/json"}
            )

    digits = "9" * 5000  # above Python's 4300-digit int limit: json.loads raises ValueError
    r = asyncio.run(post(b'{"rows": [{"a": ' + digits.encode() + b"}]}"))
    assert r.status_code == 422, r.text
    assert "4300" in r.text and len(r.text) < 500
    r = asyncio.run(post(b'{"rows": [{"a\xff": 1}]}'))
    assert r.status_code == 422, r.text
    r = asyncio.run(post(b'{"rows": [{"a": 1}]}'))
    assert r.status_code == 200

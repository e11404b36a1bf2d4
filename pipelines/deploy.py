"""Deploy a registered model version as a Ray Serve application (the CLI's edge into Serve)."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from components.bundle import Storage
from components.features import FeatureTransform
from components.predictor import Predictor
from components.tasks import task_info
from pipelines.cluster import HAPROXY_ENV, cluster_ingress, ingress_env
from pipelines.errors import PipelineError
from serve.config import ServeArgs

INGRESS_NAMES = {
    "proxy": "through Serve's HTTP proxy",
    "haproxy": "through HAProxy, direct ingress",
}


def endpoint(args: ServeArgs) -> str:
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    return f"http://{host}:{args.port}{args.prefix()}"


class DeployError(PipelineError):
    """The application could not be deployed (e.g. its replicas refused to start)."""


def replica_runtime_env(
    args: ServeArgs, base: dict[str, Any] | None = None, environ: Any = os.environ
) -> tuple[dict[str, Any] | None, str]:
    """The replicas' runtime_env and a line saying where their API key comes from.

    With ``auth: api_key`` and ``api_key_env`` (no key file), the variable's value in this
    process's environment (the operator's, at deploy time) goes to the replicas as a runtime_env
    env var, merged into ``base`` (the job's runtime_env, which a deployment's own would
    otherwise replace). The key is never written to the spec, the registry or the storage.
    """
    where = f"{args.host}:{args.port}"
    if args.auth == "none":
        return None, (
            f"no API key (serve.auth: none): anyone who can reach {where} can call every endpoint"
        )
    if args.api_key_file:
        return None, f"API key read by each replica from {args.api_key_file} on its node"
    name = args.api_key_env
    assert name  # ServeOptions refuses auth api_key without a key source
    value = environ.get(name, "").strip()
    if not value:
        return None, (
            f"API key: {name} is not set here; each replica must find it in its node's "
            "environment, or it refuses to start"
        )
    env = dict(base or {})
    env["env_vars"] = {**dict(env.get("env_vars") or {}), name: value}
    return env, f"API key from ${name} of this environment, passed to the replicas"


def _deployment_messages(args: ServeArgs) -> str:
    """Serve's status messages for the application's deployments (a replica's constructor error
    is there, not in the application's message)."""
    from ray import serve

    try:
        app = serve.status().applications.get(args.app_name())
    except Exception:  # the status is only a better message
        return ""
    if app is None:
        return ""
    return "\n".join(d.message for d in app.deployments.values() if d.message)


def deploy_failure(app: str, error: Exception, details: str = "") -> str:
    """What to tell the operator when Serve reports the application failed: the replica's own
    ReplicaConfigError message when it refused to start (found in Serve's ``error`` or the
    deployments' status ``details``), else Serve's message."""
    text = f"{error}\n{details}"
    found = re.search(r"ReplicaConfigError: (.+)", text)
    if found:
        return f"the replicas of {app} refused to start: {found.group(1).strip()}"
    return f"deploying {app} failed: {text.strip()[-3000:]}"


def deploy(
    args: ServeArgs, out: Callable[[str], None] = print, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Start Serve's HTTP proxy if needed, run (or update) the app, wait until /healthz answers.

    Raises DeployError when Serve reports the application failed to deploy (a replica without
    its API key refuses to start: the message says which variable or file is missing)."""
    import ray
    from ray import serve

    from serve.app import application

    args = args.pinned()
    serve.start(http_options={"host": args.host, "port": args.port})
    started = time.time()
    ingress = cluster_ingress()
    out(
        f"    deploying {args.model} v{args.version} at {endpoint(args)} "
        f"({args.min_replicas}-{args.max_replicas} replicas, {INGRESS_NAMES[ingress]})"
    )
    if args.canary_version is not None:
        out(
            f"    canary v{args.canary_version} answers {args.canary_share:.1%} of requests "
            f"(by the {args.canary_key_header} header, else the request id); production "
            f"v{args.version} is scored beside it for the log"
        )
    if args.shadow_version is not None:
        out(
            f"    shadow v{args.shadow_version} scores production's requests for the log "
            f"(never answers; {args.shadow_timeout_s:g}s at most per request)"
        )
    if ingress != args.ingress:
        out(
            f"    note: serve.ingress is {args.ingress}, but this cluster's Serve uses {ingress}: "
            f"the ingress is fixed when the cluster's nodes start (set {HAPROXY_ENV}="
            f"{ingress_env(args.ingress)[HAPROXY_ENV]} in their environment; see clusters/README.md)"
        )
    runtime_env, key_line = replica_runtime_env(args, dict(ray.get_runtime_context().runtime_env))
    out(f"    {key_line}")
    try:
        serve.run(application(args, runtime_env), name=args.app_name(), route_prefix=args.prefix())
    except RuntimeError as e:  # Serve: "Deploying application ... failed: ..."
        raise DeployError(deploy_failure(args.app_name(), e, _deployment_messages(args))) from None
    health = wait_healthy(endpoint(args), args.version, timeout_s)
    remember(args)
    out(f"    serving after {time.time() - started:.1f}s")
    return {
        "url": endpoint(args),
        "model": args.model,
        "version": args.version,
        "shadow_version": args.shadow_version,
        "canary_version": args.canary_version,
        "ingress": ingress,
        "auth": health.get("auth", args.auth),  # as the replica reports it
    }


SERVING_DIR = "serving"


def remember(args: ServeArgs) -> None:
    """Record the arguments of a live deployment, so promote/rollback can switch it in place."""
    doc = json.dumps(args.model_dump(mode="json"), indent=1)
    Storage(args.storage).child(SERVING_DIR).write_text(f"{args.model}.json", doc)


def recalled(storage: str, model: str) -> ServeArgs | None:
    """The arguments ``model`` was last deployed with from this storage, if any."""
    try:
        doc = Storage(storage).child(SERVING_DIR).read_text(f"{model}.json")
    except FileNotFoundError:
        return None
    return ServeArgs.model_validate_json(doc)


def switch_running(
    storage: str, model: str, version: int, out: Callable[[str], None] = print
) -> bool:
    """Move a running deployment of ``model`` (on the connected cluster) to ``version``.

    False when none runs. The replicas are replaced one by one (Serve's rolling update), so
    requests keep being answered during the switch.
    """
    from ray import serve

    args = recalled(storage, model)
    if args is None:
        return False
    try:
        apps = serve.status().applications
    except Exception:  # Serve not started on this cluster
        return False
    if args.app_name() not in apps:
        return False
    deploy(without_version(args, version).model_copy(update={"version": version}), out=out)
    return True


def without_version(args: ServeArgs, version: int) -> ServeArgs:
    """``args`` with a shadow or canary of ``version`` taken off (it became production)."""
    update: dict[str, Any] = {}
    if args.shadow_version == version:
        update |= {"shadow": None, "shadow_version": None}
    if args.canary_version == version:
        update |= {"canary": None, "canary_version": None}
    return args.model_copy(update=update) if update else args


def canary_of(storage: str, model: str) -> int | None:
    """The canary version ``model`` was last deployed with from this storage (None: none)."""
    args = recalled(storage, model)
    return args.canary_version if args is not None else None


def end_canary(storage: str, model: str) -> ServeArgs | None:
    """Take the canary off the recorded deployment (what promote/rollback redeploy); the new
    args, or None when there was no canary."""
    args = recalled(storage, model)
    if args is None or args.canary_version is None:
        return None
    args = args.model_copy(update={"canary": None, "canary_version": None})
    remember(args)
    return args


def wait_healthy(url: str, version: int | None, timeout_s: float) -> dict[str, Any]:
    """Poll GET /healthz until it answers 200 with the expected version; its body."""
    deadline = time.time() + timeout_s
    last = ""
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
                body = json.loads(resp.read())
                if version is None or body.get("version") == version:
                    return dict(body)
                last = f"serving version {body.get('version')}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = str(e)
        time.sleep(0.5)
    hint = ""
    if "refused" in last:
        hint = (
            "; if Serve was already running on this cluster with other http_options, it kept its "
            "host/port: use the same serve.port, or `serve shutdown` first"
        )
    raise TimeoutError(f"{url}/healthz did not answer 200 within {timeout_s:.0f}s ({last}){hint}")


def example_row(transform: FeatureTransform) -> dict[str, Any]:
    """A plausible request row: numeric medians and each categorical's most frequent value."""
    row: dict[str, Any] = {p.name: round(p.median, 4) for p in transform.numeric}
    for c in transform.categorical:
        row[c.name] = c.vocabulary[0] if c.vocabulary else "some-value"
    return row


def auth_header(args: ServeArgs, auth: str | None = None) -> str:
    """The curl option that sends the key, for the replica's auth mode (``auth``, as /healthz
    reports it; default: the args'); empty when the endpoint needs no key."""
    if (auth or args.auth) == "none":
        return ""
    if args.api_key_file:
        return f' -H "Authorization: Bearer $(cat {args.api_key_file})"'
    return f' -H "Authorization: Bearer ${args.api_key_env}"'


def curl_examples(args: ServeArgs, bundle_path: str, auth: str | None = None) -> str:
    """Ready-to-run curl commands for the deployed model, with the key header when the replica
    needs one (``auth``: the mode the replica reports; default: the args')."""
    predictor = Predictor.load(bundle_path)
    row = example_row(predictor.transform)
    url = endpoint(args)
    key = auth_header(args, auth)
    lines = [f"  curl -s {url}/healthz"]
    if task_info(predictor.task).grouped:  # served at /rank
        other = {k: (v + 1 if isinstance(v, float) else v) for k, v in row.items()}
        body = json.dumps({"candidates": [row, other], "top_k": 2})
        lines.append(f"  curl -s{key} -H 'Content-Type: application/json' {url}/rank -d '{body}'")
    else:
        body = json.dumps({"rows": [row]})
        lines.append(
            f"  curl -s{key} -H 'Content-Type: application/json' {url}/predict -d '{body}'"
        )
    lines.append(f"  curl -s{key} {url}/model")
    lines.append(f"  open {url}/docs for the OpenAPI page")
    return "\n".join(lines)

"""Every Ray node that clusters/ starts runs with token authentication, from one token per cluster.

Ray 2.60's ``ray start`` turns token auth on only when ``RAY_AUTH_MODE=token`` is set or a token
file already exists (only ``ray.init()`` turns it on by default): a launcher file whose ``ray
start`` lines set nothing leaves the GCS port open to the VPC. The first test pins that behaviour
of the installed Ray (in a fresh interpreter with an empty HOME; nothing is started), the others
check every ``ray start`` in clusters/: launcher YAML command strings, KubeRay pods, and the
commands shown in clusters/README.md.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ROOT / "clusters"
LAUNCHERS = sorted(CLUSTERS.glob("*.yaml"))
KUBERAY = sorted((CLUSTERS / "kuberay").glob("*.yaml"))
RAY_START = re.compile(r"\bray start\b")
SECRET_KEY = "auth_token"  # KubeRay's key for the token in an authOptions secret


def _ray_auth_behaviour(tmp_path: Path) -> dict:
    """What the installed Ray does at `ray start` time, in a fresh interpreter (empty HOME)."""
    token = tmp_path / "tok"
    token.write_text("0123abcd\n")
    (tmp_path / "home").mkdir()
    code = f"""
import json, os
from ray._private.authentication.authentication_token_setup import (
    ensure_token_if_auth_enabled, maybe_enable_token_auth_if_token_available)
from ray._raylet import AuthenticationTokenLoader
out = {{}}
# `ray start --head` calls this first: no RAY_AUTH_MODE and no token -> auth stays off
out["head_auth_without_mode_or_token"] = maybe_enable_token_auth_if_token_available(
    warn_if_disabled=False)
loader = AuthenticationTokenLoader.instance()
os.environ["RAY_AUTH_TOKEN_PATH"] = {str(token)!r}
loader.reset_cache()
out["token_from_path"] = loader.get_raw_token(ignore_auth_mode=True)
os.environ["RAY_AUTH_TOKEN_PATH"] = "~/tok"
loader.reset_cache()
try:
    loader.has_token(ignore_auth_mode=True)
    out["tilde_expanded"] = True
except Exception:
    out["tilde_expanded"] = False
print(json.dumps(out))
"""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"
    }
    env["HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    # a node joining with RAY_AUTH_MODE=token but no token refuses to start (fails closed)
    refuse = (
        "from ray._private.authentication.authentication_token_setup import "
        "ensure_token_if_auth_enabled as e; e(None, create_token_if_missing=False)"
    )
    joined = subprocess.run(
        [sys.executable, "-c", refuse],
        env={**env, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    result["join_without_token_refused"] = joined.returncode != 0 and (
        "no authentication token" in joined.stderr
    )
    result["home_untouched"] = not list((tmp_path / "home").iterdir())
    return result


def test_ray_start_needs_auth_mode_and_an_absolute_token_path(tmp_path: Path) -> None:
    got = _ray_auth_behaviour(tmp_path)
    assert got == {
        "head_auth_without_mode_or_token": False,  # why every `ray start` must set RAY_AUTH_MODE
        "token_from_path": "0123abcd",  # RAY_AUTH_TOKEN_PATH is read, whitespace stripped
        "tilde_expanded": False,  # Ray does not expand ~ in it: the files use absolute paths
        "join_without_token_refused": True,
        "home_untouched": True,
    }


def _env_before_ray_start(command: str) -> dict[str, str]:
    """The VAR=value words in front of `ray start` in a shell command line."""
    found = RAY_START.search(command)
    assert found, command
    words = shlex.split(command[: found.start()])
    return dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w))


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _node_path(path: str) -> str:
    """A path as the node's shell sees it ($HOME and ~ both the node user's home)."""
    return re.sub(r"^(\$HOME|\$\{HOME\}|~)(?=/)", "~", path)


def test_no_file_in_clusters_turns_auth_off() -> None:
    for path in sorted(CLUSTERS.rglob("*")):
        if path.is_file():
            text = path.read_text()
            assert "RAY_AUTH_MODE=disabled" not in text, path
            assert not re.search(r"RAY_AUTH_MODE\W+value\W+disabled", text), path


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_every_launcher_ray_start_runs_with_the_clusters_token(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    starts = [c for c in _strings(doc) if RAY_START.search(c)]
    head = [c for c in doc["head_start_ray_commands"] if RAY_START.search(c)]
    workers = [c for c in doc["worker_start_ray_commands"] if RAY_START.search(c)]
    assert head and workers and set(head + workers) == set(starts), "ray start only where expected"
    tokens = set()
    for command in starts:
        env = _env_before_ray_start(command)
        assert env.get("RAY_AUTH_MODE") == "token", command
        token = env.get("RAY_AUTH_TOKEN_PATH")
        assert token, f"no token file for: {command}"
        assert token.startswith(("/", "$HOME/")), f"Ray reads this path verbatim: {token}"
        tokens.add(_node_path(token))
    assert len(tokens) == 1, f"one token for every node of the cluster: {tokens}"
    token = tokens.pop()
    # the token reaches every node: a file_mounts folder synced from outside the checkout
    mounts = {_node_path(remote): local for remote, local in doc["file_mounts"].items()}
    folder = str(Path(token).parent)
    assert folder in mounts, f"{folder} is not in file_mounts: {sorted(mounts)}"
    local = mounts[folder]
    assert local.startswith("~/"), f"the token stays out of the checkout that is synced: {local}"
    excluded = [p for p in doc.get("rsync_exclude", []) if fnmatch.fnmatch(Path(token).name, p)]
    assert not excluded, f"rsync_exclude would drop the token: {excluded}"
    # the same path in the file's header command that makes the token
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert f"openssl rand -hex 32 > {local}/{Path(token).name}" in header
    # a node whose token did not arrive fails its setup instead of starting without auth
    guards = [
        c
        for c in doc["setup_commands"]
        if c.startswith("test -s ") and _node_path(c.split()[2]) == token and "exit 1" in c
    ]
    assert guards, "setup_commands check that the token file is there"
    # shells on the nodes (ray attach / exec: ray status, ray job) get the same settings
    shells = [c for c in doc["setup_commands"] if "RAY_AUTH_MODE=token" in c and ".bashrc" in c]
    assert shells and any(
        _node_path(c.split("RAY_AUTH_TOKEN_PATH=")[1].split("'")[0]) == token for c in shells
    )


def _cluster_spec(doc: dict) -> dict:
    spec = doc["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def _containers(doc: dict) -> list[tuple[str, dict]]:
    cluster = _cluster_spec(doc)
    groups = [("head", cluster["headGroupSpec"])] + [
        (g["groupName"], g) for g in cluster["workerGroupSpecs"]
    ]
    found = [(name, c) for name, g in groups for c in g["template"]["spec"]["containers"]]
    submitter = doc["spec"].get("submitterPodTemplate")
    if submitter:
        found += [("submitter", c) for c in submitter["spec"]["containers"]]
    return found


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_every_kuberay_pod_runs_with_the_secrets_token(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    cluster = _cluster_spec(doc)
    auth = cluster.get("authOptions")
    assert auth == {"mode": "token", "secretName": "rayline-ray-token"}, (
        "KubeRay runs `ray start` in every pod: authOptions turns token auth on for all of them "
        "(the autoscaler included) and lets the operator call the dashboard"
    )
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert not [k for k in group["rayStartParams"] if "auth" in k.lower()], group
    for name, container in _containers(doc):
        env = {e["name"]: e for e in container.get("env", [])}
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", (path.name, name)
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": auth["secretName"], "key": SECRET_KEY}, (path.name, name)
        assert "RAY_AUTH_TOKEN_PATH" not in env  # RAY_AUTH_TOKEN wins anyway: one source only
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert (
        f"kubectl create secret generic {auth['secretName']} --from-literal={SECRET_KEY}=" in header
    )


def test_ray_start_commands_in_the_readme_use_token_auth() -> None:
    text = (CLUSTERS / "README.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    lines = [line for b in blocks for line in b.splitlines() if RAY_START.search(line)]
    assert lines, "the README shows how the nodes start"
    for line in lines:
        command = line.strip().removeprefix("- ")
        assert _env_before_ray_start(command).get("RAY_AUTH_MODE") == "token", line


def test_the_cluster_tier_brings_its_own_token_and_keeps_off_the_users_ray_dir(
    tmp_path: Path,
) -> None:
    """tests/cluster starts its nodes with a token file of its own (it used to need the
    ~/.ray/auth_token an earlier tier's ray.init() had left). Checked here without starting Ray;
    the tier itself: `HOME=$(mktemp -d) .venv/bin/pytest -m cluster`."""
    import shutil
    import stat

    from tests.cluster.test_multinode import LocalCluster

    cluster = LocalCluster(tmp_path)
    try:
        env = cluster.env
        token = Path(env["RAY_AUTH_TOKEN_PATH"])
        assert env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" not in env
        assert tmp_path in token.parents and len(token.read_text()) == 64
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert Path(env["HOME"]) == cluster.home and tmp_path in cluster.home.parents
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"
        from ray._raylet import AuthenticationTokenLoader  # (importing Ray sets env vars)

        keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
        before = {k: os.environ.get(k) for k in (*keys, "RAY_USAGE_STATS_ENABLED")}
        with cluster.client_env():
            loader = AuthenticationTokenLoader.instance()
            assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)
            assert loader.get_raw_token(ignore_auth_mode=True) == token.read_text()
        assert {k: os.environ.get(k) for k in before} == before
    finally:
        shutil.rmtree(cluster.temp, ignore_errors=True)

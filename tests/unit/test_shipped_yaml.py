"""Every YAML file shipped in the repository is loaded and validated, found by a recursive glob."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.spec import load_spec
from serve.config import ServeArgs

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", "storage", "node_modules", ".github"}
ALL_YAML = sorted(
    p
    for p in ROOT.rglob("*.y*ml")
    if p.suffix in (".yaml", ".yml") and not SKIP & set(p.relative_to(ROOT).parts)
)


def test_yaml_files_are_found() -> None:
    assert any("pipelines" in p.parts for p in ALL_YAML) and any(
        "serve" in p.parts for p in ALL_YAML
    )


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_yaml_validates(path: Path) -> None:
    rel = path.relative_to(ROOT).parts
    if rel[0] == "pipelines":
        load_spec(path)
    elif rel[0] == "serve":
        doc = yaml.safe_load(path.read_text())
        assert doc["http_options"]["host"] == "127.0.0.1", (
            "bind to localhost unless configured otherwise"
        )
        for app in doc["applications"]:
            assert app["import_path"] == "serve.app:build_app"
            args = ServeArgs.model_validate(app["args"])
            assert app["route_prefix"] == args.prefix() or args.route_prefix is None
    elif rel[:2] == ("clusters", "kuberay"):
        _check_kuberay(yaml.safe_load(path.read_text()))
    elif rel[0] == "clusters":
        _check_launcher(yaml.safe_load(path.read_text()))
    else:
        pytest.fail(f"no validator for {path}: add one when adding a new kind of YAML")


def _check_launcher(doc: dict) -> None:
    """Ray's own schema for cluster-launcher files, plus what rayline relies on."""
    import jsonschema
    import ray.autoscaler

    schema = json.loads(Path(ray.autoscaler.__file__).with_name("ray-schema.json").read_text())
    errors = [
        f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
    ]
    assert not errors, errors
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    starts = " ".join(doc["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts, "the dashboard must not listen publicly"
    assert any("pip install" in c and "rayline" in c for c in doc["setup_commands"])
    assert any("RAYLINE_STORAGE=" in c for c in doc["setup_commands"]), "shared storage"
    if doc["provider"]["type"] != "local":
        labels = {t.get("labels", {}).get("node-type") for t in types.values()}
        assert {"cpu", "gpu"} <= labels, "CPU and GPU worker types labelled node-type"
        assert types[doc["head_node_type"]]["resources"].get("CPU") == 0
        for name, t in types.items():
            if name != doc["head_node_type"]:
                assert t["max_workers"] >= t["min_workers"] >= 0
    else:
        assert "node-type=" in " ".join(doc["worker_start_ray_commands"])


def _pods(doc: dict) -> tuple[dict, list[dict]]:
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
    return cluster["headGroupSpec"], cluster["workerGroupSpecs"]


def _check_kuberay(doc: dict) -> None:
    """No CRD schema ships with Python: check what the pipeline needs from each manifest."""
    import shlex

    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in (
        "RayCluster",
        "RayJob",
        "RayService",
    )
    head, groups = _pods(doc)
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", "the dashboard is not exposed"
    assert head["rayStartParams"]["num-cpus"] == "0"
    by_type = {g["rayStartParams"]["labels"].split("=", 1)[1]: g for g in groups}
    assert {"cpu", "gpu"} <= set(by_type)
    gpu = by_type["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"] == "1"
    for group in [head, *groups]:
        c = group["template"]["spec"]["containers"][0]
        assert c["image"] and c["resources"]["limits"]["cpu"]
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"], "token from a secret"
        assert env["RAYLINE_STORAGE"]["value"].startswith(("s3://", "gs://", "/"))
    for g in groups:
        assert g["maxReplicas"] >= g["minReplicas"] >= 0
    if doc["kind"] == "RayJob":
        argv = shlex.split(doc["spec"]["entrypoint"])
        assert argv[:2] == ["rayline", "run"]
        spec = load_spec(ROOT / argv[2], argv[3:])  # the spec and overrides validate
        assert spec.placement.data == {"node-type": "cpu"}
    if doc["kind"] == "RayService":
        config = yaml.safe_load(doc["spec"]["serveConfigV2"])
        for app in config["applications"]:
            assert app["import_path"] == "serve.app:build_app"
            args = ServeArgs.model_validate(app["args"])  # what build_app accepts
            assert args.api_key_env or args.api_key_file, "an API key guards the endpoint"
            assert app["route_prefix"] == args.prefix()

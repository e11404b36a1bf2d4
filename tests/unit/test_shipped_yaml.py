"""Every YAML file shipped in the repository is loaded and validated, found by a recursive glob."""

from __future__ import annotations

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
    else:
        pytest.fail(f"no validator for {path}: add one when adding a new kind of YAML")

"""The ML logic in components/ never imports Ray; only components/steps (the adapters) may."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE = sorted(p for p in (ROOT / "components").glob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_pure_modules_exist() -> None:
    names = {p.stem for p in PURE}
    assert {"metrics", "features", "predictor", "generators", "validation", "splits"} <= names


def test_no_ray_import_in_pure_modules() -> None:
    offenders = [p.name for p in PURE if "ray" in _imports(p)]
    assert offenders == []


def test_importing_pure_modules_loads_no_ray_and_does_nothing() -> None:
    mods = ", ".join(f"components.{p.stem}" for p in PURE if p.stem != "__init__")
    code = (
        f"import sys, os; before = set(os.listdir('.')); import {mods}; "
        "assert 'ray' not in sys.modules, 'ray was imported'; "
        "assert set(os.listdir('.')) == before, 'import created files'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

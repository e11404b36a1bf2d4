"""What importing a module does, which the import contracts cannot see.

Which package may import which (and that in components only components.steps imports Ray) is
checked statically by import-linter: the contracts in pyproject.toml, run by `make lint`
(`lint-imports`). These tests import the modules for real, in a fresh interpreter: the pure
modules load no Ray at all (not even through a dynamic import), and no module of the three
packages starts Ray or writes a file when imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE = sorted(p for p in (ROOT / "components").glob("*.py"))


def _modules(package: str) -> list[str]:
    """Every importable module of ``package`` (a folder under ROOT), but ``__main__``s."""
    base = ROOT / package
    names = []
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":  # runs the CLI when imported
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _import_in_a_fresh_interpreter(modules: list[str], check: str, cwd: Path) -> None:
    code = f"import sys, os; before = set(os.listdir('.')); import {', '.join(modules)}; {check}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd, env=env)


def test_pure_modules_exist() -> None:
    names = {p.stem for p in PURE}
    assert {"metrics", "features", "predictor", "generators", "validation", "splits"} <= names


def test_importing_pure_modules_loads_no_ray_and_does_nothing(tmp_path: Path) -> None:
    mods = [f"components.{p.stem}" for p in PURE if p.stem != "__init__"]
    _import_in_a_fresh_interpreter(
        mods,
        "assert 'ray' not in sys.modules, 'ray was imported'; "
        "assert set(os.listdir('.')) == before, 'import created files'",
        tmp_path,
    )


def test_importing_any_module_starts_no_ray_and_writes_nothing(tmp_path: Path) -> None:
    mods = [m for pkg in ("components", "pipelines", "serve") for m in _modules(pkg)]
    assert "components.steps.train_common" in mods and "serve.app" in mods
    _import_in_a_fresh_interpreter(
        mods,
        "import ray; assert not ray.is_initialized(), 'an import started Ray'; "
        "assert set(os.listdir('.')) == before, 'import created files'",
        tmp_path,
    )

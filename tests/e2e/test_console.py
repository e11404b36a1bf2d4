"""What `rayline run` prints: rayline's own lines on the console, Ray's in the run's ray.log.

The CLI runs in a subprocess (as a user runs it) joined to the session's Ray with --address, so
its descriptors are pipes of its own, which the in-process CLI tests cannot show.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT

pytestmark = pytest.mark.usefixtures("ray_session")

TINY = CONFIGS / "tiny"
STEPS = ["ingest", "split", "features", "train", "evaluate", "register"]


def _rayline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=600,
    )


def _gcs() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def test_a_run_shows_its_own_lines_and_logs_ray_s(tmp_path: Path) -> None:
    """A tiny run with one Ray Train worker: every step's start and end line, which Ray it
    joined and where Ray's output went; no worker line (``pid=``) and no traceback on the
    console; the log file holds what Ray printed."""
    address = _gcs()
    res = _rayline(
        "run", str(TINY / "ranking.yaml"), "--storage", str(tmp_path), "--address", address,
        "models.0.scaling.num_workers=1", "models.0.scaling.resources_per_worker.CPU=0.5",
    )  # fmt: skip
    console = res.stdout + res.stderr
    assert res.returncode == 0, console
    assert "pid=" not in console and "Traceback" not in console, console
    assert res.stderr == "", res.stderr  # nothing went wrong, so nothing on stderr
    lines = res.stdout.splitlines()
    run_dir = next((tmp_path / "runs" / "tiny-ranking").iterdir())
    assert lines[0] == f"rayline run tiny-ranking (ranking), run {run_dir.name}"
    assert lines[1] == f"  run dir: {run_dir}"
    assert lines[2].startswith(f"  Ray: local existing, at {address} from --address (4 CPU")
    log = run_dir / "ray.log"
    assert lines[3] == f"  Ray's own output: {log} (--verbose shows it here)"
    assert lines[4] == "[1/6] ingest: reading and validating with Ray Data"
    steps = [ln for ln in lines if re.match(r"\[\d/6\] ", ln)]
    assert [ln.split(":")[0] for ln in steps] == [
        f"[{i}/6] {step}" for i, step in enumerate(STEPS, 1) for _ in ("start", "done")
    ]
    assert all(re.fullmatch(r"\[\d/6\] \w+: done in \d+\.\ds", ln) for ln in steps[1::2])
    assert any(ln.startswith(f"run {run_dir.name}: succeeded in ") for ln in lines)
    assert not [ln for ln in lines if re.search(r"\b(INFO|WARNING|ERROR)\b|core_worker", ln)]
    text = log.read_text()
    assert text.startswith(f"==== rayline run {TINY / 'ranking.yaml'}: ")
    assert f"Connecting to existing Ray cluster at address: {address}" in text
    assert "(RayTrainWorker pid=" in text and "(TrainController pid=" in text
    assert "\x1b[36m(" not in text  # worker prefixes without terminal colour codes


def test_verbose_shows_ray_s_output_on_the_console(tmp_path: Path) -> None:
    """--verbose writes no log and leaves Ray's lines on the console. A spec that does not fit
    the cluster stops right after connecting, which is all this needs."""
    address = _gcs()
    unfit = ["models.0.scaling.num_workers=1", "models.0.scaling.use_gpu=true"]
    base = ["run", str(TINY / "ranking.yaml"), "--storage", str(tmp_path), "--address", address]
    res = _rayline(*base, "--verbose", *unfit)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"Connecting to existing Ray cluster at address: {address}" in res.stderr
    assert "rayline: the spec does not fit this cluster" in res.stderr
    assert not list(tmp_path.glob("runs/*/*/ray.log"))
    # without --verbose the same line is in the log, and the console has rayline's only
    res = _rayline(*base, *unfit)
    assert res.returncode == 2
    assert "Connecting to existing" not in res.stdout + res.stderr
    assert res.stderr.startswith("rayline: the spec does not fit this cluster")
    (log,) = tmp_path.glob("runs/*/*/ray.log")
    assert f"Connecting to existing Ray cluster at address: {address}" in log.read_text()

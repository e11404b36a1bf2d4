"""Ray's output to a log file, rayline's lines to the terminal (pipelines.ray_logs), without Ray.

Each case runs in a fresh Python process whose stdout and stderr are pipes, as a terminal would
be: pytest's own capture replaces sys.stdout in this process, so only a child shows what a
command's descriptors really do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from components.registry import RegistryWarning
from pipelines.ray_logs import is_own_warning
from tests.conftest import ROOT

# What Ray prints from a driver, one of each kind: a Python logger whose handler was made before
# the capture (Ray sets its handlers up at import), the worker-log thread (print to sys.stdout /
# sys.stderr at each call), the C++ core worker (straight to descriptor 2), and a child process
# that inherited the descriptors (a raylet started by ray.init).
RAY_LIKE = """
import logging, os, subprocess, sys, threading, warnings
from components import console
from pipelines.ray_logs import capture

log = logging.getLogger("ray-like")
log.addHandler(logging.StreamHandler(sys.stderr))
log.propagate = False

def worker_lines():
    print("(RayTrainWorker pid=123) Reporting training result 1", flush=True)
    print("(autoscaler +1s) Tip: use `ray status`", file=sys.stderr, flush=True)

with capture(LOG, "rayline run tiny.yaml") as con:
    con.say("[1/6] ingest: reading")
    log.warning("INFO worker.py:2000 -- Started a local Ray instance.")
    t = threading.Thread(target=worker_lines); t.start(); t.join()
    os.write(2, b"[2026-01-01 00:00:00,000 E 1 2] core_worker.cc:2170: Actor has constructor arguments\\n")
    os.write(1, b"raw descriptor 1\\n")
    subprocess.run(["sh", "-c", "echo child stdout; echo child stderr >&2"], check=True)
    warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
    console.say("      trial 1 abc_00000: finished at round 30")
    con.error("rayline: a rayline error line")
    con.say("[1/6] ingest: done in 0.1s")
print("after the block: stdout is the terminal again", flush=True)
os.write(2, b"after the block: descriptor 2 too\\n")
"""


def _child(code: str, log: Path | None) -> subprocess.CompletedProcess[str]:
    prelude = f"LOG = {str(log) if log else None!r}\n"
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_ray_output_goes_to_the_log_and_rayline_lines_to_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "run" / "ray.log"  # the folder is made on the way in
    res = _child(RAY_LIKE, log)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "[1/6] ingest: reading",
        "      trial 1 abc_00000: finished at round 30",  # through components.console
        "[1/6] ingest: done in 0.1s",
        "after the block: stdout is the terminal again",
    ]
    assert res.stderr.splitlines() == [
        "rayline: a rayline error line",
        "after the block: descriptor 2 too",
    ]
    text = log.read_text()
    assert text.startswith("==== rayline run tiny.yaml: ")
    for line in (
        "INFO worker.py:2000 -- Started a local Ray instance.",
        "(RayTrainWorker pid=123) Reporting training result 1",
        "(autoscaler +1s) Tip: use `ray status`",
        "core_worker.cc:2170: Actor has constructor arguments",
        "raw descriptor 1",
        "child stdout",
        "child stderr",
        "DeprecationWarning: a library's deprecation",
    ):
        assert line in text, line
    assert "ingest" not in text and "trial 1" not in text and "after the block" not in text


def test_a_second_capture_appends_to_the_same_log(tmp_path: Path) -> None:
    log = tmp_path / "ray.log"
    code = """
    import os
    from pipelines.ray_logs import capture
    for i in (1, 2):
        with capture(LOG, f"attempt {i}"):
            os.write(2, f"ray line {i}\\n".encode())
    """
    assert _child(code, log).returncode == 0
    lines = log.read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines[::2]] == ["==== attempt 1", "==== attempt 2"]
    assert lines[1::2] == ["ray line 1", "ray line 2"]


def test_without_a_log_nothing_is_redirected(tmp_path: Path) -> None:
    """--verbose: Ray's lines stay on the console, as before, and no file is written."""
    res = _child(RAY_LIKE, None)
    assert res.returncode == 0, res.stderr
    assert "(RayTrainWorker pid=123) Reporting training result 1" in res.stdout
    assert "raw descriptor 1" in res.stdout and "[1/6] ingest: reading" in res.stdout
    assert "core_worker.cc:2170" in res.stderr and "Started a local Ray instance" in res.stderr
    assert "rayline: a rayline error line" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_exception_leaving_the_block_prints_its_traceback_on_the_terminal(
    tmp_path: Path,
) -> None:
    log = tmp_path / "ray.log"
    code = """
    import os
    from pipelines.ray_logs import capture
    with capture(LOG):
        os.write(2, b"ray noise\\n")
        raise RuntimeError("a bug in the run")
    """
    res = _child(code, log)
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "RuntimeError: a bug in the run" in res.stderr
    assert "ray noise" not in res.stderr and "ray noise" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_rayline_warnings_reach_the_terminal_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "ray.log"
    code = """
    import warnings
    from components.registry import RegistryWarning
    from pipelines.ray_logs import capture
    with capture(LOG):
        warnings.warn(RegistryWarning("aliases.json.3: damaged — skipped"), stacklevel=1)
        warnings.warn("a library's future change", FutureWarning, stacklevel=1)
    """
    res = _child(code, log)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == ["rayline: warning: aliases.json.3: damaged — skipped"]
    text = log.read_text()
    assert "RegistryWarning: aliases.json.3: damaged" in text and "FutureWarning" in text


def test_which_warnings_are_rayline_s_own() -> None:
    here = str(ROOT / "pipelines" / "stages" / "prepare.py")
    elsewhere = str(ROOT / ".venv" / "lib" / "site-packages" / "xgboost" / "core.py")
    assert is_own_warning(RegistryWarning, elsewhere)  # a rayline class, wherever it was raised
    assert is_own_warning(UserWarning, here)
    assert not is_own_warning(UserWarning, elsewhere)
    # pandas and numpy point their FutureWarnings at the caller: rayline code, not the user's
    assert not is_own_warning(FutureWarning, here)
    assert not is_own_warning(DeprecationWarning, here)


def test_deploy_and_predict_log_next_to_the_storage_or_in_the_temp_folder(tmp_path: Path) -> None:
    from pipelines.cli import _log_file

    local = _log_file(str(tmp_path), "predict")
    assert local.startswith(str(tmp_path / "logs" / "predict-")) and local.endswith(".ray.log")
    remote = _log_file("s3://bucket/rayline", "deploy")  # not a folder this process can write
    assert remote.startswith(os.path.join(tempfile.gettempdir(), "rayline", "logs", "deploy-"))

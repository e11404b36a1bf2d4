"""Ctrl-C and SIGTERM stop a run at any step: the driver exits promptly, the run's Ray work is
released, the report says "interrupted", and `rayline run --resume` continues it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.conftest import CONFIGS, ROOT

pytestmark = pytest.mark.usefixtures("ray_session")


def _all_cpus_free(timeout_s: float = 30) -> bool:
    import ray

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]:
            return True
        time.sleep(0.5)
    return False


def _groups_alive() -> list[tuple[str, str, str]]:
    """(id, state, creating job) of every placement group not removed: what holds the CPUs."""
    from ray.util.state import list_placement_groups

    groups = list_placement_groups(limit=1000, raise_on_missing_output=False)
    return [
        (g.placement_group_id, g.state, g.creator_job_id) for g in groups if g.state != "REMOVED"
    ]


# the training step inside a Ray Train worker group (the tiny spec trains in-process)
WORKER_GROUP = "models.0.scaling.num_workers=2"
SMALL_SEARCH = "tune.num_samples=2"  # two trials, run together: enough to be inside a search
ONE_TRIAL = "tune.num_samples=1"  # a search that has ended


@pytest.mark.parametrize(
    ("spec", "override", "when", "sig", "resume"),
    [
        ("classification.yaml", WORKER_GROUP, "] ingest: reading", signal.SIGTERM, False),
        ("classification.yaml", WORKER_GROUP, "models.0 gbdt: xgboost", signal.SIGINT, False),
        ("classification_tuned.yaml", SMALL_SEARCH, "      trial 1 ", signal.SIGINT, False),
        # after a search: Ray Tune's handler, left installed, used to swallow this one
        ("classification_tuned.yaml", ONE_TRIAL, "models.0 gbdt: 1 trial (", signal.SIGINT, True),
    ],
    ids=["ingest-sigterm", "train-sigint", "tune-sigint", "after-tune-sigint"],
)
def test_a_signal_stops_the_run_promptly_and_it_resumes(
    tmp_path: Path, spec: str, override: str, when: str, sig: signal.Signals, resume: bool
) -> None:
    import ray

    storage = tmp_path / "storage"
    path = str(CONFIGS / "tiny" / spec)
    overrides = [override]
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", path, "--storage", str(storage),
         "--address", address, "serve.enabled=false", *overrides],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if when in line:
            break
    else:
        pytest.fail(f"the run ended before {when!r}:\n{''.join(seen)}")
    proc.send_signal(sig)
    sent = time.time()
    rest, _ = proc.communicate(timeout=60)
    stopped_after = time.time() - sent
    assert proc.returncode == 130, "".join(seen) + rest
    assert stopped_after < 30
    assert "interrupted; the run stopped and can continue with" in rest
    assert "serving" not in rest and "registered" not in rest  # it did not go on
    assert _all_cpus_free(), f"the interrupted run's workers still hold CPUs: {_groups_alive()}"
    run_dir = next((storage / "runs").glob("*/*"))
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "interrupted"
    if not resume:  # an interrupted run is unfinished: --resume reopens it (tested once)
        return
    assert main(["run", path, "--storage", str(storage), "--resume", *overrides]) == 0
    resumed = json.loads((run_dir / "report.json").read_text())
    assert resumed["status"] == "succeeded" and resumed["run_dir"] == str(run_dir)

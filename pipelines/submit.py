"""``rayline submit``: run a spec as a Ray job on a running cluster, follow it, return its status.

The same as ``ray job submit --working-dir . -- rayline run SPEC ...``, with the excludes that
keep the upload small (Ray caps it at 100 MiB) and the exit code of the job.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Never uploaded: history, environments, local outputs, data files, caches.
EXCLUDES = [
    ".git",
    ".venv",
    "venv",
    "storage",
    "mlruns",
    "mlartifacts",
    "benchmarks/results",
    "**/__pycache__",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.ruff_cache",
    "*.parquet",
    "*.csv",
    "*.csv.gz",
    "*.tsv",
    "*.libsvm",
    "*.npy",
    "data",
]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def entrypoint(spec_path: str, overrides: Sequence[str], working_dir: str) -> str:
    """``rayline run SPEC overrides...`` with the spec relative to the uploaded folder."""
    spec = Path(spec_path).resolve()
    root = Path(working_dir).resolve()
    try:
        rel = spec.relative_to(root)
    except ValueError:
        raise ValueError(
            f"the spec {spec_path} is outside the working directory {working_dir}: only that "
            "folder is uploaded with the job"
        ) from None
    return shlex.join(["rayline", "run", str(rel), *overrides])


def runtime_env(working_dir: str, storage: str | None) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": working_dir, "excludes": list(EXCLUDES)}
    if storage:
        env["env_vars"] = {"RAYLINE_STORAGE": storage}
    return env


def submit(
    address: str,
    spec_path: str,
    overrides: Sequence[str],
    working_dir: str = ".",
    storage: str | None = None,
    follow: bool = True,
    out: Callable[[str], None] = print,
) -> tuple[str, str]:
    """Submit the job; with ``follow``, stream its logs until it ends. (job id, final status)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=entrypoint(spec_path, overrides, working_dir),
        runtime_env=runtime_env(os.path.abspath(working_dir), storage),
        metadata={"rayline.spec": str(spec_path)},
    )
    out(f"submitted job {job_id} to {address}")
    if not follow:
        return job_id, str(client.get_job_status(job_id))

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            out(lines.rstrip("\n"))

    asyncio.run(tail())
    status = client.get_job_status(job_id)
    while str(status).split(".")[-1] not in TERMINAL:  # logs can end a moment before the status
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    return job_id, str(status).split(".")[-1]

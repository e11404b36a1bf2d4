"""Shared fixtures: one local Ray cluster per test session (only tests that ask for it start it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3_server import S3Server

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "pipelines" / "configs"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder (tests/ray -> ray, tests/e2e -> e2e); skip gpu tests without CUDA."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in ("ray", "e2e", "cluster", "gpu"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _has_cuda():
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


def _has_cuda() -> bool:
    try:
        import torch  # imported only when gpu tests are collected: it is slow to import
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_configure(config: pytest.Config) -> None:
    """Object-store credentials for the S3-compatible test server, set before any Ray starts
    (Ray's processes inherit them), so nothing ever looks for real ones."""
    from tests.s3_server import CREDENTIALS

    os.environ.update(CREDENTIALS)
    # Behind HAProxy a removed replica keeps answering for this long while HAProxy reloads
    # without it (Serve's default 30 s is sized for cloud load balancers); a local HAProxy
    # reloads in under a second, and every app a test deletes waits it out.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "3")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (a free port), stopped at the end of the session."""
    from tests import s3_server as server

    s = server.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray with 4 logical CPUs (the machine may have 2 cores), shut down at the end."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    import ray

    ray.init(
        num_cpus=4,
        include_dashboard=True,
        runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}},
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # A dataset waiting on CPUs that something else holds fails within minutes, naming its
    # operators, rather than after Ray Data's default half hour
    context.execution_no_progress_timeout_s = 300
    try:
        yield
    finally:
        ray.shutdown()

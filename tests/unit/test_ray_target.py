"""Which Ray a command joins or starts (pipelines.cluster.target_address), and how a run names
it, without starting Ray."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.cluster import (
    IN_PROCESS,
    LOCAL_EXISTING,
    LOCAL_NEW,
    REMOTE,
    RayConnection,
    target_address,
)


@pytest.fixture
def ray_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ray's temp folder, where `ray start` records its address (ray_current_cluster)."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "ray").mkdir()
    return tmp_path / "ray"


@pytest.fixture
def listening() -> Iterator[str]:
    """host:port of something that accepts connections, as a live head's GCS does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed on return: nothing listens there


def test_an_explicit_address_wins_in_order(
    ray_tmp: Path, listening: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ray_tmp / "ray_current_cluster").write_text(listening)
    assert target_address(None) == (listening, "`ray start` on this machine")
    assert target_address(None, "head:6379") == ("head:6379", "the spec's ray.address")
    monkeypatch.setenv("RAY_ADDRESS", "env-head:6379")
    assert target_address(None, "head:6379") == ("env-head:6379", "RAY_ADDRESS")
    assert target_address("arg-head:6379", "head:6379") == ("arg-head:6379", "--address")


def test_a_new_local_ray_without_any_address(ray_tmp: Path) -> None:
    assert target_address(None) == ("", "")
    (ray_tmp / "ray_current_cluster").write_text("")
    assert target_address(None) == ("", "")


def test_a_dead_clusters_address_file_is_not_joined(ray_tmp: Path) -> None:
    """A `ray start` cluster killed without `ray stop` leaves its file; ray.init() would try to
    join it. rayline starts a new local Ray instead."""
    (ray_tmp / "ray_current_cluster").write_text(_dead_address() + "\n")
    assert target_address(None) == ("", "")


def test_each_kind_of_ray_is_named_with_its_resources() -> None:
    new = RayConnection(LOCAL_NEW, "127.0.0.1:50000", "", 4.0, 0.0, dashboard="127.0.0.1:8265")
    assert new.started
    assert new.describe() == (
        "Ray: local new, started for this command (4 CPU; it stops at the end); "
        "dashboard http://127.0.0.1:8265"
    )
    here = RayConnection(LOCAL_EXISTING, "10.0.0.5:6379", "`ray start` on this machine", 2.0, 1.0)
    assert not here.started
    assert here.describe() == (
        "Ray: local existing, at 10.0.0.5:6379 from `ray start` on this machine (2 CPU, 1 GPU)"
    )
    far = RayConnection(
        REMOTE,
        "head:6379",
        "--address",
        16.0,
        0.5,
        ("the spec's ray.num_cpus: 2 applies only to a Ray started for the run",),
    )
    assert far.describe().splitlines() == [
        "Ray: remote, at head:6379 from --address (16 CPU, 0.5 GPU)",
        "  note: the spec's ray.num_cpus: 2 applies only to a Ray started for the run",
    ]
    mine = RayConnection(IN_PROCESS, "127.0.0.1:50001", "this process", 4.0, 0.0)
    assert not mine.started
    assert (
        mine.describe() == "Ray: the one this process is connected to, at 127.0.0.1:50001 (4 CPU)"
    )

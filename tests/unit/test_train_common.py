"""The Train adapters' shared per-worker start (components.steps.train_common), without Ray.

The ``ray.train`` calls a worker makes (context, dataset shards, checkpoint, report) are replaced
by fakes; importing Ray starts nothing. tests/ray runs the real thing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray.train

from components.features import FeatureTransform, NumericParams
from components.steps import train_common
from components.steps.train_common import WorkerJob, WorkerStart
from tests.train_fakes import Context, Shard

TRANSFORM = FeatureTransform(numeric=(NumericParams("x", 0.0, 0.0, 1.0),), categorical=())


class _Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def as_directory(self) -> Iterator[str]:
        yield str(self.path)


def _fake_worker(
    monkeypatch: pytest.MonkeyPatch, rank: int, world: int, checkpoint: Any = None
) -> list[tuple[dict[str, Any], Any]]:
    """Make this process look like rank ``rank`` of ``world``; returns the reports it makes."""
    shards = {f"train_r{r}": Shard(pd.DataFrame({"x": [float(r)]})) for r in range(world)}
    shards.update({f"valid_r{r}": Shard(pd.DataFrame({"x": [10.0 + r]})) for r in range(world)})
    reports: list[tuple[dict[str, Any], Any]] = []

    def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        files = sorted(os.listdir(checkpoint.path)) if checkpoint is not None else None
        reports.append((metrics, (checkpoint.path, files) if checkpoint is not None else None))

    monkeypatch.setattr(ray.train, "get_context", lambda: Context(rank, world))
    monkeypatch.setattr(ray.train, "get_dataset_shard", lambda name: shards[name])
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: checkpoint)
    monkeypatch.setattr(ray.train, "report", report)
    return reports


def _job(num_workers: int) -> WorkerJob:
    return WorkerJob(
        task="binary", label="y", features_json=TRANSFORM.to_json(), num_workers=num_workers
    )


@pytest.mark.parametrize(
    ("rank", "num_workers", "name"),
    [(0, 0, "train_r0"), (0, 1, "train_r0"), (0, 2, "train_r0"), (1, 2, "train_r1")],
)
def test_each_rank_reads_the_shard_shard_datasets_names(
    rank: int, num_workers: int, name: str
) -> None:
    assert train_common.train_shard(rank, num_workers) == name
    assert train_common.valid_shard(rank, num_workers) == name.replace("train", "valid")


def test_worker_start_reads_this_ranks_shards_and_parses_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_worker(monkeypatch, rank=1, world=2)
    calls: list[str] = []
    parse = FeatureTransform.from_json
    monkeypatch.setattr(
        FeatureTransform, "from_json", lambda text: calls.append(text) or parse(text)
    )
    setup = train_common.worker_start(_job(2), restore=lambda d: pytest.fail("no checkpoint"))
    assert (setup.rank, setup.world_size, setup.restored) == (1, 2, None)
    assert train_common.frame(setup.train)["x"].tolist() == [1.0]
    assert train_common.frame(setup.valid)["x"].tolist() == [11.0]
    assert setup.transform == TRANSFORM
    assert len(calls) == 1  # parsed once, in worker_start: a field, not a property


def test_worker_start_restores_from_the_last_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "state").write_text("round 7")
    _fake_worker(monkeypatch, rank=0, world=1, checkpoint=_Checkpoint(tmp_path))
    setup = train_common.worker_start(_job(1), restore=lambda d: Path(d, "state").read_text())
    assert setup.restored == "round 7"


def test_rank_0_reports_a_checkpoint_from_a_directory_removed_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reports = _fake_worker(monkeypatch, rank=0, world=2)
    setup = train_common.worker_start(_job(2), restore=str)
    setup.report({"round": 1}, lambda d: Path(d, "model.ubj").write_bytes(b"m"))
    setup.report({"round": 2}, lambda d: Path(d, "model.ubj").write_bytes(b"m"))
    assert [m for m, _ in reports] == [{"round": 1}, {"round": 2}]
    for _, (path, files) in reports:
        assert files == ["model.ubj"]  # written before the report saw it
        assert not os.path.exists(path)  # and gone after: nothing left in /tmp


def test_other_ranks_report_without_a_checkpoint_and_write_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reports = _fake_worker(monkeypatch, rank=1, world=2)
    setup: WorkerStart[str] = train_common.worker_start(_job(2), restore=str)
    setup.report({"round": 1}, lambda d: pytest.fail("rank 1 wrote a checkpoint"))
    assert reports == [({"round": 1}, None)]


def test_batches_stream_a_shard_in_order_and_start_again_on_every_call() -> None:
    shard = Shard(pd.DataFrame({"x": [float(i) for i in range(5)]}))
    stream = train_common.batches(shard, rows=2)
    for _ in range(2):  # XGBoost reads a stream more than once
        assert [b["x"].tolist() for b in stream()] == [[0.0, 1.0], [2.0, 3.0], [4.0]]


def test_the_checkpoint_directory_is_removed_on_errors_too() -> None:
    with pytest.raises(RuntimeError), train_common.checkpoint_dir() as d:
        Path(d, "half-written").write_text("x")
        raise RuntimeError("save failed")
    assert not os.path.exists(d)

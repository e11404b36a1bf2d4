"""Every path of one run, named once: ``<storage>/runs/<pipeline>/<run_id>/...``, as local paths
or URIs (components.uris) like the storage root they are under."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import uuid
from dataclasses import dataclass

from components import uris
from components.bundle import Storage
from components.splits import SPLIT_NAMES

__all__ = ["SPLIT_NAMES", "RunDir", "local_logs_root", "new_run_id", "runs_of"]


def local_logs_root() -> str:
    """Where logs go when the storage is not on this machine's disk."""
    return os.path.join(tempfile.gettempdir(), "rayline")


def new_run_id() -> str:
    """Sortable by start time (to the millisecond), unique by a random suffix."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S.") + f"{now.microsecond // 1000:03d}-" + uuid.uuid4().hex[:4]


def runs_of(storage: str, pipeline: str) -> str:
    """The folder holding every run of one pipeline."""
    return uris.join(storage, "runs", pipeline)


@dataclass(frozen=True)
class RunDir:
    """The layout of a run directory. Nothing is created here: stages write their own files."""

    storage: str
    pipeline: str
    run_id: str

    @property
    def root(self) -> str:
        return uris.join(runs_of(self.storage, self.pipeline), self.run_id)

    @property
    def store(self) -> Storage:
        """The run directory as a Storage (local folder or object-store prefix)."""
        return Storage(self.root)

    @property
    def local(self) -> bool:
        """Whether the run directory is on this machine's disk."""
        return not uris.is_uri(self.root)

    def log_file(self, name: str) -> str:
        """A log of this run on this machine's disk: in the run directory when that is local,
        else under the temp folder (``<tmp>/rayline/runs/<pipeline>/<run_id>/``)."""
        if self.local:
            return self._at(name)
        return os.path.join(local_logs_root(), "runs", self.pipeline, self.run_id, name)

    def _at(self, *parts: str) -> str:
        return uris.join(self.root, *parts)

    @property
    def spec_file(self) -> str:
        """The resolved spec, as the run used it."""
        return self._at("spec.yaml")

    @property
    def prepared(self) -> str:
        """The ingested, split data (one Parquet folder per split) and its reuse key."""
        return self._at("prepared")

    def prepared_split(self, name: str) -> str:
        return self._at("prepared", name)

    @property
    def features(self) -> str:
        """The fitted feature transform (features.json) and its reuse key."""
        return self._at("prepared", "features")

    @property
    def features_file(self) -> str:
        return self._at("prepared", "features", "features.json")

    def candidate(self, model: str) -> str:
        """The bundle of one trained candidate (``<model>-refit`` for a refit winner)."""
        return self._at("candidates", model)

    def candidate_done(self, model: str) -> str:
        """The reuse key of one candidate, written after its bundle."""
        return self._at("candidates", ".done", model)

    @property
    def tune(self) -> str:
        """Ray Tune runs (one per tuned model) and their trials' Train runs."""
        return self._at("tune")

    @property
    def train(self) -> str:
        """Ray Train runs: checkpoints of plain training and refits."""
        return self._at("train")

    @property
    def bundle(self) -> str:
        """The final bundle, as published to the registry."""
        return self._at("bundle")

    @property
    def predictions(self) -> str:
        """The winner's scores for every test row."""
        return self._at("predictions_test.parquet")

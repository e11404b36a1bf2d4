"""What the XGBoost and torch Train adapters share: sharding, configs, and reading the result."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.data
from ray.data.expressions import col

# The V2 classes by their own module: `ray.train` re-exports them only at runtime, so type
# checkers would see the V1 ScalingConfig (no label_selector).
from ray.train.v2.api.config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig


@dataclass
class TrainOutcome:
    model: bytes
    history: list[dict[str, float]]
    best_iteration: int
    rounds: int
    seconds: float
    checkpoint_path: str | None
    valid_metrics: dict[str, float] = field(default_factory=dict)
    architecture: str = ""  # torch models: the ArchitectureSpec JSON
    resumed_from: int = 0  # round/epoch the last attempt started at (> 0 after a restart)
    node: dict[str, Any] = field(default_factory=dict)  # where rank 0 ran: node id and labels


def shard_datasets(
    train: ray.data.Dataset, valid: ray.data.Dataset, num_workers: int
) -> dict[str, ray.data.Dataset]:
    """One training dataset per rank (whole buckets, so whole queries) plus the full validation set."""
    if num_workers <= 1:
        return {"train_r0": train, "valid": valid}
    shards = {
        f"train_r{r}": train.filter(expr=(col("_bucket") % num_workers) == r).materialize()
        for r in range(num_workers)
    }
    return {**shards, "valid": valid}


@dataclass(kw_only=True)
class WorkerScaling:
    """Where and how a training run's workers run; the base of both adapters' job classes.

    ``num_workers`` 0 trains in the driver process (no worker group, no checkpoints on storage).
    ``label_selector`` and ``accelerator_type`` pin workers to node types (Ray node labels, or
    the ``accelerator_type:<T>`` resource Ray gives GPU nodes).
    """

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    max_failures: int = 2
    label_selector: dict[str, str] | None = None
    accelerator_type: str | None = None

    def scaling_config(self) -> ScalingConfig:
        local = self.num_workers == 0
        return ScalingConfig(
            num_workers=self.num_workers,
            use_gpu=self.use_gpu,
            resources_per_worker=None if local else self.resources_per_worker,
            label_selector=None if local else self.label_selector,
            accelerator_type=None if local else self.accelerator_type,
        )

    def run_config(
        self, run_name: str, storage_path: str, callbacks: Sequence[Any] = ()
    ) -> RunConfig:
        """A unique run name per training run: a reused name would resume the old run.

        ``callbacks``: Ray Train user callbacks, e.g. Tune's report callback inside a trial.
        """
        return RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=self.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks) or None,
        )


def where() -> dict[str, Any]:
    """This process's node: its id and Ray labels (for the report: which node type trained)."""
    ctx = ray.get_runtime_context()
    labels = {k: v for k, v in ctx.get_node_labels().items() if not k.startswith("ray.io/")}
    return {"id": ctx.get_node_id(), "labels": labels}


def run_trainer(trainer: Any, run_name: str, num_workers: int) -> TrainOutcome:
    """``trainer.fit()``, then the model and history from rank 0's return value.

    The model travels back as the return value: in local mode (num_workers 0) the reported
    checkpoint is not persisted to storage.
    """
    started = time.time()
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    info = getattr(result, "return_value", None) or {}  # Train V2: rank 0's return value
    if not info.get("model"):
        raise RuntimeError(f"training run {run_name} returned no model")
    history = info.get("history", [])
    best = int(info.get("best_iteration", 0))
    row = history[best] if best < len(history) else {}
    return TrainOutcome(
        model=info["model"],
        history=history,
        best_iteration=best,
        rounds=int(info.get("rounds", 0)),
        resumed_from=int(info.get("resumed_from", 0)),
        node=dict(info.get("node") or {}),
        seconds=time.time() - started,
        valid_metrics={
            k.removeprefix("valid-"): v for k, v in row.items() if k.startswith("valid-")
        },
        checkpoint_path=result.checkpoint.path if num_workers > 0 and result.checkpoint else None,
    )

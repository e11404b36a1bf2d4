"""What the XGBoost and torch Train adapters share: sharding, configs, each worker's start and
checkpoints, and reading the result."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

import pandas as pd
import pyarrow as pa
import ray
import ray.data
import ray.train
from ray.data.expressions import col
from ray.train import Checkpoint, DataConfig
from ray.train.v2.api.config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

# The V2 classes by their own module: `ray.train` re-exports them only at runtime, so type
# checkers would see the V1 ScalingConfig (no label_selector).
from components import uris
from components.encoded import encode_table
from components.features import FeatureTransform
from components.readers import SOURCE_FILE, SOURCE_ROW
from components.tasks import task_info
from components.validation import WEIGHT

R = TypeVar("R")
J = TypeVar("J", bound="WorkerJob")


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


# A rank's grouped shard up to this size is sorted by one task (a single block): Ray Data's
# distributed sort costs ~9 s per call here whatever the data's size (its sampling and shuffle
# stages), a task ~0.1 s. Larger shards are sorted by Ray Data.
SORT_IN_ONE_TASK_BYTES = 256 * 2**20


@ray.remote
def _sorted_table(names: list[str], *blocks: pa.Table) -> pa.Table:
    """The blocks as one table sorted by ``names`` (stable: ties keep their order)."""
    table = pa.concat_tables(blocks, promote_options="default")
    return table.sort_by([(n, "ascending") for n in names])


def sort_rows(ds: ray.data.Dataset, names: list[str]) -> ray.data.Dataset:
    """``ds`` sorted by ``names``, materialized: in one task when small, else by Ray Data."""
    ds = ds.materialize()
    if ds.size_bytes() > SORT_IN_ONE_TASK_BYTES:
        return ds.sort(names).materialize()
    blocks = ds.to_arrow_refs()
    if not blocks:
        return ds
    return ray.data.from_arrow_refs([_sorted_table.remote(names, *blocks)])


def shard_datasets(
    train: ray.data.Dataset,
    valid: ray.data.Dataset,
    num_workers: int,
    grouped: bool = False,
) -> dict[str, ray.data.Dataset]:
    """One training and one validation dataset per rank, each of whole buckets (so whole
    queries): no rank holds another's rows, and more workers means less data per worker.

    For a grouped task each dataset is sorted by query (then by source file and row: the order
    within a query is the input's), so a worker can stream it in whole queries.
    """
    n = max(num_workers, 1)

    def part(ds: ray.data.Dataset, r: int) -> ray.data.Dataset:
        if n > 1:
            ds = ds.filter(expr=(col("_bucket") % n) == r)
        # materialized: a lazy dataset starves when the workers hold every CPU, and a worker
        # reads its shard more than once (XGBoost: four times; torch: once per epoch)
        if grouped:
            names = ds.schema().names
            return sort_rows(ds, ["_group"] + [c for c in (SOURCE_FILE, SOURCE_ROW) if c in names])
        return ds.materialize()

    if n > 1:  # read (and encoded) once, then cut per rank
        train, valid = train.materialize(), valid.materialize()
    out = {}
    for r in range(n):
        out[train_shard(r, num_workers)] = part(train, r)
        out[valid_shard(r, num_workers)] = part(valid, r)
    return out


def encode_splits(
    train: ray.data.Dataset, valid: ray.data.Dataset, job: WorkerJob
) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """Both splits in the compact form the workers read (``components.encoded``): the job's
    features encoded, the label, weight, query, bucket, row key and sparse columns kept, the rest
    dropped (the source file and row too, except for a grouped task: its shards are sorted by
    them)."""
    transform = FeatureTransform.from_json(job.features_json)
    keep = [job.label, WEIGHT, "_group", "_bucket", "_row_key"] + [p.name for p in transform.sparse]
    if task_info(job.task).grouped:
        keep += [SOURCE_FILE, SOURCE_ROW]

    def encode(ds: ray.data.Dataset) -> ray.data.Dataset:
        return ds.map_batches(
            encode_table,
            batch_format="pyarrow",
            batch_size=None,  # a whole block: each distinct value encoded once per block
            zero_copy_batch=True,
            fn_kwargs={"transform": transform, "keep": keep},
        )

    return encode(train), encode(valid)


def train_shard(rank: int, num_workers: int) -> str:
    """The name of the training dataset rank ``rank`` reads (one for all when num_workers <= 1)."""
    return f"train_r{rank}" if num_workers > 1 else "train_r0"


def valid_shard(rank: int, num_workers: int) -> str:
    """The name of rank ``rank``'s share of the validation split (all of it when num_workers <= 1)."""
    return f"valid_r{rank}" if num_workers > 1 else "valid_r0"


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
            # a local folder, or the path inside an object store's pyarrow filesystem
            **uris.ray_storage(storage_path),
            failure_config=FailureConfig(max_failures=self.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks) or None,
        )


@dataclass(kw_only=True)
class WorkerJob(WorkerScaling):
    """The fields every training job has; the adapters' job classes add their own."""

    task: str
    label: str
    features_json: str  # the fitted FeatureTransform


@contextmanager
def checkpoint_dir() -> Iterator[str]:
    """A temporary directory to write a checkpoint into, removed on leaving (also on errors).

    ``ray.train.report`` has copied the checkpoint to storage by the time it returns (the default
    synchronous upload), so report inside the block.
    """
    with tempfile.TemporaryDirectory(prefix="rayline-ckpt-") as tmp:
        yield tmp


# Rows per batch a worker reads from its shard: a bounded slice of the shard in memory at a
# time (~15 MB of float32 features at 50 columns), and few enough calls that the per-batch cost
# is small next to the work on it.
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class WorkerStart(Generic[R]):
    """What each training worker starts from (see ``worker_start``). The data are this rank's
    Ray Data shards (``DataIterator``) of the encoded splits (``encode_splits``): read them in
    batches (``batches``), or whole (``frame``)."""

    rank: int
    world_size: int
    transform: FeatureTransform  # parsed once per worker
    train: Any  # this rank's training rows
    valid: Any  # this rank's share of the validation split
    restored: R | None  # what the last attempt's checkpoint held; None on a first attempt

    def report(self, metrics: dict[str, Any], write: Callable[[str], None]) -> None:
        """Report ``metrics`` from this rank (every rank must, each time); rank 0 also reports a
        checkpoint, the directory that ``write(directory)`` fills."""
        with checkpoint_dir() as tmp:
            checkpoint = None
            if self.rank == 0:
                write(tmp)
                checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def batches(shard: Any, rows: int = BATCH_ROWS) -> Callable[[], Iterator[pd.DataFrame]]:
    """A function that streams ``shard`` from its start as pandas frames of ``rows`` rows, in the
    shard's order (each call starts again)."""
    return lambda: iter(shard.iter_batches(batch_size=rows, batch_format="pandas"))


def frame(shard: Any) -> pd.DataFrame:
    """All of ``shard`` as one frame (for adapters that hold their rows in memory)."""
    return shard.materialize().to_pandas()


def worker_start(job: WorkerJob, restore: Callable[[str], R]) -> WorkerStart[R]:
    """Inside a Ray Train worker (or the driver when num_workers is 0): this rank, its data and
    transform, and ``restore(directory)`` of the checkpoint a restarted worker group resumes from.
    """
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    restored = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            restored = restore(d)
    return WorkerStart(
        rank=rank,
        world_size=ctx.get_world_size(),
        transform=FeatureTransform.from_json(job.features_json),
        train=ray.train.get_dataset_shard(train_shard(rank, job.num_workers)),
        valid=ray.train.get_dataset_shard(valid_shard(rank, job.num_workers)),
        restored=restored,
    )


def where() -> dict[str, Any]:
    """This process's node: its id and Ray labels (for the report: which node type trained)."""
    ctx = ray.get_runtime_context()
    labels = {k: v for k, v in ctx.get_node_labels().items() if not k.startswith("ray.io/")}
    return {"id": ctx.get_node_id(), "labels": labels}


def off_main_thread(fit: Callable[[], R]) -> R:
    """``fit()`` in a helper thread, the main thread waiting on it.

    Ray Train's ``fit()`` and Ray Tune's ``Tuner.fit()`` install SIGINT handlers of their own
    when called from the main thread, and leave them installed: Ctrl-C then aborts only the
    training (or is swallowed after a Tune search) and the run goes on. Off the main thread they
    install none, so SIGINT and SIGTERM reach the driver's own handlers: the main thread raises
    KeyboardInterrupt and the run stops (the daemon thread dies with the driver, and Ray stops
    the training actors the driver owns).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fit()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    if threading.current_thread() is not threading.main_thread():
        return fit()  # e.g. inside a Tune trial: no handler is installed there anyway
    thread = threading.Thread(target=target, name="rayline-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)  # a short wait keeps the main thread responsive to signals
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_trainer(trainer: Any, run_name: str, num_workers: int) -> TrainOutcome:
    """``trainer.fit()``, then the model and history from rank 0's return value.

    The model travels back as the return value: in local mode (num_workers 0) the reported
    checkpoint is not persisted to storage.
    """
    started = time.time()
    result = off_main_thread(trainer.fit)
    if result.error is not None:
        raise result.error
    info = getattr(result, "return_value", None) or {}  # Train V2: rank 0's return value
    if not info.get("model"):
        raise RuntimeError(f"training run {run_name} returned no model")
    history = info.get("history", [])
    best = int(info.get("best_iteration", 0))
    row = info.get("best_row") or (history[best] if best < len(history) else {})
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


@dataclass(frozen=True)
class Fit(Generic[J]):
    """An adapter's ``fit(job, train, valid, storage_path, run_name, callbacks=())``: run
    ``trainer`` (XGBoostTrainer, TorchTrainer) with ``train_fn`` on every worker, one training
    dataset per rank (``shard_datasets``), and return the outcome.

    ``options(job)``: the trainer's own further arguments (e.g. TorchTrainer's ``torch_config``).
    """

    trainer: Callable[..., Any]
    train_fn: Callable[[dict[str, Any]], dict[str, Any]]
    options: Callable[[J], dict[str, Any]] | None = None

    def __call__(
        self,
        job: J,
        train: ray.data.Dataset,
        valid: ray.data.Dataset,
        storage_path: str,
        run_name: str,
        callbacks: Sequence[Any] = (),
    ) -> TrainOutcome:
        train, valid = encode_splits(train, valid, job)
        trainer = self.trainer(
            self.train_fn,
            train_loop_config={"job": asdict(job)},
            datasets=shard_datasets(train, valid, job.num_workers, task_info(job.task).grouped),
            dataset_config=DataConfig(datasets_to_split=[]),
            scaling_config=job.scaling_config(),
            run_config=job.run_config(run_name, storage_path, callbacks),
            **(self.options(job) if self.options else {}),
        )
        return run_trainer(trainer, run_name, job.num_workers)

"""Ray Tune over Ray Train: search spaces, searchers, schedulers, and reading a finished search.

A trial is a function that builds a Ray Train job from its sampled config and fits it with
Tune's report callback, so every Train report (each ``report_every`` rounds, each epoch) reaches
the scheduler; the trial ends by reporting ``final: 1`` with its model as a Tune checkpoint.
Trials that ASHA or the time budget stopped never report ``final``: only finished trials can win.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.tune
from ray import tune
from ray.tune import Checkpoint
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from components import console, uris
from components.search_space import Dist
from components.steps.train_common import TrainOutcome, off_main_thread

MODEL_FILE = "model.bin"
OUTCOME_FILE = "outcome.json"
FINAL = "final"


def to_tune(space: Mapping[str, Dist]) -> dict[str, Any]:
    """Spec distributions -> Ray Tune sampling objects (one per dotted path)."""
    out: dict[str, Any] = {}
    for path, d in space.items():
        if d.kind == "uniform":
            out[path] = tune.uniform(*d.args)
        elif d.kind == "loguniform":
            out[path] = tune.loguniform(*d.args)
        elif d.kind == "randint":
            out[path] = tune.randint(*d.args)
        elif d.kind == "choice":
            out[path] = tune.choice(list(d.args))
        elif d.kind == "grid":
            out[path] = tune.grid_search(list(d.args))
        else:
            raise ValueError(f"{path}: unknown distribution {d.kind!r}")
    return out


@dataclass(frozen=True)
class SearchSettings:
    num_samples: int
    max_concurrent_trials: int
    time_budget_s: float | None
    searcher: str  # random | optuna
    scheduler: str  # fifo | asha
    grace_period: int  # in time_attr units (rounds or epochs)
    reduction_factor: int
    seed: int


@dataclass(frozen=True)
class Watch:
    """What the scheduler watches: a reported metric, its direction and the time axis."""

    metric: str
    mode: str
    time_attr: str
    max_t: int


def tune_config(settings: SearchSettings, watch: Watch) -> tune.TuneConfig:
    if settings.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg: Any = OptunaSearch(seed=settings.seed)
        limit: int | None = settings.max_concurrent_trials
    else:
        # a generator, not a Searcher: it takes the concurrency limit itself
        search_alg = BasicVariantGenerator(
            random_state=settings.seed, max_concurrent=settings.max_concurrent_trials
        )
        limit = None
    scheduler: Any = FIFOScheduler()
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr=watch.time_attr,
            # ASHA stops a trial whose time reaches max_t; one past the last round/epoch lets a
            # full trial report its finished model first
            max_t=watch.max_t + 1,
            grace_period=min(settings.grace_period, watch.max_t),
            reduction_factor=settings.reduction_factor,
        )
    return tune.TuneConfig(
        metric=watch.metric,
        mode=watch.mode,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=settings.num_samples,
        max_concurrent_trials=limit,
        time_budget_s=settings.time_budget_s,
    )


def wait_for_train_reports() -> None:
    """Inside a trial, after the Ray Train run returned: block until Tune has taken every report
    that run's ``TuneReportCallback`` forwarded.

    The callback hands reports to the trial through a one-slot queue that the trial's main thread
    drains; a report still in that slot when the trial function itself calls ``tune.report``
    deadlocks Ray 2.60 (the main thread re-reports it into the full result queue that holds the
    function's report, and both wait forever). Two empty items put through the same queue prove
    the slot is free and the item before them fully handled: the second put returns only after
    the main thread took the first, which it does after finishing the last real report. Empty
    items are skipped by Tune.
    """
    from ray.train._internal.session import get_session

    session = get_session()
    if session is None:
        return
    slot = session._get_or_create_inter_actor_queue()
    slot.put(None)
    slot.put(None)


def report_final(outcome: TrainOutcome, time_attr: str) -> None:
    """Inside a trial: report the finished model (as a Tune checkpoint) and its metrics."""
    wait_for_train_reports()
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, MODEL_FILE), "wb") as fh:
            fh.write(outcome.model)
        doc = {
            "history": outcome.history,
            "best_iteration": outcome.best_iteration,
            "rounds": outcome.rounds,
            "seconds": outcome.seconds,
            "architecture": outcome.architecture,
            "resumed_from": outcome.resumed_from,
            "node": outcome.node,
        }
        with open(os.path.join(d, OUTCOME_FILE), "w") as fh:
            json.dump(doc, fh)
        metrics = {f"valid-{k}": v for k, v in outcome.valid_metrics.items()}
        metrics.update({FINAL: 1, time_attr: outcome.rounds})
        ray.tune.report(metrics, checkpoint=Checkpoint.from_directory(d))


def read_outcome(checkpoint: Checkpoint, valid_metrics: dict[str, float]) -> TrainOutcome:
    with checkpoint.as_directory() as d:
        with open(os.path.join(d, MODEL_FILE), "rb") as fh:
            model = fh.read()
        with open(os.path.join(d, OUTCOME_FILE)) as fh:
            doc = json.load(fh)
    return TrainOutcome(
        model=model,
        history=doc["history"],
        best_iteration=int(doc["best_iteration"]),
        rounds=int(doc["rounds"]),
        seconds=float(doc["seconds"]),
        checkpoint_path=checkpoint.path,
        valid_metrics=valid_metrics,
        architecture=doc.get("architecture", ""),
        resumed_from=int(doc.get("resumed_from", 0)),
        node=dict(doc.get("node") or {}),
    )


class _Printer(tune.Callback):
    """One line per trial as it ends: progress for a search that may take a while.

    Prints through components.console itself (where the CLI's progress lines go, also while
    stdout is Ray's log file): Tune pickles its callbacks with the experiment state, and the
    caller's output function need not be picklable.
    """

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.ended = 0

    def _line(self, trial: Any, what: str) -> None:
        self.ended += 1
        m = trial.last_result or {}
        value = m.get(self.watch.metric)
        shown = f"{self.watch.metric} {value:.4f}" if isinstance(value, float) else "no metric"
        config = ", ".join(f"{k}={_short(v)}" for k, v in (trial.config or {}).items())
        console.say(
            f"      trial {self.ended} {trial.trial_id}: {what} at {self.watch.time_attr} "
            f"{m.get(self.watch.time_attr, '?')}, {shown} ({config})"
        )

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        done = (trial.last_result or {}).get(FINAL) == 1
        self._line(trial, "finished" if done else "stopped early")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._line(trial, "FAILED")


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass
class Trial:
    """One trial as the report shows it."""

    trial_id: str
    config: dict[str, Any]
    status: str  # completed | stopped early | error
    value: float | None  # the watched metric, last reported
    reached: int | None  # rounds/epochs reached
    seconds: float | None
    error: str = ""


@dataclass
class SearchResult:
    trials: list[Trial]
    best: Trial | None
    best_outcome: TrainOutcome | None
    path: str
    metric: str
    mode: str
    extra: dict[str, Any] = field(default_factory=dict)


def live_placement_groups() -> set[str] | None:
    """Ids of the placement groups this job holds or waits for; None when Ray cannot say.

    Through Ray's state API (the dashboard), the one place that names a group's creating job.
    """
    from ray.util.state import list_placement_groups

    try:
        job = ray.get_runtime_context().get_job_id()
        groups = list_placement_groups(
            filters=[("creator_job_id", "=", job)], limit=10_000, raise_on_missing_output=False
        )
    except Exception:  # the state API is optional: without it nothing is released
        return None
    return {g.placement_group_id for g in groups if g.state != "REMOVED"}


def live_actors() -> set[str] | None:
    """Ids of this job's actors that are not dead; None when Ray cannot say (state API)."""
    from ray.util.state import list_actors

    try:
        job = ray.get_runtime_context().get_job_id()
        actors = list_actors(
            filters=[("job_id", "=", job)], limit=10_000, raise_on_missing_output=False
        )
    except Exception:
        return None
    return {a.actor_id for a in actors if a.state != "DEAD"}


def stop_search_actors(before: set[str] | None, wait_s: float = 10.0) -> int:
    """Kill the actors a search started (trials, their Train controllers and workers); how many.

    Used when the search is interrupted: the driver is about to exit while Tune's thread and the
    trials' Train controllers are still creating worker groups. A placement group a controller
    creates while the job is being torn down can outlive both (seen on a loaded machine: one
    worker group's CPU held after the run had exited), so the creators are stopped first and
    their groups removed after, by ``release_left_behind``.
    """
    if before is None:
        return 0
    killed: set[str] = set()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        now = live_actors()
        if now is None:
            break
        new = now - before
        if not new:
            break
        for actor_id in sorted(new - killed):
            _kill_actor(actor_id)
            killed.add(actor_id)
        time.sleep(0.5)
    return len(killed)


def _kill_actor(actor_id: str) -> None:
    """``ray.kill`` by id (no restart). The state API names the actors but hands out no handle,
    and ``ray.kill`` takes one; this is the call it makes with the handle's id."""
    from ray._private.worker import global_worker
    from ray._raylet import ActorID

    with contextlib.suppress(Exception):  # already gone: its group is removed all the same
        global_worker.core_worker.kill_actor(ActorID.from_hex(actor_id), True)  # type: ignore[attr-defined]


def release_left_behind(held_before: set[str] | None) -> int:
    """Remove the placement groups a finished search left holding resources; how many.

    Once ``Tuner.fit`` returns no trial runs, yet a Train worker group of a trial that ASHA
    stopped can keep its placement group (and its CPUs) after its trial ended: later stages,
    and other jobs on the cluster, would wait on resources nobody uses.
    """
    if held_before is None:
        return 0
    now = live_placement_groups()
    if now is None:
        return 0
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    left = sorted(now - held_before)
    for pg_id in left:
        remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_id)))
    if left:
        console.say(
            f"      released {len(left)} placement group(s) the search's trials left behind"
        )
    return len(left)


def run_search(
    trial_fn: Callable[..., None],
    space: Mapping[str, Dist],
    settings: SearchSettings,
    watch: Watch,
    storage_path: str,
    name: str,
    trial_resources: dict[str, float],
    restore: bool = False,
    **with_parameters: Any,
) -> SearchResult:
    """Run (or, with ``restore``, continue) one search and read every trial's end."""
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, **with_parameters), trial_resources
    )
    storage = uris.ray_storage(storage_path)
    path = uris.join(storage["storage_path"], name)
    fs = storage["storage_filesystem"]
    restored = restore and tune.Tuner.can_restore(path, storage_filesystem=fs)
    if restored:
        # finished trials keep their results; unfinished and errored ones run again
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_errored=True, storage_filesystem=fs
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=to_tune(space),
            tune_config=tune_config(settings, watch),
            run_config=tune.RunConfig(name=name, **storage, verbose=0, callbacks=[_Printer(watch)]),
        )
    held_before = live_placement_groups()
    actors_before = live_actors()
    try:
        grid = off_main_thread(tuner.fit)  # Tune's SIGINT handler would swallow Ctrl-C
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):  # Tune's thread runs on until the driver exits
            stopped = stop_search_actors(actors_before)
            if stopped:
                console.say(f"      stopped the search's {stopped} trial and worker actor(s)")
        release_left_behind(held_before)
        raise
    released = release_left_behind(held_before)
    trials: list[Trial] = []
    finished = []
    for idx in range(len(grid)):
        r = grid[idx]
        m = dict(r.metrics or {})
        done = m.get(FINAL) == 1
        status = "completed" if done else ("error" if r.error else "stopped early")
        t = Trial(
            trial_id=str(m.get("trial_id", os.path.basename(r.path or ""))),
            config={k: v for k, v in (r.config or {}).items()},
            status=status,
            value=float(m[watch.metric]) if watch.metric in m else None,
            reached=int(m[watch.time_attr]) if watch.time_attr in m else None,
            seconds=float(m["time_total_s"]) if "time_total_s" in m else None,
            error=str(r.error).splitlines()[0][:300] if r.error else "",
        )
        trials.append(t)
        if done and t.value is not None and r.checkpoint is not None:
            finished.append((t, r))
    extra = {"restored": bool(restored), "released_placement_groups": released}
    if not finished:
        return SearchResult(trials, None, None, path, watch.metric, watch.mode, extra)
    sign = 1.0 if watch.mode == "max" else -1.0
    best, result = max(finished, key=lambda tr: sign * (tr[0].value or 0.0))
    valid = {
        k.removeprefix("valid-"): float(v)
        for k, v in (result.metrics or {}).items()
        if k.startswith("valid-") and isinstance(v, (int, float))
    }
    assert result.checkpoint is not None
    return SearchResult(
        trials,
        best,
        read_outcome(result.checkpoint, valid),
        path,
        watch.metric,
        watch.mode,
        extra,
    )

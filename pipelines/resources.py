"""Check a spec's resource requests against the cluster before anything starts.

Ray never fails a request it cannot satisfy: a worker group asking for a GPU that does not
exist waits forever. So the runner compares what each training run will hold with what the
cluster has, and stops with a message that says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerRequest:
    """One training run: ``num_workers`` workers each holding ``per_worker``."""

    what: str  # e.g. "models.0 (xgboost)"
    num_workers: int
    per_worker: Mapping[str, float]


def _fmt(res: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(res.items())) + "}"


def check_requests(
    requests: Sequence[WorkerRequest],
    total: Mapping[str, float],
    nodes: Sequence[Mapping[str, float]],
) -> list[str]:
    """Problems that would make a run hang; empty when every request fits.

    ``total`` is the cluster's logical resources, ``nodes`` each alive node's resources (one
    worker must fit on a single node). Runs are sequential, so each is checked on its own.
    """
    problems = []
    for req in requests:
        if req.num_workers == 0:
            continue
        for name, amount in req.per_worker.items():
            need = amount * req.num_workers
            have = float(total.get(name, 0.0))
            if need > have + 1e-9:
                hint = (
                    "set scaling.use_gpu: false or run on a cluster with GPU nodes"
                    if name == "GPU"
                    else "lower scaling.num_workers or scaling.resources_per_worker, or add nodes"
                )
                problems.append(
                    f"{req.what}: {req.num_workers} worker(s) x {_fmt(req.per_worker)} need {name} {need:g}, "
                    f"the cluster has {name} {have:g}; {hint}"
                )
        if nodes and not any(
            all(float(node.get(k, 0.0)) + 1e-9 >= v for k, v in req.per_worker.items())
            for node in nodes
        ):
            problems.append(
                f"{req.what}: no single node can hold one worker's {_fmt(req.per_worker)} "
                f"(largest node: {_fmt(max(nodes, key=lambda n: n.get('CPU', 0.0)))})"
            )
    return problems

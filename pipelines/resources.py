"""Check a spec's resource requests against the cluster before anything starts.

Ray never fails a request it cannot satisfy: a worker group asking for a GPU that does not
exist waits forever. So the runner compares what each training run will hold with what the
cluster has, and stops with a message that says what to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerRequest:
    """One training run: ``num_workers`` workers each holding ``per_worker``."""

    what: str  # e.g. "models.0 (xgboost)"
    num_workers: int
    per_worker: Mapping[str, float]
    label_selector: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Node:
    """An alive node: its logical resources and its Ray labels."""

    resources: Mapping[str, float]
    labels: Mapping[str, str] = field(default_factory=dict)


def label_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Ray's label-selector semantics: ``v``, ``!v``, ``in(a,b)``, ``!in(a,b)`` per key."""
    for key, want in selector.items():
        have = labels.get(key)
        negate = want.startswith("!")
        body = want[1:] if negate else want
        if body.startswith("in(") and body.endswith(")"):
            options = {v.strip() for v in body[3:-1].split(",")}
        else:
            options = {body}
        if (have in options) == negate:
            return False
    return True


def _fmt(res: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(res.items())) + "}"


def check_requests(
    requests: Sequence[WorkerRequest],
    total: Mapping[str, float],
    nodes: Sequence[Node],
) -> list[str]:
    """Problems that would make a run hang; empty when every request fits.

    ``total`` is the cluster's logical resources, ``nodes`` the alive nodes (one worker must
    fit on a single node, and only nodes matching the request's label selector count). Runs are
    sequential, so each is checked on its own.
    """
    problems = []
    for req in requests:
        if req.num_workers == 0:
            continue
        eligible = list(nodes)
        if req.label_selector:
            eligible = [n for n in nodes if label_matches(req.label_selector, n.labels)]
            if nodes and not eligible:
                seen = sorted(
                    {
                        f"{k}={v}"
                        for n in nodes
                        for k, v in n.labels.items()
                        if not k.startswith("ray.io/")
                    }
                )
                problems.append(
                    f"{req.what}: no alive node has labels {dict(req.label_selector)} "
                    f"(node labels in the cluster: {', '.join(seen) or 'none'}); fix its "
                    "label_selector or start such nodes (`ray start --labels=...`)"
                )
                continue
        pool: Mapping[str, float] = total
        if req.label_selector and eligible:
            pool = _sum(n.resources for n in eligible)
        for name, amount in req.per_worker.items():
            need = amount * req.num_workers
            have = float(pool.get(name, 0.0))
            if need > have + 1e-9:
                problems.append(
                    f"{req.what}: {req.num_workers} worker(s) x {_fmt(req.per_worker)} need "
                    f"{name} {need:g}, the {'matching nodes have' if req.label_selector else 'cluster has'} "
                    f"{name} {have:g}; {_hint(name)}"
                )
        if eligible and not any(
            all(float(n.resources.get(k, 0.0)) + 1e-9 >= v for k, v in req.per_worker.items())
            for n in eligible
        ):
            largest = max(eligible, key=lambda n: n.resources.get("CPU", 0.0))
            problems.append(
                f"{req.what}: no single node can hold one worker's {_fmt(req.per_worker)} "
                f"(largest node: {_fmt(largest.resources)})"
            )
    return problems


def _hint(resource: str) -> str:
    if resource == "GPU":
        return "set scaling.use_gpu: false or run on a cluster with GPU nodes"
    if resource.startswith("accelerator_type:"):
        return "change scaling.accelerator_type or add nodes with that GPU"
    return "lower scaling.num_workers or scaling.resources_per_worker, or add nodes"


def _sum(resources: Iterable[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in resources:
        for k, v in r.items():
            out[k] = out.get(k, 0.0) + float(v)
    return out

"""Connect to Ray (the CLI's only entry point into Ray) and check the spec fits the cluster."""

from __future__ import annotations

import os
import sys
from typing import Any

from pipelines.resources import Node, WorkerRequest, check_requests
from pipelines.spec import PipelineSpec, RulesModelSpec

# Ray Train's controller polls workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s) and a
# report() blocks until the next poll; 0.1 s makes per-round reporting affordable.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}

# Serve reads this when its controller, proxies and replicas start, from the environment their
# node was started with: the ingress is a property of the cluster, not of one application.
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"


def ingress_env(ingress: str) -> dict[str, str]:
    """The environment a Ray started here needs to serve HTTP through ``ingress``."""
    return {HAPROXY_ENV: "1" if ingress == "haproxy" else "0"}


def cluster_ingress() -> str:
    """The ingress the connected cluster's Serve uses: "haproxy" or "proxy".

    Read from the environment of this driver's node (on a job, the head), where Serve's
    controller runs; cluster configs set it on every node alike.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def node_setting() -> str | None:
        return os.environ.get(HAPROXY_ENV)

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    setting = ray.get(node_setting.options(scheduling_strategy=here).remote(), timeout=60)
    return "haproxy" if setting == "1" else "proxy"


def connect(spec: PipelineSpec, address: str | None) -> bool:
    """Join the cluster at ``address``/RAY_ADDRESS/spec, or start a local one. True if local."""
    import ray

    for k, v in TRAIN_ENV.items():
        os.environ.setdefault(k, v)
    target = address or os.environ.get("RAY_ADDRESS") or spec.ray.address
    local = False
    if ray.is_initialized():
        pass  # joined already (a notebook, a test session): use that cluster
    elif target:
        ray.init(address=target, runtime_env={"env_vars": dict(TRAIN_ENV)}, log_to_driver=True)
    else:
        if spec.serve.enabled:
            os.environ.update(ingress_env(spec.serve.ingress))
        ray.init(
            num_cpus=spec.ray.num_cpus,
            num_gpus=spec.ray.num_gpus,
            include_dashboard=True,
            runtime_env={"env_vars": dict(TRAIN_ENV)},
        )
        local = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    # Every Ray Data task and actor of this driver on matching nodes (reset when unset: the
    # context outlives one run in a notebook or a test session).
    ctx.execution_options.label_selector = (
        dict(spec.placement.data) if spec.placement.data else None
    )
    return local


def worker_requests(spec: PipelineSpec) -> list[WorkerRequest]:
    """Every placement the run will ask for: training workers, Ray Data work, serve replicas."""
    data = (
        [WorkerRequest("placement.data (Ray Data work)", 1, {"CPU": 1.0}, spec.placement.data)]
        if spec.placement.data
        else []
    )
    s = spec.serve
    serve = (
        [
            WorkerRequest(
                "serve (one replica)",
                1,
                {"CPU": s.num_cpus, **({"GPU": s.num_gpus} if s.num_gpus else {})},
                s.label_selector,
            )
        ]
        if s.enabled
        else []
    )
    return (
        data
        + serve
        + [
            WorkerRequest(
                f"models.{i} ({m.name})",
                m.scaling.num_workers,
                m.scaling.worker_resources(),
                m.scaling.label_selector,
            )
            for i, m in enumerate(spec.models)
            if not isinstance(m, RulesModelSpec)  # rules need no workers
        ]
    )


def check_cluster(spec: PipelineSpec) -> list[str]:
    """Problems with the spec's resource requests on the connected cluster."""
    import ray

    total: dict[str, Any] = ray.cluster_resources()
    nodes = [Node(n["Resources"], n.get("Labels") or {}) for n in ray.nodes() if n.get("Alive")]
    return check_requests(worker_requests(spec), total, nodes)

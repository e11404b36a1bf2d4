"""Connect to Ray (the CLI's only entry point into Ray) and check the spec fits the cluster."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
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


# Where each kind of Ray comes from, in the order `rayline run` looks (README "Set up and run").
LOCAL_NEW = "local new"  # started by this command, stopped when it ends
LOCAL_EXISTING = "local existing"  # a running cluster whose head is on this machine
REMOTE = "remote"  # a running cluster whose head is elsewhere
IN_PROCESS = "in this process"  # ray.init was called before (a notebook, a test session)


@dataclass(frozen=True)
class RayConnection:
    """Which Ray a command uses, and what it has."""

    kind: str  # LOCAL_NEW | LOCAL_EXISTING | REMOTE | IN_PROCESS
    address: str  # the cluster's GCS address
    source: str  # where the address came from ("" for a new Ray)
    cpus: float
    gpus: float
    notes: tuple[str, ...] = ()
    dashboard: str = ""  # host:port of the dashboard, when known

    @property
    def started(self) -> bool:
        """Started by this command: it stops (with its endpoint) when the command ends."""
        return self.kind == LOCAL_NEW

    def describe(self) -> str:
        """One line for the start of a run: which Ray, from where, with what."""
        has = f"{_count(self.cpus)} CPU" + (f", {_count(self.gpus)} GPU" if self.gpus else "")
        if self.started:
            line = f"Ray: {self.kind}, started for this command ({has}; it stops at the end)"
        elif self.kind == IN_PROCESS:
            line = f"Ray: the one this process is connected to, at {self.address} ({has})"
        else:
            line = f"Ray: {self.kind}, at {self.address} from {self.source} ({has})"
        if self.dashboard:
            line += f"; dashboard http://{self.dashboard.removeprefix('http://')}"
        return "\n".join([line, *(f"  note: {n}" for n in self.notes)])


def _count(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:g}"


def target_address(address: str | None, spec_address: str | None = None) -> tuple[str, str]:
    """The cluster to join and where it came from, or ("", "") to start a local Ray.

    In order: ``address`` (--address), RAY_ADDRESS, the spec's ray.address, then a cluster that
    `ray start` started on this machine (recorded by Ray in <ray temp dir>/ray_current_cluster,
    which `ray stop` removes) if its head still answers; ``ray.init()`` without an address would
    join that one too.
    """
    for value, source in (
        (address, "--address"),
        (os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS"),
        (spec_address, "the spec's ray.address"),
    ):
        if value:
            return value, source
    recorded = _ray_start_address()
    if recorded and _answers(recorded):
        return recorded, "`ray start` on this machine"
    return "", ""


def _ray_start_address() -> str | None:
    """The address the last `ray start` on this machine recorded, if any."""
    try:  # Ray's own lookup of the file (its temp dir follows RAY_TMPDIR/TMPDIR)
        from ray._common.utils import get_ray_address_file

        path = get_ray_address_file(None)
    except ImportError:
        path = "/tmp/ray/ray_current_cluster"
    try:
        with open(path) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _answers(address: str, timeout: float = 1.0) -> bool:
    """Whether something listens at host:port (a dead cluster leaves its address file behind)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def open_ray(
    address: str | None,
    spec_address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    ingress: str | None = None,
    env_vars: dict[str, str] | None = None,
) -> RayConnection:
    """Join the cluster ``target_address`` names, or start a local Ray (with ``num_cpus``/
    ``num_gpus``, serving through ``ingress`` when given). Reuses this process's connection."""
    import ray

    runtime_env = {"env_vars": dict(env_vars)} if env_vars else None
    notes: list[str] = []
    info = None
    if ray.is_initialized():
        kind, source = IN_PROCESS, "this process"
    else:
        target, source = target_address(address, spec_address)
        if target:
            asked = {"ray.num_cpus": num_cpus, "ray.num_gpus": num_gpus}
            notes += [
                f"the spec's {k}: {v} applies only to a Ray started for the run; the "
                "cluster keeps its own resources"
                for k, v in asked.items()
                if v is not None
            ]
            info = ray.init(address=target, runtime_env=runtime_env, log_to_driver=True)
            kind = ""
        else:
            if ingress is not None:
                os.environ.update(ingress_env(ingress))
            # "local": a new Ray even if a dead cluster's address file is still there.
            info = ray.init(
                address="local",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=True,
                runtime_env=runtime_env,
            )
            kind = LOCAL_NEW
    resources = ray.cluster_resources()
    gcs = ray.get_runtime_context().gcs_address
    if not kind:
        kind = LOCAL_EXISTING if _head_is_here() else REMOTE
    return RayConnection(
        kind,
        gcs,
        source if kind != LOCAL_NEW else "",
        float(resources.get("CPU", 0)),
        float(resources.get("GPU", 0)),
        tuple(notes),
        str(getattr(info, "dashboard_url", "") or ""),
    )


def _head_is_here() -> bool:
    """Whether the connected cluster's head node runs on this machine."""
    import ray
    from ray.util import get_node_ip_address

    here = get_node_ip_address()
    heads = [
        n for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"]
    ]
    return any(n.get("NodeManagerAddress") == here for n in heads)


def connect(spec: PipelineSpec, address: str | None) -> bool:
    """Join a cluster or start a local Ray for ``spec`` (see ``connect_spec``); True if started."""
    return connect_spec(spec, address).started


def connect_spec(spec: PipelineSpec, address: str | None) -> RayConnection:
    """Join the cluster at ``address``/RAY_ADDRESS/spec ray.address/a `ray start` on this
    machine, or start a local Ray sized by the spec's ``ray`` section."""
    import ray

    for k, v in TRAIN_ENV.items():
        os.environ.setdefault(k, v)
    conn = open_ray(
        address,
        spec.ray.address,
        num_cpus=spec.ray.num_cpus,
        num_gpus=spec.ray.num_gpus,
        ingress=spec.serve.ingress if spec.serve.enabled else None,
        env_vars=dict(TRAIN_ENV),
    )
    ctx = ray.data.DataContext.get_current()
    # Progress bars only on a terminal: not in a log file, a pipe or a job's output.
    ctx.enable_progress_bars = sys.stderr.isatty()
    # Every Ray Data task and actor of this driver on matching nodes (reset when unset: the
    # context outlives one run in a notebook or a test session).
    ctx.execution_options.label_selector = (
        dict(spec.placement.data) if spec.placement.data else None
    )
    return conn


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


def storage_note(storage: str) -> str | None:
    """A warning when a local storage folder serves a cluster of several nodes: Ray Train's
    checkpoints, the registry and the replicas' bundles must be where every node reads them
    (an object store, or a folder mounted at the same path on every node)."""
    import ray

    from components import uris

    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    if nodes < 2 or uris.is_uri(storage):
        return None
    return (
        f"warning: storage {storage} is a local folder and this cluster has {nodes} nodes: "
        "unless it is mounted at the same path on every node, use s3://, gs:// or hdfs:// "
        "storage (RAYLINE_STORAGE or the spec's storage)"
    )

"""Three Ray nodes on one machine (`ray start`): a head, a CPU node and a simulated GPU node.

The nodes start with Serve's HAProxy ingress on (as clusters/ shows), so the endpoint is reached
through HAProxy and the replicas' own HTTP servers. `rayline submit` runs a spec as a Ray job:
XGBoost lands on the CPU node, the torch model on the "GPU" node, Serve answers; `rayline
promote` then switches the running deployment to another version under load, through HAProxy. Then a node is lost mid-training (SIGKILL of its raylet, a process this
test started) and the run resumes from its checkpoint on the remaining node. Everything started
here is stopped here (by pid; never `ray stop`, which would stop every Ray of the user). Run
apart from the other tiers (`pytest -m cluster`): only one Ray cluster at a time on a machine.

Token auth as clusters/ runs it: every `ray start` has RAY_AUTH_MODE=token and this cluster's own
token file (RAY_AUTH_TOKEN_PATH, in the test's temp dir), and the clients in this process read the
same file. Nothing here reads or writes ~/.ray: the nodes run with HOME set to a temp folder and
usage stats off (Ray reads ~/.ray/config.json for those), so the tier passes on a fresh machine:
`HOME=$(mktemp -d) .venv/bin/pytest -m cluster`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from components import bundle
from components.registry import Registry
from pipelines.cli import main
from tests.conftest import CONFIGS
from tests.load import assert_switched, calls_during

VENV_BIN = Path(sys.executable).parent
# Ray reads the auth mode once, when it is first imported: set it before anything imports ray.
os.environ["RAY_AUTH_MODE"] = "token"
SERVE_PORT = 8012


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_token(folder: Path) -> Path:
    """A new token in a file only this user can read (as clusters/README.md makes one)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ray_auth_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


class LocalCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        # short: Ray's socket paths under the temp dir must stay within 107 bytes
        self.temp = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))
        self.port = _free_port()
        self.dashboard = _free_port()
        self.token = _write_token(root / "auth")
        self.home = root / "home"  # the nodes' HOME: nothing of theirs lands in the user's
        self.home.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token),
            "HOME": str(self.home),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            # three nodes on one machine: their HAProxies share the Serve, stats and metrics
            # ports (SO_REUSEPORT), which Serve turns off unless asked (one node per machine)
            "SERVE_SOCKET_REUSE_PORT_ENABLED": "1",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("RAY_AUTH_TOKEN", None)  # it would win over the file
        self.manager_ports: dict[str, int] = {}

    @contextlib.contextmanager
    def client_env(self) -> Iterator[None]:
        """This process as a client of the cluster (job submission, state API, `rayline
        promote`): the same token file, read afresh, and no ~/.ray; restored afterwards."""
        from ray._raylet import AuthenticationTokenLoader

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RAY_AUTH_MODE", "token")
            mp.setenv("RAY_AUTH_TOKEN_PATH", str(self.token))
            mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
            mp.delenv("RAY_AUTH_TOKEN", raising=False)
            mp.delenv("RAY_ADDRESS", raising=False)
            AuthenticationTokenLoader.instance().reset_cache()  # Ray caches the first token read
            try:
                yield
            finally:
                AuthenticationTokenLoader.instance().reset_cache()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def _start(self, *args: str) -> None:
        cmd = [str(VENV_BIN / "ray"), "start", f"--temp-dir={self.temp}", *args]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (
            f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )

    def start(self) -> None:
        self._start(
            "--head",
            f"--port={self.port}",
            "--num-cpus=1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--ray-client-server-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            "--labels=node-type=head",
        )
        for kind in ("cpu", "gpu"):
            self.add_worker(kind)

    def add_worker(self, kind: str) -> None:
        """A worker node labelled node-type=<kind>; "gpu" nodes also get a fake_gpu resource."""
        extra = ['--resources={"fake_gpu": 1}'] if kind == "gpu" else []
        self.manager_ports[kind] = _free_port()
        self._start(
            f"--address=127.0.0.1:{self.port}",
            "--num-cpus=3",
            f"--node-manager-port={self.manager_ports[kind]}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--labels=node-type={kind}",
            *extra,
        )

    def pids(self) -> list[int]:
        """Every process of this cluster: those whose command line names its temp dir, and all
        their descendants (agents and workers rename themselves to ray::...)."""
        import psutil

        found: set[int] = set()
        gcs = f":{self.port}"
        for p in psutil.process_iter(["pid", "cmdline"]):
            line = " ".join(p.info["cmdline"] or [])
            # the temp dir, or the GCS address (the Ray client server names only that)
            if str(self.temp) in line or ("--address=" in line and gcs in line and "ray" in line):
                found.add(p.info["pid"])
                with contextlib.suppress(psutil.Error):
                    found.update(c.pid for c in p.children(recursive=True))
        return sorted(found)

    def kill_node(self, kind: str) -> None:
        """The node is gone: its raylet and everything the raylet started, SIGKILLed."""
        import psutil

        raylet = psutil.Process(self.raylet_pid(kind))
        victims = [raylet, *raylet.children(recursive=True)]
        for p in victims:
            with contextlib.suppress(psutil.Error):
                p.kill()

    def raylet_pid(self, kind: str) -> int:
        import psutil

        flag = f"--node_manager_port={self.manager_ports[kind]}"
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = p.info["cmdline"] or []
            if any(c.endswith("raylet") for c in cmd[:1]) and flag in cmd:
                return int(p.info["pid"])
        raise LookupError(f"no raylet for the {kind} node")

    def stop(self) -> None:
        for pid in self.pids():
            if pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("multinode"))
    try:
        with c.client_env():
            c.start()
            yield c
    finally:
        c.stop()


def _spec(folder: Path, storage: Path, models: list[dict], serve: dict, epochs_rows: int) -> Path:
    doc = yaml.safe_load((CONFIGS / "tiny" / "classification.yaml").read_text())
    doc["name"] = folder.name
    doc["storage"] = str(storage)
    doc["data"]["source"]["params"]["rows"] = epochs_rows
    doc["features"]["standardize"] = True
    doc["models"] = models
    doc["serve"] = serve
    doc["placement"] = {"data": {"node-type": "!head"}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _report(storage: Path, name: str) -> dict:
    runs = sorted((storage / "runs" / name).iterdir())
    return json.loads((runs[-1] / "report.json").read_text())


def test_losing_a_node_mid_training_resumes_from_the_checkpoint(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    from ray.util.state import list_actors, list_nodes

    storage = tmp_path / "storage"
    models = [
        {
            "name": "mlp",
            "kind": "torch.mlp",
            "epochs": 10,
            "batch_size": 32,
            "early_stopping_epochs": None,
            "scaling": {
                "num_workers": 1,
                "resources_per_worker": {"CPU": 1},
                "label_selector": {"node-type": "in(cpu,gpu)"},
                "max_failures": 3,
            },
        }
    ]
    spec = _spec(tmp_path / "job-b", storage, models, {"enabled": False}, 8000)
    result: dict[str, int] = {}

    def run() -> None:
        result["code"] = main(
            ["submit", str(spec), "--address", cluster.address, "--working-dir", str(spec.parent)]
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.time() + 300
    snapshot = None
    while time.time() < deadline and thread.is_alive():
        found = list(
            (storage / "runs" / "job-b").glob("*/train/*/checkpoint_manager_snapshot.json")
        )
        if found and "checkpoint_" in found[0].read_text():
            snapshot = found[0]
            break
        time.sleep(0.2)
    assert snapshot is not None, "no checkpoint was registered"
    workers = list_actors(
        address=cluster.address,
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
    )
    assert len(workers) == 1
    labels = {n.node_id: n.labels for n in list_nodes(address=cluster.address, detail=True)}
    kind = labels[workers[0].node_id]["node-type"]
    cluster.kill_node(kind)  # the node is gone, with its workers
    thread.join(timeout=600)
    assert not thread.is_alive() and result["code"] == 0
    report = _report(storage, "job-b")
    m = report["models"][0]
    assert m["resumed_from"] >= 1 and m["rounds"] == 10
    assert m["trained_on"]["labels"]["node-type"] != kind  # finished on the remaining node
    reg = Registry(str(storage))
    versions = reg.versions("job-b")
    assert [v.version for v in versions] == [1]
    bundle.verify_bundle(versions[0].path)
    names = [p.name for p in (storage / "registry" / "job-b").iterdir()]
    assert not [n for n in names if ".tmp" in n], names  # no half-written publish left behind
    assert sorted(n for n in names if not n.startswith(".")) == ["1", "aliases.json"]
    cluster.add_worker(kind)  # a replacement joins, as after a real node failure


def test_job_places_training_by_node_type_and_serves(cluster: LocalCluster, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    models = [
        {
            "name": "gbdt",
            "num_boost_round": 20,
            "report_every": 10,
            "scaling": {
                "num_workers": 2,
                "resources_per_worker": {"CPU": 0.5},
                "label_selector": {"node-type": "cpu"},
            },
        },
        {
            "name": "mlp",
            "kind": "torch.mlp",
            "epochs": 2,
            "scaling": {
                "num_workers": 1,
                "resources_per_worker": {"CPU": 1, "fake_gpu": 1},
                "label_selector": {"node-type": "gpu"},
            },
        },
    ]
    serve = {
        "port": SERVE_PORT,
        "label_selector": {"node-type": "cpu"},
        "auth": "none",
        "api_key_env": None,
        "ingress": "haproxy",
    }
    spec = _spec(tmp_path / "job-a", storage, models, serve, 4000)
    code = main(
        ["submit", str(spec), "--address", cluster.address, "--working-dir", str(spec.parent)]
    )
    assert code == 0
    report = _report(storage, "job-a")
    placed = {m["name"]: m["trained_on"]["labels"].get("node-type") for m in report["models"]}
    assert placed == {"gbdt": "cpu", "mlp": "gpu"}
    assert report["endpoint"]["ingress"] == "haproxy"
    r = httpx.get(f"http://127.0.0.1:{SERVE_PORT}/job-a/healthz", timeout=10)
    assert r.status_code == 200 and r.json()["version"] == report["model"]["version"]


def test_promote_under_load_through_haproxy_drops_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """v1 served by a job; v2 registered by another; `rayline promote` from outside the cluster
    switches the running deployment while four clients keep calling it through HAProxy."""
    storage = tmp_path / "storage"
    port = SERVE_PORT  # Serve's port is the cluster's: the job-a test may have started it
    models = [{"name": "gbdt", "num_boost_round": 10, "scaling": {"num_workers": 0}}]
    serve = {
        "port": port,
        "auth": "none",
        "api_key_env": None,
        "ingress": "haproxy",
        "max_replicas": 1,
    }
    spec = _spec(tmp_path / "job-c", storage, models, serve, 2000)
    submit = ["submit", str(spec), "--address", cluster.address, "--working-dir", str(spec.parent)]
    assert main(submit) == 0
    assert main([*submit, "serve.enabled=false", "models.0.params.max_depth=2"]) == 0
    assert [v.version for v in Registry(str(storage)).versions("job-c")] == [1, 2]
    url = f"http://127.0.0.1:{port}/job-c"
    deployed = json.loads((storage / "serving" / "job-c.json").read_text())
    assert deployed["ingress"] == "haproxy" and deployed["version"] == 1
    row: dict[str, object] = {f"num_{i}": 0.1 * i for i in range(8)}
    body = {"rows": [{**row, "cat_0": "c0_1", "cat_1": "c1_2", "cat_2": "c2_3"}]}
    gcs = f"127.0.0.1:{cluster.port}"

    def promote() -> None:
        assert main(["promote", "job-c", "2", "--storage", str(storage), "--address", gcs]) == 0

    calls = calls_during(f"{url}/predict", body, promote)
    assert_switched(calls, old=1, new=2)

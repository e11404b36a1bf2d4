"""Resource checks: a request the cluster cannot hold is reported, never left to hang."""

from __future__ import annotations

from pipelines.resources import WorkerRequest, check_requests

NODES = [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}]
TOTAL = {"CPU": 6.0, "GPU": 1.0}


def test_fits() -> None:
    assert check_requests([WorkerRequest("m", 2, {"CPU": 2.0})], TOTAL, NODES) == []
    assert check_requests([WorkerRequest("m", 0, {"GPU": 8.0})], TOTAL, NODES) == []


def test_gpu_that_does_not_exist() -> None:
    problems = check_requests(
        [WorkerRequest("models.0 (x)", 2, {"CPU": 1.0, "GPU": 1.0})], {"CPU": 4.0}, [{"CPU": 4.0}]
    )
    assert any("need GPU 2" in p and "has GPU 0" in p and "use_gpu: false" in p for p in problems)


def test_too_many_cpus() -> None:
    problems = check_requests([WorkerRequest("models.1 (y)", 4, {"CPU": 2.0})], TOTAL, NODES)
    assert problems and "models.1 (y)" in problems[0] and "need CPU 8" in problems[0]


def test_worker_larger_than_any_node() -> None:
    problems = check_requests([WorkerRequest("m", 1, {"CPU": 5.0})], {"CPU": 6.0}, NODES)
    assert problems == [p for p in problems if "no single node" in p] and problems

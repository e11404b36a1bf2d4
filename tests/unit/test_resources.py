"""Resource checks: a request the cluster cannot hold is reported, never left to hang."""

from __future__ import annotations

from pipelines.resources import Node, WorkerRequest, check_requests, label_matches

NODES = [Node({"CPU": 2.0}), Node({"CPU": 4.0, "GPU": 1.0})]
TOTAL = {"CPU": 6.0, "GPU": 1.0}


def test_fits() -> None:
    assert check_requests([WorkerRequest("m", 2, {"CPU": 2.0})], TOTAL, NODES) == []
    assert check_requests([WorkerRequest("m", 0, {"GPU": 8.0})], TOTAL, NODES) == []


def test_gpu_that_does_not_exist() -> None:
    problems = check_requests(
        [WorkerRequest("models.0 (x)", 2, {"CPU": 1.0, "GPU": 1.0})],
        {"CPU": 4.0},
        [Node({"CPU": 4.0})],
    )
    assert any("need GPU 2" in p and "has GPU 0" in p and "use_gpu: false" in p for p in problems)


def test_too_many_cpus() -> None:
    problems = check_requests([WorkerRequest("models.1 (y)", 4, {"CPU": 2.0})], TOTAL, NODES)
    assert problems and "models.1 (y)" in problems[0] and "need CPU 8" in problems[0]


def test_worker_larger_than_any_node() -> None:
    problems = check_requests([WorkerRequest("m", 1, {"CPU": 5.0})], {"CPU": 6.0}, NODES)
    assert problems == [p for p in problems if "no single node" in p] and problems


LABELLED = [
    Node({"CPU": 4.0}, {"node-type": "cpu"}),
    Node({"CPU": 2.0, "GPU": 1.0, "accelerator_type:H100": 1.0}, {"node-type": "gpu"}),
]
LABELLED_TOTAL = {"CPU": 6.0, "GPU": 1.0, "accelerator_type:H100": 1.0}


def test_label_selector_syntax() -> None:
    labels = {"node-type": "gpu", "zone": "a"}
    assert label_matches({"node-type": "gpu"}, labels)
    assert not label_matches({"node-type": "cpu"}, labels)
    assert label_matches({"node-type": "!cpu"}, labels)
    assert label_matches({"zone": "in(a, b)"}, labels)
    assert not label_matches({"zone": "!in(a,b)"}, labels)
    assert not label_matches({"pool": "x"}, labels)  # a missing label never equals a value
    assert label_matches({"pool": "!x"}, labels)


def test_label_selector_counts_only_matching_nodes() -> None:
    fits = WorkerRequest("m", 2, {"CPU": 2.0}, {"node-type": "cpu"})
    assert check_requests([fits], LABELLED_TOTAL, LABELLED) == []
    # 3 x 2 CPUs fit the cluster (6) but not the cpu-labelled node (4)
    problems = check_requests(
        [WorkerRequest("models.0 (x)", 3, {"CPU": 2.0}, {"node-type": "cpu"})],
        LABELLED_TOTAL,
        LABELLED,
    )
    assert problems and "need CPU 6" in problems[0] and "matching nodes have CPU 4" in problems[0]


def test_label_nobody_has_names_the_labels_that_exist() -> None:
    problems = check_requests(
        [WorkerRequest("models.1 (dlrm)", 1, {"CPU": 1.0}, {"node-type": "tpu"})],
        LABELLED_TOTAL,
        LABELLED,
    )
    assert len(problems) == 1
    assert "no alive node has labels {'node-type': 'tpu'}" in problems[0]
    assert "node-type=cpu" in problems[0] and "node-type=gpu" in problems[0]


def test_accelerator_type_that_does_not_exist() -> None:
    req = WorkerRequest("m", 1, {"CPU": 1.0, "GPU": 1.0, "accelerator_type:A100": 0.001})
    problems = check_requests([req], LABELLED_TOTAL, LABELLED)
    assert problems and "accelerator_type:A100" in problems[0]
    assert "scaling.accelerator_type" in problems[0]
    ok = WorkerRequest("m", 1, {"CPU": 1.0, "GPU": 1.0, "accelerator_type:H100": 0.001})
    assert check_requests([ok], LABELLED_TOTAL, LABELLED) == []

"""Serving options: consistency checks, the Serve deployment options they become, the ingress."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.cluster import HAPROXY_ENV, ingress_env
from pipelines.spec import SpecError, spec_from_dict
from serve.app import deployment_options
from serve.config import ServeArgs, ServeOptions


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas (3) is more than max_replicas (2)"),
        (
            {"max_batch_size": 64, "max_ongoing_requests": 32},
            "max_batch_size (64) is more than max_ongoing_requests (32)",
        ),
        (
            {"target_ongoing_requests": 40, "max_ongoing_requests": 32},
            "target_ongoing_requests is more than max_ongoing_requests",
        ),
        ({"route_prefix": "models/x"}, "route_prefix must start with '/'"),
        ({"ingress": "nginx"}, "ingress"),
        ({"batch_wait_timeout_s": 2}, "batch_wait_timeout_s"),
    ],
)
def test_inconsistent_options_are_refused(options: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as e:
        ServeOptions.model_validate(options)
    assert needle in str(e.value)


def test_the_spec_names_a_bad_ingress() -> None:
    doc = {
        "name": "t",
        "task": "binary",
        "data": {"source": {"uri": "synthetic:binary", "params": {"rows": 100}}},
        "features": {"numeric": ["num_0"]},
        "models": [{"kind": "xgboost"}],
        "serve": {"ingress": "direct"},
    }
    with pytest.raises(SpecError) as e:
        spec_from_dict(doc, source="my.yaml")
    assert "serve.ingress" in str(e.value) and "'proxy' or 'haproxy'" in str(e.value)


def test_deployment_options_carry_the_spec() -> None:
    args = ServeArgs(
        storage="/s",
        model="m",
        version=3,
        min_replicas=2,
        max_replicas=5,
        target_ongoing_requests=3,
        upscale_delay_s=1,
        downscale_delay_s=9,
        max_ongoing_requests=24,
        max_batch_size=8,
        num_cpus=1.5,
        num_gpus=0.5,
        access_log=False,
        label_selector={"node-type": "gpu"},
    )
    opts = deployment_options(args)
    assert opts["autoscaling_config"] == {
        "min_replicas": 2,
        "max_replicas": 5,
        "initial_replicas": 2,
        "target_ongoing_requests": 3,
        "upscale_delay_s": 1,
        "downscale_delay_s": 9,
    }
    assert opts["max_ongoing_requests"] == 24
    assert opts["logging_config"] == {"enable_access_log": False}
    assert opts["ray_actor_options"] == {
        "num_cpus": 1.5,
        "num_gpus": 0.5,
        "label_selector": {"node-type": "gpu"},
    }
    # what a replica reloads on reconfigure(): the version, limits, batching, the key's source
    assert opts["user_config"]["version"] == 3 and opts["user_config"]["max_batch_size"] == 8
    assert "ingress" not in opts["user_config"]  # the cluster's, not a replica's


def test_ingress_env_turns_haproxy_on_and_off() -> None:
    assert ingress_env("haproxy") == {HAPROXY_ENV: "1"}
    # explicit "0": a local Ray started for `proxy` must not inherit a "1" from the shell
    assert ingress_env("proxy") == {HAPROXY_ENV: "0"}

# The two entry points of the README: `make demo` and `make test`. Both create the virtual
# environment on first use (torch first, pinned to a CPU build that admits this machine).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.rayline-installed

.PHONY: demo test lint env clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rayline run pipelines/configs/ranking.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Three pytest runs, one Ray cluster each (one at a time on a machine): the tiers sharing a local
# Ray; the serving tests that involve replicas coming and going again on a local Ray serving
# through HAProxy (Serve reads RAY_SERVE_ENABLE_HA_PROXY when Ray starts): what the ingress in
# front of the replicas changes (a shadow and a canary added and removed under load among them;
# autoscaling is the controller's, the same behind either; a version
# switch under load through HAProxy is the cluster tier's promote test); the cluster tier, which
# starts its own multi-node Ray with `ray start`.
HAPROXY_TESTS := ingress or killing or api_key or logged or sticky_canary
test: lint
	$(VENV)/bin/pytest -m "not gpu and not cluster" --durations=15
	RAY_SERVE_ENABLE_HA_PROXY=1 $(VENV)/bin/pytest tests/e2e/test_serve.py -m e2e -k "$(HAPROXY_TESTS)" --durations=5
	$(VENV)/bin/pytest -m cluster --durations=5

clean:
	rm -rf storage .pytest_cache .mypy_cache .ruff_cache

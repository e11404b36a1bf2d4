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

# Two pytest runs: the cluster tier starts its own multi-node Ray with `ray start`, which must not
# overlap the local Ray the other tiers share (one Ray cluster at a time on a machine).
test: lint
	$(VENV)/bin/pytest -m "not gpu and not cluster" --durations=15
	$(VENV)/bin/pytest -m cluster --durations=5

clean:
	rm -rf storage .pytest_cache .mypy_cache .ruff_cache

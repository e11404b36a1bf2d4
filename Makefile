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

test: lint
	$(VENV)/bin/pytest -m "not gpu" --durations=15

clean:
	rm -rf storage .pytest_cache .mypy_cache .ruff_cache

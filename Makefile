# Two commands for a newcomer: `make quickstart` and `make test`.
# Both create .venv when it is missing and install the core and the bundled plugins.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.mlflow-agent-installed
# The CPU build of torch; an unpinned torch pulls a multi-gigabyte CUDA build.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install quickstart test lint benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml plugins/pytorch/pyproject.toml plugins/sklearn/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH_PIN)"
	$(PIP) "$(TORCH_PIN)" -e ".[test]" -e plugins/pytorch -e plugins/sklearn
	touch $(STAMP)

quickstart: install
	$(VENV)/bin/mlflow-agent quickstart

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

# 88 columns and no unused names everywhere; strict types in the packages.
lint: install
	$(PY) -m ruff check mlflow_agent_core plugins tests benchmarks examples
	$(PY) -m mypy

benchmarks: install
	$(PY) benchmarks/tracking_throughput.py
	$(PY) benchmarks/registration.py

clean:
	rm -rf $(VENV) mlflow.db mlruns mlartifacts

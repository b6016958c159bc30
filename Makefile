# Two commands on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-overload install install-dev lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,zoo]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install       ## install infaas and run the demo (embedded server, digits zoo, a stream of queries)
	$(BIN)/infaas demo

test: install-dev   ## install test needs and run the whole suite (unit, integration, slow, zoo)
	$(BIN)/python -m pytest -ra

bench: install-dev  ## overhead benchmark: raw ONNX Runtime vs infaas REST/gRPC vs Ray Serve (Lite0, digits-mlp)
	bench/overhead/run

bench-overload: install-dev  ## overload: goodput, deadlines and recovery past capacity (one 1-core worker); SOAK=600 adds a soak
	$(BIN)/python bench/overload/run.py --soak $(or $(SOAK),0)

lint: install-dev  ## ruff (lint and format check), the import-linter layer contracts (pyproject.toml), the size bounds
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_bounds.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache

# `make demo` and `make test` each create (or reuse) .venv, install the project, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m dask_sgd.demo

test: $(STAMP)
	$(BIN)/ruff check dask_sgd tests examples benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check dask_sgd tests examples benchmarks
	$(BIN)/ruff format --check dask_sgd tests examples benchmarks

clean:
	rm -rf $(VENV)

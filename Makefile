# `make demo` and `make test` each create (or reuse) .venv, install the project, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-loaded lint clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m dask_sgd.demo

# The tests that start no Dask cluster run on every core; those with clusters (worker
# processes, timings, deaths) run one at a time. Each run fails if it collects no test.
test: $(STAMP) browser
	$(BIN)/ruff check dask_sgd tests examples
	$(BIN)/python -m pytest -m in_process -n auto --dist worksteal tests
	$(BIN)/python -m pytest -m "not in_process" --durations=20

# The same tests on a loaded machine: one CPU-bound process per core beside them (the
# cluster tests, whose timing a load could change). Slower; not part of `make test`.
test-loaded: $(STAMP) browser
	$(BIN)/python -m pytest -m "not in_process" --busy-cores --durations=20

# The dashboard's test drives a headless Chromium: Debian's package, where apt-get can install
# it (as root). Best effort: without it, that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && \
	      apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; }; } || \
	echo "Chromium could not be installed: the dashboard's browser test will be skipped."

lint: $(STAMP)
	$(BIN)/ruff check dask_sgd tests examples
	$(BIN)/ruff format --check dask_sgd tests examples

clean:
	rm -rf $(VENV)

# Two entry points that work on a fresh machine with only Python 3.11:
#   make quickstart   the main job on the embedded synthetic world
#   make test         the default test suite (what CI runs)
# Both create (or reuse) the virtual environment .venv themselves.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.albef-installed
PYTEST_ARGS ?=

.PHONY: venv quickstart test test-slow lint type clean gate

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/albef quickstart $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q $(PYTEST_ARGS)

gate: $(STAMP)
	$(BIN)/python benchmarks/ci_gate.py

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check albef tests benchmarks
	$(BIN)/ruff format --check albef tests benchmarks

type: $(STAMP)
	$(BIN)/mypy albef

clean:
	rm -rf $(VENV) .tox .pytest_cache .mypy_cache .ruff_cache build *.egg-info

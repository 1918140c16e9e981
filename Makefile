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

# pip byte-compiles all ~14,000 modules it installs (torch alone is most of them), one at a time: about 50 s
# of a 2-minute install. Instead the install skips that and one import of every albef module writes the
# bytecode of what the harness actually loads (about 2,300 modules, 15 s), also where PYTHONDONTWRITEBYTECODE
# is set in the environment.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -c "$$COMPILE_HOT_MODULES"
	@touch $(STAMP)

define COMPILE_HOT_MODULES
import importlib, pkgutil, albef, pytest
for module in pkgutil.walk_packages(albef.__path__, 'albef.'):
    if not module.name.endswith('__main__'):
        importlib.import_module(module.name)
endef
export COMPILE_HOT_MODULES

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

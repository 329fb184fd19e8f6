# Two commands (see README): `make demo` sets up and runs the main job on bundled sample
# data; `make test` sets up and runs the whole test suite (what .ci/run calls).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.veil-installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/veil demo --out demo-output

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pipeline.standard.generate --check

test: lint
	$(BIN)/python -m pytest -n 2 -q

bench: setup
	$(BIN)/python -m benchmarks.bench_metadata

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache .hypothesis

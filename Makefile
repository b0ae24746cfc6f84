# The two commands of the README: `make demo` (the main job) and `make test` (everything CI runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint unit integration bench kafka-up kafka-down schemas clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@

demo: setup
	$(BIN)/feedback demo

lint: setup
	$(BIN)/ruff check app tests bench
	$(BIN)/mypy app
	$(BIN)/feedback schemas check

test: lint
	$(BIN)/pytest -q tests

unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q tests/integration

bench: setup
	$(BIN)/python -m bench.throughput

schemas: setup
	$(BIN)/feedback schemas export

kafka-up: setup
	$(BIN)/feedback kafka up

kafka-down: setup
	$(BIN)/feedback kafka down

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache

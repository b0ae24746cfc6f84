# The two commands of the README: `make demo` (the main job) and `make test` (everything CI runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup tools demo test lint unit integration bench kafka-up kafka-down schemas clean

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

# The metrics tests run a real Prometheus server and promtool (Debian's package).
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus package (for the metrics and deploy tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends prometheus >/dev/null; }

test: lint tools
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

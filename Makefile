# Quick start: `make demo` and `make test` on a machine with only Python, pip and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.scopewatch-installed

.PHONY: demo test compat compat-peers bench bench-quick tools stack clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make demo: install into .venv and run the bundled buggy example service, then print its report
demo: $(STAMP)
	$(BIN)/scopewatch demo

## make tools: system tools some tests drive for real (Debian packages)
tools:
	bash .ci/install-tools

## make test: the whole suite (lint, types, tests) on the default Python
test: $(STAMP) tools
	$(BIN)/ruff check src tests benchmarks examples deploy/app
	$(BIN)/ruff format --check src tests benchmarks examples deploy/app
	$(BIN)/mypy
	SCOPEWATCH_STRICT=1 $(BIN)/python -m pytest

## make compat: the suite on every other CPython 3.10-3.13 found and on anyios older than 4.14,
## then anyio's own suite plain and instrumented (compat-peers)
compat: $(STAMP)
	$(BIN)/python .ci/compat.py

## make compat-peers: only anyio's own suite, plain vs instrumented (BACKENDS=asyncio,trio ...)
compat-peers: $(STAMP)
	$(BIN)/python .ci/peer_anyio.py $(if $(BACKENDS),--backends $(BACKENDS))

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

## make stack: the Collector/Jaeger/Prometheus/Grafana demo (needs a Docker engine)
stack:
	docker compose -f deploy/docker-compose.yaml up --build

clean:
	rm -rf $(VENV) .compat build dist

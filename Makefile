# The two set-up commands of README: `make run` and `make test`.
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
# pytest-xdist processes: most end-to-end tests wait on real processes, so 3 fit 2 cores.
TEST_WORKERS ?= 3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: install run test lint bench-receiver bench-capture
install: $(VENV)/.installed

## run: callrec on its embedded defaults (SQLite ledger and broker, recordings under ./var/)
run: $(VENV)/.installed
	PATH="$(BIN):$$PATH" $(BIN)/honcho start -f Procfile -p $${PORT:-8000} web worker relay beat

## test: lint and type-check, then every test (server tests skip locally when a server is missing; never in CI)
test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy config providers ledger ingest workers storage emulators callrec_cli.py callrec_commands
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

## demo: the emulators and callrec in ./var/demo, signed webhooks, recordings on disk (Ctrl-C stops)
.PHONY: demo
demo: $(VENV)/.installed
	PATH="$(BIN):$$PATH" $(BIN)/python -m emulators.demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-receiver: $(VENV)/.installed
	PATH="$(BIN):$$PATH" $(BIN)/python bench/receiver.py

bench-capture: $(VENV)/.installed
	PATH="$(BIN):$$PATH" $(BIN)/python bench/capture.py

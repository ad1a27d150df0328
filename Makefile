# Vidline: `make dev` runs the whole local stack, `make test` runs every test.
# Both create the virtual environment (.venv, Python 3.12) when needed.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# Python 3.12, the Lambda runtime our ffmpeg runs on: from PATH, or pyenv's.
PYTHON ?= $(shell for p in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 \
	/usr/local/bin/python3.12 /usr/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$$p"; break; }; done)
PYTEST_ARGS ?=

.PHONY: dev test lint typecheck unit integration e2e bench clean

$(BIN)/.installed: requirements.txt workers/requirements.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "Python 3.12 is needed (e.g. 'pyenv install 3.12'); or run make PYTHON=/path/to/python3.12" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

dev: $(BIN)/.installed
	$(BIN)/python -m devstack

test: $(BIN)/.installed lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: $(BIN)/.installed
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

e2e: $(BIN)/.installed
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .vidline

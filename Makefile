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
# make test runs two pytest processes at once: the tests that start a local
# stack (one after another: every stack writes the project's .vidline/), and
# all the others. Their outputs follow each other; both must pass.
STACK_TESTS := tests/e2e tests/browser tests/integration/test_devstack.py
OTHER_TESTS := tests $(addprefix --ignore=,$(STACK_TESTS))
# Debian's Chromium, which the browser tests drive (Playwright's own browser
# download is not needed). Installed with apt-get when missing.
CHROMIUM ?= /usr/lib/chromium/chromium
export VIDLINE_CHROMIUM := $(CHROMIUM)
# Debian's redis-server: the cache's tests run the Redis provider against a
# real server they start and stop themselves. Installed with apt-get when missing.
REDIS_SERVER ?= /usr/bin/redis-server
export VIDLINE_REDIS_SERVER := $(REDIS_SERVER)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: dev test lint typecheck unit integration e2e browser screenshot bench clean

$(BIN)/.installed: requirements.txt workers/requirements.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "Python 3.12 is needed (e.g. 'pyenv install 3.12'); or run make PYTHON=/path/to/python3.12" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests (apt-get, about a minute)"
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
	@test -x $@ || { echo "chromium is not at $@; set CHROMIUM=/path/to/chromium" >&2; exit 1; }

$(REDIS_SERVER):
	@echo "Installing Debian's redis-server for the cache's tests (apt-get)"
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
	@test -x $@ || { echo "redis-server is not at $@; set REDIS_SERVER=/path/to/redis-server" >&2; exit 1; }

dev: $(BIN)/.installed
	$(BIN)/python -m devstack

test: $(BIN)/.installed $(CHROMIUM) $(REDIS_SERVER) lint typecheck
	@mkdir -p test-artifacts
	@$(BIN)/python -m pytest $(STACK_TESTS) $(PYTEST_ARGS) > test-artifacts/stack-tests.log 2>&1 & stack=$$!; \
	$(BIN)/python -m pytest $(OTHER_TESTS) $(PYTEST_ARGS); others=$$?; \
	wait $$stack; stacks=$$?; \
	echo "--- tests that start a local stack (test-artifacts/stack-tests.log) ---"; \
	cat test-artifacts/stack-tests.log; \
	test $$others -eq 0 -a $$stacks -eq 0

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

browser: $(BIN)/.installed $(CHROMIUM)
	$(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

# Retake the README's screenshot (docs/library.png) from the real app.
screenshot: $(BIN)/.installed $(CHROMIUM)
	VIDLINE_SCREENSHOT_DIR=docs $(BIN)/python -m pytest tests/browser -k journey $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .vidline test-artifacts

# Lambda packages as the CI/CD path ships them: both apps (`chalice package`
# with the stage's merge templates, bytecode added) and the ffmpeg layer in build/.
.PHONY: package bench-cold-start
STAGE ?= dev
package: $(BIN)/.installed
	$(BIN)/python -m deploy.packaging --stage $(STAGE) --out build

bench-cold-start: $(BIN)/.installed
	$(BIN)/python bench/cold_start.py

# Deploying a stage to AWS (README "Deploying to AWS"); stages live in infra/stages.toml.
# `make plan` prints the steps and touches nothing; `make destroy` asks first.
# ENDPOINT=http://127.0.0.1:5000 aims any of them at a moto server instead.
.PHONY: plan deploy destroy cfnlint
DEPLOY_ARGS = --stage $(STAGE) $(if $(ENDPOINT),--endpoint-url $(ENDPOINT))
plan: $(BIN)/.installed
	$(BIN)/python -m deploy plan $(DEPLOY_ARGS)

deploy: $(BIN)/.installed
	$(BIN)/python -m deploy deploy $(DEPLOY_ARGS)

destroy: $(BIN)/.installed
	$(BIN)/python -m deploy destroy $(DEPLOY_ARGS)

# Also run by `make test` (tests/deploy/test_infra_template.py).
cfnlint: $(BIN)/.installed
	$(BIN)/cfn-lint infra/*.yaml

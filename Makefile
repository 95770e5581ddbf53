# tidings — the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: help venv up down status run test lint typecheck unit integration bench chaos clean tools

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "error: could not create $(VENV); apt-get install -y python3-venv"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)  ## create .venv and install tidings with its dev tools

up: venv  ## start Kafka, Postgres and Redis on 127.0.0.1 (idempotent)
	@bash deploy/local/stack.sh up

down:  ## stop what `make up` started (by pid)
	@bash deploy/local/stack.sh down

status:  ## show the local services
	@bash deploy/local/stack.sh status

run: up  ## bring the stack up and run the pipeline with demo traffic until Ctrl-C
	$(VENV)/bin/tidings doctor --service kafka --service postgres --service redis
	$(VENV)/bin/tidings dev

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

tools: venv  ## the checkers the tests run: kustomize, hadolint, promtool (into .local/tools/bin), chromium
	@bash deploy/tools.sh
	@bash scripts/promtool.sh
	@DEBIAN_FRONTEND=noninteractive bash scripts/browser.sh

test: up lint typecheck tools  ## lint, type-check, and run every test against the real stack
	$(PY) -m pytest

unit: venv  ## the unit tests only: no stack needed, fuzz tests at a quarter (make test: full)
	TIDINGS_TEST_FUZZ_SCALE=0.25 $(PY) -m pytest tests/unit -n auto

integration: up tools  ## the tests against the real stack (integration + the quick chaos subset)
	$(PY) -m pytest tests/integration tests/chaos tests/deploy

chaos: up  ## faults against a private stack, ≤ 20 min; table → docs/reliability.md (SEED=, ONLY=)
	@bash tests/chaos/deps.sh
	$(PY) -m tests.chaos.runner $(if $(SEED),--seed $(SEED)) $(if $(ONLY),--only $(ONLY))

clean: down  ## stop the stack and delete .local (all local data)
	@if [ -L .local/postgres ]; then rm -rf "$$(readlink -f .local/postgres)"; fi
	rm -rf .local

# ---------------------------------------------------------------- bench (own venv: faust-streaming)
BENCH_VENV := .local/bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml bench/requirements.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -e . -r bench/requirements.txt
	@touch $@

bench: up $(BENCH_STAMP)  ## benchmark vs raw confluent-kafka, faust and the client-library limits (QUICK=1: under 3 min)
	@bash bench/peers.sh
	$(BENCH_VENV)/bin/python -m bench.harness $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

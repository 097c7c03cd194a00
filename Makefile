# The suite's commands. Every target sets itself up first: on a fresh clone,
# `make run-url_shortener` and `make test` are all a user needs.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SERVICES := url_shortener rate_limiter chat
PYTEST_ARGS ?=
LOAD_USERS ?= 50
LOAD_TIME ?= 30s

RUN := $(addprefix run-,$(SERVICES))
BENCH := $(addprefix bench-,$(SERVICES))
LOAD := $(addprefix load-,$(SERVICES))

# Static pattern rules (`$(RUN): run-%: ...`): plain pattern rules are never applied to
# targets listed in .PHONY.
.PHONY: help install test lint format bench clean stop-redis experiment-chat $(RUN) $(BENCH) $(LOAD)

help: ## Show this help
	@grep -hE '^[$$()a-zA-Z_%-]+:.*?## ' $(MAKEFILE_LIST) | sed -E 's/^\$$\(([A-Z]+)\): ([a-z]+-%): [^#]*/\2:/'  | sed 's/-%:/-<service>:/' | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'
	@echo "  services: $(SERVICES)"

install: $(STAMP) ## Create .venv and install the suite with its dev tools (idempotent)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: install ## Run the whole test suite (real Redis, SQLite, and PostgreSQL if TEST_DATABASE_URL is set)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

$(RUN): run-%: install ## Run a service on its default port (starts the shared local Redis if REDIS_URL is unset)
	$(PY) -m $*

$(BENCH): bench-%: install ## Benchmark a service against its same-run baselines
	$(PY) -m benchmarks.$*

bench: $(BENCH) ## Run every benchmark

$(LOAD): load-%: install ## Locust, headless, against a running service; HTML report under reports/
	@mkdir -p reports
	$(VENV)/bin/locust -f $*/locustfile.py --headless -u $(LOAD_USERS) -r 10 -t $(LOAD_TIME) \
	  --html reports/$*.html

experiment-chat: install ## Chat: messages lost/duplicated on reconnect with and without sync; delivery latency vs room size
	$(PY) -m benchmarks.chat_experiment

stop-redis: install ## Stop the shared local Redis that run-* started (its data stays in .data/redis)
	$(PY) -c "from pathlib import Path; from common.redis_server import stop_shared_redis as s; print('stopped' if s(Path('.data')) else 'not running')"

clean: ## Remove caches (keeps .venv and .data)
	rm -rf .pytest_cache .mypy_cache .ruff_cache reports

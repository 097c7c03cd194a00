# The suite's commands. Every target sets itself up first: on a fresh clone,
# `make run-url_shortener` and `make test` are all a user needs.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SERVICES := url_shortener rate_limiter task_queue chat notifications
PYTEST_ARGS ?=
# `make test TEST_WORKERS=3` runs the tests on 3 pytest-xdist workers: the suite waits on
# processes, sockets and timers far more than it computes (tests/conftest.py keeps each module,
# and everything on RabbitMQ, on one worker). Serial (0) by default until a quiet-machine
# run shows the parallel suite as steady as the serial one (CONTRIBUTING.md, "Tests").
TEST_WORKERS ?= 0
LOAD_USERS ?= 50
LOAD_TIME ?= 30s

RUN := $(addprefix run-,$(SERVICES))
BENCH := $(addprefix bench-,$(SERVICES))
LOAD := $(addprefix load-,$(SERVICES))

# Static pattern rules (`$(RUN): run-%: ...`): plain pattern rules are never applied to
# targets listed in .PHONY.
.PHONY: help install test fuzz lint format bench clean start-redis stop-redis $(RUN) $(BENCH) $(LOAD)
.PHONY: protos-rate_limiter experiment-rate_limiter
.PHONY: experiment-chat
.PHONY: experiment-task_queue
.PHONY: experiment-url_shortener
.PHONY: protos-rate_limiter experiment-rate_limiter experiment-notifications

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

test: install ## Run the whole test suite on TEST_WORKERS workers (real Redis, SQLite, PostgreSQL if TEST_DATABASE_URL is set)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

fuzz: install ## The contract test with many more examples per operation, from a random seed
	CONTRACT_EXAMPLES=$${CONTRACT_EXAMPLES:-300} CONTRACT_SEED=$${CONTRACT_SEED-} CONTRACT_TIMEOUT=$${CONTRACT_TIMEOUT:-1800} \
	  $(PY) -m pytest tests/contract -p no:cacheprovider $(PYTEST_ARGS)

lint: install ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Extra arguments for a service's run target (the task queue starts API + workers + scheduler,
# the shortener its server and a visit writer).
RUN_ARGS_task_queue := all
RUN_ARGS_url_shortener := all
# The notifications: API + local SMTP/SMS/webhook sinks + one worker pool per channel + sweeper.
RUN_ARGS_notifications := all

$(RUN): run-%: install ## Run a service on its default port (starts the shared local Redis if REDIS_URL is unset)
	$(PY) -m $* $(RUN_ARGS_$*)

$(BENCH): bench-%: install ## Benchmark a service against its same-run baselines
	$(PY) -m benchmarks.$*

bench: $(BENCH) ## Run every benchmark

$(LOAD): load-%: install ## Locust, headless, against a running service; HTML report under reports/
	@mkdir -p reports
	$(VENV)/bin/locust -f $*/locustfile.py --headless -u $(LOAD_USERS) -r 10 -t $(LOAD_TIME) \
	  --html reports/$*.html

experiment-chat: install ## Chat: messages lost/duplicated on reconnect with and without sync; delivery latency vs room size
	$(PY) -m benchmarks.chat_experiment

start-redis: install ## Start the shared local Redis (as run-* does) at its recorded address
	$(PY) -m common.redis_server start

stop-redis: install ## Stop the shared local Redis; returns once it has exited (data stays in .data/redis)
	$(PY) -m common.redis_server stop

clean: ## Remove caches (keeps .venv and .data)
	rm -rf .pytest_cache .mypy_cache .ruff_cache reports

protos-rate_limiter: install ## Regenerate the limiter's Envoy gRPC modules from rate_limiter/envoy_api/*.proto
	$(PY) -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. \
	  rate_limiter/envoy_api/base.proto rate_limiter/envoy_api/ratelimit.proto rate_limiter/envoy_api/rls.proto
	rm -f rate_limiter/envoy_api/base_pb2_grpc.py rate_limiter/envoy_api/ratelimit_pb2_grpc.py

experiment-rate_limiter: install ## One bursty trace through each limiter algorithm: a table and rate_limiter/experiment.png
	$(PY) -m rate_limiter.experiment

experiment-url_shortener: install ## One Zipf redirect load: SQL only, + Redis, + in-process cache, + visit stream; url_shortener/experiment.png
	$(PY) -m benchmarks.url_shortener_experiment

experiment-task_queue: install ## kill -9 under acks early vs late; a long ETA vs the scheduler: tables and task_queue/experiment.png
	$(PY) -m task_queue.experiment
experiment-notifications: install ## Retries vs duplicates, and the circuit breaker on/off: figures and notifications/experiment.png
	$(PY) -m benchmarks.notifications_experiment

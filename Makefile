# The two commands: `make run` (the gateway with embedded defaults and a demo org)
# and `make test` (lint and the whole suite on real PostgreSQL, Redis and RabbitMQ).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/cognitude
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_BROKER_URL ?= amqp://guest:guest@127.0.0.1:5672//

.PHONY: run test lint bench worker beat

$(STAMP): requirements.txt requirements-dev.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python bin/run-demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	bin/ensure-services
	bin/ensure-browser
	$(BIN)/ruff check .
	DATABASE_URL=$(TEST_DATABASE_URL) TEST_REDIS_URL=$(TEST_REDIS_URL) \
	TEST_BROKER_URL=$(TEST_BROKER_URL) REDIS_URL= CELERY_BROKER_URL= \
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	bin/ensure-services
	$(BIN)/python bench/run.py $(BENCH_ARGS)

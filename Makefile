# The two commands: `make run` (the gateway with embedded defaults and a demo org)
# and `make test` (lint and the whole suite on real PostgreSQL, Redis and RabbitMQ).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# requirements.txt alone, as the Dockerfile installs it: what production really has.
SMOKE_VENV := .venv-smoke
SMOKE_STAMP := $(SMOKE_VENV)/.installed

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/cognitude
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_BROKER_URL ?= amqp://guest:guest@127.0.0.1:5672//

.PHONY: run test lint smoke bench worker beat

$(STAMP): requirements.txt requirements-dev.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# Rebuilt from nothing, so that a package dropped from requirements.txt is gone here too.
$(SMOKE_STAMP): requirements.txt
	rm -rf $(SMOKE_VENV)
	$(PYTHON) -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $(SMOKE_STAMP)

run: $(STAMP)
	$(BIN)/python bin/run-demo

lint: $(STAMP)
	$(BIN)/ruff check . bin/run-demo bin/smoke-install

smoke: $(SMOKE_STAMP)
	bin/ensure-services
	DATABASE_URL=$(TEST_DATABASE_URL) $(SMOKE_VENV)/bin/python bin/smoke-install

test: $(STAMP) smoke
	bin/ensure-browser
	$(BIN)/ruff check . bin/run-demo bin/smoke-install
	DATABASE_URL=$(TEST_DATABASE_URL) TEST_REDIS_URL=$(TEST_REDIS_URL) \
	TEST_BROKER_URL=$(TEST_BROKER_URL) REDIS_URL= CELERY_BROKER_URL= \
	$(BIN)/python -m pytest -n 4 --dist loadgroup --durations=25 $(PYTEST_ARGS)
	# make run's path: SQLite, the in-process hot tier, inline tasks (tests/test_embedded.py).
	env -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL $(BIN)/python -m pytest -m embedded

bench: $(STAMP)
	bin/ensure-services
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The fault suite under load (bench/chaos.py): minutes, loopback only, its own Redis,
# broker and PostgreSQL cluster; prints the fault table. The soak: 20 minutes steady.
# The machine's PostgreSQL only holds the migrated template that the private cluster copies.
CHAOS_TEMPLATE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/cognitude_chaos_template
.PHONY: chaos soak
chaos: $(STAMP)
	bin/ensure-services
	CHAOS_TEMPLATE_DATABASE_URL=$(CHAOS_TEMPLATE_DATABASE_URL) $(BIN)/python bench/chaos.py $(CHAOS_ARGS)

soak: $(STAMP)
	bin/ensure-services
	CHAOS_TEMPLATE_DATABASE_URL=$(CHAOS_TEMPLATE_DATABASE_URL) $(BIN)/python bench/soak.py $(SOAK_ARGS)

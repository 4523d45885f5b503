# The two commands: `make run` (the whole system on SQLite + a project-local RabbitMQ) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test chaos venv lint format bench bench-smoke stop clean lock lock-check

# Installed from the hashed lock only: every package pinned, every file checked against its hash.
$(VENV)/.installed: requirements.lock requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	touch $@

venv: $(VENV)/.installed

run: venv
	scripts/run.sh

test: venv
	scripts/test.sh $(PYTEST_ARGS)

# ruff, then mypy over the apps with the Django and DRF plugins (mypy.ini); the plugin loads kaapi.settings,
# which needs a SECRET_KEY.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	SECRET_KEY=type-checking-only $(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: venv
	$(PY) bench/run_all.py

# Every benchmark with tiny sizes (a few minutes; CI runs it after make test): a broken benchmark fails here.
bench-smoke: venv
	scripts/test.sh tests/e2e/test_bench_smoke.py $(PYTEST_ARGS)

# Refresh the locks after editing requirements*.txt (`make lock ARGS=--upgrade` resolves everything anew).
lock: venv
	scripts/lock.sh $(ARGS)

# Fails when a lock does not match its input (CI runs it).
lock-check: venv
	scripts/lock.sh --check

stop:
	-scripts/services.sh stop dev
	-scripts/services.sh stop test
	-scripts/services.sh stop chaos

clean: stop
	rm -rf .services var

chaos: venv
	KAAPI_SERVICES_PROFILE=chaos scripts/test.sh tests/chaos $(PYTEST_ARGS)

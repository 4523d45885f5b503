# The two commands: `make run` (the whole system on SQLite + a project-local RabbitMQ) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test chaos venv lint format bench stop clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	scripts/run.sh

test: venv
	scripts/test.sh $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: venv
	$(PY) bench/run_all.py

stop:
	-scripts/services.sh stop dev
	-scripts/services.sh stop test
	-scripts/services.sh stop chaos

clean: stop
	rm -rf .services var

chaos: venv
	KAAPI_SERVICES_PROFILE=chaos scripts/test.sh tests/chaos $(PYTEST_ARGS)

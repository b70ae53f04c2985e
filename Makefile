# MIDAS: `make run` starts everything, `make test` runs the suite, `make stop` stops it.
VENV   ?= .venv
# test processes of `make test` (every test starts its own Redis, workers and folders, so they run side by side)
TEST_WORKERS ?= 2
PY     := $(VENV)/bin/python
SVC    := $(PY) -m background_tasks.services

.PHONY: run stop status restart test lint format bench setup setup-dev samples clean

run: setup
	$(SVC) start
	@$(SVC) status
	@if [ -f background_tasks/document_tasks.py ]; then $(PY) -m background_tasks.samples; fi
	@$(PY) -m background_tasks.launcher.next_steps

stop:
	@if [ -x $(PY) ]; then $(SVC) stop; else echo "nothing to stop (no $(VENV))"; fi

status:
	@$(SVC) status

restart: setup
	$(SVC) restart

samples: setup
	$(PY) -m background_tasks.samples

test: setup-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist load

lint: setup-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup-dev
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: setup-dev
	$(PY) -m bench

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh --dev

clean:
	rm -rf .pytest_cache .ruff_cache

# Two commands for a newcomer: `make demo` and `make test`. Everything else is for maintainers.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The checkout's venv gets every extra: the tests cover the demo backends and PostgreSQL. A production
# install needs none of them (`pip install bitrix-worker`, plus `[postgres]` for a PostgreSQL mapping store).
EXTRAS := dev,demo,postgres
# REDIS_URL: tests and benchmarks use it (default redis://127.0.0.1:6379/0) and start a server when none
# answers; `make demo` uses it only when the user set it, and otherwise runs an embedded Valkey.

.PHONY: demo test lint typecheck chaos bench venv ensure-redis clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.11 is required (none found on PATH)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

venv: $(STAMP)

ensure-redis: $(STAMP)
	@$(BIN)/python scripts/ensure_redis.py

demo: $(STAMP)
	$(BIN)/bitrix-worker demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) ensure-redis lint typecheck
	$(BIN)/pytest -m "not slow" -p no:cacheprovider

chaos: $(STAMP) ensure-redis
	$(BIN)/pytest -m slow -p no:cacheprovider -s tests/chaos

bench: $(STAMP) ensure-redis
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS),bench]'
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache .hypothesis

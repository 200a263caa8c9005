# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install run test unit integration e2e lint typecheck bench postgres asyncapi clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m scripts.run

# The whole suite: lint, types, unit, integration (SQLite + PostgreSQL), end-to-end.
test: install lint typecheck postgres
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q tests/unit

integration: install postgres
	$(BIN)/pytest -q tests/integration

e2e: install postgres
	$(BIN)/pytest -q tests/e2e

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy shared services scripts bench

# Integration tests create and drop their own databases on the local PostgreSQL.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	  echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1

bench: install postgres
	$(BIN)/python -m bench

asyncapi: install
	$(BIN)/python -m shared.asyncapi > docs/asyncapi.json

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

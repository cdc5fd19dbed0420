# tapwatch — `make demo` and `make test` set up a fresh machine by themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_PORT ?= 8080
SYSTEM_STAMP := $(VENV)/.system-stamp
export TAPWATCH_TEST_PG_URL ?= postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test

.PHONY: demo test bench lint system-deps postgres clean

$(SYSTEM_STAMP):
	bash scripts/system-deps.sh
	@mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml | $(SYSTEM_STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $@

system-deps: $(SYSTEM_STAMP)

postgres: $(SYSTEM_STAMP)
	bash scripts/ensure-postgres.sh

# the example site's inventory and alerts, then the console serving it (Ctrl-C stops it)
demo: $(STAMP)
	$(BIN)/tapwatch demo --dir demo
	@echo
	@echo "console: log in as 'owner' with the password printed below (DEMO_PORT=$(DEMO_PORT))"
	$(BIN)/tapwatch serve --db demo/tapwatch.db --port $(DEMO_PORT)

test: $(STAMP) postgres
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache .mypy_cache

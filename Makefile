# Two commands set everything up on a fresh clone:
#   make run    start the daemon on its defaults (real exchanges, SQLite under ./data)
#   make test   run the whole test suite
# Each bootstraps .venv from python3 on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?=

.PHONY: run demo test lint check-config clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,fast]'
	touch $@

run: $(STAMP)
	$(BIN)/bittrade-feed serve $(if $(CONFIG),--config $(CONFIG))

demo: $(STAMP)
	$(BIN)/bittrade-feed serve --config examples/demo.toml

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bittrade_feed tests bench
	$(BIN)/ruff format --check bittrade_feed tests bench
	$(BIN)/mypy bittrade_feed

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

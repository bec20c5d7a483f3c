# Two commands set everything up on a fresh clone:
#   make run    start the daemon on its defaults (real exchanges, SQLite under ./data)
#   make test   run the whole test suite
# Each bootstraps .venv from python3 on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make run` needs only the daemon (and uvloop); `make test` adds the test and lint tools.
RUN_STAMP := $(VENV)/.installed-run
CONFIG ?=

.PHONY: run demo test test-deps lint ops-check clean

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[fast]'
	touch $@

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,fast]' -e ./clients/python
	touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/bittrade-feed serve $(if $(CONFIG),--config $(CONFIG))

demo: $(RUN_STAMP)
	$(BIN)/bittrade-feed serve --config examples/demo.toml

# System packages the tests drive (promtool, Chromium) and the JS client's dev packages.
# Installed with apt-get/npm when running as root on Debian (CI); otherwise the
# scripts say what is missing.
test-deps: $(STAMP)
	scripts/test-deps.sh

test: test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	cd clients/js && npm test

lint: $(STAMP)
	$(BIN)/ruff check bittrade_feed tests bench clients/python
	$(BIN)/ruff format --check bittrade_feed tests bench clients/python
	$(BIN)/mypy bittrade_feed
	$(BIN)/mypy clients/python/bittrade_feed_client clients/python/tests/typing_example.py

ops-check: $(STAMP)
	scripts/ops-checks.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache clients/js/node_modules

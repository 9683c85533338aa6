# Everything a fresh machine needs goes through these targets: `make run` and
# `make test` create .venv and install into it; `make test` also installs
# Debian's Chromium for the browser tests when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

NODE_PEER := bench/peers/socketio_node

.PHONY: install run test lint typecheck unit browser-deps clean bench bench-quick bench-deps

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "dmhub needs Python 3.11+")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,browser]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/dmhub serve

browser-deps:
	@scripts/ensure-chromium.sh

lint: $(STAMP)
	$(PY) -m ruff check chat tests bench
	$(PY) -m ruff format --check chat tests bench

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest --ignore=tests/browser

test: $(STAMP) browser-deps lint typecheck
	$(PY) -m pytest

# The side-by-side benchmark (bench/README.md): dmhub and the engines people
# pick instead, under the same generator. Under 30 minutes; --quick is a smoke run.
bench-deps: $(STAMP)
	$(PY) -m pip install --quiet -r bench/requirements.txt
	cd $(NODE_PEER) && npm ci --no-audit --no-fund --loglevel=error

bench: bench-deps
	$(PY) bench/run.py

bench-quick: bench-deps
	$(PY) bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Everything a fresh machine needs goes through these targets: `make run` and
# `make test` create .venv and install into it; `make test` also installs
# Debian's Chromium for the browser tests when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Serving needs dmhub and its dependencies only; the tools (pytest, ruff, mypy,
# Playwright) come with the first target that uses them. A stamp per set, named
# after pyproject.toml's checksum, so an edited pyproject.toml reinstalls.
PYPROJECT_SUM := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(PYPROJECT_SUM)
DEV_STAMP := $(VENV)/.installed-dev-$(PYPROJECT_SUM)

NODE_PEER := bench/peers/socketio_node

.PHONY: install run test lint typecheck unit browser-deps clean bench bench-quick bench-deps spam-sim

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "dmhub needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	rm -f $(VENV)/.installed-run-*
	touch $@

# The dev set includes everything serving needs, so it stands for both.
$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,browser]'
	rm -f $(VENV)/.installed-*
	touch $@ $(RUN_STAMP)

install: $(DEV_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/dmhub serve

browser-deps:
	@scripts/ensure-chromium.sh

lint: $(DEV_STAMP)
	$(PY) -m ruff check chat tests bench
	$(PY) -m ruff format --check chat tests bench

typecheck: $(DEV_STAMP)
	$(PY) -m mypy

# Two pytest-xdist workers: the suite spends much of its time waiting (servers
# starting, deadlines, failovers), so two share a 2-core machine well. Each
# worker has its own Valkey, cluster and dmhub processes (session fixtures, free
# ports). A plain `python -m pytest` runs in one process, prints included.
PYTEST_WORKERS ?= 2

unit: $(DEV_STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --ignore=tests/browser

test: $(DEV_STAMP) browser-deps lint typecheck
	$(PY) -m pytest -n $(PYTEST_WORKERS)

# The side-by-side benchmark (bench/README.md): dmhub and the engines people
# pick instead, under the same generator. Under 30 minutes; --quick is a smoke run.
bench-deps: $(DEV_STAMP)
	$(PY) -m pip install --quiet -r bench/requirements.txt
	cd $(NODE_PEER) && npm ci --no-audit --no-fund --loglevel=error

bench: bench-deps
	$(PY) bench/run.py

bench-quick: bench-deps
	$(PY) bench/run.py --quick

# Open DMs under a mass-messaging attack (bench/spam_sim.py): its own Valkey and
# dmhub on 127.0.0.1, under two minutes; a small size runs in `make test`.
spam-sim: $(DEV_STAMP)
	$(PY) bench/spam_sim.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Two commands do all set-up on a fresh machine (Python 3.11, Node/npm, make):
#   make demo   -- the local autoscaling demo (installs what is missing first)
#   make test   -- lint, types, unit, integration, e2e (installs what is missing first)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
AZURITE := node_modules/.bin/azurite
DATA := .local-data
PYTEST := $(PY) -m pytest
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
# Ray must not try to reach anything beyond loopback (usage stats are sent to an outside server otherwise).
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help install demo run test lint types unit integration e2e bench clean

help:
	@echo "make demo         run the local autoscaling demo (Azurite + local host + real Ray on 127.0.0.1)"
	@echo "make run          serve the API on http://127.0.0.1:7071/api with Azurite (Ctrl-C stops everything)"
	@echo "make test         lint, types, unit, integration and e2e tests"
	@echo "make bench        run the benchmarks under bench/"
	@echo "make azure-smoke  deploy to a real subscription and check a spot cluster end to end (AZURE_SUBSCRIPTION_ID, SMOKE_OK=1)"
	@echo "make clean        remove local state (.local-data, demo-out)"

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	# The azray CLI into .venv/bin (its dependencies are pinned in requirements-dev.txt).
	$(PIP) install --quiet --no-deps -e .
	# The repository root on the venv's path, so `.venv/bin/python bench/NAME.py` imports the project from anywhere.
	$(PY) -c "import os, sysconfig; open(os.path.join(sysconfig.get_paths()['purelib'], 'ray-autoscaler-repo.pth'), 'w').write(os.getcwd() + '\n')"
	touch $@

node_modules/.installed: package.json
	@command -v npm >/dev/null || { echo "need npm on PATH (Node.js 20+) for Azurite"; exit 1; }
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# local.settings.json holds this machine's secret token key; it is created once and never committed.
local.settings.json: local.settings.json.example | $(VENV)/.installed
	$(PY) -c "import json,secrets; s=json.load(open('local.settings.json.example')); \
	s['Values']['CLUSTER_TOKEN_KEY']=secrets.token_hex(32); json.dump(s, open('local.settings.json','w'), indent=2)"
	chmod 600 local.settings.json

demo: install local.settings.json
	$(PY) -m examples.demo

run: install local.settings.json
	$(PY) -m local.run

include infra/checks.mk
include infra/smoke.mk

test: install infra-tools lint types unit integration e2e

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# What cloud-init ships to a VM (the head agent, every VM's preempt watch) runs on the image's python3 (3.10 on Ubuntu
# 22.04): it is type-checked as 3.10 too.
types: install
	$(VENV)/bin/mypy .
	$(VENV)/bin/mypy --python-version 3.10 $$($(PY) -c 'from provisioning.azure.cloud_init import shipped_source_files as f; print(*f())')

unit: install
	$(PYTEST) tests/unit -q

integration: install
	$(PYTEST) tests/integration -q

e2e: install
	$(PYTEST) tests/e2e -q

bench: install
	PYTHONPATH=. $(PY) bench/cold_start.py
	PYTHONPATH=. $(PY) bench/planner.py
	PYTHONPATH=. $(PY) bench/arm_calls.py
	PYTHONPATH=. $(PY) bench/latency_local.py
	PYTHONPATH=. $(PY) bench/faults.py
	PYTHONPATH=. $(PY) bench/load.py
	PYTHONPATH=. $(PY) bench/simulate.py
	PYTHONPATH=. $(PY) bench/burst.py

clean:
	rm -rf $(DATA) demo-out

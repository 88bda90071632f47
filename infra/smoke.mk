# `make azure-smoke`: the end-to-end smoke test on a real Azure subscription (docs/azure-smoke.md). It deploys the
# control plane with azd into a fresh environment, runs a one-worker spot cluster and a Ray task on it, deletes all of
# it and prints its timings as JSON on the last line. It spends money: it refuses to start unless
# AZURE_SUBSCRIPTION_ID is set and SMOKE_OK=1. Included from the Makefile; nothing else runs it.
#   make azure-smoke AZURE_SUBSCRIPTION_ID=<id> SMOKE_OK=1 [AZURE_LOCATION=swedencentral]
# Optional: SMOKE_HEAD_VM_SIZE, SMOKE_WORKER_VM_SIZE, SMOKE_IMAGE_ID (docs/image.md), SMOKE_ENV_NAME,
# SMOKE_CLUSTER_NAME.

SMOKE_PYTHON ?= .venv/bin/python
# Variables given on the make command line reach the runner through the environment.
export AZURE_SUBSCRIPTION_ID SMOKE_OK AZURE_LOCATION SMOKE_HEAD_VM_SIZE SMOKE_WORKER_VM_SIZE SMOKE_IMAGE_ID \
	SMOKE_ENV_NAME SMOKE_CLUSTER_NAME

.PHONY: azure-smoke
azure-smoke:
	@test -x $(SMOKE_PYTHON) || { echo "azure-smoke: $(SMOKE_PYTHON) is missing: run make install first" >&2; exit 2; }
	@PYTHONPATH=. $(SMOKE_PYTHON) infra/smoke/azure_smoke.py

# Offline checks of the infrastructure, included from the Makefile.
#   make infra-tools   builds .venv-infra with the pinned checkov (its own venv: checkov 3.3.30 pins
#                      pycep-parser==0.5.1, which clashes with .venv's pycep-parser==0.7.1)
#   make infra-check   every Bicep file parses, checkov finds zero failed checks, the role action lists are sane,
#                      host.json carries the queue settings, and broken templates are caught
# Assumes .venv exists with requirements-dev.txt installed. Nothing here talks to Azure.

INFRA_VENV ?= .venv-infra
INFRA_PYTHON ?= .venv/bin/python
CHECKOV ?= $(INFRA_VENV)/bin/checkov
CHECKOV_REQUIREMENTS := infra/checkov/requirements.txt
CHECKOV_CONFIG := infra/checkov/config.yaml
# Fail on files checkov cannot parse, and never phone home (update check, policy mappings).
CHECKOV_ENV := CKV_PARSE_ERROR_FAIL=true CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE

$(CHECKOV): $(CHECKOV_REQUIREMENTS)
	$(INFRA_PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(CHECKOV_REQUIREMENTS)
	touch $@

.PHONY: infra-tools infra-check
infra-tools: $(CHECKOV)

infra-check: $(CHECKOV)
	$(CHECKOV_ENV) $(CHECKOV) --config-file $(CHECKOV_CONFIG) --quiet --directory infra
	CHECKOV_BIN=$(CHECKOV) .venv/bin/pytest -q tests/integration/test_infra.py

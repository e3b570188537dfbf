# The two commands: `make run` (the main job) and `make test`. Both set up the virtual environment
# first when it is missing or older than the pinned requirements.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PREFIX ?= incoming/

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov (tests/test_checkov.py) has a virtual environment of its own: its dependencies conflict with ours.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export AWS_DEFAULT_REGION ?= us-east-1
export PYTHONDONTWRITEBYTECODE := 1

# A python3.13 that runs: PATH first, then pyenv's versions.
PYTHON313 := $(shell bash devtools/find-python313.sh)

.PHONY: help setup run reprocess test lint template-check bench invoke local-aws build clean

help:
	@echo "make run     - the whole pipeline on an embedded AWS (moto) and the gateway emulator (or the real gateway when QUANT_API_TOKEN is set)"
	@echo "make reprocess PREFIX=incoming/ [FORCE=1] [PROMPT=...] [MODEL=...] [DRY_RUN=1] [ALL=1] - after what make run leaves, the ReprocessObjects state machine on that prefix"
	@echo "make test    - lint, template checks and the test suite"
	@echo "make bench   - every benchmark under bench/"
	@echo "make invoke FN=<LogicalId> EVENT=events/<file>.json [ENV=env.json] [OBJECT=path] - run one function like 'sam local invoke'"
	@echo "make local-aws - the embedded AWS and the gateway emulator on loopback, template.yaml deployed, until Ctrl-C; writes out/local-aws.env.json for 'sam local invoke --env-vars'"
	@echo "make build   - sam build (needs python3.13, found automatically)"

# A virtual environment made with python3.13 ($(1)), uv (pinned in requirements-uv.txt) put in it by pip, then
# the pinned requirements ($(2)) installed by uv, with uv's options ($(3)).
define make_venv
	@if [ -z "$(PYTHON313)" ]; then echo "error: python3.13 not found on PATH or under pyenv (install it: pyenv install 3.13)" >&2; exit 1; fi
	@echo "setting up $(1) with $(PYTHON313)"
	rm -rf $(1)
	$(PYTHON313) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-uv.txt
	$(1)/bin/uv pip install --quiet --python $(1)/bin/python $(3) -r $(2)
	touch $(1)/.installed
endef

# Compiled to bytecode as pip would: PYTHONDONTWRITEBYTECODE is set below, so a module not compiled here
# would be compiled again by every process that imports it (hundreds in a test run).
$(STAMP): requirements-dev.txt src/requirements.txt requirements-uv.txt
	$(call make_venv,$(VENV),requirements-dev.txt,--compile-bytecode)

# Not compiled: the tests run checkov once, which compiles what it imports in 2.6 s; compiling all of it, 12.
$(CHECKOV_STAMP): requirements-checkov.txt requirements-uv.txt
	$(call make_venv,$(CHECKOV_VENV),requirements-checkov.txt,)

# The two virtual environments side by side. The python found here,
# before $(VENV)/bin leads PATH (the sub-make would find the one in the virtual environment it replaces).
setup:
	@$(MAKE) --no-print-directory -j2 PYTHON313="$(PYTHON313)" $(STAMP) $(CHECKOV_STAMP)

run: $(STAMP)
	$(PY) -m devtools.run $(if $(FILES),--files $(FILES)) $(if $(PROMPT),--prompt '$(subst ','\'',$(PROMPT))')

reprocess: $(STAMP)
	$(PY) -m devtools.reprocess --prefix '$(PREFIX)' $(if $(FORCE),--force) $(if $(DRY_RUN),--dry-run) $(if $(ALL),--all) $(if $(MODEL),--model-id '$(MODEL)') $(if $(PROMPT),--prompt '$(subst ','\'',$(PROMPT))')

invoke: $(STAMP)
	@if [ -z "$(FN)" ] || [ -z "$(EVENT)" ]; then echo "usage: make invoke FN=<LogicalId> EVENT=events/<file>.json [ENV=env.json] [OBJECT=path]" >&2; exit 2; fi
	$(PY) -m devtools.invoke $(FN) $(EVENT) $(if $(ENV),--env $(ENV)) $(if $(OBJECT),--object $(OBJECT))

local-aws: $(STAMP)
	$(PY) -m devtools.local_aws $(if $(ENV_FILE),--env-file $(ENV_FILE))

LINT := $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
lint: $(STAMP)
	$(LINT)

# cfn-lint (serverless rules), sam validate --lint, sam validate and sam build: part of the test suite.
template-check: setup
	$(PY) -m pytest tests/test_template.py tests/test_checkov.py

# In parallel (pytest-xdist). Most of a test's time is waiting (visibility timeouts, state machine waits, the
# emulator's latency): with two workers the two cores were busy 45 % of the time, with four about 80 %
# (3 min 32 s and 2 min 29 s here). JOBS=0 runs the tests in this process, one after another.
JOBS ?= 4
test: setup
	$(LINT)
	$(PY) -m pytest $(if $(filter 0,$(JOBS)),,-n $(JOBS)) $(PYTEST_ARGS)

bench: $(STAMP)
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

build: $(STAMP)
	$(VENV)/bin/sam build --cached

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .aws-sam out .pytest_cache

# tf-serving-bundle: every user-facing target sets up .venv itself (pinned in requirements.lock).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
MODELS := $(CURDIR)/models
RUN := $(CURDIR)/run
GRPC_PORT ?= 8500
REST_PORT ?= 8501
PYTEST_ARGS ?=
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1

.DEFAULT_GOAL := help
.PHONY: help setup export serve test test-unit render-config clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@touch $@

setup: $(STAMP) ## create .venv and install the pinned dependencies (only when requirements.lock changed)

export: $(STAMP) ## train the demo models and publish the next version of each under ./models
	$(PY) -m export --model all --base-path $(MODELS)

$(RUN)/models.config: serving/models.config
	@mkdir -p $(RUN)
	sed 's#base_path: "/models/#base_path: "$(MODELS)/#' $< > $@.tmp && mv $@.tmp $@

render-config: $(RUN)/models.config ## render serving/models.config with this checkout's absolute model path

serve: $(STAMP) $(RUN)/models.config ## serve ./models (gRPC :8500, REST :8501) with the embedded server
	@test -n "$$(ls $(MODELS) 2>/dev/null)" || { echo "no models under $(MODELS): run 'make export' first"; exit 1; }
	@echo "backend: embedded (python -m serving), gRPC localhost:$(GRPC_PORT), REST localhost:$(REST_PORT)"
	$(PY) -m serving --port=$(GRPC_PORT) --rest_api_port=$(REST_PORT) \
	  --model_config_file=$(RUN)/models.config --model_config_file_poll_wait_seconds=5 \
	  --file_system_poll_wait_seconds=1 --allow_version_labels_for_unavailable_models \
	  --enable_grpc_healthcheck_service

test: $(STAMP) ## run the whole test suite (unit + integration against a real server process)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: $(STAMP) ## unit tests only
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

clean: ## remove generated models, rendered config and caches (keeps .venv)
	rm -rf $(MODELS) $(RUN) .pytest_cache .hypothesis

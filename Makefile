# tf-serving-bundle: every user-facing target sets up .venv itself (pinned in requirements/dev.lock).
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
.PHONY: help setup export serve stop logs test test-docker docker-bootstrap k8s-config protos lock test-unit soak bench profile bench-tools bench-client browser-tools render-config clean clean-models

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "variables: GRPC_PORT=$(GRPC_PORT) REST_PORT=$(REST_PORT) SERVER=auto|embedded|docker|docker-gpu DETACH=1"
	@echo "           MODEL_CONFIG=FILE (serve your own config) TFS_IMAGE=$(TFS_IMAGE) MODELS=$(MODELS)"

# The project itself goes in editable, so .venv/bin/tfsb-client (tfsb-serve, tfsb-export, tfsb-byom) and
# `import tfsb` work from any directory while the code stays the checkout's.
DEV_LOCK := requirements/dev.lock
RUNTIME_LOCK := requirements/runtime.lock
$(STAMP): $(DEV_LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(DEV_LOCK)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

setup: $(STAMP) ## create .venv, install the pinned dependencies and the project (editable; again when the lock or pyproject.toml change)

export: $(STAMP) ## train the demo models and publish the next version of each under ./models
	$(PY) -m tfsb.export --model all --base-path $(MODELS)

# MODEL_CONFIG=FILE serves your own config (base paths /models/<name> or absolute); by default
# config/models.config, or a config generated from the directories under ./models when it names models
# that are not there (your own models, not the demo zoo).
MODEL_CONFIG ?=
$(RUN)/models.config: $(STAMP) config/models.config $(MODEL_CONFIG) FORCE
	@$(PY) -m tfsb.export.serve_config --models $(MODELS) --out $@ \
	  $(if $(MODEL_CONFIG),--template $(MODEL_CONFIG) --force,--template config/models.config)

.PHONY: FORCE
FORCE:

render-config: $(RUN)/models.config ## render config/models.config with this checkout's absolute model path

SERVER ?= auto
DETACH ?=
TFS_IMAGE ?= tensorflow/serving:2.21.0
EMBEDDED_IMAGE ?= tf-serving-bundle-embedded:local
COMPOSE := docker compose -f docker/docker-compose.yml
SERVE_FLAGS := --port=$(GRPC_PORT) --rest_api_port=$(REST_PORT) \
  --model_config_file=$(RUN)/models.config --model_config_file_poll_wait_seconds=5 \
  --file_system_poll_wait_seconds=1 --allow_version_labels_for_unavailable_models --prefer_tflite_model=true \
  --monitoring_config_file=config/monitoring.config --enable_grpc_healthcheck_service

serve: $(STAMP) $(RUN)/models.config ## serve ./models: SERVER=auto|embedded|docker|docker-gpu, DETACH=1 for background
	@test -n "$$(ls $(MODELS) 2>/dev/null)" || { echo "no models under $(MODELS): run 'make export' first"; exit 1; }
	@backend="$(SERVER)"; \
	if [ "$$backend" = auto ]; then \
	  if ! timeout 10 docker info >/dev/null 2>&1; then \
	    echo "SERVER=auto: no Docker engine reachable (docker info failed), using the embedded server"; backend=embedded; \
	  elif ! docker image inspect "$(TFS_IMAGE)" >/dev/null 2>&1; then \
	    echo "SERVER=auto: image $(TFS_IMAGE) is not present locally (no registry pull attempted), using the embedded server"; backend=embedded; \
	  else backend=docker; fi; \
	fi; \
	case "$$backend" in \
	  docker|docker-gpu) echo "backend: $$backend (tensorflow/serving image), gRPC localhost:$(GRPC_PORT), REST localhost:$(REST_PORT)"; \
	    echo docker > $(RUN)/backend; \
	    if [ "$$backend" = docker ]; then args="up -d tfserving"; else args="--profile gpu up -d tfserving-gpu"; fi; \
	    TFS_IMAGE=$(TFS_IMAGE) MODELS_DIR=$(MODELS) GRPC_PORT=$(GRPC_PORT) REST_PORT=$(REST_PORT) $(COMPOSE) $$args ;; \
	  embedded) echo "backend: embedded (python -m tfsb.server), gRPC localhost:$(GRPC_PORT), REST localhost:$(REST_PORT)"; \
	    echo embedded > $(RUN)/backend; \
	    if [ -n "$(DETACH)" ]; then \
	      nohup $(PY) -m tfsb.server $(SERVE_FLAGS) > $(RUN)/serving.log 2>&1 & echo $$! > $(RUN)/serving.pid; \
	      echo "started in the background (pid $$(cat $(RUN)/serving.pid)); 'make logs' to follow, 'make stop' to stop"; \
	    else exec $(PY) -m tfsb.server $(SERVE_FLAGS); fi ;; \
	  *) echo "unknown SERVER=$$backend (auto|embedded|docker|docker-gpu)"; exit 2 ;; \
	esac

stop: ## stop what 'make serve' started (embedded in the background, or the compose services)
	@if [ -f $(RUN)/serving.pid ]; then kill $$(cat $(RUN)/serving.pid) 2>/dev/null && echo "stopped embedded server"; rm -f $(RUN)/serving.pid; fi
	@if [ "$$(cat $(RUN)/backend 2>/dev/null)" = docker ]; then $(COMPOSE) --profile gpu down; fi; rm -f $(RUN)/backend

logs: ## follow the server's log
	@if [ "$$(cat $(RUN)/backend 2>/dev/null)" = docker ]; then $(COMPOSE) logs -f; else tail -f $(RUN)/serving.log; fi

protos: $(STAMP) ## regenerate tfsb/protos/_descriptors.py (TF Serving's messages, TensorFlow-free) and tfsb/server/proto/*_pb2.py (grpcio-tools)
	$(PY) tools/generate_protos.py

# pyproject.toml is the one source of dependencies; uv (pinned in the dev lock) compiles it. An existing lock's
# pins are kept unless the inputs need others (UPGRADE=1 re-resolves everything), so the same inputs give the
# same files. LOCK_DIR: where to write them (a test compiles into a copy and compares).
LOCK_DIR ?= requirements
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet --custom-compile-command "make lock" \
  $(if $(UPGRADE),--upgrade)
lock: $(STAMP) ## compile requirements/dev.lock (every extra) and requirements/runtime.lock (the image: [server], tensorflow-cpu) from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --all-extras $(LOCK_FLAGS) -o $(LOCK_DIR)/dev.lock
	$(BIN)/uv pip compile pyproject.toml --extra server requirements/runtime.in \
	  --override requirements/runtime-overrides.txt -c $(LOCK_DIR)/dev.lock $(LOCK_FLAGS) -o $(LOCK_DIR)/runtime.lock

k8s-config: ## refresh docker/k8s/base/config/ (kustomize reads only below its root) from config/ and docker/
	cp config/models.config config/batching.config config/monitoring.config docker/healthcheck.sh docker/k8s/base/config/

docker-bootstrap: $(STAMP) ## install/start a Docker engine + Compose v2 and build the images locally (no registry)
	PY=$(PY) IMAGE=$(EMBEDDED_IMAGE) bash docker/bootstrap.sh

# The container tier: the compose stack (with TFS_IMAGE, default the embedded image built locally; set
# TFS_IMAGE=tensorflow/serving:2.21.0 where that image is present) under the whole integration suite and the
# container tests (rollover in the mounted volume, label switch by reload, docker stop drain, restart policy).
CONTAINER_IMAGE ?= $(EMBEDDED_IMAGE)
test-docker: docker-bootstrap ## run the process tier and the container tier against the compose stack
	TFS_IMAGE=$(CONTAINER_IMAGE) $(PY) -m tests.container.stack up
	@set -a; . $(RUN)/container.env; set +a; \
	echo "== integration suite against the compose service ($$TFS_IMAGE)"; \
	$(PY) -m pytest -q -p no:cacheprovider -m process tests --ignore=tests/container $(PYTEST_ARGS); rc1=$$?; \
	echo "== container tier"; \
	$(PY) -m pytest -q -p no:cacheprovider tests/container $(PYTEST_ARGS); rc2=$$?; \
	$(PY) -m tests.container.stack down >/dev/null; \
	exit $$(( rc1 || rc2 ))

browser-tools: ## Debian's chromium for the dashboard's browser test (the test skips, saying why, where it cannot be installed)
	@command -v chromium >/dev/null || { \
	  if command -v apt-get >/dev/null; then SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null \
	    || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "no apt-get: install chromium to run the browser test"; fi; }

# Two pytest workers (pytest-xdist), one test file each at a time: most of a test's time is spent waiting on
# a server process or a subprocess's TensorFlow import, so two files overlap well on 2 cores. TEST_WORKERS=0
# runs in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: $(STAMP) browser-tools ## run the whole test suite: the unit, inprocess, process and hostile tiers
	$(PY) -m pytest -q $(XDIST) --ignore=tests/container $(PYTEST_ARGS)

# One tier each (tests/conftest.py marks every test by what it uses).
TIER = $(PY) -m pytest -q --ignore=tests/container $(PYTEST_ARGS) -m
.PHONY: test-inprocess test-process test-hostile
test-unit: $(STAMP) ## the unit tier: no server (seconds to a few minutes)
	$(TIER) unit
test-inprocess: $(STAMP) browser-tools ## the inprocess tier: the server or a CLI in the test's own interpreter
	$(TIER) inprocess
test-process: $(STAMP) ## the process tier: the server as a process on loopback ports
	$(TIER) process
test-hostile: $(STAMP) ## the hostile tier: attacks on a live server
	$(TIER) hostile

bench-tools: ## install the native load generators (Debian's wrk and nghttp2-client's h2load) when missing
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "wrk/h2load missing and no apt-get: install them by hand"; exit 1; }; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q wrk nghttp2-client >/dev/null; }

bench: $(STAMP) bench-tools ## server CPU µs/request, req/s and p99 under native load (wrk, h2load) vs peers and transport floors (results/native.*)
	$(PY) benchmarks/native.py --seconds $(or $(BENCH_SECONDS),4) --rounds $(or $(BENCH_ROUNDS),3)

profile: $(STAMP) bench-tools ## per-thread CPU and a py-spy profile of the server under gRPC and REST batch-1 load (results/profile.md)
	$(PY) benchmarks/profile.py --seconds $(or $(BENCH_SECONDS),6)

bench-client: $(STAMP) ## the client-library benchmark: Python load generator, in-process floor, peers (results/bench.*)
	$(PY) benchmarks/run.py --duration $(or $(BENCH_SECONDS),3)

soak: $(STAMP) ## 50 version swaps under load with hostile input (bounded, < 10 minutes)
	$(PY) tests/soak.py

CLEAN_EXTRA ?= models-test build .pytest_cache .hypothesis
clean: ## remove the rendered config, test models, build files and caches (keeps .venv and your models/)
	rm -rf $(RUN) $(CLEAN_EXTRA)
	@test ! -d $(MODELS) || echo "kept $(MODELS) (your published models): 'make clean-models' deletes them"

clean-models: ## delete every published model under ./models (asks first; CONFIRM=1 to skip the question)
	@test -d $(MODELS) || { echo "nothing to delete: no $(MODELS)"; exit 0; }; \
	echo "this deletes every published version under $(MODELS):"; ls $(MODELS); \
	if [ "$(CONFIRM)" != 1 ]; then read -r -p "type 'yes' to delete: " a; [ "$$a" = yes ] || { echo "kept"; exit 1; }; fi; \
	rm -rf $(MODELS) && echo "deleted $(MODELS)"

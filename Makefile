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

.PHONY: help venv build-control-plane build-cluster cluster-up cluster-down test tfserving-suite unit integration exporter-test e2e e2e-kind lint install-bundle demo demo-canary bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[exporter,dev,cli]'
	touch $@

venv: $(VENV)/.installed  ## create .venv with the project, TensorFlow and the test tools

# The Go builds need no venv (testing/localcluster/build.py is the standard library only), so
# the targets that need both run them side by side: pip downloads while Go compiles.
CONTROL_PLANE := etcd kwok kubernetes

build-control-plane:  ## build the control plane's binaries only: what cluster-up and the demo run (first time only)
	$(PYTHON) -m testing.localcluster build $(CONTROL_PLANE)

build-cluster:  ## build the control plane's binaries and every tool the tests use (helm, actionlint, ...; first time only)
	$(PYTHON) -m testing.localcluster build

cluster-up:  ## start the local control plane (admin kubeconfig: .local-cluster/kubeconfig)
	$(MAKE) -j2 venv build-control-plane
	$(PY) -m testing.localcluster up

cluster-down:  ## stop the processes cluster-up started and remove .local-cluster/
	@if [ -x $(PY) ]; then $(PY) -m testing.localcluster down; else rm -rf .local-cluster; fi

# TF Serving's own end-to-end suite against the stand-in (2-3 minutes): part of make test,
# and a target of its own for working on the stand-in.
TFSERVING_SUITE := tests/standin/test_tfserving_suite.py

# Workers sharing one local cluster (tests/workers.py): with the runner's containers forked from
# processes that imported TensorFlow once, the suites wait on the cluster more than they
# compute, so more workers than cores (BENCHMARKS "Test and demo budgets").
TEST_WORKERS ?= 4

test:  ## the whole suite: unit, exporter, stand-in (with TF Serving's own suite), integration, scenarios, on $(TEST_WORKERS) workers, then the tests that restart the control plane alone; prints the 25 slowest tests
	$(MAKE) -j2 venv build-cluster
	@rc=0; \
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadgroup -m "not exclusive" --durations=25 || rc=$$?; \
	$(PY) -m pytest tests -m exclusive --durations=10 || rc=$$?; \
	exit $$rc

tfserving-suite: venv  ## TF Serving's own end-to-end suite (tensorflow_model_server_test.py) against the stand-in
	$(PY) -m pytest $(TFSERVING_SUITE)

unit: venv  ## fast tests, no cluster, no TensorFlow work (the chart's need helm and kubectl, the alert rules' promtool: built once)
	$(PY) -m testing.localcluster build helm kubernetes prometheus
	$(PY) -m pytest tests/unit

exporter-test: venv  ## the exporter against real TensorFlow
	$(PY) -m pytest tests/exporter

integration:  ## the operator on the local control plane
	$(MAKE) -j2 venv build-cluster
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

demo:  ## the local demo: cluster, operator, two real exports, canary move (builds the control plane only)
	$(MAKE) -j2 venv build-control-plane
	$(PY) -m demo

demo-canary:  ## progressive delivery: a real Prometheus judges two canaries
	$(MAKE) -j2 venv build-control-plane
	$(PYTHON) -m testing.localcluster build prometheus gateway-api
	$(PY) -m demo.canary

bench:  ## benchmarks; writes bench/results.json
	$(MAKE) -j2 venv build-control-plane
	$(PY) -m bench

clean: cluster-down  ## remove the venv and local state (the binary cache stays)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

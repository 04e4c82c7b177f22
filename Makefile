# Herald's developer entry points. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: help up test lint unit e2e tools n8n venv crd bench profile plugin clean

# `make up N8N=real` runs a real n8n with n8n/publish-echo.json instead of the stand-in.
N8N ?= standin
# `make test` runs the test files in this many pytest-xdist workers, each with its own
# control plane and n8n: an end-to-end test mostly waits for a due second, so two
# workers keep two cores busy. TEST_WORKERS=0 runs everything in one process. Tests
# marked `alone` (a latency bound, a race timed to a fraction of a second) run after
# them with no neighbour: the timing is Herald's, not a neighbouring test's load.
TEST_WORKERS ?= 2

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

up: tools venv $(if $(filter real,$(N8N)),n8n) ## Start Herald locally: control plane, CRD, operator, sidecar, n8n (N8N=real for a real one), a sample post
	$(PY) hack/up.py --n8n $(N8N)

test: tools n8n venv lint ## Everything CI runs: lint, type checks, unit and end-to-end tests (real n8n included)
	status=0; \
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not alone" || status=$$?; \
	$(PY) -m pytest -m alone || status=$$?; \
	exit $$status

lint: venv ## ruff, ruff format --check, mypy --strict, and the CRD is current
	$(VENV)/bin/ruff check operator tests hack bench
	$(VENV)/bin/ruff format --check operator tests hack bench
	$(VENV)/bin/mypy

unit: venv ## Only the tests that need no control plane
	$(PY) -m pytest -m "not e2e"

tools: ## Build/install kube-apiserver, etcd, kubectl, helm into .tools/ (cached by version)
	bash hack/tools.sh all

n8n: ## Install the pinned n8n and the Node.js it needs into .tools/ (cached by version)
	bash hack/n8n.sh install

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

crd: venv ## Regenerate crds/ from operator/herald/models.py, and the chart's copy and manifests/ that include them
	$(PY) -m herald.crdgen > crds/scheduledposts.herald.dev.yaml
	$(PY) -m herald.crdgen publications > crds/publications.herald.dev.yaml
	$(PY) -m herald.crdgen socialaccounts > crds/socialaccounts.herald.dev.yaml
	$(PY) -m herald.crdgen clustersocialaccounts > crds/clustersocialaccounts.herald.dev.yaml
	cp crds/*.herald.dev.yaml charts/herald/files/crds/
	bash hack/tools.sh helm  # all the render needs: no control-plane build for a CRD change
	bash hack/render-manifests.sh

bench: tools venv ## Benchmark against the real API server (bench/run.py; BENCH_ARGS=--quick)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) bench/run.py $(BENCH_ARGS)

# The burst's size for `make profile`; BENCH_ARGS adds to it (e.g. --burst-posts 10000).
PROFILE_ARGS ?= --only burst --burst-posts 2000 --intake-rate 50
profile: tools venv ## py-spy flame graphs of the operator and the sidecar during a burst, into bench/
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench,profile]'
	$(PY) bench/run.py --profile bench --out bench/out-profile $(PROFILE_ARGS) $(BENCH_ARGS)

plugin: venv ## Package `kubectl herald` for krew: dist/kubectl-herald-v*.tar.gz, its .sha256, dist/herald.yaml
	$(PY) hack/plugin.py --out dist

clean: ## Remove the virtualenv (keeps the .tools cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

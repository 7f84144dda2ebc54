# ticketlens: `make run` sets up .venv and runs the default study; `make test` sets up and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= all
export PATH := $(BIN):$(PATH)

.PHONY: setup lock run test test-fast lint format bench report readme clean-results

LOCK := requirements-lock.txt
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
UV := uv==0.13.9

# Every transitive dependency from the lock, each checked against its pinned hashes; then the package itself
# (no dependencies of its own: the lock has them). pyproject.toml keeps the ranges for library users.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r $(LOCK)
	$(PIP) install --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

# Re-resolve the lock after a change to pyproject.toml's dependencies (seconds; uv is not in the lock).
# PyPI plus the machine's local indexes (where pip.conf names them: torch's wheels lie there on our machines).
lock: setup
	$(PIP) install $(UV)
	$(BIN)/uv pip compile pyproject.toml --extra workflow --extra dev --generate-hashes --no-header \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --index-strategy unsafe-best-match \
	  --index-url https://pypi.org/simple $$($(BIN)/python -m pip config get global.extra-index-url 2>/dev/null \
	  | tr ' ' '\n' | sed -n 's|^file://|--extra-index-url file://|p') \
	  --output-file $(LOCK) build-requirements.in

setup: $(STAMP)

run: setup
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES)
	@cat results/summary.txt

# loadgroup: tests marked xdist_group(name) share one worker (the tiny study and the SLURM run use it)
test: setup lint
	$(BIN)/pytest -n 2 --dist loadgroup

# the fast lane: everything not marked slow (no model trained for more than a few steps, no tiny study)
test-fast: setup lint
	$(BIN)/pytest -n 2 --dist loadgroup -m "not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules

report: setup
	$(BIN)/snakemake --cores 1 --report results/report.html

# README's findings block from the pinned results (results/summary.txt, results/*/findings.json)
readme: setup
	$(BIN)/ticketlens readme-findings

bench: setup
	$(BIN)/python benchmarks/bench_training_loop.py
	$(BIN)/python benchmarks/bench_lenet_mnist.py --preset short
	$(BIN)/python benchmarks/bench_tcav.py

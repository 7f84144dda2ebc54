# ticketlens: `make run` sets up .venv and runs the default study; `make test` sets up and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= all
export PATH := $(BIN):$(PATH)

.PHONY: setup run test test-fast lint format bench report readme clean-results

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[workflow,dev]'
	touch $(STAMP)

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

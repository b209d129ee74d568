# GPT-Trader. `make help` lists the targets. Every target bootstraps .venv itself on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export MPLBACKEND := Agg
export GPT_TRADER_HOME := $(CURDIR)
export PREFECT_HOME ?= $(CURDIR)/.prefect
PREFECT_API ?= http://127.0.0.1:4200/api

.PHONY: help install run test test-fast lint format typecheck bench services browser clean ui ui-stop deploy worker dashboard

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -n "$(PYTHON_BOOT)" || { echo "python3.11 not found"; exit 1; }
	@$(PYTHON_BOOT) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON_BOOT) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a bare requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# Compile the trade scanner's kernels into numba's cache once, here, not in every test worker's first import.
	$(BIN)/python -c 'import gpt_trader.realtime.sources.trade_scan as t; print("trade scanner:", "on" if t.ENABLED else "off: " + t.OFF_BECAUSE)'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with dev tools

run: $(STAMP) ## The main job on bundled real data: dvc repro, promotion gate, a live paper session, summaries
	dvc repro
	gpt-trader data summary
	gpt-trader evaluate transformer --show
	@cat reports/rl/report.md
	gpt-trader models gate all
	gpt-trader models list
	gpt-trader live --duration 60 --start 2018-06-01 --symbols SPX,IXIC --fresh

test: $(STAMP) services browser ## Run the full test suite (starts Redis/PostgreSQL, installs headless Chromium)
	# One worker per core, a test module per worker (modules share their fixtures and servers): ~6 min on 2 cores.
	pytest -n auto --dist loadfile

test-fast: $(STAMP) ## Run the tests not marked slow or integration
	pytest -m "not slow and not integration"

lint: $(STAMP) ## Lint and type-check
	ruff check src flows pipelines tests benchmarks
	ruff format --check src flows pipelines tests benchmarks
	mypy

format: $(STAMP) ## Format the code
	ruff format src flows pipelines tests benchmarks
	ruff check --fix src flows pipelines tests benchmarks

bench: $(STAMP) ## Run every benchmark (prints figures and ratios)
	@for b in benchmarks/*.py; do echo "== $$b"; python $$b || exit 1; done

browser: $(STAMP) ## Install headless Chromium (Debian package) + playwright for the dashboard browser test
	@bash scripts/install_browser.sh

dashboard: $(STAMP) ## Serve the monitoring dashboard (demo replay of bundled bars) on http://127.0.0.1:8050
	gpt-trader dashboard

services: ## Start local Redis and PostgreSQL if installed and not running
	@bash scripts/services.sh

ui: $(STAMP) ## Start the Prefect server and MLflow UI on loopback and print their URLs
	@bash scripts/ui.sh

ui-stop: ## Stop the servers started by `make ui`
	-@kill $$(cat .prefect/server.pid 2>/dev/null) $$(cat mlflow/server.pid 2>/dev/null) 2>/dev/null; rm -f .prefect/server.pid mlflow/server.pid

deploy: $(STAMP) ## Create the work pools and deploy prefect.yaml to the server started by `make ui`
	PREFECT_API_URL=$(PREFECT_API) prefect work-pool create gpt-trader-training --type process --overwrite
	PREFECT_API_URL=$(PREFECT_API) prefect work-pool create gpt-trader-live --type process --overwrite
	PREFECT_API_URL=$(PREFECT_API) prefect --no-prompt deploy --all

worker: $(STAMP) ## Start a process worker for the training pool (POOL=gpt-trader-live for the live pool)
	PREFECT_API_URL=$(PREFECT_API) prefect worker start --pool $${POOL:-gpt-trader-training}

clean: ## Remove pipeline outputs (not .venv)
	rm -rf data models reports metrics

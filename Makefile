# Carpool: `make run` serves the default models offline, `make test` runs every check, `make bench`
# measures the batching engine against the raw model. Each target sets up what it needs first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
MODELS_DIR ?= models
HOST ?= 0.0.0.0
PORT ?= 8000

.PHONY: run test bench lint typecheck sysdeps venv train clean

venv: $(VENV)/.installed

# torch goes first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[serving,tools,operator,test]'
	touch $@

# Debian packages the integration tests run for real: Prometheus and the `hey` load generator.
sysdeps:
	@if ! command -v prometheus >/dev/null || ! command -v hey >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends prometheus hey; \
	fi

# The fine-tuned default, made once from the shipped dataset and reused after.
train: venv
	@if [ ! -f $(MODELS_DIR)/minilm_trained/carpool_card.json ]; then \
		$(BIN)/carpool train --base minilm --output $(MODELS_DIR)/minilm_trained; \
	fi

run: train
	CARPOOL_MODELS_DIR=$(MODELS_DIR) $(BIN)/carpool serve --host $(HOST) --port $(PORT)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile.serving Dockerfile.operator

typecheck: venv
	$(BIN)/mypy

test: venv sysdeps lint typecheck
	$(BIN)/python -m pytest

# The strategies against the raw model on the embedded MiniLM (no trained model needed); a spawned
# server on a free loopback port; 3 rounds with the raw references between cells, ~4-5 minutes.
# More options (docs/bench.md): BENCH_ARGS="--rounds 5", BENCH_ARGS="--model tiny" (the front end alone).
bench: venv
	$(BIN)/carpool bench --spawn --output bench-results $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench-results

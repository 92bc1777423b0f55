# One short command per job. Every target builds .venv first when pyproject.toml is newer than it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo run test check bench clean

# `make run JOB=jobs/support_tickets.toml ARGS="--local-server --limit 10"`: run a job without activating .venv.
JOB ?= jobs/demo.toml
ARGS ?=

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,fast]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/batchgen run jobs/demo.toml --local-server
	$(BIN)/batchgen report out/demo

run: $(STAMP)
	$(BIN)/batchgen run $(JOB) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff format --check batchgen tests benchmarks
	$(BIN)/ruff check batchgen tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache

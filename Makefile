# One short command per job. Every target builds .venv first when pyproject.toml is newer than it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-batch run test check bench clean

# `make run JOB=jobs/support_tickets.toml ARGS="--local-server --limit 10"`: run a job without activating .venv.
JOB ?= jobs/demo.toml
ARGS ?=

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,fast,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/batchgen run jobs/demo.toml --local-server
	$(BIN)/batchgen report out/demo

demo-batch: $(STAMP)
	$(BIN)/batchgen run jobs/demo_batch.toml --local-server
	$(BIN)/batchgen report out/demo-batch

run: $(STAMP)
	$(BIN)/batchgen run $(JOB) $(ARGS)

# The Ray tests run after the rest, alone: a local Ray instance keeps both cores busy, and beside it the tests
# that measure rates against the local server would see the CPU starve their timing.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not ray"
	$(BIN)/python -m pytest -m ray -n 0

check: $(STAMP)
	$(BIN)/ruff format --check batchgen tests benchmarks
	$(BIN)/ruff check batchgen tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache

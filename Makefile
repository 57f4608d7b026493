# `make test` is the whole gate: it builds .venv when missing, installs the package with its
# test tools, then runs ruff, mypy --strict and pytest. CI calls nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Azurite, the Azure Blob Storage emulator that the Azure tests start; installed into the venv.
AZURITE := $(VENV)/azurite/node_modules/.bin/azurite-blob

.PHONY: test check lint types pytest demo bench clean soak

test: check pytest

check: lint types

lint: $(VENV)/.linked
	$(BIN)/ruff check slate_epoch backends tests benchmarks examples
	$(BIN)/ruff format --check slate_epoch backends tests benchmarks examples

types: $(VENV)/.linked
	$(BIN)/mypy slate_epoch tests benchmarks examples

# Three workers on two cores: most tests wait on a server, not on the CPU.
PYTEST_WORKERS ?= 3

pytest: $(VENV)/.linked $(AZURITE)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

demo: $(VENV)/.linked
	$(BIN)/python examples/demo.py

# The benchmark harness; installs the bench extra (peers, chart, progress bar) when missing.
# Options: make bench BENCH_ARGS="--s3" (S3 on moto, and S3 at 20 ms a round trip; or
# --s3-latency MS, --quick, --only ..., --out DIR). See docs/performance.md.
bench: $(VENV)/.linked
	$(BIN)/python -c "import slatedb, obstore, matplotlib, rich" 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet -e '.[dev,s3,gcs,azure,bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The deterministic simulation at length: 100,000 seeds on both cores, with a progress bar.
soak: $(VENV)/.linked
	$(BIN)/python -m slate_epoch.testing soak --seeds 100000 --workers 2

# Reinstalled when pyproject.toml changes. The editable install maps backends/ to
# slate_epoch.backends as the wheel does; the slate_epoch/backends symlink makes the checkout itself
# a complete package too, for tools that import from the source tree (mypy, `python -m benchmarks`).
$(VENV)/.linked: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev,s3,gcs,azure]'
	touch $@

# Installed once (npm, with the machine's Node.js), major version pinned; `make clean` removes it
# with the venv.
$(AZURITE): | $(VENV)/.linked
	npm install --prefix $(VENV)/azurite --no-audit --no-fund --loglevel=error azurite@3

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

# `make test` is the whole gate: it builds .venv when missing, installs the package with its
# test tools, then runs ruff, mypy --strict and pytest. CI calls nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := $(wildcard slate_epoch/*.py backends/*.py)
PYTEST_ARGS ?=

.PHONY: test check lint types pytest demo bench clean

test: check pytest

check: lint types

lint: $(VENV)/.linked
	$(BIN)/ruff check slate_epoch backends tests benchmarks
	$(BIN)/ruff format --check slate_epoch backends tests benchmarks

types: $(VENV)/.linked
	$(BIN)/mypy slate_epoch backends tests benchmarks

pytest: $(VENV)/.linked
	$(BIN)/pytest $(PYTEST_ARGS)

demo: $(VENV)/.linked
	$(BIN)/python -m benchmarks.demo

# Dependencies: reinstalled when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	touch $@

# A "strict" editable install is a tree of symlinks that maps backends/ to slate_epoch/backends,
# which mypy can follow (it can't follow setuptools' import-hook finder). New files need a relink.
$(VENV)/.linked: $(VENV)/.installed $(SOURCES)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . \
		--config-settings editable_mode=strict
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

# Two commands for a new user: `make train` (the quickstart run) and `make test` (ruff + all
# tests); `make help` lists every target. Targets that need Python create .venv and install
# segpets into it (editable, with the dev tools) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help setup train test test-fast lint format doc-numbers tensorboard clean

help:  ## this list
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv and install segpets with its dev tools (once)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

train: setup  ## a real training run on the generated pets set (CPU): the quickstart
	$(BIN)/python -m segpets.train experiment=quickstart

test: lint  ## ruff, then the whole test suite, one pytest-xdist worker per core (~14 min on 2)
	$(BIN)/python -m pytest -n auto

test-fast: setup  ## the tests not marked slow, one pytest-xdist worker per core (under 3 min on 2)
	$(BIN)/python -m pytest -m "not slow" -q -n auto

lint: setup  ## ruff lint + format check of everything: package, tests, scripts, notebooks
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup  ## ruff: fix what it can fix, then format everything
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

doc-numbers: setup  ## re-measure the cheap numbers in README/docs and rewrite them
	$(BIN)/python scripts/doc_numbers.py --write

tensorboard: setup  ## TensorBoard over every run under outputs/
	$(BIN)/tensorboard --logdir outputs

clean:  ## remove .venv and the tool caches (never outputs/ or data/)
	rm -rf $(VENV) .pytest_cache .ruff_cache

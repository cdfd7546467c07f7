# Two commands for a new user:  `make train` (quickstart run) and `make test`.
# Both create .venv and install segpets (editable, with dev tools) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup train test lint tensorboard clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

train: setup  ## a real training run on the generated pets set (CPU, about a minute)
	$(BIN)/python -m segpets.train experiment=quickstart

lint: setup  ## ruff lint + format check of everything: package, tests, scripts, notebooks
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint  ## ruff, then the whole test suite (CPU, a few minutes)
	$(BIN)/python -m pytest

tensorboard: setup
	$(BIN)/tensorboard --logdir outputs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

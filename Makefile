# Two entry points for a fresh clone (see README): `make repro` and `make test`.
# Both create (or reuse) the virtual environment in $(VENV).

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup repro test lint bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create/refresh the virtual environment

repro: setup  ## run the whole DVC pipeline (sample data by default)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup  ## lint, then the unit and end-to-end tests
	$(BIN)/ruff check src stages tests benchmarks
	$(BIN)/ruff format --check src stages tests benchmarks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

bench: setup  ## speed benchmarks against named baselines
	$(BIN)/python benchmarks/rle.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/stain.py
	$(BIN)/python benchmarks/models.py

clean-venv:
	rm -rf $(VENV)

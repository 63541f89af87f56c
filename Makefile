# Two entry points for a fresh clone (see README): `make repro` and `make test`.
# Both create (or reuse) the virtual environment in $(VENV), installed from uv.lock exactly:
# every package at the version the committed dvc.lock and metrics were produced with.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.8
# uv installs into $(VENV); --locked fails instead of re-resolving when uv.lock is stale;
# --compile-bytecode writes every .pyc once (each stage process then imports torch + timm in
# 6 s instead of 17 s when PYTHONDONTWRITEBYTECODE is set).
UV := UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv

.PHONY: setup lock repro test test-fast lint docs research-tables bench rehearsal clean-venv

$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV) sync --locked --extra dev --compile-bytecode
	touch $(STAMP)

setup: $(STAMP)  ## create/refresh the virtual environment from uv.lock

lock:  ## re-resolve every dependency to its newest allowed version (then re-run the pipeline)
	test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet uv==$(UV_VERSION); }
	$(UV) lock --upgrade

repro: setup  ## run the whole DVC pipeline (sample data by default)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

LINTED := src stages tests benchmarks research docs

lint: setup  ## ruff: lint and format check
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# Two pytest-xdist workers, each taking whole files (a module's fixtures, such as the e2e
# repository, are built once), the longest files first (tests/conftest.py).
TEST_WORKERS ?= 2

test: lint  ## what CI runs: lint, then every test (unit, slow, end-to-end, research)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: lint  ## the inner loop: every test but the slow and end-to-end ones
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not e2e and not slow" --durations=5

docs: setup  ## regenerate docs/results.md from metrics/ and benchmarks/results/
	$(BIN)/python docs/build_results.py

research-tables: setup  ## rebuild the research study's archived tables from its run archive
	$(BIN)/python research/tables.py
	$(BIN)/python research/kidney_study.py --report
	$(BIN)/python research/kidney_gap.py --report
	$(BIN)/python research/domain.py --report
	$(BIN)/python research/pages.py

bench: setup  ## speed benchmarks against named baselines
	$(BIN)/python benchmarks/rle.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/stain.py
	$(BIN)/python benchmarks/models.py --json benchmarks/results/models.json
	$(BIN)/python benchmarks/loader.py --json benchmarks/results/loader.json
	$(BIN)/python benchmarks/ensemble.py --json benchmarks/results/ensemble.json
	$(BIN)/python benchmarks/cpu_pin.py --json benchmarks/results/cpu_pin.json

rehearsal: setup  ## the kaggle chain at real data sizes on this machine (about an hour on 2 cores)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/rehearsal.py --json benchmarks/results/rehearsal.json

clean-venv:
	rm -rf $(VENV)

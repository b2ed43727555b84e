# One-command entry points. `make train` and `make test` work on a fresh clone with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
ARGS ?=

.PHONY: install install-dev train test test-fast test-slurm bench lint zoo registry docs docs-serve notebooks gpu-kit clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-base: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) --upgrade pip setuptools wheel
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-base
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.stamp-base

install-dev: $(VENV)/.stamp-dev

# Trains the default model (RubiksNet-Tiny) on the embedded synthetic dataset.
train: install
	$(PY) train.py $(ARGS)

test: install-dev
	$(PY) -m pytest $(ARGS)

test-fast: install-dev
	$(PY) -m pytest -m "not slow" $(ARGS)

# The SLURM tests alone: a private cluster (munge, MariaDB + slurmdbd, slurmctld, two slurmd
# nodes) on this machine, as root, from Debian's packages (.ci/run installs them); they skip with
# the reason where those are missing.
test-slurm: install-dev
	$(PY) -m pytest tests/test_slurm.py $(ARGS)

bench: install
	$(PY) bench/rubiks_shift.py
	$(PY) bench/train_step.py

# The GPU run kit: the wheels the GPU machine lacks (bench/gpu/wheels.txt) into the ignored .whl/,
# their sizes, a refusal when the tree + .whl would exceed the 64 MiB that travels, and a check that
# every import of the lab is met there. Then send `bash bench/gpu/run.sh` (bench/gpu/README.md).
gpu-kit: install
	$(PY) bench/gpu/kit.py download

lint: install-dev
	$(PY) -m pip install -q ruff
	$(PY) -m ruff check src tests bench train.py eval.py

# Regenerates the README model table (params, GMACs at each paper input, CPU latency) between
# the zoo markers; ARGS=--no-latency skips the timing.
zoo: install
	$(PY) -m actionlab.profile --zoo --readme README.md $(ARGS)

# The documentation site (docs/, mkdocs.yml): a strict build into site/; any warning fails.
# It also refreshes docs/model_profiles.json (the model tables' counts; commit it).
docs: install-dev
	ACTIONLAB_DOCS_WRITE_PROFILES=1 $(PY) -m mkdocs build --strict

docs-serve: install-dev
	$(PY) -m mkdocs serve

# Executes notebooks/*.ipynb and stores the executed copies in docs/notebooks/ (what the site
# renders; the sources stay without outputs). Trains small models: minutes on a CPU.
notebooks: install-dev
	$(PY) docs/execute_notebooks.py $(ARGS)

# Regenerates the README table of released weights (actionlab/pretrained/registry.py) between
# the weights markers.
registry: install
	$(PY) -m actionlab.pretrained readme README.md

clean:
	rm -rf $(VENV) logs .pytest_cache site .cache

# One-command entry points. `make train` and `make test` work on a fresh clone with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
ARGS ?=

.PHONY: install install-dev train test test-fast test-slurm bench lint zoo clean

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

lint: install-dev
	$(PY) -m pip install -q ruff
	$(PY) -m ruff check src tests bench train.py eval.py

# Regenerates the README model table (params, GMACs at each paper input, CPU latency) between
# the zoo markers; ARGS=--no-latency skips the timing.
zoo: install
	$(PY) -m actionlab.profile --zoo --readme README.md $(ARGS)

clean:
	rm -rf $(VENV) logs .pytest_cache

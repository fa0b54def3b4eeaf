# Two entry points, both from a fresh clone:  make demo  |  make test
# Everything lands in .venv; torch comes as the 2.13.0 wheel (CPU on the machines we develop on).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "torch==2.13.0" -e ".[test,bench]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/dg-lsp demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/dann: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/dann

demo: $(BIN)/dann
	$(BIN)/dann demo

lint: $(BIN)/dann
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/pytest

bench: $(BIN)/dann
	$(BIN)/python benchmarks/demo_accuracy.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache

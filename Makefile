# Two set-up commands: `make demo` and `make test`. Both create .venv on first use. `make docs` builds site/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint docs bench clean

$(BIN)/dann: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/dann

demo: $(BIN)/dann
	$(BIN)/dann demo

lint: $(BIN)/dann
	$(BIN)/ruff check src tests benchmarks docs/*.py
	$(BIN)/ruff format --check src tests benchmarks docs/*.py

# offline; --strict turns a broken link or anchor, or a public name missing from the API reference, into a failure
docs: $(BIN)/dann
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint docs
	$(BIN)/pytest

bench: $(BIN)/dann
	$(BIN)/python benchmarks/demo_accuracy.py

clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache .ruff_cache

# zplex: `make test` and `make bench` set everything up themselves (a .venv with the project).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint types pytest bench perf clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: lint types pytest

lint: $(STAMP)
	$(BIN)/ruff check server workers bench tests
	$(BIN)/ruff format --check server workers bench tests

types: $(STAMP)
	$(BIN)/mypy server workers bench

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/zplex bench

perf: $(STAMP)
	$(BIN)/python -m bench.perf

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

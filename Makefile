# zplex: `make test` and `make bench` set everything up themselves (a .venv with the project,
# its dev and locust extras).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint types pytest fuzz bench perf clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,locust]'
	@touch $(STAMP)

test: lint types pytest

lint: $(STAMP)
	$(BIN)/ruff check server workers bench tests
	$(BIN)/ruff format --check server workers bench tests

types: $(STAMP)
	$(BIN)/mypy server workers bench

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

# The deep run: every property with the ``fuzz`` Hypothesis profile, plus the tests marked
# ``slow``; no per-test timeout (the seed is printed for a replay).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -m 'hypothesis or slow' --timeout=0 \
		tests/core tests/units

bench: $(STAMP)
	$(BIN)/zplex bench

perf: $(STAMP)
	$(BIN)/python -m bench.perf

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The two commands a fresh clone needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# make demo PORT=8001 DURATION=60 RATE=50 FRESH=1: each is passed on when given
DEMO_ARGS := $(if $(PORT),--port $(PORT)) $(if $(DURATION),--duration $(DURATION)) \
	$(if $(RATE),--rate $(RATE)) $(if $(FRESH),--fresh)

demo: install
	$(BIN)/warden demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n auto --dist loadgroup -q

bench: install
	$(BIN)/python benchmarks/bench_inprocess.py
	$(BIN)/python benchmarks/bench_http.py
	$(BIN)/python benchmarks/bench_drift.py
	$(BIN)/python benchmarks/bench_shadow.py
	$(BIN)/python benchmarks/bench_ledger.py
	$(BIN)/python benchmarks/bench_review.py
	$(BIN)/python benchmarks/bench_replay.py
	$(BIN)/python benchmarks/bench_mcp.py

clean:
	rm -rf $(VENV) .warden .pytest_cache .mypy_cache .ruff_cache
